// One torch.optim.SGD step per parameter tensor, fused (g: the gradient divided by the guard's
// loss scale, state[7], which is 1 without dynamic loss scaling):
//   d = g + wd·p
//   buf = d (first step) | momentum·buf + (1 − dampening)·d      (when momentum ≠ 0)
//   d = d + momentum·buf (nesterov) | buf                         (when momentum ≠ 0)
//   p = p − lr·d
// On a step the guard flags (guard.wgsl's state[0] ≠ 0) parameter and buffer stay as they were.

struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    first_step: u32,
    guarded: u32,      // 0: no guard bound (the guard slot holds another buffer)
}

@group(0) @binding(0) var<uniform> s: SgdParams;
@group(0) @binding(1) var<storage, read> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> buf: array<f32>;       // momentum buffer (ignored on the first step)
@group(0) @binding(4) var<storage, read_write> param_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> buf_out: array<f32>;
@group(0) @binding(6) var<storage, read> guard: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= s.n) { return; }
    if (s.guarded != 0u && guard[0] != 0.0) {
        param_out[i] = param[i];
        // A skipped first step leaves zeros, which the next step's update reads as "none yet"
        // exactly when dampening is 0 (m = momentum·0 + d).
        if (s.momentum != 0.0) { buf_out[i] = select(buf[i], 0.0, s.first_step != 0u); }
        return;
    }
    var unscale = 1.0;
    if (s.guarded != 0u) { unscale = 1.0 / guard[7]; }
    var d = grad[i] * unscale + s.weight_decay * param[i];
    if (s.momentum != 0.0) {
        var b = d;
        if (s.first_step == 0u) { b = s.momentum * buf[i] + (1.0 - s.dampening) * d; }
        buf_out[i] = b;
        d = select(b, d + s.momentum * b, s.nesterov != 0u);
    }
    param_out[i] = param[i] - s.lr * d;
}
