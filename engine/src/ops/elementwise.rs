//! Elementwise ops. Kernels: shaders/wgsl/elementwise.wgsl; CPU twins below (rayon);
//! conformance: tests/ops_conformance.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, grid_1d, same_device, same_shape, to_u32};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;
use tessera_shaders::elementwise as k;
use tessera_shaders::Kernel;

/// The uniform block of elementwise.wgsl (`EwParams`).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EwParams {
    n: u32,
    alpha: f32,
    beta: f32,
    inner: u32,
    channels: u32,
    _pad: [u32; 3],
}

/// Runs `kernel` over x (and y) into a new tensor shaped like x; `cpu` is its CPU twin,
/// mapping (x_i, y_i, i) to out_i.
fn map2(
    op: &'static str,
    kernel: &Kernel,
    x: &Tensor,
    y: &Tensor,
    params: EwParams,
    cpu: impl Fn(f32, &[f32], usize) -> f32 + Sync,
) -> Result<Tensor> {
    same_device(op, &[x, y])?;
    let n = x.numel();
    match x.device() {
        Device::Cpu(backend) => {
            let (xs, ys) = (cpu_data(x), cpu_data(y));
            let out = backend.install(|| (0..n).into_par_iter().map(|i| cpu(xs[i], ys, i)).collect());
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(gpu) => {
            let out = Tensor::uninit_gpu(x.shape().to_vec(), gpu)?;
            let params = EwParams { n: to_u32(op, n)?, ..params };
            let groups = grid_1d(gpu, op, n)?;
            gpu.launch(kernel, bytemuck::bytes_of(&params), &[&gpu_buffer(x), &gpu_buffer(y), &gpu_buffer(&out)], groups)?;
            Ok(out)
        }
    }
}

/// alpha·x + beta·y.
pub fn axpby(alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
    same_shape("axpby", x, y)?;
    map2("axpby", &k::AXPBY, x, y, EwParams { alpha, beta, ..Default::default() }, |a, ys, i| {
        alpha * a + beta * ys[i]
    })
}

/// x + y.
pub fn add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    axpby(1.0, x, 1.0, y)
}

/// alpha·x.
pub fn scale(x: &Tensor, alpha: f32) -> Result<Tensor> {
    // y = x with beta = 0: the kernel reads y but it contributes nothing.
    map2("scale", &k::AXPBY, x, x, EwParams { alpha, ..Default::default() }, |a, _, _| alpha * a)
}

/// x·y.
pub fn mul(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    same_shape("mul", x, y)?;
    map2("mul", &k::MUL, x, y, EwParams::default(), |a, ys, i| a * ys[i])
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    map2("relu", &k::RELU_FORWARD, x, x, EwParams::default(), |a, _, _| a.max(0.0))
}

/// The gradient of relu at `x` given the upstream gradient `g`: g·[x > 0].
pub fn relu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape("relu_backward", x, g)?;
    map2("relu_backward", &k::RELU_BACKWARD, x, g, EwParams::default(), |a, gs, i| if a > 0.0 { gs[i] } else { 0.0 })
}

/// x + b broadcast along `axis`: b has x.shape()[axis] values (a bias per feature or channel).
pub fn add_channel(x: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let channels = *x
        .shape()
        .get(axis)
        .ok_or_else(|| shape_err("add_channel", format!("axis {axis} out of range for shape {:?}", x.shape())))?;
    if b.shape() != [channels] {
        return Err(shape_err(
            "add_channel",
            format!("bias has shape {:?}; expected [{channels}] for axis {axis} of {:?}", b.shape(), x.shape()),
        ));
    }
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let params = EwParams {
        inner: to_u32("add_channel", inner.max(1))?,
        channels: to_u32("add_channel", channels.max(1))?,
        ..Default::default()
    };
    map2("add_channel", &k::ADD_CHANNEL, x, b, params, |a, bs, i| a + bs[(i / inner.max(1)) % channels])
}
