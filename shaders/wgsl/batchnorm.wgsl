// batch_norm2d over NCHW, forward and backward side by side. Statistics are per channel over
// N·H·W values (M of them). The reductions come in two variants, chosen per adapter: one
// invocation per channel looping over its M values (`bn_mean`, …: no barriers), or one
// workgroup of 256 per channel summing strided slices and then a tree in workgroup memory
// (`bn_mean_wg`, …: C·256 invocations where the first has C). One invocation per value for
// the elementwise parts. Training normalises with the biased batch variance, as PyTorch does.

struct BnParams {
    n: u32,
    c: u32,
    hw: u32,
    total: u32,
    eps: f32,
    // The per-channel reductions sum values [k_begin, k_end) of their M (all of them unless
    // a software adapter's loop budget splits the sum into several launches).
    k_begin: u32,
    k_end: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: BnParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;      // upstream gradient
@group(0) @binding(3) var<storage, read> mean: array<f32>;   // [C]
@group(0) @binding(4) var<storage, read> var_: array<f32>;   // [C], biased (batch) or running
@group(0) @binding(5) var<storage, read> gamma: array<f32>;  // [C]
@group(0) @binding(6) var<storage, read> aux: array<f32>;    // beta [C], or [Σg | Σg·x̂] [2C]
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

fn channel_of(i: u32) -> u32 {
    return (i / p.hw) % p.c;
}

fn at(c: u32, k: u32) -> u32 {
    return ((k / p.hw) * p.c + c) * p.hw + k % p.hw;
}

fn count() -> f32 {
    return f32(p.n * p.hw);
}

// mean_c = Σ x_c / M
@compute @workgroup_size(64)
fn bn_mean(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) { return; }
    var s = 0.0;
    for (var k = p.k_begin; k < p.k_end; k++) { s += x[at(c, k)]; }
    out[c] = s / count();
}

// var_c = Σ (x_c − mean_c)² / M   (two-pass, biased)
@compute @workgroup_size(64)
fn bn_var(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) { return; }
    var s = 0.0;
    for (var k = p.k_begin; k < p.k_end; k++) {
        let d = x[at(c, k)] - mean[c];
        s += d * d;
    }
    out[c] = s / count();
}

const WG: u32 = 256u;
var<workgroup> lanes: array<f32, 256>;
var<workgroup> lanes2: array<f32, 256>;

// The channel of a workgroup-per-channel launch (workgroups may wrap into a second dimension).
fn group_channel(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

// lanes[0] = Σ lanes, lanes2[0] = Σ lanes2: a tree over the workgroup.
fn tree_sum(lid: u32) {
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half >> 1u) {
        if (lid < half) {
            lanes[lid] += lanes[lid + half];
            lanes2[lid] += lanes2[lid + half];
        }
        workgroupBarrier();
    }
}

// mean_c = Σ x_c / M, one workgroup per channel
@compute @workgroup_size(256)
fn bn_mean_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = group_channel(wid, groups);
    if (c >= p.c) { return; }
    var s = 0.0;
    for (var k = p.k_begin + lid; k < p.k_end; k += WG) { s += x[at(c, k)]; }
    lanes[lid] = s;
    lanes2[lid] = 0.0;
    tree_sum(lid);
    if (lid == 0u) { out[c] = lanes[0] / count(); }
}

// var_c = Σ (x_c − mean_c)² / M, one workgroup per channel
@compute @workgroup_size(256)
fn bn_var_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = group_channel(wid, groups);
    if (c >= p.c) { return; }
    var s = 0.0;
    for (var k = p.k_begin + lid; k < p.k_end; k += WG) {
        let d = x[at(c, k)] - mean[c];
        s += d * d;
    }
    lanes[lid] = s;
    lanes2[lid] = 0.0;
    tree_sum(lid);
    if (lid == 0u) { out[c] = lanes[0] / count(); }
}

// [Σ g | Σ g·x̂] per channel, one workgroup per channel
@compute @workgroup_size(256)
fn bn_grad_sums_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = group_channel(wid, groups);
    if (c >= p.c) { return; }
    let inv_std = inverseSqrt(var_[c] + p.eps);
    var sg = 0.0;
    var sgx = 0.0;
    for (var k = p.k_begin + lid; k < p.k_end; k += WG) {
        let i = at(c, k);
        sg += g[i];
        sgx += g[i] * (x[i] - mean[c]) * inv_std;
    }
    lanes[lid] = sg;
    lanes2[lid] = sgx;
    tree_sum(lid);
    if (lid == 0u) {
        out[c] = lanes[0];
        out[p.c + c] = lanes2[0];
    }
}

// y = (x − mean) / √(var + eps) · γ + β
@compute @workgroup_size(256)
fn bn_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let c = channel_of(i);
    out[i] = (x[i] - mean[c]) * inverseSqrt(var_[c] + p.eps) * gamma[c] + aux[c];
}

// [Σ g | Σ g·x̂] per channel, x̂ = (x − mean)/√(var + eps): dβ and dγ
@compute @workgroup_size(64)
fn bn_grad_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) { return; }
    let inv_std = inverseSqrt(var_[c] + p.eps);
    var sg = 0.0;
    var sgx = 0.0;
    for (var k = p.k_begin; k < p.k_end; k++) {
        let i = at(c, k);
        sg += g[i];
        sgx += g[i] * (x[i] - mean[c]) * inv_std;
    }
    out[c] = sg;
    out[p.c + c] = sgx;
}

// training: dx = γ/√(var + eps) · (g − (Σg + x̂·Σg·x̂) / M), batch statistics
@compute @workgroup_size(256)
fn bn_backward_train(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let c = channel_of(i);
    let inv_std = inverseSqrt(var_[c] + p.eps);
    let xhat = (x[i] - mean[c]) * inv_std;
    out[i] = gamma[c] * inv_std * (g[i] - (aux[c] + xhat * aux[p.c + c]) / count());
}

// eval (running statistics are constants): dx = γ/√(var + eps) · g
@compute @workgroup_size(256)
fn bn_backward_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let c = channel_of(i);
    out[i] = gamma[c] * inverseSqrt(var_[c] + p.eps) * g[i];
}
