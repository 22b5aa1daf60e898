//! `tessera compress` (prune, fine-tune, quantise, report: `tessera_scheduler::compress`) and
//! `tessera bench forward` (the forward latency the report quotes).
use crate::flags::{real32, whole};
use crate::table::{note, Table};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use tessera_engine::Device;
use tessera_scheduler::compress::measure::forward_latency;
use tessera_scheduler::compress::prune::Scope;
use tessera_scheduler::compress::{compress, CompressConfig, Quantize};
use tessera_scheduler::settings;
use tessera_scheduler::trainer::{OptimConfig, OptimizerKind};

#[derive(Clone, Copy, ValueEnum)]
pub enum Structure {
    /// Whole output channels: the layers and their readers shrink.
    Channels,
}

#[derive(Args)]
pub struct CompressArgs {
    /// A training checkpoint (`RUN/epoch-NNN.safetensors`) or a weights file from `export`.
    #[arg(long)]
    checkpoint: std::path::PathBuf,
    /// Data folder: fine-tuning and calibration read `train/`, accuracy `test/`.
    #[arg(long)]
    data: std::path::PathBuf,
    /// Prune this fraction of the weights (or of the channels, with --structured channels),
    /// smallest magnitude first.
    #[arg(long, value_parser = real32(settings::PRUNE))]
    prune: Option<f32>,
    /// What the fraction applies to: `per-layer`, `global` or `sub-model:NAME`.
    #[arg(long, default_value = "per-layer")]
    scope: Scope,
    /// Remove whole channels instead of single weights.
    #[arg(long, value_enum)]
    structured: Option<Structure>,
    /// Quantise the weights: `int8` (inference in int8 on the CPU and GPUs) or `f16` (storage).
    #[arg(long)]
    quantize: Option<Quantize>,
    /// Training images whose activations calibrate the int8 scales.
    #[arg(long, default_value_t = 512, value_parser = whole(settings::CALIBRATE))]
    calibrate: usize,
    /// Epochs of fine-tuning after pruning (the training step of `train`, cosine from --lr).
    #[arg(long, default_value_t = 0, value_parser = whole(settings::FINETUNE_EPOCHS))]
    finetune_epochs: usize,
    /// Fine-tuning's learning rate (SGD, momentum 0.9, weight decay 5e-4).
    #[arg(long, default_value_t = 0.01, value_parser = real32(settings::LR))]
    lr: f32,
    /// Images per batch (fine-tuning, calibration, evaluation and latency).
    #[arg(long, default_value_t = 128, value_parser = whole(settings::BATCH))]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N images of each class (training and test).
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// Where fine-tuning and calibration run: `cpu`, `gpu:N`, `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The GPU whose latency is also reported (`none`: the CPU only) [default: gpu:0 when
    /// there is one].
    #[arg(long)]
    gpu: Option<String>,
    /// Timed forward passes per latency (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = whole(settings::ROUNDS))]
    rounds: usize,
    /// Output folder: original.safetensors, compressed.safetensors, compress.md, compress.json.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Print JSON lines instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(a: CompressArgs) -> Result<()> {
    if a.prune.is_none() && a.quantize.is_none() {
        anyhow::bail!("nothing to do: give --prune FRACTION, --quantize int8|f16, or both");
    }
    if a.structured.is_some() && a.prune.is_none() {
        anyhow::bail!("--structured channels needs --prune FRACTION (the share of channels removed)");
    }
    let gpu = match a.gpu.as_deref() {
        Some("none") => None,
        Some(g) => Some(g.to_string()),
        None => (!tessera_engine::gpu::list_adapters().is_empty()).then(|| "gpu:0".to_string()),
    };
    let cfg = CompressConfig {
        checkpoint: a.checkpoint.clone(),
        data: a.data,
        out: a.out.clone(),
        prune: a.prune,
        scope: a.scope,
        structured: a.structured.is_some(),
        quantize: a.quantize,
        calibrate: a.calibrate,
        finetune_epochs: a.finetune_epochs,
        optim: OptimConfig::from_flags(OptimizerKind::Sgd, a.lr, None, None, 0)?,
        batch: a.batch,
        seed: a.seed,
        limit_per_class: a.limit_per_class,
        device: a.device,
        gpu,
        rounds: a.rounds,
    };
    let json = a.json;
    // Fine-tuning's progress rewrites one line; the next message starts a line of its own.
    let progress_line = std::cell::Cell::new(false);
    let r = compress(
        &cfg,
        &mut |s| {
            eprint!("\rfine-tuning epoch {}: step {}/{} loss {:.4}   ", s.epoch, s.step, s.steps_per_epoch, s.loss);
            progress_line.set(true);
        },
        &mut |line| {
            if progress_line.replace(false) {
                eprintln!();
            }
            eprintln!("{line}")
        },
    )
    .with_context(|| format!("compressing {}", a.checkpoint.display()))?;
    let mut parts = Table::new(
        "compress_part",
        &["sub_model", "params", "nonzeros", "bytes_before", "bytes_after", "MFLOPs_before", "MFLOPs_after", "cpu_ms_before", "cpu_ms_after"],
    );
    let (b, af) = (&r.before, &r.after);
    for (x, y) in b.parts.iter().chain([&b.total]).zip(af.parts.iter().chain([&af.total])) {
        parts.push(vec![
            json!(x.name),
            json!(format!("{} → {}", x.params, y.params)),
            json!(format!("{} → {}", x.nonzeros, y.nonzeros)),
            json!(x.bytes),
            json!(y.bytes),
            json!(x.flops / 1e6),
            json!(y.flops / 1e6),
            json!(x.cpu_ms),
            json!(y.cpu_ms),
        ]);
    }
    parts.print(json);
    let mut summary = Table::new("compress", &["model", "file", "bytes", "test_accuracy", "cpu_ms_per_batch", "gpu_ms_per_batch"]);
    for m in [b, af] {
        summary.push(vec![
            json!(r.model),
            json!(m.file.display().to_string()),
            json!(m.total.bytes),
            json!(m.accuracy),
            json!(m.total.cpu_ms),
            json!(m.total.gpu_ms),
        ]);
    }
    if !json {
        println!();
    }
    summary.print(json);
    note(json, &format!("wrote {}/compress.md and compress.json", a.out.display()));
    Ok(())
}

/// `tessera bench forward`: median forward latency of a model file per device.
pub fn bench_forward(checkpoint: &std::path::Path, batch: usize, rounds: usize, devices: &[String], json: bool) -> Result<()> {
    let mut table = Table::new("forward", &["checkpoint", "device", "batch", "ms_per_batch", "images_per_sec", "ms_per_sub_model"]);
    for d in devices {
        let device = Device::parse(d)?;
        let (ms, parts) = forward_latency(checkpoint, &device, batch, rounds).with_context(|| format!("timing {} on {device}", checkpoint.display()))?;
        let parts: Vec<String> = parts.iter().map(|p| format!("{p:.1}")).collect();
        table.push(vec![
            json!(checkpoint.display().to_string()),
            json!(device.to_string()),
            json!(batch),
            json!(ms),
            json!(batch as f64 / ms * 1e3),
            json!(parts.join(" + ")),
        ]);
    }
    table.print(json);
    Ok(())
}
