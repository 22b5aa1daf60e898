//! Sum / mean over chosen axes and their backward, broadcasting back over those axes. Both are
//! one strided gather-sum: kernels shaders/wgsl/reduce.wgsl (looped or one workgroup per
//! output, `ops::reduction_variant`); CPU twin `GatherSum::run_cpu`.
use super::{cpu_data, cpu_tensor, gemm, gpu_buffer, grid_1d, to_u32, GemmOpts, ReductionVariant};
use crate::device::Device;
use crate::error::Error;
use crate::error::{shape_err, Result};
use crate::gpu::{GpuBackend, GpuBuffer, Window};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;
use tessera_shaders::reduce::{GATHER_SUM, GATHER_SUM_WG};

const MAX_RANK: usize = 8;

/// out[o] = scale · Σ_r x[offset(o over kept) + offset(r over red)], row-major decoding.
#[derive(Clone, Debug, Default)]
struct GatherSum {
    kept_shape: Vec<usize>,
    kept_stride: Vec<usize>,
    red_shape: Vec<usize>,
    red_stride: Vec<usize>,
    scale: f32,
    base: usize,
}

fn offset_of(mut flat: usize, shape: &[usize], stride: &[usize]) -> usize {
    let mut off = 0;
    for (size, st) in shape.iter().zip(stride).rev() {
        off += (flat % size) * st;
        flat /= size;
    }
    off
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The uniform block of reduce.wgsl (`ReduceParams`).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    out_numel: u32,
    red_numel: u32,
    kept_rank: u32,
    red_rank: u32,
    scale: f32,
    base: u32,
    r_begin: u32,
    r_end: u32,
    kept_shape: [u32; MAX_RANK],
    kept_stride: [u32; MAX_RANK],
    red_shape: [u32; MAX_RANK],
    red_stride: [u32; MAX_RANK],
}

impl GatherSum {
    fn out_numel(&self) -> usize {
        self.kept_shape.iter().product()
    }

    fn red_numel(&self) -> usize {
        self.red_shape.iter().product()
    }

    /// The CPU twin of reduce.wgsl. The innermost reduced axis is walked as one run per
    /// position of the others, summed in vector lanes where it is contiguous (a plane of a
    /// convolution's bias gradient): coordinates are decoded per run, not per value.
    fn run_cpu(&self, x: &[f32]) -> Vec<f32> {
        let rank = self.red_shape.len();
        let (run_len, run_stride) = if rank == 0 { (1, 0) } else { (self.red_shape[rank - 1], self.red_stride[rank - 1]) };
        let (outer_shape, outer_stride) = (&self.red_shape[..rank.saturating_sub(1)], &self.red_stride[..rank.saturating_sub(1)]);
        let runs: usize = outer_shape.iter().product();
        (0..self.out_numel())
            .into_par_iter()
            .with_min_len((1usize << 14).div_ceil((runs * run_len).max(1)))
            .map(|o| {
                let base = self.base + offset_of(o, &self.kept_shape, &self.kept_stride);
                let sum: f32 = (0..runs)
                    .map(|r| {
                        let start = base + offset_of(r, outer_shape, outer_stride);
                        match run_stride {
                            1 => super::lane_sum(&x[start..start + run_len], &x[start..start + run_len], |v, _| v),
                            _ => (0..run_len).map(|j| x[start + j * run_stride]).sum(),
                        }
                    })
                    .sum();
                self.scale * sum
            })
            .collect()
    }

    /// The gather-sum on x's device; `pinned` fixes the GPU variant of a reduction.
    fn run(&self, op: &'static str, x: &Tensor, out_shape: &[usize], pinned: Option<ReductionVariant>) -> Result<Tensor> {
        if self.kept_shape.len() > MAX_RANK || self.red_shape.len() > MAX_RANK {
            return Err(shape_err(op, format!("rank above {MAX_RANK} is not supported (shape {:?})", x.shape())));
        }
        match x.device() {
            Device::Cpu(cpu) => {
                let out = cpu.install(|| self.run_cpu(cpu_data(x)));
                Ok(cpu_tensor(out, out_shape, x.device()))
            }
            Device::Gpu(gpu) => {
                let xb = gpu_buffer(x);
                let max = gpu.max_binding_bytes();
                if xb.len_bytes() <= max && 4 * self.out_numel() as u64 <= max {
                    return self.run_gpu(op, gpu, xb.whole(), out_shape, pinned);
                }
                self.run_gpu_blocked(op, gpu, &xb, out_shape, pinned)
            }
        }
    }

    /// The gather-sum on a GPU reading `x` through one binding window (`self.base` counts
    /// from the window's start).
    fn run_gpu(&self, op: &'static str, gpu: &Arc<GpuBackend>, x: Window, out_shape: &[usize], pinned: Option<ReductionVariant>) -> Result<Tensor> {
        let mut p = ReduceParams {
            out_numel: to_u32(op, self.out_numel())?,
            red_numel: to_u32(op, self.red_numel())?,
            kept_rank: self.kept_shape.len() as u32,
            red_rank: self.red_shape.len() as u32,
            scale: self.scale,
            base: to_u32(op, self.base)?,
            ..Default::default()
        };
        let fill = |dst: &mut [u32; MAX_RANK], src: &[usize]| -> Result<()> {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = to_u32(op, *s)?;
            }
            Ok(())
        };
        fill(&mut p.kept_shape, &self.kept_shape)?;
        fill(&mut p.kept_stride, &self.kept_stride)?;
        fill(&mut p.red_shape, &self.red_shape)?;
        fill(&mut p.red_stride, &self.red_stride)?;
        let run = |variant: ReductionVariant| -> Result<Tensor> {
            let (kernel, lanes) = match variant {
                ReductionVariant::Looped => (&GATHER_SUM, 1),
                ReductionVariant::PerWorkgroup => (&GATHER_SUM_WG, GATHER_SUM_WG.workgroup[0] as usize),
            };
            // Each summed value costs the loop over its coordinates too (rank + 1
            // trips); each of a workgroup's lanes takes 1/lanes of the values.
            let slice = crate::gpu::SOFTWARE_LOOP_TRIPS * lanes / (self.red_shape.len() + 1);
            super::sum_in_slices(gpu, self.red_numel(), slice, |begin, end| {
                let mut params = p;
                (params.r_begin, params.r_end) = (to_u32(op, begin)?, to_u32(op, end)?);
                let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
                let groups = grid_1d(gpu, op, self.out_numel() * lanes, kernel.workgroup[0] as usize)?;
                gpu.launch_windows(kernel, bytemuck::bytes_of(&params), &[x, gpu_buffer(&out).whole()], groups)?;
                Ok(out)
            })
        };
        // Copies and broadcasts (nothing reduced) take one invocation per value.
        let variant = match self.red_numel() {
            0 | 1 => ReductionVariant::Looped,
            values => super::reduction_variant(gpu, "gather_sum", (self.out_numel(), values), pinned, |v| run(v).map(drop))?,
        };
        run(variant)
    }

    /// A gather-sum whose input or output is bigger than one binding: blocks along the axis
    /// that spreads x widest (the largest stride), each reading one window of x. Blocks of a
    /// kept axis are rows of the output, computed apart and copied into place; blocks of a
    /// reduced axis are partial sums, added up.
    fn run_gpu_blocked(&self, op: &'static str, gpu: &Arc<GpuBackend>, x: &GpuBuffer, out_shape: &[usize], pinned: Option<ReductionVariant>) -> Result<Tensor> {
        let widest = |stride: &[usize]| stride.iter().enumerate().max_by_key(|(_, s)| **s).map(|(i, s)| (i, *s));
        // Split the output's first kept axis longer than 1 (its rows are contiguous: the axes
        // before it have one position each) unless a reduced axis spreads x further.
        let first_kept = self.kept_shape.iter().position(|&n| n > 1).or((!self.kept_shape.is_empty()).then_some(0));
        let kept0 = first_kept.map(|i| (i, self.kept_stride[i]));
        let (split_kept, axis, stride) = match (kept0, widest(&self.red_stride)) {
            (Some((_, ks)), Some((ri, rs))) if rs > ks => (false, ri, rs),
            (Some((ki, ks)), _) => (true, ki, ks),
            (None, Some((ri, rs))) => (false, ri, rs),
            (None, None) => return self.run_gpu(op, gpu, x.whole(), out_shape, pinned),
        };
        let size = if split_kept { self.kept_shape[axis] } else { self.red_shape[axis] };
        let align = gpu.binding_alignment_values();
        let max_values = gpu.max_binding_values();
        // The span of x one block of b rows reads, and the output it writes.
        let others: usize = self
            .kept_shape
            .iter()
            .zip(&self.kept_stride)
            .chain(self.red_shape.iter().zip(&self.red_stride))
            .map(|(n, s)| n.saturating_sub(1) * s)
            .sum::<usize>()
            - (size.saturating_sub(1)) * stride;
        let span = |b: usize| (b.max(1) - 1) * stride + others + 1 + align;
        let out_row = self.out_numel() / if split_kept { size.max(1) } else { 1 };
        let mut rows = size.max(1);
        while rows > 1 && (span(rows) > max_values || (split_kept && rows * out_row > max_values) || (!split_kept && out_row > max_values)) {
            rows = rows.div_ceil(2);
        }
        if span(rows) > max_values || out_row * if split_kept { rows } else { 1 } > max_values {
            let bytes = 4 * span(rows).max(out_row) as u64;
            return Err(Error::BindingTooLarge { kernel: GATHER_SUM.entry, bytes, max: gpu.max_binding_bytes(), adapter: gpu.name().to_string() });
        }
        let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
        let mut total: Option<Tensor> = None;
        for r0 in (0..size).step_by(rows) {
            let b = rows.min(size - r0);
            let first = self.base + r0 * stride;
            let start = first - first % align;
            let mut block = GatherSum { base: first - start, ..self.clone() };
            let block_shape: Vec<usize> = if split_kept {
                block.kept_shape[axis] = b;
                vec![b * out_row]
            } else {
                block.red_shape[axis] = b;
                out_shape.to_vec()
            };
            let part = block.run_gpu(op, gpu, x.values(start, first - start + span(b) - align), &block_shape, pinned)?;
            if split_kept {
                gpu.copy(&gpu_buffer(&part), 0, &gpu_buffer(&out), 4 * (r0 * out_row) as u64, 4 * (b * out_row) as u64)?;
            } else {
                total = Some(super::accumulate(total, part)?);
            }
        }
        Ok(total.map_or(out, |t| t.reshape(out_shape).expect("same numel")))
    }
}

/// Checks `axes` against `shape`: in range, no repeats. Returns them sorted.
fn check_axes(op: &'static str, shape: &[usize], axes: &[usize]) -> Result<Vec<usize>> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != axes.len() || sorted.last().is_some_and(|&a| a >= shape.len()) {
        return Err(shape_err(op, format!("axes {axes:?} are invalid for shape {shape:?}")));
    }
    Ok(sorted)
}

/// The shape of a reduction over `axes` (1 kept in place with `keepdim`, as in PyTorch).
pub fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(d, &s)| match (axes.contains(&d), keepdim) {
            (false, _) => Some(s),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

fn reduce(op: &'static str, x: &Tensor, axes: &[usize], keepdim: bool, mean: bool, pinned: Option<ReductionVariant>) -> Result<Tensor> {
    let axes = check_axes(op, x.shape(), axes)?;
    let stride = strides(x.shape());
    let mut g = GatherSum::default();
    for (d, &size) in x.shape().iter().enumerate() {
        let (shape, st) = if axes.contains(&d) { (&mut g.red_shape, &mut g.red_stride) } else { (&mut g.kept_shape, &mut g.kept_stride) };
        shape.push(size);
        st.push(stride[d]);
    }
    g.scale = if mean { 1.0 / g.red_numel().max(1) as f32 } else { 1.0 };
    g.run(op, x, &reduced_shape(x.shape(), &axes, keepdim), pinned)
}

/// Σ over `axes`.
pub fn sum(x: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor> {
    reduce("sum", x, axes, keepdim, false, None)
}

/// Σ over every axis of x but `axis` (a bias gradient: [C] from [N, C, H, W] or [N, C]). On
/// software adapters as products with vectors of ones, [A, C, B]·1_B and then 1_Aᵀ·[A, C] for
/// the axes before (A) and after (B) `axis`: there the register-tiled GEMM beats one strided
/// gather-sum of few outputs over many values (lavapipe: 2.2–2.6× over [32, C, 1024] and
/// [8, 64, 3136]) at the cost of one more launch; hardware GPUs keep the tuned gather-sum (one
/// launch, a workgroup per output). The products are not counted as GEMM FLOPs.
pub fn sum_except(x: &Tensor, axis: usize) -> Result<Tensor> {
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(shape_err("sum_except", format!("axis {axis} is outside {shape:?}")));
    }
    let software = matches!(x.device(), Device::Gpu(gpu) if gpu.is_software());
    if !software {
        let others: Vec<usize> = (0..shape.len()).filter(|&d| d != axis).collect();
        return sum(x, &others, false);
    }
    let (before, c, after): (usize, usize, usize) = (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product());
    let ones = |n: usize, shape: &[usize]| Tensor::from_vec(vec![1.0; n], shape, x.device());
    super::gemm::without_gemm_flops(|| {
        let per_slice = match after {
            1 => x.reshape(&[before, c])?,
            _ => gemm(&x.reshape(&[before, c, after])?, &ones(after, &[after, 1])?, None, GemmOpts::default())?.reshape(&[before, c])?,
        };
        match before {
            1 => per_slice.reshape(&[c]),
            _ => gemm(&ones(before, &[1, before])?, &per_slice, None, GemmOpts::default())?.reshape(&[c]),
        }
    })
}

/// [`sum`] and [`mean`] with the GPU reduction variant pinned.
pub(crate) fn sum_and_mean_with(x: &Tensor, axes: &[usize], keepdim: bool, pinned: ReductionVariant) -> Result<[Tensor; 2]> {
    Ok([reduce("sum", x, axes, keepdim, false, Some(pinned))?, reduce("mean", x, axes, keepdim, true, Some(pinned))?])
}

/// Mean over `axes`.
pub fn mean(x: &Tensor, axes: &[usize], keepdim: bool) -> Result<Tensor> {
    reduce("mean", x, axes, keepdim, true, None)
}

/// `alpha·g` repeated over `axes` to `shape`, where g has the shape of a reduction of `shape`
/// over `axes` (with or without keepdim): the backward of sum (alpha 1) and mean (1/count).
pub fn expand(g: &Tensor, shape: &[usize], axes: &[usize], alpha: f32) -> Result<Tensor> {
    let axes = check_axes("expand", shape, axes)?;
    let kept = reduced_shape(shape, &axes, false);
    if g.numel() != kept.iter().product::<usize>() {
        return Err(shape_err("expand", format!("gradient {:?} does not match {shape:?} reduced over {axes:?}", g.shape())));
    }
    let g_stride = strides(&kept);
    let mut next = g_stride.iter();
    let gather = GatherSum {
        kept_shape: shape.to_vec(),
        kept_stride: (0..shape.len()).map(|d| if axes.contains(&d) { 0 } else { *next.next().unwrap() }).collect(),
        red_shape: Vec::new(),
        red_stride: Vec::new(),
        scale: alpha,
        base: 0,
    };
    gather.run("expand", g, shape, None)
}

/// The slice `start..start + len` of `x` along `axis` (PyTorch's `narrow`), as a new tensor.
pub fn narrow(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let shape = x.shape();
    if axis >= shape.len() || start + len > shape[axis] {
        return Err(shape_err("narrow", format!("{start}..{} along axis {axis} is outside {shape:?}", start + len)));
    }
    if start == 0 && len == shape[axis] {
        return Ok(x.clone()); // the whole axis: the same values (tensors are immutable)
    }
    let stride = strides(shape);
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let gather = GatherSum { kept_shape: out_shape.clone(), kept_stride: stride.clone(), scale: 1.0, base: start * stride[axis], ..Default::default() };
    gather.run("narrow", x, &out_shape, None)
}
