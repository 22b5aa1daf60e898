// One torch.optim.SGD step per parameter tensor, fused:
//   d = g + wd·p
//   buf = d (first step) | momentum·buf + (1 − dampening)·d      (when momentum ≠ 0)
//   d = d + momentum·buf (nesterov) | buf                         (when momentum ≠ 0)
//   p = p − lr·d

struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    first_step: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> s: SgdParams;
@group(0) @binding(1) var<storage, read> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> buf: array<f32>;       // momentum buffer (ignored on the first step)
@group(0) @binding(4) var<storage, read_write> param_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> buf_out: array<f32>;

@compute @workgroup_size(256)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= s.n) { return; }
    var d = grad[i] + s.weight_decay * param[i];
    if (s.momentum != 0.0) {
        var b = d;
        if (s.first_step == 0u) { b = s.momentum * buf[i] + (1.0 - s.dampening) * d; }
        buf_out[i] = b;
        d = select(b, d + s.momentum * b, s.nesterov != 0u);
    }
    param_out[i] = param[i] - s.lr * d;
}
