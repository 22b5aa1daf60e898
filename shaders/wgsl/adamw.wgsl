// One torch.optim.AdamW step per parameter tensor, fused (t: this parameter's step count; g: the
// gradient divided by the guard's loss scale, state[7], which is 1 without dynamic loss scaling):
//   p = p·(1 − lr·wd);  m = m + (1 − β1)·(g − m);  v = β2·v + (1 − β2)·g²
//   p = p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
// m, v and t are the optimizer's own and change in place; the parameter is written anew (other
// tensors may still hold its old value). On a step the guard flags, nothing changes.

struct AdamWParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    ln_beta1: f32,     // ln β1 and ln β2 from the host in double precision, for 1 − βᵗ
    ln_beta2: f32,
    eps: f32,
    weight_decay: f32,
    guarded: u32,      // 0: no guard bound (the guard slot holds another buffer)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> s: AdamWParams;
@group(0) @binding(1) var<storage, read> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> guard: array<f32>;        // guard.wgsl's state; [0] ≠ 0: skip
@group(0) @binding(4) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(6) var<storage, read_write> step: array<f32>;   // [t]
@group(0) @binding(7) var<storage, read_write> param_out: array<f32>;

fn flagged() -> bool {
    return s.guarded != 0u && guard[0] != 0.0;
}

// 1 − βᵗ = −expm1(t·ln β), by its series where t·ln β is small (1 − exp(x) would cancel).
fn one_minus_pow(ln_beta: f32, t: f32) -> f32 {
    let x = t * ln_beta;
    if (abs(x) < 0.1) {
        return -x * (1.0 + x / 2.0 * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0 * (1.0 + x / 6.0)))));
    }
    return 1.0 - exp(x);
}

// t += 1 unless flagged; launched before adamw_step so every invocation reads the same t.
@compute @workgroup_size(256)
fn adamw_tick(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x == 0u && !flagged()) { step[0] += 1.0; }
}

@compute @workgroup_size(256)
fn adamw_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= s.n) { return; }
    if (flagged()) {
        param_out[i] = param[i];
        return;
    }
    var g = grad[i];
    if (s.guarded != 0u) { g = g / guard[7]; }
    let m = exp_avg[i] + (1.0 - s.beta1) * (g - exp_avg[i]);
    let v = s.beta2 * exp_avg_sq[i] + (1.0 - s.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    let t = step[0];
    let step_size = s.lr / one_minus_pow(s.ln_beta1, t);
    let denom = sqrt(v) / sqrt(one_minus_pow(s.ln_beta2, t)) + s.eps;
    param_out[i] = param[i] * (1.0 - s.lr * s.weight_decay) - step_size * m / denom;
}
