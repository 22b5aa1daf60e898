//! What a compressed (or original) model file costs and how well it does: per sub-model
//! parameters, non-zeros, bytes in the file and forward FLOPs; forward latency per batch on
//! the CPU and a GPU; test accuracy. Each figure comes from loading the file as `tessera
//! eval` and `tessera bench forward` do, and the report names those commands.
use crate::data::{Dataset, LoaderSpec};
use crate::error::TrainError;
use crate::eval::{evaluate, model_from_checkpoint};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::Model;

#[derive(Clone, Debug, Serialize)]
pub struct PartCost {
    pub name: String,
    pub params: usize,
    pub nonzeros: usize,
    /// Bytes of the part's tensors in the file (weights, buffers, scales).
    pub bytes: usize,
    /// Forward FLOPs for one image (2 per multiply-add of convs and linear layers).
    pub flops: f64,
    /// Median forward time of the part for one batch, milliseconds (CPU, GPU).
    pub cpu_ms: f64,
    pub gpu_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub file: PathBuf,
    pub file_bytes: u64,
    pub parts: Vec<PartCost>,
    pub total: PartCost,
    /// The GPU of `total.gpu_ms`, if one was timed.
    pub gpu: Option<String>,
    pub accuracy: f32,
    pub loss: f32,
    pub images: usize,
    pub accuracy_command: String,
    pub latency_command: String,
}

/// How [`measure`] times and scores: batch and rounds of the latency, the test set, and the
/// text of the data flags (`--data D [--limit-per-class N]`) for the commands it names.
pub struct MeasureSpec<'a> {
    pub test: &'a Dataset,
    pub batch: usize,
    pub rounds: usize,
    pub gpu: Option<String>,
    pub data_flags: String,
}

/// Median milliseconds of a forward pass of `batch` images through the model in `file` on
/// `device` (eval mode, after one untimed pass), in total and per sub-model: each stage waits
/// for its output before the next starts, so the parts add up to the total.
pub fn forward_latency(file: &Path, device: &Device, batch: usize, rounds: usize) -> Result<(f64, Vec<f64>), TrainError> {
    let model = model_from_checkpoint(file, &Checkpoint::load(file)?, device)?;
    model_latency(&model, device, batch, rounds)
}

/// [`forward_latency`] of a loaded `model` on its `device`.
pub fn model_latency(model: &Model, device: &Device, batch: usize, rounds: usize) -> Result<(f64, Vec<f64>), TrainError> {
    let px = model.input_size().unwrap_or(32);
    let n = batch * 3 * px * px;
    let x = Var::constant(Tensor::from_vec((0..n).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect(), &[batch, 3, px, px], device)?);
    model.net.set_training(false);
    let stages = model.submodels.len();
    let mut times = vec![Vec::new(); stages];
    let timed = no_grad(|| -> Result<(), TrainError> {
        for round in 0..=rounds.max(1) {
            let mut h = x.clone();
            for (stage, t) in times.iter_mut().enumerate() {
                let start = Instant::now();
                h = model.forward_stage(stage, &h)?;
                device.synchronize()?;
                if round > 0 {
                    t.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        Ok(())
    });
    model.net.set_training(true);
    timed?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rounds: Vec<f64> = (0..times[0].len()).map(|r| times.iter().map(|t| t[r]).sum()).collect();
    Ok((median(rounds), times.into_iter().map(median).collect()))
}

/// Measures the model file `file`.
pub fn measure(file: &Path, spec: &MeasureSpec) -> Result<Measurement, TrainError> {
    let cpu = Device::cpu();
    let ckpt = Checkpoint::load(file)?;
    let model = model_from_checkpoint(file, &ckpt, &cpu)?;
    let px = model.input_size().unwrap_or(32);
    let file_bytes = std::fs::metadata(file).map_err(|error| TrainError::Io { path: file.into(), error })?.len();
    let costs = model.stage_costs(px)?;
    let mut parts = Vec::new();
    for (sub, cost) in model.submodels.iter().zip(&costs) {
        let (mut params, mut nonzeros) = (0, 0);
        for (_, p) in model.params_of(sub) {
            let v = p.value().to_vec()?;
            params += v.len();
            nonzeros += v.iter().filter(|x| **x != 0.0).count();
        }
        let bytes = ckpt.stored_bytes.iter().filter(|(n, _)| sub.owns(n)).map(|(_, b)| b).sum();
        parts.push(PartCost { name: sub.name.clone(), params, nonzeros, bytes, flops: cost.flops, cpu_ms: 0.0, gpu_ms: None });
    }
    let (loss, accuracy) = evaluate(&model, spec.test, &LoaderSpec::eval(spec.batch), &cpu)?;
    let (cpu_ms, cpu_parts) = model_latency(&model, &cpu, spec.batch, spec.rounds)?;
    let gpu = spec.gpu.as_deref().map(Device::parse).transpose()?;
    let (gpu_ms, gpu_parts) = match &gpu {
        Some(g) => {
            let (total, parts) = forward_latency(file, g, spec.batch, spec.rounds)?;
            (Some(total), parts.into_iter().map(Some).collect())
        }
        None => (None, vec![None; parts.len()]),
    };
    for ((p, c), g) in parts.iter_mut().zip(cpu_parts).zip(gpu_parts) {
        (p.cpu_ms, p.gpu_ms) = (c, g);
    }
    let total = PartCost {
        name: "total".into(),
        params: parts.iter().map(|p| p.params).sum(),
        nonzeros: parts.iter().map(|p| p.nonzeros).sum(),
        bytes: ckpt.stored_bytes.values().sum(),
        flops: parts.iter().map(|p| p.flops).sum(),
        cpu_ms,
        gpu_ms,
    };
    let devices = std::iter::once("cpu").chain(spec.gpu.as_deref()).collect::<Vec<_>>().join(",");
    Ok(Measurement {
        file: file.into(),
        file_bytes,
        parts,
        total,
        gpu: gpu.map(|g| g.to_string()),
        accuracy,
        loss,
        images: spec.test.len(),
        accuracy_command: format!("tessera eval --checkpoint {} {} --device cpu", file.display(), spec.data_flags),
        latency_command: format!("tessera bench forward --checkpoint {} --batch {} --rounds {} --device {devices}", file.display(), spec.batch, spec.rounds),
    })
}
