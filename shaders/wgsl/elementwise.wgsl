// Elementwise ops over `n` values, forward and backward side by side. Launched on a grid of
// 256-wide workgroups, 2-D when n needs more than 65535 of them.

struct EwParams {
    n: u32,
    alpha: f32,
    beta: f32,
    // add_channel: y is indexed by (i / inner) % channels.
    inner: u32,
    channels: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: EwParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// out = alpha·x + beta·y   (add, subtract, scale; backward of each is another axpby)
@compute @workgroup_size(256)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = p.alpha * x[i] + p.beta * y[i]; }
}

// out = x·y   (backward: dx = g·y, dy = g·x — two more muls)
@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = x[i] * y[i]; }
}

// out = max(x, 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = max(x[i], 0.0); }
}

// dx = g·[x > 0], with x the forward input and y = g the upstream gradient
@compute @workgroup_size(256)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = select(0.0, y[i], x[i] > 0.0); }
}

// out[i] = x[i] + y[(i / inner) % channels]   (bias over one axis; backward: sum over the others)
@compute @workgroup_size(256)
fn add_channel(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = x[i] + y[(i / p.inner) % p.channels]; }
}
