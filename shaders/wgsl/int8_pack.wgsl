// Post-training int8 inference, step 1: an f32 activation [N, C, H, W] quantized with one
// per-tensor scale and packed channel-last, four channels per u32 word (channel 4j + b in
// byte b, two's complement; channels past C are 0): words [N, H, W, ⌈C/4⌉].
// q = clamp(round_half_even(x · inv_scale), −127, 127) — symmetric, so 0 stays exactly 0.

struct PackParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    c4: u32,
    words: u32,
    inv_scale: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: PackParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;

// One invocation per word: word i = ((n·H + y)·W + x)·⌈C/4⌉ + j holds channels 4j..4j + 3.
@compute @workgroup_size(256, 1, 1)
fn quantize_pack_i8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.words) { return; }
    let j = i % p.c4;
    let pixel = i / p.c4;
    let xx = pixel % p.w;
    let yy = (pixel / p.w) % p.h;
    let n = pixel / (p.w * p.h);
    var q = vec4<i32>(0);
    for (var b = 0u; b < 4u; b++) {
        let ch = 4u * j + b;
        if (ch < p.c) {
            let v = x[((n * p.c + ch) * p.h + yy) * p.w + xx];
            q[b] = i32(clamp(round(v * p.inv_scale), -127.0, 127.0));
        }
    }
    packed[i] = pack4xI8(q);
}
