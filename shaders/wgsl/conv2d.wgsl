// conv2d as GEMM over unfolded patches, NCHW, with stride, padding and dilation.
// The patch matrix is laid out cols[(c·kh + i)·kw + j][(n·Ho + oh)·Wo + ow] — every image side
// by side — so the forward (W·cols), the weight gradient (g·colsᵀ) and the input gradient
// (Wᵀ·g) are each one GEMM, and only the [N, O] ↔ [O, N] axis swap sits in between.

// ConvParams, the input `src`, flat(), patch_at() and patch_value(): conv2d_common.wgsl.

@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// im2col: cols[row][col] = patch_value(patch_at(row·cols + col))
@compute @workgroup_size(256)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(gid, groups);
    if (idx >= p.total) { return; }
    dst[idx] = patch_value(patch_at(idx));
}

// im2col, four consecutive patch-matrix values per invocation: the coordinates are decoded
// once, then stepped rather than divided out again for each value (integer division is the
// costly part of the kernel).
@compute @workgroup_size(256)
fn im2col_x4(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let first = flat(gid, groups) * 4u;
    if (first >= p.total) { return; }
    var q = patch_at(first);
    for (var t = 0u; t < 4u; t++) {
        let idx = first + t;
        if (idx >= p.total) { return; }
        dst[idx] = patch_value(q);
        // The next column; past the last one, the next row's first.
        q.ow += 1u;
        if (q.ow == p.wo) { q.ow = 0u; q.oh += 1u; }
        if (q.oh == p.ho) { q.oh = 0u; q.n += 1u; }
        if (q.n == p.n) { q.n = 0u; q.j += 1u; }
        if (q.j == p.kw) { q.j = 0u; q.i += 1u; }
        if (q.i == p.kh) { q.i = 0u; q.c += 1u; }
    }
}

// im2col by runs: one invocation per patch row and output row (c, i, j, n, oh) writes that
// row's Wo values, coordinates decoded once per run and the source column stepped by the
// stride. Run r = ((c·kh + i)·kw + j)·N·Ho + n·Ho + oh starts at cols[r·Wo].
@compute @workgroup_size(256)
fn im2col_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let run = flat(gid, groups);
    if (run * p.wo >= p.total) { return; }
    let q = patch_at(run * p.wo);
    let first = run * p.wo;
    let y = i32(q.oh * p.stride_h + q.i * p.dil_h) - i32(p.pad_h);
    if (y < 0 || y >= i32(p.h)) {
        for (var ow = 0u; ow < p.wo; ow++) { dst[first + ow] = 0.0; }
        return;
    }
    let src_row = ((q.n * p.c + q.c) * p.h + u32(y)) * p.w;
    var x = i32(q.j * p.dil_w) - i32(p.pad_w);
    for (var ow = 0u; ow < p.wo; ow++) {
        var v = 0.0;
        if (x >= 0 && x < i32(p.w)) { v = src[src_row + u32(x)]; }
        dst[first + ow] = v;
        x += i32(p.stride_w);
    }
}

// col2im, the adjoint of im2col: dx[n][c][y][x] = Σ over (i, j) of cols[(c,i,j)][(n,oh,ow)]
// where oh·s − pad + i·dil = y (likewise x). A gather per input pixel: no atomics needed. One
// invocation per input row (n, c, y) computes its W values, each kernel row i that reaches the
// row decoded once per run (on lavapipe 1.15–1.2× faster than one invocation per value).
@compute @workgroup_size(256)
fn col2im_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let run = flat(gid, groups);
    if (run * p.w >= p.total) { return; }
    let y = run % p.h;
    let c = (run / p.h) % p.c;
    let n = run / (p.h * p.c);
    let first = run * p.w;
    let cols = p.n * p.ho * p.wo;
    for (var x = 0u; x < p.w; x++) { dst[first + x] = 0.0; }
    for (var i = 0u; i < p.kh; i++) {
        let ty = i32(y + p.pad_h) - i32(i * p.dil_h);
        if (ty < 0 || u32(ty) % p.stride_h != 0u) { continue; }
        let oh = u32(ty) / p.stride_h;
        if (oh >= p.ho) { continue; }
        let row0 = (c * p.kh + i) * p.kw;
        let col0 = (n * p.ho + oh) * p.wo;
        for (var x = 0u; x < p.w; x++) {
            var acc = dst[first + x];
            for (var j = 0u; j < p.kw; j++) {
                let tx = i32(x + p.pad_w) - i32(j * p.dil_w);
                if (tx < 0 || u32(tx) % p.stride_w != 0u) { continue; }
                let ow = u32(tx) / p.stride_w;
                if (ow >= p.wo) { continue; }
                acc += src[(row0 + j) * cols + col0 + ow];
            }
            dst[first + x] = acc;
        }
    }
}

// swap01: dst[b][a][k] = src[a][b][k]; turns the GEMM's [O, N·HW] into NCHW and back
@compute @workgroup_size(256)
fn swap01(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(gid, groups);
    if (idx >= p.total) { return; }
    dst[idx] = src[swap01_at(idx).src];
}
