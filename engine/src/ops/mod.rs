//! Ops: each file holds one op family's shape rules and its dispatch to the CPU twin and the
//! WGSL kernel of the same name in `shaders/wgsl/`.
pub mod adamw;
pub mod batchnorm;
mod batchnorm_cpu;
pub mod conv2d;
mod conv2d_bands;
mod conv2d_cpu;
pub mod elementwise;
pub mod gemm;
pub mod guard;
pub mod int8;
pub mod pool;
mod pool_cpu;
pub mod reduce;
pub mod sgd;
pub mod softmax;

pub use adamw::{adamw_step_in_place, AdamWHyper, AdamWState};
pub use batchnorm::{batch_norm_backward, batch_norm_backward_from_sums, batch_norm_forward, batch_stats, running_stats_update, BnShape};
pub use conv2d::{conv2d, conv2d_backward, Conv2dOpts, ConvShape};
pub use elementwise::{add, add_channel, axpby, concat, dropout, gelu, gelu_backward, mul, relu, relu_backward, scale};
pub use gemm::{gemm, gemm_mixed, matmul, GemmOpts};
pub use guard::{LossScaling, StepGuard, StepTotals};
pub use pool::{max_pool_backward, max_pool_forward, pool_backward, pool_forward, PoolKind, PoolShape};
pub use reduce::{expand, mean, narrow, sum, sum_except};
pub use sgd::{sgd_step, sgd_step_in_place, SgdHyper};
pub use softmax::{cross_entropy_backward, cross_entropy_per_sample, log_softmax, log_softmax_backward, softmax, softmax_backward, Labels};

use crate::cpu::CpuBackend;
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{GpuBackend, GpuBuffer};
use crate::tensor::{Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;
use tessera_shaders::Kernel;

/// Host values of a CPU tensor (callers have matched on the device first).
pub(crate) fn cpu_data(t: &Tensor) -> &[f32] {
    match t.storage() {
        Storage::Cpu(data) => data,
        Storage::Gpu(_) => unreachable!("device checked before dispatch"),
    }
}

/// The buffer of a GPU tensor (callers have matched on the device first).
pub(crate) fn gpu_buffer(t: &Tensor) -> Arc<GpuBuffer> {
    match t.storage() {
        Storage::Gpu(b) => b.clone(),
        Storage::Cpu(_) => unreachable!("device checked before dispatch"),
    }
}

/// Appends `part` to `acc` along `axis` (the first part starts it).
pub(crate) fn join(acc: Option<Tensor>, part: Tensor, axis: usize) -> Result<Tensor> {
    match acc {
        Some(acc) => elementwise::concat(&acc, &part, axis),
        None => Ok(part),
    }
}

/// Adds `part` to `acc` (the first part starts it).
pub(crate) fn accumulate(acc: Option<Tensor>, part: Tensor) -> Result<Tensor> {
    match acc {
        Some(acc) => elementwise::add(&acc, &part),
        None => Ok(part),
    }
}

/// A CPU tensor from computed values.
pub(crate) fn cpu_tensor(values: Vec<f32>, shape: &[usize], device: &Device) -> Tensor {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    Tensor::from_storage(Storage::Cpu(Arc::new(values)), shape.to_vec(), device.clone())
}

/// A new vector of `n` values computed in parallel, unit by unit: `values(first, len)` yields
/// the values first..first + len of one unit (`unit` values, the last unit maybe shorter: a
/// block of an elementwise op, a plane of a per-channel one); a task takes `units_per_task`
/// consecutive units. Each unit's iterator is a plain slice map, which the compiler
/// vectorizes (one iterator chained across units would not be). The values are written
/// straight into fresh memory — no zero-filling pass that they would overwrite (calloc'd
/// buffers cost a full extra write of every activation). Panics if a unit yields too few.
pub(crate) fn par_fill<I: Iterator<Item = f32>>(
    cpu: &CpuBackend,
    n: usize,
    (unit, units_per_task): (usize, usize),
    values: impl Fn(usize, usize) -> I + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    let unit = unit.max(1);
    let task = unit * units_per_task.max(1);
    cpu.install(|| {
        out.spare_capacity_mut()[..n].par_chunks_mut(task).enumerate().for_each(|(t, task_dst)| {
            for (u, dst) in task_dst.chunks_mut(unit).enumerate() {
                let (mut written, len) = (0, dst.len());
                for (d, v) in dst.iter_mut().zip(values(t * task + u * unit, len)) {
                    d.write(v);
                    written += 1;
                }
                assert_eq!(written, len, "par_fill: a unit yielded {written} of its {len} values");
            }
        })
    });
    // SAFETY: every unit wrote each of its values (asserted above; a panic propagates out of
    // `install` before this line, leaving the vector empty).
    unsafe { out.set_len(n) };
    out
}

/// Σ f(aᵢ, bᵢ) in eight independent lanes, which the compiler turns into vector adds (one
/// running f32 sum must add in order, one value per add latency) and which round less.
pub(crate) fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    const LANES: usize = 8;
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| f(*x, *y)).sum();
    let mut acc = [0f32; LANES];
    for (x, y) in a8.zip(b8) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The variants of the GPU reductions with few outputs over many values (batch-norm
/// statistics, sums over axes): one invocation per output looping over its values, or one
/// workgroup of 256 per output with a tree in workgroup memory. Tuned per adapter; the
/// conformance suite pins each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReductionVariant {
    Looped,
    PerWorkgroup,
}

/// Kernels with variants over fewer values than this (a reduction's outputs × values each, a
/// patch matrix) keep the heuristic's choice untimed.
pub(crate) const TUNE_MIN_VALUES: usize = 1 << 16;

/// The variant for a reduction of `outputs` sums over `values` each: `pinned`, else the tuned
/// choice for this size class (`time` runs one variant), else the heuristic. Hardware GPUs:
/// one workgroup per output while there are few outputs (a few thousand invocations cannot
/// fill a GPU). Software adapters pay dearly for workgroup barriers: on lavapipe a
/// per-workgroup batch-norm mean took 74 ms against 0.9 ms looped over [32, 2048, 1, 1], but
/// 12 against 19 ms over [8, 64, 56, 56], where the looped variant keeps all but one of its
/// threads idle; there it is per workgroup only where outputs hold many values (≥ 32 per output).
pub(crate) fn reduction_variant(
    gpu: &GpuBackend,
    what: &str,
    (outputs, values): (usize, usize),
    pinned: Option<ReductionVariant>,
    mut time: impl FnMut(ReductionVariant) -> Result<()>,
) -> Result<ReductionVariant> {
    use ReductionVariant::*;
    if let Some(v) = pinned {
        return Ok(v);
    }
    let heuristic = match gpu.is_software() {
        true if values < 32 * outputs => Looped,
        false if outputs > 1 << 14 => Looped,
        _ => PerWorkgroup,
    };
    if outputs * values < TUNE_MIN_VALUES {
        return Ok(heuristic);
    }
    let class = format!("{what}/o{}v{}", outputs.next_power_of_two(), values.next_power_of_two());
    let name = |v: &ReductionVariant| if *v == Looped { "looped" } else { "per_workgroup" };
    Ok(*crate::gpu::tune::choose(gpu, &class, &[&Looped, &PerWorkgroup], name, |v| time(*v))?.unwrap_or(&heuristic))
}

/// Σ over slices of `count` summed values of `launch(begin, end)`, each launch summing values
/// [begin, end): one launch, except on software adapters, where an invocation may loop at most
/// [`crate::gpu::SOFTWARE_LOOP_TRIPS`] times: there slices of `software_slice` values, what
/// that budget covers for the kernel.
pub(crate) fn sum_in_slices(gpu: &GpuBackend, count: usize, software_slice: usize, mut launch: impl FnMut(usize, usize) -> Result<Tensor>) -> Result<Tensor> {
    let slice = if gpu.is_software() { software_slice.max(1) } else { count.max(1) };
    let mut total = launch(0, slice.min(count))?;
    for begin in (slice..count).step_by(slice) {
        total = add(&total, &launch(begin, (begin + slice).min(count))?)?;
    }
    Ok(total)
}

/// Errors unless every tensor lives on the first one's device.
pub(crate) fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    tensors.windows(2).try_for_each(|w| w[0].check_same_device(op, w[1]))
}

/// Errors unless `a` and `b` have equal shapes.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(shape_err(op, format!("shapes differ: {:?} and {:?}", a.shape(), b.shape())))
    }
}

/// Workgroups for `n` invocations in workgroups of `per_group`: x up to the adapter's
/// per-dimension limit, then y (kernels fold gid.y back into a flat index).
pub(crate) fn grid_1d(gpu: &GpuBackend, op: &'static str, n: usize, per_group: usize) -> Result<[u32; 3]> {
    let groups = n.div_ceil(per_group);
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let (x, y) = if groups <= max { (groups, 1) } else { (max, groups.div_ceil(max)) };
    if y > max {
        return Err(Error::Unsupported { op, detail: format!("{n} values exceed one launch on this adapter") });
    }
    Ok([x as u32, y as u32, 1])
}

/// A dimension as the kernels' 32-bit index.
pub(crate) fn to_u32(op: &'static str, x: usize) -> Result<u32> {
    u32::try_from(x).map_err(|_| shape_err(op, format!("dimension {x} exceeds the GPU kernels' 32-bit indexing")))
}

/// How a kernel that works row by row (values, planes, images, softmax rows) sees one of its
/// storage bindings when the rows are split across launches.
#[derive(Clone, Copy)]
pub(crate) enum Bind<'a> {
    /// `n` values per row: each launch binds the window of the rows it covers.
    Rows(&'a GpuBuffer, usize),
    /// Bound whole in every launch (a bias, the guard state, a step counter).
    Whole(&'a GpuBuffer),
}

impl<'a> Bind<'a> {
    /// One value per row: the bindings of a flat kernel.
    pub(crate) fn flat(buffer: &'a GpuBuffer) -> Self {
        Bind::Rows(buffer, 1)
    }

    /// The binding of rows [first, first + count).
    pub(crate) fn window(&self, first: usize, count: usize) -> crate::gpu::Window<'a> {
        match *self {
            Bind::Rows(buffer, len) => buffer.values(first * len, count * len),
            Bind::Whole(buffer) => buffer.whole(),
        }
    }
}

/// Runs a flat kernel (one invocation per value) over `n` values; see [`launch_rows`].
pub(crate) fn launch_flat(gpu: &GpuBackend, kernel: &Kernel, n: usize, binds: &[Bind], params: impl Fn(usize, usize) -> Result<Vec<u8>>) -> Result<()> {
    launch_rows(gpu, kernel, (n, 1), binds, params)
}

/// Runs a kernel over `rows` independent rows, `per_row` invocations each, in as few launches
/// as the adapter's binding limit allows (one, unless a tensor is bigger than one binding):
/// launch s covers rows [first, first + count), binding the window of those rows of every
/// [`Bind::Rows`] binding, with the uniform block `params(first, count)` (its sizes count
/// rows; kernels whose result depends on a row's index in the whole tensor add `first`).
/// Windows start at multiples of the binding alignment, so `count` is a multiple of the rows
/// that takes for every binding.
pub(crate) fn launch_rows(
    gpu: &GpuBackend,
    kernel: &Kernel,
    (rows, per_row): (usize, usize),
    binds: &[Bind],
    params: impl Fn(usize, usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let per_launch = rows_per_launch(gpu, kernel.entry, rows, binds)?;
    let mut first = 0;
    loop {
        let count = per_launch.min(rows - first);
        let windows: Vec<crate::gpu::Window> = binds.iter().map(|b| b.window(first, count)).collect();
        let groups = grid_1d(gpu, kernel.entry, count * per_row, kernel.workgroup[0] as usize)?;
        gpu.launch_windows(kernel, &params(first, count)?, &windows, groups)?;
        first += count;
        if first >= rows {
            return Ok(());
        }
    }
}

/// How many of `rows` rows one launch may cover with `binds` (their [`Bind::Rows`] lengths):
/// all of them if every binding fits, else the most that fit one binding, a multiple of
/// the rows that keep every window's start aligned. An error names the kernel when not even
/// that many fit.
pub(crate) fn rows_per_launch(gpu: &GpuBackend, kernel: &'static str, rows: usize, binds: &[Bind]) -> Result<usize> {
    let row_lens: Vec<usize> = binds.iter().filter_map(|b| if let Bind::Rows(_, len) = b { Some(*len) } else { None }).collect();
    let align = gpu.binding_alignment_values();
    // Rows per aligned step: the lcm over bindings of align / gcd(align, row length).
    let step = row_lens.iter().fold(1, |q, &len| lcm(q, align / gcd(align, len.max(1))));
    let widest = row_lens.iter().copied().max().unwrap_or(1).max(1);
    if rows * widest <= gpu.max_binding_values() {
        return Ok(rows.max(1));
    }
    match gpu.max_binding_values() / widest / step * step {
        0 => Err(Error::BindingTooLarge { kernel, bytes: 4 * (step * widest) as u64, max: gpu.max_binding_bytes(), adapter: gpu.name().to_string() }),
        fit => Ok(fit),
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

/// The common launch of a map-like kernel: a new output of `out_shape`, `invocations`
/// invocations in workgroups of `kernel.workgroup[0]`, bindings `inputs` then the output.
pub(crate) fn launch_map(
    gpu: &Arc<GpuBackend>,
    op: &'static str,
    kernel: &Kernel,
    params: &[u8],
    inputs: &[&Tensor],
    out_shape: &[usize],
    invocations: usize,
) -> Result<Tensor> {
    let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
    let groups = grid_1d(gpu, op, invocations, kernel.workgroup[0] as usize)?;
    let buffers: Vec<Arc<GpuBuffer>> = inputs.iter().map(|t| gpu_buffer(t)).chain([gpu_buffer(&out)]).collect();
    let refs: Vec<&GpuBuffer> = buffers.iter().map(|b| b.as_ref()).collect();
    gpu.launch(kernel, params, &refs, groups)?;
    Ok(out)
}
