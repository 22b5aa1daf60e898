//! Pooling over NCHW planes: max, average (count_include_pad) and adaptive average, with
//! their backward. Kernels: shaders/wgsl/pool.wgsl; CPU twins (the same window rules):
//! pool_cpu.rs; conformance: tests/ops_conformance.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, launch_rows, pool_cpu, same_device, to_u32, Bind};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::tensor::Tensor;
use tessera_shaders::pool as k;
use tessera_shaders::Kernel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
    AdaptiveAvg,
}

/// Window geometry of a pooling op, derived once from the input shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub kind: PoolKind,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ho: usize,
    pub wo: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

fn nchw(op: &'static str, x: &[usize]) -> Result<[usize; 4]> {
    match *x {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(shape_err(op, format!("input must be 4-D [N, C, H, W], got {x:?}"))),
    }
}

impl PoolShape {
    /// max/avg pooling: Ho = ⌊(H + 2·pad − k) / stride⌋ + 1, pad ≤ k/2 (PyTorch's rule).
    pub fn window(kind: PoolKind, x: &[usize], kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2]) -> Result<Self> {
        let op = if kind == PoolKind::Max { "max_pool2d" } else { "avg_pool2d" };
        let [n, c, h, w] = nchw(op, x)?;
        if kernel.contains(&0) || stride.contains(&0) {
            return Err(shape_err(op, format!("kernel {kernel:?} and stride {stride:?} must be positive")));
        }
        if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
            return Err(shape_err(op, format!("padding {padding:?} must be at most half the kernel {kernel:?}")));
        }
        let out = |size: usize, i: usize| (size + 2 * padding[i]).checked_sub(kernel[i]).map(|r| r / stride[i] + 1);
        let (Some(ho), Some(wo)) = (out(h, 0), out(w, 1)) else {
            return Err(shape_err(op, format!("kernel {kernel:?} is larger than the padded input {x:?}")));
        };
        Ok(Self { kind, n, c, h, w, ho, wo, kernel, stride, padding })
    }

    /// adaptive average pooling to `out` = [Ho, Wo].
    pub fn adaptive(x: &[usize], out: [usize; 2]) -> Result<Self> {
        let [n, c, h, w] = nchw("adaptive_avg_pool2d", x)?;
        if out.contains(&0) {
            return Err(shape_err("adaptive_avg_pool2d", format!("output size {out:?} must be positive")));
        }
        let kind = PoolKind::AdaptiveAvg;
        Ok(Self { kind, n, c, h, w, ho: out[0], wo: out[1], kernel: [0; 2], stride: [1; 2], padding: [0; 2] })
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    pub(super) fn in_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    planes: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: [u32; 2],
    pad: [u32; 2],
    total: u32,
}

/// One pooling kernel over the planes (N·C of them), each invocation one value of the output
/// (shaped `out_shape`), reading a plane each of `x` (the input, or max backward's argmax)
/// and `g`; max_pool_forward also writes its argmax (`with_argmax`). Planes beyond one
/// binding run in windows of whole planes.
fn launch(kernel: &Kernel, s: &PoolShape, (x, g): (&Tensor, &Tensor), out_shape: [usize; 4], with_argmax: bool) -> Result<(Tensor, Option<Tensor>)> {
    let Device::Gpu(gpu) = x.device() else { return Err(Error::DeviceMismatch { op: "pool", left: x.device().to_string(), right: "a GPU".into() }) };
    let u = |v| to_u32("pool", v);
    let planes = s.n * s.c;
    let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
    let argmax = with_argmax.then(|| Tensor::uninit_gpu(out_shape.to_vec(), gpu)).transpose()?;
    let out_plane = out_shape[2] * out_shape[3];
    let (xb, gb, ob) = (gpu_buffer(x), gpu_buffer(g), gpu_buffer(&out));
    let ab = argmax.as_ref().map(gpu_buffer);
    let per_plane = |t: &Tensor| t.numel() / planes.max(1);
    let stand_in;
    let arg_bind = match &ab {
        Some(b) => Bind::Rows(b, out_plane),
        None => {
            stand_in = gpu.alloc(4)?; // binding 4 unwritten: a word stands in
            Bind::Whole(&stand_in)
        }
    };
    let binds = [Bind::Rows(&xb, per_plane(x)), Bind::Rows(&gb, per_plane(g)), Bind::Rows(&ob, out_plane), arg_bind];
    launch_rows(gpu, kernel, (planes, out_plane), &binds, |_, planes| {
        let params = PoolParams {
            planes: u(planes)?,
            h: u(s.h)?,
            w: u(s.w)?,
            ho: u(s.ho)?,
            wo: u(s.wo)?,
            kh: u(s.kernel[0])?,
            kw: u(s.kernel[1])?,
            stride: [u(s.stride[0])?, u(s.stride[1])?],
            pad: [u(s.padding[0])?, u(s.padding[1])?],
            total: u(planes * out_plane)?,
        };
        Ok(bytemuck::bytes_of(&params).to_vec())
    })?;
    Ok((out, argmax))
}

fn check_input(op: &'static str, x: &Tensor, s: &PoolShape) -> Result<()> {
    if x.shape() != s.in_shape() {
        return Err(shape_err(op, format!("input {:?} does not match {:?}", x.shape(), s.in_shape())));
    }
    Ok(())
}

/// Pools `x` (shape checked by `s`).
pub fn pool_forward(x: &Tensor, s: &PoolShape) -> Result<Tensor> {
    check_input("pool", x, s)?;
    match (x.device(), s.kind) {
        (Device::Cpu(cpu), _) => Ok(cpu_tensor(pool_cpu::forward(cpu, s, cpu_data(x)), &s.out_shape(), x.device())),
        (Device::Gpu(_), PoolKind::Max) => Ok(max_pool_forward(x, s)?.0),
        (Device::Gpu(_), kind) => {
            let kernel = if kind == PoolKind::Avg { &k::AVG_FORWARD } else { &k::ADAPTIVE_AVG_FORWARD };
            Ok(launch(kernel, s, (x, x), s.out_shape(), false)?.0)
        }
    }
}

/// Max pooling's output and each window's first maximum as its offset in the plane (an f32
/// integer, exact below 2^24; −1 for a window that is all padding): what the backward routes
/// gradients by ([`max_pool_backward`]), as PyTorch's `return_indices` does, so that it
/// follows the forward's choice exactly (also when the input is only kept in f16).
pub fn max_pool_forward(x: &Tensor, s: &PoolShape) -> Result<(Tensor, Tensor)> {
    check_input("max_pool2d", x, s)?;
    if s.kind != PoolKind::Max {
        return Err(shape_err("max_pool2d", format!("{s:?} is not a max pooling")));
    }
    if s.h * s.w > 1 << 24 {
        return Err(shape_err("max_pool2d", format!("planes of {}×{} exceed the 2^24 offsets an f32 argmax holds exactly", s.h, s.w)));
    }
    match x.device() {
        Device::Cpu(cpu) => {
            let (out, argmax) = pool_cpu::max_forward(cpu, s, cpu_data(x));
            Ok((cpu_tensor(out, &s.out_shape(), x.device()), cpu_tensor(argmax, &s.out_shape(), x.device())))
        }
        Device::Gpu(_) => {
            let (out, argmax) = launch(&k::MAX_FORWARD, s, (x, x), s.out_shape(), true)?;
            Ok((out, argmax.ok_or_else(|| shape_err("max_pool2d", "the kernel wrote no argmax"))?))
        }
    }
}

/// The gradient of max pooling with respect to its input, from the forward's `argmax`
/// ([`max_pool_forward`]) and the upstream gradient `g`.
pub fn max_pool_backward(argmax: &Tensor, g: &Tensor, s: &PoolShape) -> Result<Tensor> {
    same_device("max_pool_backward", &[argmax, g])?;
    if g.shape() != s.out_shape() || argmax.shape() != s.out_shape() || s.kind != PoolKind::Max {
        return Err(shape_err("max_pool_backward", format!("argmax {:?} / gradient {:?} do not match {s:?}", argmax.shape(), g.shape())));
    }
    match argmax.device() {
        Device::Cpu(cpu) => Ok(cpu_tensor(pool_cpu::max_backward(cpu, s, cpu_data(argmax), cpu_data(g)), &s.in_shape(), argmax.device())),
        Device::Gpu(_) => Ok(launch(&k::MAX_BACKWARD, s, (argmax, g), s.in_shape(), false)?.0),
    }
}

/// The gradient of pooling with respect to its input `x`, given the upstream gradient `g`
/// (max pooling finds its argmax again: training keeps the forward's, [`max_pool_backward`]).
pub fn pool_backward(x: &Tensor, g: &Tensor, s: &PoolShape) -> Result<Tensor> {
    same_device("pool_backward", &[x, g])?;
    if g.shape() != s.out_shape() || x.shape() != s.in_shape() {
        return Err(shape_err("pool_backward", format!("input {:?} / gradient {:?} do not match {s:?}", x.shape(), g.shape())));
    }
    match (x.device(), s.kind) {
        (_, PoolKind::Max) => max_pool_backward(&max_pool_forward(x, s)?.1, g, s),
        (Device::Cpu(cpu), _) => Ok(cpu_tensor(pool_cpu::avg_backward(cpu, s, cpu_data(g)), x.shape(), x.device())),
        (Device::Gpu(_), kind) => {
            let kernel = if kind == PoolKind::Avg { &k::AVG_BACKWARD } else { &k::ADAPTIVE_AVG_BACKWARD };
            Ok(launch(kernel, s, (x, g), s.in_shape(), false)?.0)
        }
    }
}
