// Batch norm's running statistics after a training batch, mean and variance in one pass
// (PyTorch's update; the variance's batch term unbiased by n/(n − 1)):
//   running_mean = (1 − momentum)·running_mean + momentum·mean
//   running_var  = (1 − momentum)·running_var  + (momentum·n/(n − 1))·var

struct RunningParams {
    c: u32,
    keep: f32,        // 1 − momentum
    mean_weight: f32, // momentum
    var_weight: f32,  // momentum·n/(n − 1)
}

@group(0) @binding(0) var<uniform> p: RunningParams;
@group(0) @binding(1) var<storage, read> running_mean: array<f32>;
@group(0) @binding(2) var<storage, read> running_var: array<f32>;
@group(0) @binding(3) var<storage, read> mean: array<f32>;
@group(0) @binding(4) var<storage, read> var_: array<f32>;
@group(0) @binding(5) var<storage, read_write> new_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> new_var: array<f32>;

@compute @workgroup_size(64)
fn bn_running_update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if (c >= p.c) {
        return;
    }
    new_mean[c] = p.keep * running_mean[c] + p.mean_weight * mean[c];
    new_var[c] = p.keep * running_var[c] + p.var_weight * var_[c];
}
