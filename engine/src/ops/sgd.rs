//! The fused torch.optim.SGD update of one parameter tensor. Kernel: shaders/wgsl/sgd.wgsl;
//! CPU twin below; tests: tests/optim.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, launch_flat, same_device, same_shape, to_u32, Bind};
use crate::cpu::CpuBackend;
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;
use rayon::prelude::*;
use tessera_shaders::sgd::SGD_STEP;

/// torch.optim.SGD's hyper-parameters (lr is given per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}

impl Default for SgdHyper {
    /// The usual image-classification settings (torch.optim.SGD's own default is no momentum
    /// and no weight decay): momentum 0.9, weight decay 5e-4.
    fn default() -> Self {
        Self { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: u32,
    first_step: u32,
    guarded: u32,
}

/// One update: returns the new parameter and (with momentum) the new momentum buffer.
/// `buf` is None on a parameter's first step. The functional form of [`sgd_step_in_place`].
pub fn sgd_step(param: &Tensor, grad: &Tensor, buf: Option<&Tensor>, lr: f32, h: SgdHyper) -> Result<(Tensor, Option<Tensor>)> {
    let (mut param, mut buf) = (param.clone(), buf.cloned());
    sgd_step_in_place(&mut param, grad, &mut buf, lr, h, None)?;
    Ok((param, buf))
}

/// One update of `param` and (with momentum) its momentum buffer `buf`, None before the first
/// step. On the CPU the values change in place unless another tensor shares them (then they
/// are copied first), like PyTorch's in-place `p.add_`; on the GPU new buffers are written.
/// With a `guard` (ops::guard's state) whose step is flagged, nothing changes (a momentum
/// buffer that did not exist yet starts as zeros).
pub fn sgd_step_in_place(param: &mut Tensor, grad: &Tensor, buf: &mut Option<Tensor>, lr: f32, h: SgdHyper, guard: Option<&Tensor>) -> Result<()> {
    same_device("sgd_step", &[param, grad])?;
    let unscale = super::guard::unscale("sgd_step", param, guard)?;
    same_shape("sgd_step", param, grad)?;
    if let Some(b) = buf {
        same_shape("sgd_step", param, b)?;
    }
    let with_momentum = h.momentum != 0.0;
    match param.device().clone() {
        Device::Cpu(cpu) => {
            if guard.is_some_and(|g| cpu_data(g)[0] != 0.0) {
                if with_momentum && buf.is_none() {
                    *buf = Some(cpu_tensor(vec![0f32; param.numel()], param.shape(), param.device()));
                }
                return Ok(());
            }
            if with_momentum && buf.is_none() {
                // m = d on the first step: start from zeros with dampening off.
                *buf = Some(cpu_tensor(vec![0f32; param.numel()], param.shape(), param.device()));
                let first = SgdHyper { dampening: 0.0, ..h };
                return update_cpu(&cpu, param, grad, buf.as_mut(), (lr, unscale), first);
            }
            update_cpu(&cpu, param, grad, buf.as_mut().filter(|_| with_momentum), (lr, unscale), h)
        }
        Device::Gpu(gpu) => {
            let n = param.numel();
            let params = |len: usize| -> Result<Vec<u8>> {
                let p = SgdParams {
                    n: to_u32("sgd_step", len)?,
                    lr,
                    momentum: h.momentum,
                    dampening: h.dampening,
                    weight_decay: h.weight_decay,
                    nesterov: h.nesterov as u32,
                    first_step: buf.is_none() as u32,
                    guarded: guard.is_some() as u32,
                };
                Ok(bytemuck::bytes_of(&p).to_vec())
            };
            let new_p = Tensor::uninit_gpu(param.shape().to_vec(), &gpu)?;
            // Without momentum the buffer slot is bound but never written: a 1-value placeholder.
            let new_b = Tensor::uninit_gpu(if with_momentum { param.shape().to_vec() } else { vec![1] }, &gpu)?;
            let (pb, gb, new_pb, new_bb) = (gpu_buffer(param), gpu_buffer(grad), gpu_buffer(&new_p), gpu_buffer(&new_b));
            let old_b = buf.as_ref().map_or_else(|| pb.clone(), gpu_buffer);
            let new_buf = if with_momentum { Bind::flat(&new_bb) } else { Bind::Whole(&new_bb) };
            // Unguarded, the guard slot holds the parameter (read-only, never read).
            let guard_b = guard.map(gpu_buffer);
            let guard_bind = guard_b.as_deref().map_or(Bind::flat(&pb), Bind::Whole);
            launch_flat(&gpu, &SGD_STEP, n, &[Bind::flat(&pb), Bind::flat(&gb), Bind::flat(&old_b), Bind::flat(&new_pb), new_buf, guard_bind], |_, len| {
                params(len)
            })?;
            *param = new_p;
            *buf = with_momentum.then_some(new_b);
            Ok(())
        }
    }
}

/// The CPU update in blocks of values per task, each loop free of branches so it vectorises:
/// d = g + wd·p; m = momentum·b + (1 − dampening)·d; p −= lr·(nesterov ? d + momentum·m : m),
/// or p −= lr·d without momentum; g is the gradient times `unscale` (1 / the loss scale).
fn update_cpu(cpu: &CpuBackend, param: &mut Tensor, grad: &Tensor, buf: Option<&mut Tensor>, (lr, unscale): (f32, f32), h: SgdHyper) -> Result<()> {
    const BLOCK: usize = 1 << 14;
    let g = cpu_data(grad);
    let p = param.cpu_values_mut();
    let (wd, mom, keep) = (h.weight_decay, h.momentum, 1.0 - h.dampening);
    cpu.install(|| match buf {
        None => p.par_chunks_mut(BLOCK).zip(g.par_chunks(BLOCK)).for_each(|(p, g)| {
            p.iter_mut().zip(g).for_each(|(p, g)| *p -= lr * (g * unscale + wd * *p));
        }),
        Some(buf) => {
            let b = buf.cpu_values_mut();
            p.par_chunks_mut(BLOCK).zip(b.par_chunks_mut(BLOCK)).zip(g.par_chunks(BLOCK)).for_each(|((p, b), g)| {
                let lanes = p.iter_mut().zip(b.iter_mut()).zip(g);
                if h.nesterov {
                    lanes.for_each(|((p, b), g)| {
                        let d = g * unscale + wd * *p;
                        *b = mom * *b + keep * d;
                        *p -= lr * (d + mom * *b);
                    })
                } else {
                    lanes.for_each(|((p, b), g)| {
                        *b = mom * *b + keep * (g * unscale + wd * *p);
                        *p -= lr * *b;
                    })
                }
            })
        }
    });
    Ok(())
}
