// Post-training int8 inference, step 2: conv2d (a linear layer is the 1×1 case) on packed i8
// activations and weights. Four i8 products per dot4I8Packed, accumulated exactly in i32:
// out[n, o, y, x] = (Σ_{ky, kx, c} xq[n, y·s + ky − pad, x·s + kx − pad, c] · wq[o, ky, kx, c])
//                   · input_scale · weight_scale[o] + bias[o]
// Weights are packed [O, kh, kw, ⌈C/4⌉] like the activations (int8_pack.wgsl).

struct ConvI8Params {
    n: u32,
    c4: u32,
    h: u32,
    w: u32,
    o: u32,
    kh: u32,
    kw: u32,
    ho: u32,
    wo: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    total: u32,
    input_scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: ConvI8Params;
@group(0) @binding(1) var<storage, read> xq: array<u32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
// weight_scale[0..O], then bias[0..O].
@group(0) @binding(3) var<storage, read> scale_bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// One invocation per pixel and four consecutive output channels (each activation word loaded
// once feeds four dot products), in [N, ⌈O/4⌉, Ho, Wo] order: neighbours read neighbouring pixels.
@compute @workgroup_size(256, 1, 1)
fn conv2d_i8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.total) { return; }
    let o4 = (p.o + 3u) / 4u;
    let ox = i % p.wo;
    let oy = (i / p.wo) % p.ho;
    let q = (i / (p.wo * p.ho)) % o4;
    let n = i / (p.wo * p.ho * o4);
    let o0 = 4u * q;
    // Channels past O repeat the last one's weights (read, never written).
    let last = p.o - 1u;
    let row = vec4<u32>(o0, min(o0 + 1u, last), min(o0 + 2u, last), min(o0 + 3u, last)) * (p.kh * p.kw * p.c4);
    var acc = vec4<i32>(0);
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride_y + ky) - i32(p.pad_y);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride_x + kx) - i32(p.pad_x);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let xbase = ((n * p.h + u32(iy)) * p.w + u32(ix)) * p.c4;
            let wofs = (ky * p.kw + kx) * p.c4;
            for (var j = 0u; j < p.c4; j++) {
                let xv = xq[xbase + j];
                acc += vec4<i32>(
                    dot4I8Packed(xv, wq[row.x + wofs + j]),
                    dot4I8Packed(xv, wq[row.y + wofs + j]),
                    dot4I8Packed(xv, wq[row.z + wofs + j]),
                    dot4I8Packed(xv, wq[row.w + wofs + j]),
                );
            }
        }
    }
    let plane = p.ho * p.wo;
    let pixel = oy * p.wo + ox;
    for (var k = 0u; k < 4u; k++) {
        let o = o0 + k;
        if (o < p.o) {
            out[(n * p.o + o) * plane + pixel] = f32(acc[k]) * p.input_scale * scale_bias[o] + scale_bias[p.o + o];
        }
    }
}
