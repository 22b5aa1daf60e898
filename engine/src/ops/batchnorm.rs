//! batch_norm2d over NCHW with PyTorch semantics. Kernels: shaders/wgsl/batchnorm.wgsl; CPU
//! twins below; conformance: tests/ops_conformance.rs. Running statistics are updated by the
//! module (`nn::BatchNorm2d`) from the batch statistics returned here.
use super::{cpu_data, cpu_tensor, launch_map, narrow, same_device, to_u32};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;
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

    /// Iterates the flat indices of channel `c`.
    fn channel(&self, c: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).flat_map(move |n| (0..self.hw).map(move |k| (n * self.c + c) * self.hw + k))
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
    _pad: [u32; 3],
}

/// One launch; `per_channel` kernels get one invocation per channel, the others one per value.
/// Bindings: x, g, mean, var, gamma, aux (unused slots take x), out.
#[allow(clippy::too_many_arguments)]
fn launch(
    kernel: &Kernel,
    s: &BnShape,
    eps: f32,
    x: &Tensor,
    [g, mean, var, gamma, aux]: [Option<&Tensor>; 5],
    out_shape: &[usize],
    per_channel: bool,
) -> Result<Tensor> {
    let u = |v| to_u32("batch_norm2d", v);
    let total = s.n * s.c * s.hw;
    let params = BnParams { n: u(s.n)?, c: u(s.c)?, hw: u(s.hw)?, total: u(total)?, eps, _pad: [0; 3] };
    let invocations = if per_channel { s.c } else { total };
    let inputs = [x, g.unwrap_or(x), mean.unwrap_or(x), var.unwrap_or(x), gamma.unwrap_or(x), aux.unwrap_or(x)];
    launch_map("batch_norm2d", kernel, bytemuck::bytes_of(&params), &inputs, out_shape, invocations)
}

/// Per-channel batch mean and biased variance of x [N, C, H, W] (two passes, for accuracy).
pub fn batch_stats(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = BnShape::new(x.shape())?;
    match x.device() {
        Device::Cpu(cpu) => {
            let xs = cpu_data(x);
            let m = s.count() as f32;
            let (mean, var): (Vec<f32>, Vec<f32>) = cpu.install(|| {
                (0..s.c)
                    .into_par_iter()
                    .map(|c| {
                        let mu = s.channel(c).map(|i| xs[i]).sum::<f32>() / m;
                        let var = s.channel(c).map(|i| (xs[i] - mu) * (xs[i] - mu)).sum::<f32>() / m;
                        (mu, var)
                    })
                    .unzip()
            });
            Ok((cpu_tensor(mean, &[s.c], x.device()), cpu_tensor(var, &[s.c], x.device())))
        }
        Device::Gpu(_) => {
            let mean = launch(&k::MEAN, &s, 0.0, x, [None; 5], &[s.c], true)?;
            let var = launch(&k::VAR, &s, 0.0, x, [None, Some(&mean), None, None, None], &[s.c], true)?;
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
            let (xs, m, v, ga, be) = (cpu_data(x), cpu_data(mean), cpu_data(var), cpu_data(gamma), cpu_data(beta));
            let out = cpu.install(|| {
                (0..xs.len())
                    .into_par_iter()
                    .map(|i| {
                        let c = (i / s.hw) % s.c;
                        (xs[i] - m[c]) / (v[c] + eps).sqrt() * ga[c] + be[c]
                    })
                    .collect()
            });
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(_) => launch(&k::FORWARD, &s, eps, x, [None, Some(mean), Some(var), Some(gamma), Some(beta)], x.shape(), false),
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
    let sums = match x.device() {
        Device::Cpu(cpu) => {
            let (xs, gs, m, v) = (cpu_data(x), cpu_data(g), cpu_data(mean), cpu_data(var));
            let (sg, sgx): (Vec<f32>, Vec<f32>) = cpu.install(|| {
                (0..s.c)
                    .into_par_iter()
                    .map(|c| {
                        let inv_std = 1.0 / (v[c] + eps).sqrt();
                        s.channel(c).fold((0f32, 0f32), |(a, b), i| (a + gs[i], b + gs[i] * (xs[i] - m[c]) * inv_std))
                    })
                    .unzip()
            });
            cpu_tensor([sg, sgx].concat(), &[2 * s.c], x.device())
        }
        Device::Gpu(_) => launch(&k::GRAD_SUMS, &s, eps, x, [Some(g), Some(mean), Some(var), None, None], &[2 * s.c], true)?,
    };
    let dx = match (need_input, training) {
        (false, _) => None,
        (true, false) => Some(eval_input_grad(x, g, mean, var, gamma, eps, &s)?),
        (true, true) => Some(match x.device() {
            Device::Cpu(cpu) => {
                let (xs, gs, m, v, ga, su) = (cpu_data(x), cpu_data(g), cpu_data(mean), cpu_data(var), cpu_data(gamma), cpu_data(&sums));
                let count = s.count() as f32;
                let out = cpu.install(|| {
                    (0..xs.len())
                        .into_par_iter()
                        .map(|i| {
                            let c = (i / s.hw) % s.c;
                            let inv_std = 1.0 / (v[c] + eps).sqrt();
                            let xhat = (xs[i] - m[c]) * inv_std;
                            ga[c] * inv_std * (gs[i] - (su[c] + xhat * su[s.c + c]) / count)
                        })
                        .collect()
                });
                cpu_tensor(out, x.shape(), x.device())
            }
            Device::Gpu(_) => launch(
                &k::BACKWARD_TRAIN,
                &s,
                eps,
                x,
                [Some(g), Some(mean), Some(var), Some(gamma), Some(&sums)],
                x.shape(),
                false,
            )?,
        }),
    };
    let (dgamma, dbeta) = if need_affine {
        (Some(narrow(&sums, 0, s.c, s.c)?), Some(narrow(&sums, 0, 0, s.c)?))
    } else {
        (None, None)
    };
    Ok((dx, dgamma, dbeta))
}

/// dx = γ/√(var + eps)·g, for statistics that do not depend on x.
fn eval_input_grad(x: &Tensor, g: &Tensor, mean: &Tensor, var: &Tensor, gamma: &Tensor, eps: f32, s: &BnShape) -> Result<Tensor> {
    match x.device() {
        Device::Cpu(cpu) => {
            let (gs, v, ga) = (cpu_data(g), cpu_data(var), cpu_data(gamma));
            let out = cpu.install(|| {
                (0..gs.len())
                    .into_par_iter()
                    .map(|i| {
                        let c = (i / s.hw) % s.c;
                        ga[c] / (v[c] + eps).sqrt() * gs[i]
                    })
                    .collect()
            });
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(_) => launch(&k::BACKWARD_EVAL, s, eps, x, [Some(g), Some(mean), Some(var), Some(gamma), None], x.shape(), false),
    }
}
