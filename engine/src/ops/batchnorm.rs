//! batch_norm2d over NCHW with PyTorch semantics. Kernels: shaders/wgsl/batchnorm.wgsl; CPU
//! twins: batchnorm_cpu.rs; conformance: tests/ops_conformance.rs. Running statistics are
//! updated by the module (`nn::BatchNorm2d`) from the batch statistics returned here.
use super::batchnorm_cpu as cpu_bn;
use super::{cpu_data, cpu_tensor, gpu_buffer, grid_1d, launch_rows, narrow, same_device, to_u32, Bind, ReductionVariant};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::gpu::{GpuBackend, GpuBuffer, Window};
use crate::tensor::Tensor;
use std::sync::Arc;
use tessera_shaders::batchnorm as k;
use tessera_shaders::Kernel;

/// [N, C, H·W] of a batch_norm2d input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnShape {
    pub fn new(x: &[usize]) -> Result<Self> {
        match *x {
            [n, c, h, w] if n * h * w > 0 => Ok(Self { n, c, hw: h * w }),
            [_, _, _, _] => Err(shape_err("batch_norm2d", format!("input {x:?} has no values per channel"))),
            _ => Err(shape_err("batch_norm2d", format!("input must be 4-D [N, C, H, W], got {x:?}"))),
        }
    }

    /// Values per channel (M).
    pub fn count(&self) -> usize {
        self.n * self.hw
    }

    fn check_channel(&self, name: &str, t: &Tensor) -> Result<()> {
        if t.shape() == [self.c] {
            Ok(())
        } else {
            Err(shape_err("batch_norm2d", format!("{name} has shape {:?}; expected [{}]", t.shape(), self.c)))
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct BnParams {
    n: u32,
    c: u32,
    hw: u32,
    total: u32,
    eps: f32,
    k_begin: u32,
    k_end: u32,
    _pad: u32,
}

/// The launch parameters and bindings of a batch-norm kernel. Bindings: x, g, mean, var,
/// gamma, aux (unused slots take x), out.
fn params_and_inputs<'a>(s: &BnShape, eps: f32, x: &'a Tensor, [g, mean, var, gamma, aux]: [Option<&'a Tensor>; 5]) -> Result<(BnParams, [&'a Tensor; 6])> {
    let u = |v| to_u32("batch_norm2d", v);
    let params = BnParams { n: u(s.n)?, c: u(s.c)?, hw: u(s.hw)?, total: u(s.n * s.c * s.hw)?, eps, k_begin: 0, k_end: u(s.count())?, _pad: 0 };
    Ok((params, [x, g.unwrap_or(x), mean.unwrap_or(x), var.unwrap_or(x), gamma.unwrap_or(x), aux.unwrap_or(x)]))
}

/// The bindings of a launch over images [first, first + count): tensors shaped like x (x,
/// g, and x standing in for an unused slot) as windows of those images, the per-channel
/// ones whole.
fn image_binds<'a>(s: &BnShape, inputs: &[&Tensor], buffers: &'a [Arc<GpuBuffer>]) -> Vec<Bind<'a>> {
    let image = s.c * s.hw;
    inputs.iter().zip(buffers).map(|(t, b)| if t.numel() == s.n * image { Bind::Rows(b, image) } else { Bind::Whole(b) }).collect()
}

/// One launch of an elementwise kernel: one invocation per value, in windows of whole images
/// when x is bigger than one binding (the statistics' count M stays the batch's).
fn launch(gpu: &Arc<GpuBackend>, kernel: &Kernel, s: &BnShape, eps: f32, x: &Tensor, bindings: [Option<&Tensor>; 5], out_shape: &[usize]) -> Result<Tensor> {
    let (params, inputs) = params_and_inputs(s, eps, x, bindings)?;
    let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
    let buffers: Vec<Arc<GpuBuffer>> = inputs.iter().map(|t| gpu_buffer(t)).chain([gpu_buffer(&out)]).collect();
    let image = s.c * s.hw;
    launch_rows(gpu, kernel, (s.n, image), &image_binds(s, &[&inputs[..], &[&out]].concat(), &buffers), |_, count| {
        Ok(bytemuck::bytes_of(&BnParams { total: to_u32("batch_norm2d", count * image)?, ..params }).to_vec())
    })?;
    Ok(out)
}

/// A per-channel reduction in its two variants (batchnorm.wgsl): one invocation per channel
/// looping over its values, or one workgroup per channel.
struct Reduction {
    looped: &'static Kernel,
    per_workgroup: &'static Kernel,
}

const MEAN: Reduction = Reduction { looped: &k::MEAN, per_workgroup: &k::MEAN_WG };
const VAR: Reduction = Reduction { looped: &k::VAR, per_workgroup: &k::VAR_WG };
const GRAD_SUMS: Reduction = Reduction { looped: &k::GRAD_SUMS, per_workgroup: &k::GRAD_SUMS_WG };

/// A per-channel reduction into [out_len] values, in the variant `ops::reduction_variant`
/// picks (or `pinned`).
#[allow(clippy::too_many_arguments)]
fn reduce(
    gpu: &Arc<GpuBackend>,
    red: &Reduction,
    pinned: Option<ReductionVariant>,
    s: &BnShape,
    eps: f32,
    x: &Tensor,
    bindings: [Option<&Tensor>; 5],
    out_len: usize,
) -> Result<Tensor> {
    let (params, inputs) = params_and_inputs(s, eps, x, bindings)?;
    let run = |variant: ReductionVariant| -> Result<Tensor> {
        let kernel = if variant == ReductionVariant::Looped { red.looped } else { red.per_workgroup };
        // Invocations per channel: each loops over count / lanes values, so a software
        // adapter's loop budget covers that many more values per slice.
        let lanes = if variant == ReductionVariant::Looped { 1 } else { kernel.workgroup[0] as usize };
        // The per-channel sums are linear in their values (each divided by the batch's count
        // M where it is a mean): slices of the values, and windows of whole images when x is
        // bigger than one binding, add up.
        let buffers: Vec<Arc<GpuBuffer>> = inputs.iter().map(|t| gpu_buffer(t)).collect();
        let binds = image_binds(s, &inputs, &buffers);
        let per_launch = super::rows_per_launch(gpu, kernel.entry, s.n, &binds)?;
        let mut total: Option<Tensor> = None;
        for first in (0..s.n.max(1)).step_by(per_launch) {
            let images = per_launch.min(s.n - first.min(s.n));
            let windows: Vec<Window> = binds.iter().map(|b| b.window(first, images)).collect();
            let part = super::sum_in_slices(gpu, images * s.hw, crate::gpu::SOFTWARE_LOOP_TRIPS * lanes, |begin, end| {
                let params = BnParams { k_begin: to_u32("batch_norm2d", begin)?, k_end: to_u32("batch_norm2d", end)?, ..params };
                let out = Tensor::uninit_gpu(vec![out_len], gpu)?;
                let groups = grid_1d(gpu, kernel.entry, s.c * lanes, kernel.workgroup[0] as usize)?;
                gpu.launch_windows(kernel, bytemuck::bytes_of(&params), &[&windows[..], &[gpu_buffer(&out).whole()]].concat(), groups)?;
                Ok(out)
            })?;
            total = Some(super::accumulate(total, part)?);
        }
        Ok(total.expect("at least one launch"))
    };
    let variant = super::reduction_variant(gpu, red.looped.entry, (s.c, s.count()), pinned, |v| run(v).map(drop))?;
    run(variant)
}

/// Per-channel batch mean and biased variance of x [N, C, H, W] (two passes, for accuracy).
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    batch_stats_with(x, None)
}

/// [`batch_stats`] with the GPU reductions' variant pinned.
pub(crate) fn batch_stats_with(x: &Tensor, pinned: Option<ReductionVariant>) -> Result<(Tensor, Tensor)> {
    let s = BnShape::new(x.shape())?;
    match x.device() {
        Device::Cpu(cpu) => {
            let (mean, var) = cpu_bn::batch_stats(cpu, &s, cpu_data(x));
            Ok((cpu_tensor(mean, &[s.c], x.device()), cpu_tensor(var, &[s.c], x.device())))
        }
        Device::Gpu(gpu) => {
            let mean = reduce(gpu, &MEAN, pinned, &s, 0.0, x, [None; 5], s.c)?;
            let var = reduce(gpu, &VAR, pinned, &s, 0.0, x, [None, Some(&mean), None, None, None], s.c)?;
            Ok((mean, var))
        }
    }
}

/// y = (x − mean)/√(var + eps)·γ + β with the given per-channel statistics (the batch's in
/// training, the running ones in eval).
pub fn batch_norm_forward(x: &Tensor, mean: &Tensor, var: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let s = BnShape::new(x.shape())?;
    same_device("batch_norm2d", &[x, mean, var, gamma, beta])?;
    for (name, t) in [("mean", mean), ("var", var), ("weight", gamma), ("bias", beta)] {
        s.check_channel(name, t)?;
    }
    match x.device() {
        Device::Cpu(cpu) => {
            let out = cpu_bn::forward(cpu, &s, cpu_data(x), [mean, var, gamma, beta].map(cpu_data), eps);
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(gpu) => launch(gpu, &k::FORWARD, &s, eps, x, [None, Some(mean), Some(var), Some(gamma), Some(beta)], x.shape()),
    }
}

/// Gradients of batch_norm2d: (dx, dγ, dβ), each only when asked for. `training` says whether
/// mean/var were the batch statistics (they then depend on x) or constants (eval).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &Tensor,
    g: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    eps: f32,
    training: bool,
    need_input: bool,
    need_affine: bool,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let s = BnShape::new(x.shape())?;
    same_device("batch_norm2d_backward", &[x, g, mean, var, gamma])?;
    if g.shape() != x.shape() {
        return Err(shape_err("batch_norm2d_backward", format!("gradient {:?} does not match input {:?}", g.shape(), x.shape())));
    }
    if !need_input && !need_affine {
        return Ok((None, None, None));
    }
    // [Σg | Σg·x̂]: dβ and dγ, and what the training-mode dx needs. Frozen (eval-mode,
    // affine not trained) layers skip it: their dx needs only γ and the running variance.
    if !training && !need_affine {
        return Ok((Some(eval_input_grad(x, g, mean, var, gamma, eps, &s)?), None, None));
    }
    let sums = grad_sums(x, g, mean, var, eps, None)?;
    batch_norm_backward_from_sums(x, g, [mean, var, gamma], eps, training, (need_input, need_affine), &sums, &sums)
}

/// The rest of [`batch_norm_backward`] once the sums [Σg | Σg·x̂] are known: `dx_sums` feed
/// the training-mode dx (divided by this batch's count), `affine_sums` are dβ and dγ.
/// Synchronised batch norm passes the replicas' share-weighted total as `dx_sums` and this
/// replica's own sums as `affine_sums` (the gradient reduction sums those over replicas).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_from_sums(
    x: &Tensor,
    g: &Tensor,
    [mean, var, gamma]: [&Tensor; 3],
    eps: f32,
    training: bool,
    (need_input, need_affine): (bool, bool),
    dx_sums: &Tensor,
    affine_sums: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let s = BnShape::new(x.shape())?;
    let dx = match (need_input, training) {
        (false, _) => None,
        (true, false) => Some(eval_input_grad(x, g, mean, var, gamma, eps, &s)?),
        (true, true) => Some(match x.device() {
            Device::Cpu(cpu) => {
                let stats = [mean, var, gamma].map(cpu_data);
                cpu_tensor(cpu_bn::input_grad_train(cpu, &s, cpu_data(x), cpu_data(g), stats, cpu_data(dx_sums), eps), x.shape(), x.device())
            }
            Device::Gpu(gpu) => launch(gpu, &k::BACKWARD_TRAIN, &s, eps, x, [Some(g), Some(mean), Some(var), Some(gamma), Some(dx_sums)], x.shape())?,
        }),
    };
    let (dgamma, dbeta) = if need_affine { (Some(narrow(affine_sums, 0, s.c, s.c)?), Some(narrow(affine_sums, 0, 0, s.c)?)) } else { (None, None) };
    Ok((dx, dgamma, dbeta))
}

/// [Σg | Σg·x̂] per channel (x̂ = (x − mean)/√(var + eps)), with the GPU reductions' variant
/// optionally pinned: dβ, dγ, and what the training-mode dx needs.
pub(crate) fn grad_sums(x: &Tensor, g: &Tensor, mean: &Tensor, var: &Tensor, eps: f32, pinned: Option<ReductionVariant>) -> Result<Tensor> {
    let s = BnShape::new(x.shape())?;
    match x.device() {
        Device::Cpu(cpu) => {
            let sums = cpu_bn::grad_sums(cpu, &s, cpu_data(x), cpu_data(g), cpu_data(mean), cpu_data(var), eps);
            Ok(cpu_tensor(sums, &[2 * s.c], x.device()))
        }
        Device::Gpu(gpu) => reduce(gpu, &GRAD_SUMS, pinned, &s, eps, x, [Some(g), Some(mean), Some(var), None, None], 2 * s.c),
    }
}

/// dx = γ/√(var + eps)·g, for statistics that do not depend on x.
fn eval_input_grad(x: &Tensor, g: &Tensor, mean: &Tensor, var: &Tensor, gamma: &Tensor, eps: f32, s: &BnShape) -> Result<Tensor> {
    match x.device() {
        Device::Cpu(cpu) => {
            let out = cpu_bn::input_grad_eval(cpu, s, cpu_data(g), cpu_data(var), cpu_data(gamma), eps);
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(gpu) => launch(gpu, &k::BACKWARD_EVAL, s, eps, x, [Some(g), Some(mean), Some(var), Some(gamma), None], x.shape()),
    }
}

/// The parameters of bn_running.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RunningParams {
    c: u32,
    keep: f32,
    mean_weight: f32,
    var_weight: f32,
}

/// The running statistics after a training batch with statistics (`mean`, `var`, biased, over
/// `count` values per channel), both in one pass (PyTorch's update):
/// running_mean ← (1 − momentum)·running_mean + momentum·mean and
/// running_var ← (1 − momentum)·running_var + momentum·count/(count − 1)·var.
/// Two `axpby` launches per batch-norm layer before.
pub fn running_stats_update(running: (&Tensor, &Tensor), batch: (&Tensor, &Tensor), momentum: f32, count: f32) -> Result<(Tensor, Tensor)> {
    let (running_mean, running_var) = running;
    let (mean, var) = batch;
    same_device("batch_norm2d running statistics", &[running_mean, running_var, mean, var])?;
    let c = running_mean.numel();
    for (name, t) in [("running_var", running_var), ("mean", mean), ("var", var)] {
        if t.shape() != running_mean.shape() {
            return Err(shape_err("batch_norm2d running statistics", format!("{name} has shape {:?}; running_mean {:?}", t.shape(), running_mean.shape())));
        }
    }
    let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    let (keep, mean_weight, var_weight) = (1.0 - momentum, momentum, momentum * unbiased);
    match running_mean.device() {
        Device::Cpu(_) => {
            let update = |running: &Tensor, batch: &Tensor, weight: f32| {
                let values = cpu_data(running).iter().zip(cpu_data(batch)).map(|(r, b)| keep * r + weight * b).collect();
                cpu_tensor(values, running.shape(), running.device())
            };
            Ok((update(running_mean, mean, mean_weight), update(running_var, var, var_weight)))
        }
        Device::Gpu(gpu) => {
            let kernel = &tessera_shaders::bn_running::BN_RUNNING_UPDATE;
            let params = RunningParams { c: to_u32("batch_norm2d running statistics", c)?, keep, mean_weight, var_weight };
            let (new_mean, new_var) = (Tensor::uninit_gpu(running_mean.shape().to_vec(), gpu)?, Tensor::uninit_gpu(running_var.shape().to_vec(), gpu)?);
            let buffers = [running_mean, running_var, mean, var, &new_mean, &new_var].map(gpu_buffer);
            let groups = grid_1d(gpu, kernel.entry, c, kernel.workgroup[0] as usize)?;
            if c > 0 {
                gpu.launch(kernel, bytemuck::bytes_of(&params), &buffers.each_ref().map(|b| b.as_ref()), groups)?;
            }
            Ok((new_mean, new_var))
        }
    }
}
