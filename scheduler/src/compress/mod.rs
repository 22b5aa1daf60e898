//! `tessera compress`: prune (unstructured with a fixed mask, or whole channels), fine-tune
//! through the one training loop, quantise (int8 or f16), and report before and after.
pub mod measure;
pub mod prune;
pub mod quantize;

use crate::data::Dataset;
use crate::error::TrainError;
use crate::eval::{check_classes, model_from_checkpoint};
use crate::run_state::{counter_metadata, load_splits, model_tensors, PRUNED_KEY, QUANTIZED_KEY};
use crate::strategy::full::Full;
use crate::strategy::{fit, RunSpec, Strategy};
use crate::trainer::{OnNan, OptimConfig, StepInfo, Trainer};
use measure::{measure, MeasureSpec, Measurement};
use prune::{Pruned, Scope};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tessera_engine::checkpoint::{self, Checkpoint, FloatFormat};
use tessera_engine::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    Int8,
    F16,
}

impl std::str::FromStr for Quantize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "int8" => Ok(Self::Int8),
            "f16" => Ok(Self::F16),
            other => Err(format!("unknown quantisation `{other}`: expected int8 or f16")),
        }
    }
}

pub struct CompressConfig {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// The fraction pruned, if any.
    pub prune: Option<f32>,
    pub scope: Scope,
    /// Whole channels instead of single weights.
    pub structured: bool,
    pub quantize: Option<Quantize>,
    /// Training images that calibrate int8 activation scales.
    pub calibrate: usize,
    pub finetune_epochs: usize,
    pub optim: OptimConfig,
    pub batch: usize,
    pub seed: u64,
    pub limit_per_class: Option<usize>,
    /// Where fine-tuning runs.
    pub device: String,
    /// The GPU that latency is also measured on (none: CPU only).
    pub gpu: Option<String>,
    pub rounds: usize,
}

#[derive(Debug, Serialize)]
pub struct CompressReport {
    pub model: String,
    pub source: PathBuf,
    pub prune: Option<f32>,
    pub scope: String,
    pub structured: bool,
    pub quantize: Option<Quantize>,
    pub finetune_epochs: usize,
    pub pruned: Vec<(String, usize, usize)>,
    pub quantized_layers: usize,
    pub finetune_accuracy: Vec<f32>,
    pub before: Measurement,
    pub after: Measurement,
}

/// Runs the whole pipeline of `cfg`: `OUT/original.safetensors` (the checkpoint's weights and
/// buffers, no optimizer state) and `OUT/compressed.safetensors`, both measured, and
/// `OUT/compress.json` / `compress.md`.
pub fn compress(cfg: &CompressConfig, progress: &mut dyn FnMut(&StepInfo), say: &mut dyn FnMut(String)) -> Result<CompressReport, TrainError> {
    let device = Device::parse(&cfg.device)?;
    let ckpt = Checkpoint::load(&cfg.checkpoint)?;
    if ckpt.metadata.contains_key(QUANTIZED_KEY) {
        return Err(TrainError::Config(format!("{} is already quantised; compress the f32 checkpoint it came from", cfg.checkpoint.display())));
    }
    let model = model_from_checkpoint(&cfg.checkpoint, &ckpt, &device)?;
    let model_name = model.name.to_string();
    let (train, test) = load_splits(&cfg.data, cfg.limit_per_class)?;
    check_classes(&cfg.checkpoint, &model, &cfg.data, &test)?;
    std::fs::create_dir_all(&cfg.out).map_err(|error| TrainError::Io { path: cfg.out.clone(), error })?;
    let mut metadata = HashMap::from([("model".to_string(), model_name.clone()), ("source".to_string(), cfg.checkpoint.display().to_string())]);
    // A file compressed again keeps saying what it already is (narrower layers must load so).
    if let Some(pruned) = ckpt.metadata.get(PRUNED_KEY) {
        metadata.insert(PRUNED_KEY.into(), pruned.clone());
    }
    metadata.extend(counter_metadata(&model));
    let original = cfg.out.join("original.safetensors");
    checkpoint::save(&original, &model_tensors(&model), &metadata)?;

    let mut pruned: Vec<Pruned> = Vec::new();
    if let Some(fraction) = cfg.prune {
        pruned = if cfg.structured { prune::prune_channels(&model, fraction, &cfg.scope)? } else { prune::prune_unstructured(&model, fraction, &cfg.scope)? };
        let (removed, of): (usize, usize) = pruned.iter().fold((0, 0), |(r, o), p| (r + p.removed, o + p.of));
        let unit = if cfg.structured { "channels" } else { "weights" };
        say(format!("pruned {removed} of {of} {unit} in {} layers ({})", pruned.len(), cfg.scope));
        if metadata.get(PRUNED_KEY).is_none_or(|p| p != "channels") {
            metadata.insert(PRUNED_KEY.into(), if cfg.structured { "channels" } else { "unstructured" }.into());
        }
    }
    let (model, finetune_accuracy) = finetune(cfg, model, &train, &test, &device, progress)?;
    // Masks have done their work; the zeros are in the weights.
    model.net.named_params().iter().try_for_each(|(_, p)| p.set_mask(None))?;
    let compressed = cfg.out.join("compressed.safetensors");
    let mut quantized_layers = 0;
    match cfg.quantize {
        Some(Quantize::Int8) => {
            let calibration = quantize::calibration_set(&train, cfg.calibrate);
            quantized_layers = quantize::quantize_int8(&model, &calibration, cfg.batch, &device)?.len();
            say(format!("int8: {quantized_layers} layers, activation scales from {} training images", calibration.len()));
            metadata.insert(QUANTIZED_KEY.into(), "int8".into());
            let (floats, ints) = quantize::file_tensors(&model);
            checkpoint::save_with_int8(&compressed, &floats, &ints, &metadata, FloatFormat::F32)?;
        }
        Some(Quantize::F16) => {
            metadata.insert(QUANTIZED_KEY.into(), "f16".into());
            checkpoint::save_as(&compressed, &model_tensors(&model), &metadata, FloatFormat::F16)?;
        }
        None => checkpoint::save(&compressed, &model_tensors(&model), &metadata)?,
    }
    let data_flags = match cfg.limit_per_class {
        Some(n) => format!("--data {} --limit-per-class {n}", cfg.data.display()),
        None => format!("--data {}", cfg.data.display()),
    };
    let spec = MeasureSpec { test: &test, batch: cfg.batch, rounds: cfg.rounds, gpu: cfg.gpu.clone(), data_flags };
    say(format!("measuring {}", original.display()));
    let before = measure(&original, &spec)?;
    say(format!("measuring {}", compressed.display()));
    let after = measure(&compressed, &spec)?;
    let report = CompressReport {
        model: model_name,
        source: cfg.checkpoint.clone(),
        prune: cfg.prune,
        scope: cfg.scope.to_string(),
        structured: cfg.structured,
        quantize: cfg.quantize,
        finetune_epochs: cfg.finetune_epochs,
        pruned: pruned.iter().map(|p| (p.layer.clone(), p.removed, p.of)).collect(),
        quantized_layers,
        finetune_accuracy,
        before,
        after,
    };
    write_report(&cfg.out, &report)?;
    Ok(report)
}

/// `cfg.finetune_epochs` epochs of the standard training step (cosine schedule from the
/// configured rate); masks keep pruned weights at zero. Returns the model and each epoch's
/// test accuracy.
fn finetune(
    cfg: &CompressConfig,
    model: tessera_models::Model,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    progress: &mut dyn FnMut(&StepInfo),
) -> Result<(tessera_models::Model, Vec<f32>), TrainError> {
    if cfg.finetune_epochs == 0 {
        return Ok((model, Vec::new()));
    }
    let spec = RunSpec { epochs: cfg.finetune_epochs, batch: cfg.batch, seed: cfg.seed, ..RunSpec::default() };
    spec.validate()?;
    let mut strategy = Full;
    let schedule = strategy.schedule(spec.total_steps(train.len()));
    let classes = train.classes().len();
    let mut t = Trainer::new(model, device.clone(), classes, &cfg.optim, schedule, OnNan::Stop)?;
    let records = fit(&mut t, &mut strategy, train, test, &spec, (0, 0), progress, &mut |_, _| Ok(()))?;
    Ok((t.model, records.iter().map(|r| r.test_accuracy).collect()))
}

fn write_report(out: &Path, r: &CompressReport) -> Result<(), TrainError> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|error| TrainError::Io { path, error })
    };
    write("compress.json", serde_json::to_string_pretty(r).map_err(|e| TrainError::Config(e.to_string()))? + "\n")?;
    write("compress.md", markdown(r))
}

fn markdown(r: &CompressReport) -> String {
    let mut s = format!("# Compression of `{}` ({})\n\n", r.source.display(), r.model);
    let what = [
        r.prune.map(|p| format!("{}{:.0} % pruned ({})", if r.structured { "channels: " } else { "weights: " }, p * 100.0, r.scope)),
        (r.finetune_epochs > 0).then(|| format!("fine-tuned {} epochs", r.finetune_epochs)),
        r.quantize.map(|q| format!("{q:?} weights").to_lowercase()),
    ];
    s += &what.into_iter().flatten().collect::<Vec<_>>().join(", ");
    s += "\n\n| sub-model | params before | params after | non-zeros before | non-zeros after | bytes before | bytes after | MFLOPs before | MFLOPs after | CPU ms before | CPU ms after | GPU ms before | GPU ms after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    let (b, a) = (&r.before, &r.after);
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    for (x, y) in b.parts.iter().chain([&b.total]).zip(a.parts.iter().chain([&a.total])) {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |\n",
            x.name,
            x.params,
            y.params,
            x.nonzeros,
            y.nonzeros,
            x.bytes,
            y.bytes,
            x.flops / 1e6,
            y.flops / 1e6,
            x.cpu_ms,
            y.cpu_ms,
            ms(x.gpu_ms),
            ms(y.gpu_ms)
        );
    }
    let ratio = |x: f64, y: f64| if y > 0.0 { format!("{:.2}×", x / y) } else { "–".into() };
    s += &format!("\nSmaller: {} (model tensors), file {} → {} bytes.\n\n", ratio(b.total.bytes as f64, a.total.bytes as f64), b.file_bytes, a.file_bytes);
    s += "| | test accuracy | loss | CPU ms / batch | GPU ms / batch |\n|---|---:|---:|---:|---:|\n";
    for (label, m) in [("before", b), ("after", a)] {
        s += &format!("| {label} | {:.2} % | {:.4} | {:.1} | {} |\n", m.accuracy * 100.0, m.loss, m.total.cpu_ms, ms(m.total.gpu_ms));
    }
    if let Some(g) = &a.gpu {
        s += &format!("\nGPU: {g}. ");
    }
    s += &format!("Accuracy over {} test images.\n\nMeasured by:\n\n", a.images);
    for m in [b, a] {
        s += &format!("    {}\n    {}\n", m.accuracy_command, m.latency_command);
    }
    s
}
