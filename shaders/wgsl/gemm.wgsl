// GEMM: out[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], any M, N, K, strided-batched.
// op(A)(i, l) = a[b·a_bs + i·a_rs + l·a_cs]: a transpose is only a swap of the two strides,
// so one kernel body serves NN, NT, TN and TT. A batch stride of 0 broadcasts that operand.
// Loads use clamped indices (always in bounds), stores are masked: no branch in the K loop.

struct GemmParams {
    m: u32, n: u32, k: u32, batch: u32,
    a_rs: u32, a_cs: u32, a_bs: u32, b_rs: u32,
    b_cs: u32, b_bs: u32, c_bs: u32, has_c: u32,
    alpha: f32, beta: f32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// Writes one row segment of up to 4 outputs starting at (row, col): alpha·acc + beta·C.
fn store_row4(bz: u32, row: u32, col: u32, acc: vec4<f32>) {
    if (row >= p.m) { return; }
    let o = bz * p.m * p.n + row * p.n + col;
    let ci = bz * p.c_bs + row * p.n + col;
    for (var j = 0u; j < 4u; j++) {
        if (col + j < p.n) {
            var v = p.alpha * acc[j];
            if (p.has_c != 0u && p.beta != 0.0) { v += p.beta * c[ci + j]; }
            out[o + j] = v;
        }
    }
}

// 4×4 outputs per invocation held in registers; no workgroup memory, no barriers.
@compute @workgroup_size(8, 8, 1)
fn gemm_reg4x4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * 4u;
    let col = gid.x * 4u;
    if (row >= p.m || col >= p.n) { return; }
    let bz = gid.z;
    let ra = bz * p.a_bs + min(row, p.m - 1u) * p.a_rs;
    let ra1 = bz * p.a_bs + min(row + 1u, p.m - 1u) * p.a_rs;
    let ra2 = bz * p.a_bs + min(row + 2u, p.m - 1u) * p.a_rs;
    let ra3 = bz * p.a_bs + min(row + 3u, p.m - 1u) * p.a_rs;
    let cb = bz * p.b_bs + min(col, p.n - 1u) * p.b_cs;
    let cb1 = bz * p.b_bs + min(col + 1u, p.n - 1u) * p.b_cs;
    let cb2 = bz * p.b_bs + min(col + 2u, p.n - 1u) * p.b_cs;
    let cb3 = bz * p.b_bs + min(col + 3u, p.n - 1u) * p.b_cs;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var l = 0u; l < p.k; l++) {
        let ka = l * p.a_cs;
        let kb = l * p.b_rs;
        let bv = vec4<f32>(b[cb + kb], b[cb1 + kb], b[cb2 + kb], b[cb3 + kb]);
        acc0 = fma(vec4<f32>(a[ra + ka]), bv, acc0);
        acc1 = fma(vec4<f32>(a[ra1 + ka]), bv, acc1);
        acc2 = fma(vec4<f32>(a[ra2 + ka]), bv, acc2);
        acc3 = fma(vec4<f32>(a[ra3 + ka]), bv, acc3);
    }
    store_row4(bz, row, col, acc0);
    store_row4(bz, row + 1u, col, acc1);
    store_row4(bz, row + 2u, col, acc2);
    store_row4(bz, row + 3u, col, acc3);
}
