// Elementwise ops over `n` values, forward and backward side by side. Launched on a grid of
// 256-wide workgroups, 2-D when n needs more than 65535 of them.

struct EwParams {
    n: u32,
    alpha: f32,
    beta: f32,
    // add_channel: y is indexed by (i / inner) % channels.
    inner: u32,
    channels: u32,
    // The launch's first value in the whole tensor: a tensor beyond one binding runs as
    // windows, one launch each, and index-dependent kernels (add_channel, dropout) add it.
    base: u32,
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

// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7; WGSL has no erf): the CPU twin
// (ops::elementwise::erf) uses the same formula.
fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-a * a));
}

// out = GELU(x) = x·Φ(x) = ½·x·(1 + erf(x/√2))   (PyTorch's exact form, approximate='none')
@compute @workgroup_size(256)
fn gelu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { let v = x[i]; out[i] = 0.5 * v * (1.0 + erf_approx(v * 0.70710678)); }
}

// dx = g·(Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π); x the forward input, y = g
@compute @workgroup_size(256)
fn gelu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) {
        let v = x[i];
        let cdf = 0.5 * (1.0 + erf_approx(v * 0.70710678));
        out[i] = y[i] * (cdf + v * 0.39894228 * exp(-0.5 * v * v));
    }
}

// out[i] = x[i] + y[(i / inner) % channels]   (bias over one axis; backward: sum over the others)
@compute @workgroup_size(256)
fn add_channel(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i < p.n) { out[i] = x[i] + y[((i + p.base) / p.inner) % p.channels]; }
}

// Counter-based hash (the CPU twin computes the same bits): a dropout mask needs no storage,
// and the backward recomputes it from the seed.
fn hash(i: u32, seed: u32) -> u32 {
    var h = i ^ (seed * 0x9e3779b9u);
    h = (h ^ (h >> 16u)) * 0x7feb352du;
    h = (h ^ (h >> 15u)) * 0x846ca68bu;
    return h ^ (h >> 16u);
}

// dropout: out = x·keep/(1 − p), keep = [hash(i, seed)/2³² ≥ p]; alpha = 1/(1 − p), beta = p,
// inner = seed. Its backward is the same op on the gradient.
@compute @workgroup_size(256)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.n) { return; }
    let u = f32(hash(i + p.base, p.inner) >> 8u) / 16777216.0;
    out[i] = select(0.0, x[i] * p.alpha, u >= p.beta);
}

// concat of two tensors along one axis, both seen as [outer, len]: rows of x (inner = its row
// length) then of y (channels = its row length). Backward: two narrows.
@compute @workgroup_size(256)
fn concat2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.n) { return; }
    let row_len = p.inner + p.channels;
    let row = i / row_len;
    let col = i % row_len;
    out[i] = select(y[row * p.channels + col - p.inner], x[row * p.inner + col], col < p.inner);
}
