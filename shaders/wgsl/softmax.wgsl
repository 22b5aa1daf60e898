// Softmax, log-softmax and the fused cross-entropy over the rows of a [rows, cols] matrix,
// forward and backward side by side. One invocation per row; max-subtracted for stability.

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    // cross-entropy: 1 / batch, the mean's factor, and the label smoothing ε
    inv_rows: f32,
    smoothing: f32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;      // logits, or the forward output
@group(0) @binding(2) var<storage, read> g: array<f32>;      // upstream gradient
@group(0) @binding(3) var<storage, read> labels: array<u32>; // cross-entropy targets
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn row_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 64u;
}

fn row_max(base: u32) -> f32 {
    var m = x[base];
    for (var j = 1u; j < p.cols; j++) { m = max(m, x[base + j]); }
    return m;
}

// log Σ_j exp(x_j), computed as m + log Σ_j exp(x_j − m)
fn row_logsumexp(base: u32) -> f32 {
    let m = row_max(base);
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) { s += exp(x[base + j] - m); }
    return m + log(s);
}

// y_j = exp(x_j − logsumexp(x))
@compute @workgroup_size(64)
fn softmax_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let lse = row_logsumexp(base);
    for (var j = 0u; j < p.cols; j++) { out[base + j] = exp(x[base + j] - lse); }
}

// dx_j = y_j · (g_j − Σ_k g_k y_k), with x = y the forward output
@compute @workgroup_size(64)
fn softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var dot = 0.0;
    for (var j = 0u; j < p.cols; j++) { dot += g[base + j] * x[base + j]; }
    for (var j = 0u; j < p.cols; j++) { out[base + j] = x[base + j] * (g[base + j] - dot); }
}

// y_j = x_j − logsumexp(x)
@compute @workgroup_size(64)
fn log_softmax_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let lse = row_logsumexp(base);
    for (var j = 0u; j < p.cols; j++) { out[base + j] = x[base + j] - lse; }
}

// dx_j = g_j − exp(y_j) · Σ_k g_k, with x = y the forward output
@compute @workgroup_size(64)
fn log_softmax_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var total = 0.0;
    for (var j = 0u; j < p.cols; j++) { total += g[base + j]; }
    for (var j = 0u; j < p.cols; j++) { out[base + j] = g[base + j] - exp(x[base + j]) * total; }
}

// loss_n = logsumexp(x_n) − (1 − ε)·x_n[label_n] − ε·mean_j x_nj   (per row; the batch mean
// is a reduction): against the target (1 − ε)·onehot + ε/cols, PyTorch's label smoothing
@compute @workgroup_size(64)
fn cross_entropy_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var total = 0.0;
    if (p.smoothing != 0.0) {
        for (var j = 0u; j < p.cols; j++) { total += x[base + j]; }
    }
    out[r] = row_logsumexp(base) - (1.0 - p.smoothing) * x[base + labels[r]] - p.smoothing * total / f32(p.cols);
}

// dx_nj = (softmax(x_n)_j − target_nj) · g / rows, target = (1 − ε)·[j = label_n] + ε/cols,
// with g the scalar upstream gradient
@compute @workgroup_size(64)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = row_index(gid, groups);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let lse = row_logsumexp(base);
    let scale = g[0] * p.inv_rows;
    let spread = p.smoothing / f32(p.cols);
    for (var j = 0u; j < p.cols; j++) {
        let wanted = select(0.0, 1.0 - p.smoothing, j == labels[r]) + spread;
        out[base + j] = (exp(x[base + j] - lse) - wanted) * scale;
    }
}
