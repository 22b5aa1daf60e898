//! Pooling over NCHW planes: max, average (count_include_pad) and adaptive average, with
//! their backward. Kernels: shaders/wgsl/pool.wgsl; CPU twins below mirror the same window
//! rules; conformance: tests/ops_conformance.rs.
use super::{cpu_data, cpu_tensor, launch_map, same_device, to_u32};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use rayon::prelude::*;
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

    fn in_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// The input rows [start, end) of output row `o` along axis `i` (0 = H, 1 = W), clipped.
    fn span(&self, i: usize, o: usize) -> (usize, usize) {
        let size = if i == 0 { self.h } else { self.w };
        if self.kind == PoolKind::AdaptiveAvg {
            let n_out = if i == 0 { self.ho } else { self.wo };
            return (o * size / n_out, ((o + 1) * size).div_ceil(n_out));
        }
        let start = (o * self.stride[i]) as isize - self.padding[i] as isize;
        (start.max(0) as usize, ((start + self.kernel[i] as isize) as usize).min(size))
    }

    /// The divisor of an average window at (oh, ow).
    fn divisor(&self, oh: usize, ow: usize) -> f32 {
        match self.kind {
            PoolKind::AdaptiveAvg => {
                let ((y0, y1), (x0, x1)) = (self.span(0, oh), self.span(1, ow));
                ((y1 - y0) * (x1 - x0)) as f32
            }
            _ => (self.kernel[0] * self.kernel[1]) as f32,
        }
    }

    /// Offset within a plane of the first maximum of window (oh, ow); None if all padding.
    fn argmax(&self, plane: &[f32], oh: usize, ow: usize) -> Option<usize> {
        let ((y0, y1), (x0, x1)) = (self.span(0, oh), self.span(1, ow));
        let mut best: Option<(usize, f32)> = None;
        for y in y0..y1 {
            for x in x0..x1 {
                let v = plane[y * self.w + x];
                if best.is_none_or(|(_, m)| v > m || v.is_nan()) {
                    best = Some((y * self.w + x, v));
                }
            }
        }
        best.map(|(i, _)| i)
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

fn launch(kernel: &Kernel, s: &PoolShape, x: &Tensor, g: &Tensor, out_shape: [usize; 4]) -> Result<Tensor> {
    let u = |v| to_u32("pool", v);
    let total = out_shape.iter().product();
    let params = PoolParams {
        planes: u(s.n * s.c)?,
        h: u(s.h)?,
        w: u(s.w)?,
        ho: u(s.ho)?,
        wo: u(s.wo)?,
        kh: u(s.kernel[0])?,
        kw: u(s.kernel[1])?,
        stride: [u(s.stride[0])?, u(s.stride[1])?],
        pad: [u(s.padding[0])?, u(s.padding[1])?],
        total: u(total)?,
    };
    launch_map("pool", kernel, bytemuck::bytes_of(&params), &[x, g], &out_shape, total)
}

/// Pools `x` (shape checked by `s`).
pub fn pool_forward(x: &Tensor, s: &PoolShape) -> Result<Tensor> {
    if x.shape() != s.in_shape() {
        return Err(shape_err("pool", format!("input {:?} does not match {:?}", x.shape(), s.in_shape())));
    }
    match x.device() {
        Device::Cpu(cpu) => {
            let xs = cpu_data(x);
            let mut out = vec![0f32; s.out_shape().iter().product()];
            cpu.install(|| {
                out.par_chunks_mut((s.ho * s.wo).max(1)).enumerate().for_each(|(p, dst)| {
                    let plane = &xs[p * s.h * s.w..][..s.h * s.w];
                    for (o, d) in dst.iter_mut().enumerate() {
                        let (oh, ow) = (o / s.wo, o % s.wo);
                        *d = match s.kind {
                            PoolKind::Max => s.argmax(plane, oh, ow).map_or(f32::MIN, |i| plane[i]),
                            _ => {
                                let ((y0, y1), (x0, x1)) = (s.span(0, oh), s.span(1, ow));
                                let total: f32 = (y0..y1).flat_map(|y| (x0..x1).map(move |x| plane[y * s.w + x])).sum();
                                total / s.divisor(oh, ow)
                            }
                        };
                    }
                })
            });
            Ok(cpu_tensor(out, &s.out_shape(), x.device()))
        }
        Device::Gpu(_) => {
            let kernel = match s.kind {
                PoolKind::Max => &k::MAX_FORWARD,
                PoolKind::Avg => &k::AVG_FORWARD,
                PoolKind::AdaptiveAvg => &k::ADAPTIVE_AVG_FORWARD,
            };
            launch(kernel, s, x, x, s.out_shape())
        }
    }
}

/// The gradient of pooling with respect to its input `x`, given the upstream gradient `g`.
pub fn pool_backward(x: &Tensor, g: &Tensor, s: &PoolShape) -> Result<Tensor> {
    same_device("pool_backward", &[x, g])?;
    if g.shape() != s.out_shape() || x.shape() != s.in_shape() {
        return Err(shape_err("pool_backward", format!("input {:?} / gradient {:?} do not match {s:?}", x.shape(), g.shape())));
    }
    match x.device() {
        Device::Cpu(cpu) => {
            let (xs, gs) = (cpu_data(x), cpu_data(g));
            let mut out = vec![0f32; x.numel()];
            cpu.install(|| {
                out.par_chunks_mut((s.h * s.w).max(1)).enumerate().for_each(|(p, dst)| {
                    let plane = &xs[p * s.h * s.w..][..s.h * s.w];
                    let gp = &gs[p * s.ho * s.wo..][..s.ho * s.wo];
                    // Scatter per window: the same sums the GPU gathers per pixel.
                    for oh in 0..s.ho {
                        for ow in 0..s.wo {
                            let go = gp[oh * s.wo + ow];
                            if s.kind == PoolKind::Max {
                                if let Some(i) = s.argmax(plane, oh, ow) {
                                    dst[i] += go;
                                }
                                continue;
                            }
                            let ((y0, y1), (x0, x1)) = (s.span(0, oh), s.span(1, ow));
                            let share = go / s.divisor(oh, ow);
                            for y in y0..y1 {
                                for x in x0..x1 {
                                    dst[y * s.w + x] += share;
                                }
                            }
                        }
                    }
                })
            });
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(_) => {
            let kernel = match s.kind {
                PoolKind::Max => &k::MAX_BACKWARD,
                PoolKind::Avg => &k::AVG_BACKWARD,
                PoolKind::AdaptiveAvg => &k::ADAPTIVE_AVG_BACKWARD,
            };
            launch(kernel, s, x, g, s.in_shape())
        }
    }
}
