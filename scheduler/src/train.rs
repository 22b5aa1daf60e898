//! A training run: model, data, SGD with cosine annealing, per-epoch evaluation, checkpoints
//! and `metrics.jsonl`. The CLI's `tessera train` is a thin wrapper around [`train`].
use crate::data::{load_cifar_bin, load_image_folder, Augment, Batches, FolderOptions, ImageSet, Normalize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tessera_engine::autograd as ag;
use tessera_engine::checkpoint::{self, Checkpoint};
use tessera_engine::ops::SgdHyper;
use tessera_engine::optim::{Cosine, ParamGroup, Sgd};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::{build, Model};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] tessera_models::ModelError),
    #[error(transparent)]
    Engine(#[from] tessera_engine::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("non-finite {what} at epoch {epoch}, step {step}; first seen in {place} (the last good checkpoint is kept; --on-nan skip skips such batches)")]
    NonFinite { epoch: usize, step: usize, what: String, place: String },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: String,
    /// A folder with `train/` and `test/` image folders (the ImageNet layout).
    pub data: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub device: String,
    pub seed: u64,
    pub limit_per_class: Option<usize>,
    /// Where checkpoints and metrics.jsonl go (none: nothing is written).
    pub out: Option<PathBuf>,
    /// Continue from the newest `epoch-NNN.safetensors` in `out`.
    pub resume: bool,
    /// What a non-finite loss or gradient does: stop with an error, or skip the batch.
    pub on_nan: OnNan,
}

/// What training does with a batch whose loss or gradients are not finite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNan {
    #[default]
    Stop,
    Skip,
}

impl std::str::FromStr for OnNan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Self::Stop),
            "skip" => Ok(Self::Skip),
            other => Err(format!("unknown --on-nan `{other}`: expected stop or skip")),
        }
    }
}

/// Where non-finite values first appear for batch `x`: a parameter that already holds one,
/// else the first sub-model whose output has one (forward order), else the loss itself.
pub fn first_non_finite(model: &Model, x: &Var) -> Result<String, TrainError> {
    for (name, p) in model.net.named_params() {
        if !p.value().all_finite()? {
            return Ok(format!("parameter `{name}`"));
        }
    }
    let mut h = x.clone();
    for (i, sub) in model.submodels.iter().enumerate() {
        h = no_grad(|| model.net.forward_stage(i, &h))?;
        if !h.value().all_finite()? {
            return Ok(format!("the output of sub-model `{}`", sub.name));
        }
    }
    Ok("the loss (every layer's output is finite)".into())
}

/// The first parameter (forward order) whose gradient is not finite.
fn first_non_finite_grad(model: &Model) -> Result<Option<String>, TrainError> {
    for (name, p) in model.net.named_params() {
        if let Some(g) = p.grad() {
            if !g.all_finite()? {
                return Ok(Some(name));
            }
        }
    }
    Ok(None)
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: "resnet20-cifar".into(),
            data: PathBuf::from("../shared/data/cifar10"),
            epochs: 1,
            batch: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            device: "cpu".into(),
            seed: 0,
            limit_per_class: None,
            out: None,
            resume: false,
            on_nan: OnNan::Stop,
        }
    }
}

/// What a training step reports to the progress display.
pub struct StepInfo {
    pub epoch: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub images_per_sec: f32,
}

#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
    pub seconds: f32,
    pub images_per_sec: f32,
    /// Batches skipped for a non-finite loss or gradient (`OnNan::Skip`).
    pub skipped_batches: usize,
}

impl EpochReport {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"epoch\":{},\"train_loss\":{},\"train_accuracy\":{},\"test_loss\":{},\"test_accuracy\":{},\"seconds\":{},\"images_per_sec\":{},\"skipped_batches\":{}}}",
            self.epoch, self.train_loss, self.train_accuracy, self.test_loss, self.test_accuracy, self.seconds, self.images_per_sec, self.skipped_batches
        )
    }
}

/// Index of the largest value (the predicted class of a row of logits).
fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j)
}

/// How many rows of `logits` [batch, classes] have their top class equal to the label.
pub(crate) fn argmax_hits(logits: &[f32], classes: usize, labels: &[usize]) -> usize {
    labels.iter().enumerate().filter(|(i, &l)| argmax(&logits[i * classes..(i + 1) * classes]) == l).count()
}

/// Loss, accuracy and confusion matrix of a model on a data set.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub loss: f32,
    pub accuracy: f32,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<usize>>,
    pub classes: Vec<String>,
    /// Per test sample, in set order: its cross-entropy and whether the top class was right.
    pub sample_loss: Vec<f32>,
    pub sample_correct: Vec<bool>,
}

/// Evaluates `model` on `set` (eval mode, no gradients).
pub fn evaluate_full(model: &Model, set: &ImageSet, batch: usize, norm: Normalize, device: &Device) -> Result<EvalReport, TrainError> {
    model.net.set_training(false);
    let classes = set.classes.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut sample_loss, mut sample_correct) = (Vec::with_capacity(set.len()), Vec::with_capacity(set.len()));
    for b in Batches::new(set, batch, 0, 0, false, None, norm) {
        let (losses, logits) = no_grad(|| -> Result<(Vec<f32>, Vec<f32>), TrainError> {
            let x = Var::constant(Tensor::from_vec(b.x, &b.shape, device)?);
            let logits = model.net.forward(&x)?;
            let labels = tessera_engine::ops::Labels::new(logits.value(), &b.labels)?;
            Ok((tessera_engine::ops::cross_entropy_per_sample(logits.value(), &labels)?.to_vec()?, logits.value().to_vec()?))
        })?;
        sample_loss.extend(losses);
        for (i, &label) in b.labels.iter().enumerate() {
            let predicted = argmax(&logits[i * classes..(i + 1) * classes]);
            confusion[label][predicted] += 1;
            sample_correct.push(predicted == label);
        }
    }
    model.net.set_training(true);
    let n = set.len().max(1);
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let loss = (sample_loss.iter().map(|&l| l as f64).sum::<f64>() / n as f64) as f32;
    Ok(EvalReport { loss, accuracy: correct as f32 / n as f32, confusion, classes: set.classes.clone(), sample_loss, sample_correct })
}

/// Mean loss and accuracy of `model` on `set`.
pub fn evaluate(model: &Model, set: &ImageSet, batch: usize, norm: Normalize, device: &Device) -> Result<(f32, f32), TrainError> {
    evaluate_full(model, set, batch, norm, device).map(|r| (r.loss, r.accuracy))
}

/// The model a training checkpoint holds (its metadata names the architecture; the class
/// count is read off the final layer), with the checkpoint's weights loaded.
pub fn model_from_checkpoint(path: &Path, ckpt: &Checkpoint, device: &Device) -> Result<Model, TrainError> {
    let format = |detail: String| TrainError::Checkpoint(checkpoint::CheckpointError::Format { path: path.into(), detail });
    let name = ckpt.metadata.get("model").cloned().ok_or_else(|| format("no `model` in its metadata".into()))?;
    // The last parameter of every model is its classifier's bias or weight, [classes(, in)].
    let probe = build(&name, 1, &Device::cpu(), 0)?;
    let (head, _) = probe.net.named_params().pop().ok_or_else(|| format(format!("model `{name}` has no parameters")))?;
    let classes = ckpt.tensors.get(&head).map(|(_, shape)| shape[0]).ok_or_else(|| format(format!("tensor `{head}` is missing")))?;
    let model = build(&name, classes, device, 0)?;
    load_weights(&model, ckpt, device)?;
    Ok(model)
}

/// Evaluates a training checkpoint (its metadata names the model) on `data/test`.
pub fn evaluate_checkpoint(path: &Path, data: &Path, device: &str, batch: usize) -> Result<EvalReport, TrainError> {
    let device = Device::parse(device)?;
    let ckpt = Checkpoint::load(path)?;
    let name = ckpt.metadata.get("model").cloned().ok_or_else(|| {
        TrainError::Checkpoint(checkpoint::CheckpointError::Format { path: path.into(), detail: "no `model` in its metadata".into() })
    })?;
    let (_, test) = load_splits(data, None)?;
    let model = build(&name, test.classes.len(), &device, 0)?;
    load_weights(&model, &ckpt, &device)?;
    evaluate_full(&model, &test, batch, Normalize::CIFAR10, &device)
}

/// Saves weights, buffers, momentum buffers and the epoch to `dir/epoch-NNN.safetensors`.
fn save_checkpoint(dir: &Path, model: &Model, sgd: &Sgd, cfg: &TrainConfig, epoch: usize) -> Result<PathBuf, TrainError> {
    let mut tensors: Vec<(String, Tensor)> = model.net.named_params().into_iter().map(|(n, p)| (n, p.value())).collect();
    tensors.extend(model.net.named_buffers().into_iter().map(|(n, b)| (n, b.value())));
    for (n, p) in model.net.named_params() {
        if let Some(buf) = sgd.momentum_buffer(&p) {
            tensors.push((format!("optimizer.momentum.{n}"), buf.clone()));
        }
    }
    let mut meta = HashMap::from([
        ("model".to_string(), cfg.model.clone()),
        ("epoch".to_string(), epoch.to_string()),
        ("step".to_string(), sgd.steps_taken().to_string()),
        ("seed".to_string(), cfg.seed.to_string()),
    ]);
    for (name, counter) in model.net.named_counters() {
        meta.insert(format!("counter.{name}"), counter.load(std::sync::atomic::Ordering::Relaxed).to_string());
    }
    let path = dir.join(format!("epoch-{epoch:03}.safetensors"));
    checkpoint::save(&path, &tensors, &meta)?;
    Ok(path)
}

/// Loads a checkpoint's weights and buffers into `model` (names and shapes checked).
pub fn load_weights(model: &Model, ckpt: &Checkpoint, device: &Device) -> Result<(), TrainError> {
    for (name, p) in model.net.named_params() {
        p.set_value(ckpt.tensor(&name, p.value().shape(), device)?);
    }
    for (name, b) in model.net.named_buffers() {
        b.set_value(ckpt.tensor(&name, b.value().shape(), device)?);
    }
    Ok(())
}

/// The newest `epoch-NNN.safetensors` in `dir`, with its epoch.
fn latest_checkpoint(dir: &Path) -> Result<Option<(usize, PathBuf)>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|error| TrainError::Io { path: dir.into(), error })?;
    Ok(entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let epoch = p.file_name()?.to_str()?.strip_prefix("epoch-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((epoch, p))
        })
        .max())
}

/// Restores weights, buffers, momentum, the step count and dropout seeds; returns the epoch.
fn resume_from(dir: &Path, model: &Model, sgd: &mut Sgd, cfg: &TrainConfig, device: &Device) -> Result<usize, TrainError> {
    let (epoch, path) = latest_checkpoint(dir)?.ok_or_else(|| TrainError::Resume(format!("no epoch-NNN.safetensors in {}", dir.display())))?;
    let ckpt = Checkpoint::load(&path)?;
    let meta = |k: &str| ckpt.metadata.get(k).cloned().unwrap_or_default();
    if meta("model") != cfg.model {
        return Err(TrainError::Resume(format!("{} holds model `{}`, not `{}`", path.display(), meta("model"), cfg.model)));
    }
    load_weights(model, &ckpt, device)?;
    let mut buffers = Vec::new();
    for (name, p) in model.net.named_params() {
        let key = format!("optimizer.momentum.{name}");
        if ckpt.tensors.contains_key(&key) {
            buffers.push((p.clone(), ckpt.tensor(&key, p.value().shape(), device)?));
        }
    }
    let step = meta("step").parse().map_err(|_| TrainError::Resume(format!("{}: bad `step` metadata", path.display())))?;
    sgd.restore(step, buffers);
    for (name, counter) in model.net.named_counters() {
        if let Ok(v) = meta(&format!("counter.{name}")).parse() {
            counter.store(v, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(epoch)
}

/// The train and test sets under `data`: the CIFAR-10 binary release (`data_batch_1.bin` …
/// `data_batch_5.bin`, `test_batch.bin`) when present, else `train/` and `test/` image folders.
pub fn load_splits(data: &Path, limit_per_class: Option<usize>) -> Result<(ImageSet, ImageSet), TrainError> {
    if data.join("data_batch_1.bin").is_file() {
        let train: Vec<PathBuf> = (1..=5).map(|i| data.join(format!("data_batch_{i}.bin"))).collect();
        let train_refs: Vec<&Path> = train.iter().map(PathBuf::as_path).collect();
        let limit = |set: ImageSet| match limit_per_class {
            None => set,
            Some(n) => set.first_per_class(n),
        };
        return Ok((limit(load_cifar_bin(&train_refs)?), limit(load_cifar_bin(&[&data.join("test_batch.bin")])?)));
    }
    let opts = FolderOptions { limit_per_class, ..Default::default() };
    Ok((load_image_folder(&data.join("train"), &opts)?, load_image_folder(&data.join("test"), &opts)?))
}

/// Trains per `cfg`, calling `progress` after every step; returns one report per epoch.
pub fn train(cfg: &TrainConfig, progress: &mut dyn FnMut(&StepInfo)) -> Result<Vec<EpochReport>, TrainError> {
    let device = Device::parse(&cfg.device)?;
    let (train_set, test_set) = load_splits(&cfg.data, cfg.limit_per_class)?;
    let model = build(&cfg.model, train_set.classes.len(), &device, cfg.seed)?;
    let params = model.net.named_params().into_iter().map(|(_, p)| p).collect();
    let hyper = SgdHyper { momentum: cfg.momentum, dampening: 0.0, weight_decay: cfg.weight_decay, nesterov: false };
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch);
    let mut sgd = Sgd::new(vec![ParamGroup::new("all", params)], cfg.lr, hyper)
        .with_schedule(Cosine { total_steps: steps_per_epoch * cfg.epochs });
    if let Some(out) = &cfg.out {
        std::fs::create_dir_all(out).map_err(|error| TrainError::Io { path: out.clone(), error })?;
    }
    let done = match (&cfg.out, cfg.resume) {
        (Some(out), true) => resume_from(out, &model, &mut sgd, cfg, &device)?,
        (None, true) => return Err(TrainError::Resume("--resume needs --out (the run folder)".into())),
        _ => 0,
    };
    let norm = Normalize::CIFAR10;
    let mut reports = Vec::new();
    for epoch in done + 1..=cfg.epochs {
        let start = Instant::now();
        let (mut loss_sum, mut hits, mut seen, mut skipped) = (0f64, 0usize, 0usize, 0usize);
        model.net.set_training(true);
        for (step, b) in Batches::new(&train_set, cfg.batch, cfg.seed, epoch as u64, true, Some(Augment::CIFAR), norm).enumerate() {
            let x = Var::constant(Tensor::from_vec(b.x, &b.shape, &device)?);
            let logits = model.net.forward(&x)?;
            let loss = ag::cross_entropy(&logits, &b.labels)?;
            let loss_value = loss.value().to_vec()?[0];
            // A non-finite loss, or after backward a non-finite gradient, never reaches the weights.
            let bad = if !loss_value.is_finite() {
                Some((format!("loss {loss_value}"), first_non_finite(&model, &x)?))
            } else {
                loss.backward()?;
                first_non_finite_grad(&model)?.map(|name| ("gradient".to_string(), format!("parameter `{name}`")))
            };
            if let Some((what, place)) = bad {
                sgd.zero_grad();
                match cfg.on_nan {
                    OnNan::Stop => return Err(TrainError::NonFinite { epoch, step: step + 1, what, place }),
                    OnNan::Skip => {
                        skipped += 1;
                        continue;
                    }
                }
            }
            sgd.step()?;
            sgd.zero_grad();
            loss_sum += loss_value as f64 * b.labels.len() as f64;
            hits += argmax_hits(&logits.value().to_vec()?, train_set.classes.len(), &b.labels);
            seen += b.labels.len();
            progress(&StepInfo {
                epoch,
                step: step + 1,
                steps_per_epoch,
                loss: (loss_sum / seen as f64) as f32,
                accuracy: hits as f32 / seen as f32,
                images_per_sec: seen as f32 / start.elapsed().as_secs_f32(),
            });
        }
        let train_seconds = start.elapsed().as_secs_f32();
        let (test_loss, test_accuracy) = evaluate(&model, &test_set, cfg.batch, norm, &device)?;
        let report = EpochReport {
            epoch,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: hits as f32 / seen.max(1) as f32,
            test_loss,
            test_accuracy,
            seconds: start.elapsed().as_secs_f32(),
            images_per_sec: seen as f32 / train_seconds,
            skipped_batches: skipped,
        };
        if let Some(out) = &cfg.out {
            save_checkpoint(out, &model, &sgd, cfg, epoch)?;
            let path = out.join("metrics.jsonl");
            let io = |error| TrainError::Io { path: path.clone(), error };
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
            writeln!(f, "{}", report.to_json()).map_err(io)?;
        }
        reports.push(report);
    }
    Ok(reports)
}
