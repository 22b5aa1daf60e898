//! Softmax, log-softmax and cross-entropy over the last axis. Kernels:
//! shaders/wgsl/softmax.wgsl; CPU twins below; conformance: tests/ops_conformance.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, launch_rows, same_device, same_shape, to_u32, Bind};
use crate::cpu::CpuBackend;
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::gpu::GpuBackend;
use crate::tensor::Storage;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;
use tessera_shaders::softmax as k;
use tessera_shaders::Kernel;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    cols: u32,
    inv_rows: f32,
    smoothing: f32,
}

/// [rows, cols] of a tensor seen as rows over its last axis.
fn rows_cols(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    match x.shape() {
        [] => Err(shape_err(op, "needs at least one axis, got a scalar")),
        [.., cols] if *cols == 0 => Err(shape_err(op, format!("last axis is empty in {:?}", x.shape()))),
        [.., cols] => Ok((x.numel() / cols, *cols)),
    }
}

fn logsumexp(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
}

/// Runs one row kernel on the GPU: bindings x, g, labels, out.
#[allow(clippy::too_many_arguments)]
/// One row kernel over `rows` rows of `cols` values; rows beyond one binding run in windows
/// of whole rows. `g` is a tensor of x's shape or a scalar (cross-entropy's upstream
/// gradient, bound whole); `out_shape` holds a row of cols values or one value per row.
fn launch_softmax(
    gpu: &Arc<GpuBackend>,
    op: &'static str,
    kernel: &Kernel,
    x: &Tensor,
    g: &Tensor,
    labels: Option<&Labels>,
    out_shape: &[usize],
    rows: usize,
    cols: usize,
) -> Result<Tensor> {
    let out = Tensor::uninit_gpu(out_shape.to_vec(), gpu)?;
    let (xb, gb, ob) = (gpu_buffer(x), gpu_buffer(g), gpu_buffer(&out));
    // Kernels without labels still bind the slot (one layout per module): x will do.
    let lb = labels.and_then(|l| l.gpu.as_ref()).map(gpu_buffer);
    let label_bind = lb.as_deref().map_or(Bind::Rows(&xb, cols), Bind::flat);
    let g_bind = if g.numel() == x.numel() { Bind::Rows(&gb, cols) } else { Bind::Whole(&gb) };
    let out_row = out.numel() / rows.max(1);
    let binds = [Bind::Rows(&xb, cols), g_bind, label_bind, Bind::Rows(&ob, out_row)];
    launch_rows(gpu, kernel, (rows, 1), &binds, |_, count| {
        let smoothing = labels.map_or(0.0, |l| l.smoothing);
        let params = SoftmaxParams { rows: to_u32(op, count)?, cols: to_u32(op, cols)?, inv_rows: 1.0 / rows.max(1) as f32, smoothing };
        Ok(bytemuck::bytes_of(&params).to_vec())
    })?;
    Ok(out)
}

/// Row-wise map on the CPU: f(x_row, g_row, row_index) → out_row.
fn cpu_rows(cpu: &CpuBackend, x: &Tensor, g: &Tensor, cols: usize, f: impl Fn(&[f32], &[f32], usize, &mut [f32]) + Sync) -> Tensor {
    let (xs, gs) = (cpu_data(x), cpu_data(g));
    let mut out = vec![0f32; x.numel()];
    cpu.install(|| {
        out.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
            let gr = gs.get(r * cols..(r + 1) * cols).unwrap_or(&[]);
            f(&xs[r * cols..(r + 1) * cols], gr, r, o)
        })
    });
    cpu_tensor(out, x.shape(), x.device())
}

/// softmax over the last axis.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = rows_cols("softmax", x)?;
    match x.device() {
        Device::Cpu(cpu) => Ok(cpu_rows(cpu, x, x, cols, |xr, _, _, o| {
            let lse = logsumexp(xr);
            o.iter_mut().zip(xr).for_each(|(o, v)| *o = (v - lse).exp());
        })),
        Device::Gpu(gpu) => launch_softmax(gpu, "softmax", &k::SOFTMAX_FORWARD, x, x, None, x.shape(), rows, cols),
    }
}

/// The gradient of softmax given its output `y` and the upstream gradient `g`.
pub fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_device("softmax_backward", &[y, g])?;
    same_shape("softmax_backward", y, g)?;
    let (rows, cols) = rows_cols("softmax_backward", y)?;
    match y.device() {
        Device::Cpu(cpu) => Ok(cpu_rows(cpu, y, g, cols, |yr, gr, _, o| {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            o.iter_mut().enumerate().for_each(|(j, o)| *o = yr[j] * (gr[j] - dot));
        })),
        Device::Gpu(gpu) => launch_softmax(gpu, "softmax_backward", &k::SOFTMAX_BACKWARD, y, g, None, y.shape(), rows, cols),
    }
}

/// log-softmax over the last axis.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let (rows, cols) = rows_cols("log_softmax", x)?;
    match x.device() {
        Device::Cpu(cpu) => Ok(cpu_rows(cpu, x, x, cols, |xr, _, _, o| {
            let lse = logsumexp(xr);
            o.iter_mut().zip(xr).for_each(|(o, v)| *o = v - lse);
        })),
        Device::Gpu(gpu) => launch_softmax(gpu, "log_softmax", &k::LOG_SOFTMAX_FORWARD, x, x, None, x.shape(), rows, cols),
    }
}

/// The gradient of log-softmax given its output `y` and the upstream gradient `g`.
pub fn log_softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_device("log_softmax_backward", &[y, g])?;
    same_shape("log_softmax_backward", y, g)?;
    let (rows, cols) = rows_cols("log_softmax_backward", y)?;
    match y.device() {
        Device::Cpu(cpu) => Ok(cpu_rows(cpu, y, g, cols, |yr, gr, _, o| {
            let total: f32 = gr.iter().sum();
            o.iter_mut().enumerate().for_each(|(j, o)| *o = gr[j] - yr[j].exp() * total);
        })),
        Device::Gpu(gpu) => launch_softmax(gpu, "log_softmax_backward", &k::LOG_SOFTMAX_BACKWARD, y, g, None, y.shape(), rows, cols),
    }
}

/// Integer class labels for cross-entropy, checked against the class count once and kept in
/// the form each backend reads.
pub struct Labels {
    values: Vec<usize>,
    /// The labels as u32 values on the GPU (a tensor only as a carrier of the buffer).
    gpu: Option<Tensor>,
    /// Label smoothing ε: the target is (1 − ε)·onehot + ε/classes (PyTorch's
    /// `label_smoothing`); 0 by default.
    smoothing: f32,
}

impl Labels {
    /// Checks `labels` against `logits` ([batch, classes]) and stages them on its device.
    pub fn new(logits: &Tensor, labels: &[usize]) -> Result<Self> {
        let op = "cross_entropy";
        let [batch, classes] = logits.shape() else {
            return Err(shape_err(op, format!("logits must be [batch, classes], got {:?}", logits.shape())));
        };
        if labels.len() != *batch {
            return Err(shape_err(op, format!("{} labels for a batch of {batch} (logits {:?})", labels.len(), logits.shape())));
        }
        if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, &l)| l >= *classes) {
            return Err(shape_err(op, format!("label {bad} at index {i} is out of range for {classes} classes (logits {:?})", logits.shape())));
        }
        let gpu = match logits.device() {
            Device::Cpu(_) => None,
            Device::Gpu(gpu) => {
                let as_u32: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
                let buffer = gpu.upload_bytes(bytemuck::cast_slice(&as_u32))?;
                Some(Tensor::from_storage(Storage::Gpu(Arc::new(buffer)), vec![labels.len()], logits.device().clone()))
            }
        };
        Ok(Self { values: labels.to_vec(), gpu, smoothing: 0.0 })
    }

    /// These labels with label smoothing `smoothing` (ε in [0, 1]).
    pub fn smoothed(self, smoothing: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&smoothing) {
            return Err(shape_err("cross_entropy", format!("label smoothing must be in [0, 1], got {smoothing}")));
        }
        Ok(Self { smoothing, ..self })
    }

    pub fn values(&self) -> &[usize] {
        &self.values
    }

    /// The labels' u32 buffer on a GPU (None on the CPU).
    pub(crate) fn gpu_tensor(&self) -> Option<&Tensor> {
        self.gpu.as_ref()
    }
}

/// Per-sample cross-entropy losses [batch]: logsumexp(x_n) − x_n[label_n], or with label
/// smoothing ε ([`Labels::smoothed`]) logsumexp(x_n) − (1 − ε)·x_n[label_n] − ε·mean_j x_nj.
/// The mean over the batch (PyTorch's default reduction) is `ops::mean` of this.
pub fn cross_entropy_per_sample(logits: &Tensor, labels: &Labels) -> Result<Tensor> {
    let (rows, cols) = rows_cols("cross_entropy", logits)?;
    match logits.device() {
        Device::Cpu(_) => {
            let xs = cpu_data(logits);
            let eps = labels.smoothing;
            let out = (0..rows).map(|r| {
                let row = &xs[r * cols..(r + 1) * cols];
                let mean = if eps != 0.0 { row.iter().sum::<f32>() / cols as f32 } else { 0.0 };
                logsumexp(row) - (1.0 - eps) * row[labels.values[r]] - eps * mean
            });
            Ok(cpu_tensor(out.collect(), &[rows], logits.device()))
        }
        Device::Gpu(gpu) => launch_softmax(gpu, "cross_entropy", &k::CROSS_ENTROPY_FORWARD, logits, logits, Some(labels), &[rows], rows, cols),
    }
}

/// The gradient of mean cross-entropy with respect to the logits, given the scalar upstream
/// gradient `g`: (softmax(x) − target) · g / batch, target = (1 − ε)·onehot(label) + ε/classes.
pub fn cross_entropy_backward(logits: &Tensor, labels: &Labels, g: &Tensor) -> Result<Tensor> {
    same_device("cross_entropy_backward", &[logits, g])?;
    let (rows, cols) = rows_cols("cross_entropy_backward", logits)?;
    if g.numel() != 1 {
        return Err(shape_err("cross_entropy_backward", format!("upstream gradient must be a scalar, got {:?}", g.shape())));
    }
    match logits.device() {
        Device::Cpu(cpu) => {
            let scale = cpu_data(g)[0] / rows as f32;
            let (eps, spread) = (labels.smoothing, labels.smoothing / cols as f32);
            Ok(cpu_rows(cpu, logits, logits, cols, |xr, _, r, o| {
                let lse = logsumexp(xr);
                o.iter_mut().zip(xr).for_each(|(o, v)| *o = ((v - lse).exp() - spread) * scale);
                o[labels.values[r]] -= (1.0 - eps) * scale;
            }))
        }
        Device::Gpu(gpu) => launch_softmax(gpu, "cross_entropy_backward", &k::CROSS_ENTROPY_BACKWARD, logits, g, Some(labels), logits.shape(), rows, cols),
    }
}
