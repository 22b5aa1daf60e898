// Shared by every GEMM module (appended to each; WGSL has no includes): the GEMM contract,
// its parameters, the C and output bindings and the output store. Each module declares A
// and B (bindings 1 and 2) in its storage format, with `load_a(i)` / `load_b(i)` → f32.
// GEMM: out[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], any M, N, K, strided-batched.
// op(A)(i, l) = a[a_off + b·a_bs + i·a_rs + l·a_cs]: a transpose is only a swap of the two
// strides, so one kernel body serves NN, NT, TN and TT. A batch stride of 0 broadcasts that
// operand. The offsets start a product part-way along K (software adapters run long
// products as K slices, see SOFTWARE_LOOP_TRIPS).
// Loads use clamped indices (always in bounds), stores are masked: no branch in the K loop.

struct GemmParams {
    m: u32, n: u32, k: u32, batch: u32,
    a_rs: u32, a_cs: u32, a_bs: u32, b_rs: u32,
    b_cs: u32, b_bs: u32, c_bs: u32, has_c: u32,
    alpha: f32, beta: f32, a_off: u32, b_off: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
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

