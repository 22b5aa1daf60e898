// What every conv2d kernel shares (conv2d.wgsl, conv2d_f16.wgsl): the parameters, the input,
// and where each patch-matrix value comes from. The patch matrix is laid out
// cols[(c·kh + i)·kw + j][(n·Ho + oh)·Wo + ow].

struct ConvParams {
    n: u32, c: u32, h: u32, w: u32,
    kh: u32, kw: u32, ho: u32, wo: u32,
    stride_h: u32, stride_w: u32, pad_h: u32, pad_w: u32,
    dil_h: u32, dil_w: u32,
    // swap01: [a, b, inner] → [b, a, inner]
    a: u32, b: u32,
    inner: u32, total: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// swap01's source: dst[b][a][k] = src[a][b][k]; the index in src of dst's flat index idx, and
// the `a` it belongs to (a = O for the GEMM's [O, N, Ho·Wo]).
struct Swap01 { src: u32, a: u32 }

fn swap01_at(idx: u32) -> Swap01 {
    let k = idx % p.inner;
    let ai = (idx / p.inner) % p.a;
    let bi = idx / (p.inner * p.a);
    return Swap01((ai * p.b + bi) * p.inner + k, ai);
}

// Where a patch-matrix value comes from: its row's channel and tap (c, i, j) and its
// column's image and output position (n, oh, ow).
struct PatchAt { c: u32, i: u32, j: u32, n: u32, oh: u32, ow: u32 }

// The coordinates of the patch-matrix value at flat index idx.
fn patch_at(idx: u32) -> PatchAt {
    let spatial = p.ho * p.wo;
    let cols = p.n * spatial;
    let row = idx / cols;
    let col = idx % cols;
    return PatchAt(row / (p.kw * p.kh), (row / p.kw) % p.kh, row % p.kw, col / spatial, (col / p.wo) % p.ho, col % p.wo);
}

// x[n][c][oh·s − pad + i·dil][ow·s − pad + j·dil], 0 outside the image
fn patch_value(q: PatchAt) -> f32 {
    // Signed: padding reaches before the image.
    let y = i32(q.oh * p.stride_h + q.i * p.dil_h) - i32(p.pad_h);
    let x = i32(q.ow * p.stride_w + q.j * p.dil_w) - i32(p.pad_w);
    if (y < 0 || y >= i32(p.h) || x < 0 || x >= i32(p.w)) { return 0.0; }
    return src[((q.n * p.c + q.c) * p.h + u32(y)) * p.w + u32(x)];
}
