//! The fused torch.optim.SGD update of one parameter tensor. Kernel: shaders/wgsl/sgd.wgsl;
//! CPU twin below; tests: tests/optim.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, grid_1d, same_device, same_shape, to_u32};
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
    _pad: u32,
}

/// One update: returns the new parameter and (with momentum) the new momentum buffer.
/// `buf` is None on a parameter's first step.
pub fn sgd_step(param: &Tensor, grad: &Tensor, buf: Option<&Tensor>, lr: f32, h: SgdHyper) -> Result<(Tensor, Option<Tensor>)> {
    same_device("sgd_step", &[param, grad])?;
    same_shape("sgd_step", param, grad)?;
    if let Some(b) = buf {
        same_shape("sgd_step", param, b)?;
    }
    let with_momentum = h.momentum != 0.0;
    match param.device() {
        Device::Cpu(cpu) => {
            let (p, g) = (cpu_data(param), cpu_data(grad));
            let b = buf.map(cpu_data);
            // Blocks of values per task into preallocated outputs: a task (and a tuple) per
            // value made AlexNet's 61 M-parameter update twice PyTorch's time.
            const BLOCK: usize = 1 << 14;
            let n = p.len();
            let mut new_p = vec![0f32; n];
            let mut new_b = vec![0f32; if with_momentum { n } else { 0 }];
            // d = g + wd·p; m = momentum·b + (1 − dampening)·d (m = d on the first step);
            // p' = p − lr·(nesterov ? d + momentum·m : m), or p − lr·d without momentum.
            let update = |i: usize| -> (f32, f32) {
                let d = g[i] + h.weight_decay * p[i];
                if !with_momentum {
                    return (p[i] - lr * d, 0.0);
                }
                let m = match b {
                    Some(b) => h.momentum * b[i] + (1.0 - h.dampening) * d,
                    None => d,
                };
                (p[i] - lr * if h.nesterov { d + h.momentum * m } else { m }, m)
            };
            cpu.install(|| {
                if with_momentum {
                    new_p.par_chunks_mut(BLOCK).zip(new_b.par_chunks_mut(BLOCK)).enumerate().for_each(|(c, (np, nb))| {
                        for (j, (pv, bv)) in np.iter_mut().zip(nb.iter_mut()).enumerate() {
                            (*pv, *bv) = update(c * BLOCK + j);
                        }
                    })
                } else {
                    new_p.par_chunks_mut(BLOCK).enumerate().for_each(|(c, np)| {
                        np.iter_mut().enumerate().for_each(|(j, pv)| *pv = update(c * BLOCK + j).0)
                    })
                }
            });
            let new_b = with_momentum.then(|| cpu_tensor(new_b, param.shape(), param.device()));
            Ok((cpu_tensor(new_p, param.shape(), param.device()), new_b))
        }
        Device::Gpu(gpu) => {
            let n = param.numel();
            let params = SgdParams {
                n: to_u32("sgd_step", n)?,
                lr,
                momentum: h.momentum,
                dampening: h.dampening,
                weight_decay: h.weight_decay,
                nesterov: h.nesterov as u32,
                first_step: buf.is_none() as u32,
                _pad: 0,
            };
            let new_p = Tensor::uninit_gpu(param.shape().to_vec(), gpu)?;
            // Without momentum the buffer slot is bound but never written: a 1-value placeholder.
            let new_b = Tensor::uninit_gpu(if with_momentum { param.shape().to_vec() } else { vec![1] }, gpu)?;
            let pb = gpu_buffer(param);
            let old_b = buf.map_or_else(|| pb.clone(), gpu_buffer);
            let groups = grid_1d(gpu, "sgd_step", n, 256)?;
            gpu.launch(&SGD_STEP, bytemuck::bytes_of(&params), &[&pb, &gpu_buffer(grad), &old_b, &gpu_buffer(&new_p), &gpu_buffer(&new_b)], groups)?;
            Ok((new_p, with_momentum.then_some(new_b)))
        }
    }
}
