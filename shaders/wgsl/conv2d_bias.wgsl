// The convolution's output epilogue with its bias: the GEMM's [O, N, Ho·Wo] turned into NCHW
// with the bias added as each value is stored — one pass where swap01 then add_channel took
// two. ConvParams, src (the GEMM's output), flat(), swap01_at(): conv2d_common.wgsl.

@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// dst[n][o][k] = src[o][n][k] + bias[o]   (a = O, b = N, inner = Ho·Wo)
@compute @workgroup_size(256)
fn swap01_bias(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(gid, groups);
    if (idx >= p.total) { return; }
    let at = swap01_at(idx);
    dst[idx] = src[at.src] + bias[at.a];
}
