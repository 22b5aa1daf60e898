//! The fused torch.optim.AdamW update of one parameter tensor (decoupled weight decay, bias
//! correction). Kernel: shaders/wgsl/adamw.wgsl; CPU twin below; tests: tests/optim.rs and
//! tests/golden.rs (PyTorch's values).
use super::{cpu_data, cpu_tensor, gpu_buffer, launch_flat, same_device, same_shape, to_u32, Bind};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::Tensor;
use rayon::prelude::*;
use tessera_shaders::adamw::{ADAMW_STEP, ADAMW_TICK};

/// torch.optim.AdamW's hyper-parameters (lr is given per step); the default is PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWHyper {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWHyper {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

/// A parameter's AdamW state: the moving averages of the gradient and of its square, and the
/// step count t ([1]), as PyTorch's `exp_avg`, `exp_avg_sq` and `step`.
#[derive(Clone, Debug)]
pub struct AdamWState {
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    pub step: Tensor,
}

impl AdamWState {
    /// Zeros shaped like `param` (PyTorch's state before the first step).
    pub fn zeros(param: &Tensor) -> Result<Self> {
        let d = param.device();
        Ok(Self { exp_avg: Tensor::zeros(param.shape(), d)?, exp_avg_sq: Tensor::zeros(param.shape(), d)?, step: Tensor::zeros(&[1], d)? })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamWParams {
    n: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    eps: f32,
    weight_decay: f32,
    guarded: u32,
    _pad: [u32; 3],
}

/// One update of `param` and its `state`. The state changes in place (it is the optimizer's
/// own); the parameter changes in place on the CPU unless shared and is written anew on the
/// GPU, as in [`super::sgd_step_in_place`]. With a `guard` whose step is flagged, nothing
/// changes, the step count included.
pub fn adamw_step_in_place(param: &mut Tensor, grad: &Tensor, state: &mut AdamWState, lr: f32, h: AdamWHyper, guard: Option<&Tensor>) -> Result<()> {
    same_device("adamw_step", &[param, grad, &state.exp_avg, &state.exp_avg_sq, &state.step])?;
    same_shape("adamw_step", param, grad)?;
    same_shape("adamw_step", param, &state.exp_avg)?;
    same_shape("adamw_step", param, &state.exp_avg_sq)?;
    let unscale = super::guard::unscale("adamw_step", param, guard)?;
    match param.device().clone() {
        Device::Cpu(cpu) => {
            if guard.is_some_and(|g| cpu_data(g)[0] != 0.0) {
                return Ok(());
            }
            let t = cpu_data(&state.step)[0] + 1.0;
            state.step = cpu_tensor(vec![t], &[1], param.device());
            // Bias corrections in double precision, as PyTorch computes them in Python.
            let bc1 = 1.0 - (h.beta1 as f64).powf(t as f64);
            let bc2_sqrt = (1.0 - (h.beta2 as f64).powf(t as f64)).sqrt();
            let (step_size, bc2_sqrt) = ((lr as f64 / bc1) as f32, bc2_sqrt as f32);
            let decay = 1.0 - lr * h.weight_decay;
            let (b1, b2, eps) = (h.beta1, h.beta2, h.eps);
            let g = cpu_data(grad);
            let (m, v) = (state.exp_avg.cpu_values_mut(), state.exp_avg_sq.cpu_values_mut());
            let p = param.cpu_values_mut();
            const BLOCK: usize = 1 << 14;
            cpu.install(|| {
                p.par_chunks_mut(BLOCK).zip(m.par_chunks_mut(BLOCK)).zip(v.par_chunks_mut(BLOCK)).zip(g.par_chunks(BLOCK)).for_each(|(((p, m), v), g)| {
                    for (((p, m), v), g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        let g = g * unscale;
                        *m += (1.0 - b1) * (g - *m);
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        *p = *p * decay - step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                    }
                })
            });
            Ok(())
        }
        Device::Gpu(gpu) => {
            let n = param.numel();
            let params = |len: usize| -> Result<Vec<u8>> {
                let p = AdamWParams {
                    n: to_u32("adamw_step", len)?,
                    lr,
                    beta1: h.beta1,
                    beta2: h.beta2,
                    ln_beta1: (h.beta1 as f64).ln() as f32,
                    ln_beta2: (h.beta2 as f64).ln() as f32,
                    eps: h.eps,
                    weight_decay: h.weight_decay,
                    guarded: guard.is_some() as u32,
                    _pad: [0; 3],
                };
                Ok(bytemuck::bytes_of(&p).to_vec())
            };
            let new_p = Tensor::uninit_gpu(param.shape().to_vec(), &gpu)?;
            let [pb, gb, mb, vb, tb, new_pb] = [param, grad, &state.exp_avg, &state.exp_avg_sq, &state.step, &new_p].map(gpu_buffer);
            // Unguarded, the guard slot holds the parameter (read-only, never read).
            let guard_b = guard.map(gpu_buffer);
            let guard_bind = guard_b.as_deref().map_or(Bind::flat(&pb), Bind::Whole);
            let binds = [Bind::flat(&pb), Bind::flat(&gb), guard_bind, Bind::flat(&mb), Bind::flat(&vb), Bind::Whole(&tb), Bind::flat(&new_pb)];
            // The tick (t += 1) once, on the first window; then the update over every window.
            launch_flat(&gpu, &ADAMW_TICK, 1, &binds, |_, len| params(len))?;
            launch_flat(&gpu, &ADAMW_STEP, n, &binds, |_, len| params(len))?;
            *param = new_p;
            Ok(())
        }
    }
}
