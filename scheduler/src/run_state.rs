//! A run's data and saved state: the train/test split of a data folder, per-epoch checkpoints
//! (weights, buffers, optimizer state, step, dropout seeds) and resuming from the newest.
use crate::data::{load_cifar_bin, Dataset, FolderIndex, FolderOptions, ImageSet};
use crate::error::TrainError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tessera_engine::checkpoint::{self, Checkpoint};
use tessera_engine::optim::{Optimizer, Rule};
use tessera_engine::{Device, Tensor};
use tessera_models::Model;

/// The train and test sets under `data`: the CIFAR-10 binary release (`data_batch_1.bin` …
/// `data_batch_5.bin`, `test_batch.bin`, decoded into memory: 180 MB) when present, else
/// `train/` and `test/` image folders, indexed and read image by image as batches need them.
pub fn load_splits(data: &Path, limit_per_class: Option<usize>) -> Result<(Dataset, Dataset), TrainError> {
    if data.join("data_batch_1.bin").is_file() {
        let train: Vec<PathBuf> = (1..=5).map(|i| data.join(format!("data_batch_{i}.bin"))).collect();
        let train_refs: Vec<&Path> = train.iter().map(PathBuf::as_path).collect();
        let limit = |set: ImageSet| -> Dataset {
            Arc::new(match limit_per_class {
                None => set,
                Some(n) => set.first_per_class(n),
            })
        };
        return Ok((limit(load_cifar_bin(&train_refs)?), limit(load_cifar_bin(&[&data.join("test_batch.bin")])?)));
    }
    let opts = FolderOptions { limit_per_class, ..Default::default() };
    Ok((Arc::new(FolderIndex::new(&data.join("train"), &opts)?), Arc::new(FolderIndex::new(&data.join("test"), &opts)?)))
}

/// The optimizer's name in checkpoint metadata.
fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::Sgd(_) => "sgd",
        Rule::AdamW(_) => "adamw",
    }
}

/// What a checkpoint records besides tensors.
pub struct CheckpointMeta<'a> {
    pub model: &'a str,
    /// Epochs completed.
    pub epoch: usize,
    pub seed: u64,
    /// Batches of epoch `epoch + 1` already trained: a checkpoint written when a run was
    /// interrupted mid-epoch (none: at an epoch's end).
    pub batches: Option<usize>,
}

/// The file of an interrupted run's checkpoint: `batches` batches into epoch `epoch`.
fn interrupted_name(epoch: usize, batches: usize) -> String {
    format!("interrupted-epoch-{epoch:03}-batch-{batches:06}.safetensors")
}

/// The newest interrupted-run checkpoint of epoch `epoch` in `dir`: (batches done, path).
fn interrupted_checkpoint(dir: &Path, epoch: usize) -> Result<Option<(usize, PathBuf)>, TrainError> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(numbered_files(dir, &format!("interrupted-epoch-{epoch:03}-batch-"))?.pop())
}

/// Files `<prefix><N>.safetensors` in `dir` with their N, by N.
fn numbered_files(dir: &Path, prefix: &str) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let entries = std::fs::read_dir(dir).map_err(|error| TrainError::Io { path: dir.into(), error })?;
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| Some((p.file_name()?.to_str()?.strip_prefix(prefix)?.strip_suffix(".safetensors")?.parse().ok()?, p)))
        .collect();
    found.sort();
    Ok(found)
}

/// Every `epoch-NNN.safetensors` of `dir`, by epoch.
pub fn epoch_checkpoints(dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    numbered_files(dir, "epoch-")
}

/// The model's parameters and buffers under their names: what a model file holds.
pub fn model_tensors(model: &Model) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = model.net.named_params().into_iter().map(|(n, p)| (n, p.value())).collect();
    tensors.extend(model.net.named_buffers().into_iter().map(|(n, b)| (n, b.value())));
    tensors
}

/// The model's random-number state (dropout mask seeds) as `counter.NAME` metadata entries.
pub fn counter_metadata(model: &Model) -> impl Iterator<Item = (String, String)> {
    model.net.named_counters().into_iter().map(|(name, counter)| (format!("counter.{name}"), counter.load(Ordering::Relaxed).to_string()))
}

/// Saves weights, buffers, optimizer state and the step to `dir/epoch-NNN.safetensors`.
pub fn save_checkpoint(dir: &Path, model: &Model, opt: &Optimizer, meta: &CheckpointMeta) -> Result<PathBuf, TrainError> {
    let mut tensors = model_tensors(model);
    for (n, p) in model.net.named_params() {
        for (state, t) in opt.state_of(&p) {
            tensors.push((format!("optimizer.{state}.{n}"), t));
        }
    }
    let mut metadata = HashMap::from([
        ("model".to_string(), meta.model.to_string()),
        ("epoch".to_string(), meta.epoch.to_string()),
        ("step".to_string(), opt.steps_taken().to_string()),
        ("seed".to_string(), meta.seed.to_string()),
        ("optimizer".to_string(), rule_name(opt.rule()).to_string()),
    ]);
    metadata.extend(counter_metadata(model));
    let name = match meta.batches {
        Some(batches) => {
            metadata.insert("batches".into(), batches.to_string());
            interrupted_name(meta.epoch + 1, batches)
        }
        None => format!("epoch-{:03}.safetensors", meta.epoch),
    };
    let path = dir.join(name);
    checkpoint::save(&path, &tensors, &metadata)?;
    if meta.batches.is_none() {
        // The epoch is complete: checkpoints of its interruptions are superseded.
        while let Some((_, old)) = interrupted_checkpoint(dir, meta.epoch)? {
            std::fs::remove_file(&old).map_err(|error| TrainError::Io { path: old.clone(), error })?;
        }
    }
    Ok(path)
}

/// Metadata of a compressed checkpoint (`tessera compress`): `tessera.pruned` = `channels`
/// (layers are narrower than the architecture's: shapes come from the file) or
/// `unstructured`; `tessera.quantized` = `int8` or `f16`.
pub const PRUNED_KEY: &str = "tessera.pruned";
pub const QUANTIZED_KEY: &str = "tessera.quantized";

/// Loads a checkpoint's weights and buffers into `model` (names and shapes checked; a
/// channel-pruned file's shapes replace the model's, then one forward pass checks that they
/// fit together). Layers stored as int8 (`L.weight` I8, `L.weight_scale` [O], `L.input_scale`
/// []) run int8 kernels from then on; their f32 weights hold the dequantised values.
pub fn load_weights(model: &Model, ckpt: &Checkpoint, device: &Device) -> Result<(), TrainError> {
    let adopt = ckpt.metadata.get(PRUNED_KEY).is_some_and(|v| v == "channels");
    let shape = |name: &str, current: Vec<usize>| match ckpt.tensors.get(name) {
        Some((_, stored)) if adopt => stored.clone(),
        _ => current,
    };
    for (name, p) in model.net.named_params() {
        p.set_value(ckpt.tensor(&name, &shape(&name, p.value().shape().to_vec()), device)?);
    }
    for (name, b) in model.net.named_buffers() {
        b.set_value(ckpt.tensor(&name, &shape(&name, b.value().shape().to_vec()), device)?);
    }
    let params: HashMap<String, Arc<tessera_engine::nn::Param>> = model.net.named_params().into_iter().collect();
    let bad = |name: &str, detail: String| checkpoint::CheckpointError::Tensor { path: ckpt.path.clone(), name: name.into(), detail };
    for (name, slot) in model.net.named_int8() {
        let scale_name = format!("{name}_scale");
        let Some((scales, _)) = ckpt.tensors.get(&scale_name) else {
            slot.set(None);
            continue;
        };
        let layer = name.strip_suffix(".weight").unwrap_or(&name);
        let input_name = format!("{layer}.input_scale");
        let (input, _) = ckpt.tensors.get(&input_name).ok_or_else(|| bad(&input_name, "missing (every int8 weight needs its input scale)".into()))?;
        let (q, q_shape) = &ckpt.tensors[&name];
        if q.iter().any(|v| v.fract() != 0.0 || v.abs() > 127.0) {
            return Err(bad(&name, "an int8 weight holds a value outside −127..=127".into()).into());
        }
        let bias = match params.get(&format!("{layer}.bias")) {
            Some(b) => b.value().to_vec()?,
            None => vec![0.0; q_shape.first().copied().unwrap_or(0)],
        };
        let values: Vec<i8> = q.iter().map(|&v| v as i8).collect();
        let w = tessera_engine::ops::int8::Int8Weights::new(values, q_shape, scales.clone(), input.first().copied().unwrap_or(0.0), bias, device)
            .map_err(|e| bad(&name, e.to_string()))?;
        params[&name].set_value(Tensor::from_vec(w.dequantized(), q_shape, device)?);
        slot.set(Some(Arc::new(w)));
    }
    if adopt {
        let input = model.input_size().unwrap_or(32);
        let x = tessera_engine::Var::constant(Tensor::zeros(&[1, 3, input, input], device)?);
        model.net.set_training(false);
        let fits = tessera_engine::no_grad(|| model.net.forward(&x)).map(drop);
        model.net.set_training(true);
        fits.map_err(|e| checkpoint::CheckpointError::Format { path: ckpt.path.clone(), detail: format!("its pruned layers do not fit together: {e}") })?;
    }
    Ok(())
}

/// The newest `epoch-NNN.safetensors` in `dir`, with its epoch (none when `dir` holds none
/// or does not exist).
pub fn latest_checkpoint(dir: &Path) -> Result<Option<(usize, PathBuf)>, TrainError> {
    if !dir.exists() {
        return Ok(None);
    }
    Ok(epoch_checkpoints(dir)?.pop())
}

/// Whether `dir` holds a training run's files (a checkpoint, an interrupted run's checkpoint,
/// or metrics.jsonl).
pub fn holds_a_run(dir: &Path) -> Result<bool, TrainError> {
    Ok(resume_point(dir)?.is_some() || dir.join("metrics.jsonl").exists())
}

/// Where a run in `dir` continues: (epochs completed, batches of the next epoch already
/// trained, the checkpoint holding that state) — an interrupted run's checkpoint of the epoch
/// after the newest complete one, else that complete one.
pub fn resume_point(dir: &Path) -> Result<Option<(usize, usize, PathBuf)>, TrainError> {
    let complete = latest_checkpoint(dir)?;
    let done = complete.as_ref().map_or(0, |(e, _)| *e);
    Ok(match interrupted_checkpoint(dir, done + 1)? {
        Some((batches, path)) => Some((done, batches, path)),
        None => complete.map(|(epoch, path)| (epoch, 0, path)),
    })
}

/// Removes a run's own files from `dir` (checkpoints, their partial files, metrics.jsonl),
/// leaving anything else in the folder alone: `--overwrite`.
pub fn clear_run(dir: &Path) -> Result<(), TrainError> {
    let io = |error| TrainError::Io { path: dir.into(), error };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let ours = name == "metrics.jsonl"
            || ((name.starts_with("epoch-") || name.starts_with("interrupted-epoch-"))
                && (name.ends_with(".safetensors") || name.ends_with(".safetensors.partial")));
        if ours && path.is_file() {
            std::fs::remove_file(&path).map_err(|error| TrainError::Io { path: path.clone(), error })?;
        }
    }
    Ok(())
}

/// Copies the checkpoint `saved` (verified first: its CRC) into `backup` under the same name,
/// written beside and renamed into place, and verifies the copy.
pub fn back_up(saved: &Path, backup: &Path) -> Result<PathBuf, TrainError> {
    Checkpoint::load(saved)?;
    std::fs::create_dir_all(backup).map_err(|error| TrainError::Io { path: backup.into(), error })?;
    let name = saved.file_name().ok_or_else(|| TrainError::Config(format!("{}: not a file name", saved.display())))?;
    let (copy, partial) = (backup.join(name), backup.join(format!("{}.partial", name.to_string_lossy())));
    std::fs::copy(saved, &partial).map_err(|error| TrainError::Io { path: partial.clone(), error })?;
    std::fs::rename(&partial, &copy).map_err(|error| TrainError::Io { path: copy.clone(), error })?;
    Checkpoint::load(&copy)?;
    Ok(copy)
}

/// Where a run continues when its checkpoints live in `dirs` (the run folder, then a backup
/// folder): the newest state — (epochs completed, batches of the next epoch, checkpoint) as
/// [`resume_point`] finds it in each folder — whose checkpoint verifies, and the newer
/// checkpoints that did not (each with why).
pub type Verified = ((usize, usize, PathBuf), Vec<(PathBuf, String)>);

pub fn verified_resume_point(dirs: &[&Path]) -> Result<Option<Verified>, TrainError> {
    let mut candidates = Vec::new();
    for dir in dirs.iter().filter(|d| d.exists()) {
        let complete = epoch_checkpoints(dir)?;
        for (epoch, path) in &complete {
            candidates.push((*epoch, 0, path.clone()));
        }
        let done = complete.last().map_or(0, |(e, _)| *e);
        if let Some((batches, path)) = interrupted_checkpoint(dir, done + 1)? {
            candidates.push((done, batches, path));
        }
    }
    // Newest first; between equal states, the earlier folder (the run's own) first.
    candidates.sort_by_key(|c| std::cmp::Reverse((c.0, c.1)));
    let mut failed = Vec::new();
    for (epoch, batches, path) in candidates {
        match Checkpoint::load(&path) {
            Ok(_) => return Ok(Some(((epoch, batches, path), failed))),
            Err(e) => failed.push((path, e.to_string())),
        }
    }
    Ok(None)
}

/// Restores weights, buffers, optimizer state, the step count and dropout seeds from where
/// the run in `dir` continues ([`resume_point`]); returns (epochs completed, batches of the
/// next epoch already trained).
pub fn resume_from(dir: &Path, model: &Model, opt: &mut Optimizer, model_name: &str, device: &Device) -> Result<(usize, usize), TrainError> {
    let (epoch, batches, path) = resume_point(dir)?.ok_or_else(|| TrainError::Resume(format!("no epoch-NNN.safetensors in {}", dir.display())))?;
    restore(&path, (epoch, batches), model, opt, model_name, device)
}

/// [`resume_from`] the newest checkpoint that verifies in `dirs` ([`verified_resume_point`]).
pub fn resume_from_verified(dirs: &[&Path], model: &Model, opt: &mut Optimizer, model_name: &str, device: &Device) -> Result<(usize, usize), TrainError> {
    let where_ = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ");
    let ((epoch, batches, path), _) = verified_resume_point(dirs)?.ok_or_else(|| TrainError::Resume(format!("no checkpoint that verifies in {where_}")))?;
    restore(&path, (epoch, batches), model, opt, model_name, device)
}

/// Restores the state of checkpoint `path` (epochs completed, batches of the next epoch).
fn restore(
    path: &Path,
    (epoch, batches): (usize, usize),
    model: &Model,
    opt: &mut Optimizer,
    model_name: &str,
    device: &Device,
) -> Result<(usize, usize), TrainError> {
    let ckpt = Checkpoint::load(path)?;
    let meta = |k: &str| ckpt.metadata.get(k).cloned().unwrap_or_default();
    if meta("model") != model_name {
        return Err(TrainError::Resume(format!("{} holds model `{}`, not `{model_name}`", path.display(), meta("model"))));
    }
    // Checkpoints from before AdamW hold SGD state and no `optimizer` key.
    let saved = ckpt.metadata.get("optimizer").map_or("sgd", String::as_str);
    if saved != rule_name(opt.rule()) {
        return Err(TrainError::Resume(format!("{} was trained with --optimizer {saved}, not {}", path.display(), rule_name(opt.rule()))));
    }
    load_weights(model, &ckpt, device)?;
    let mut states = Vec::new();
    for (name, p) in model.net.named_params() {
        let mut found = HashMap::new();
        for &state in opt.rule().state_names() {
            let key = format!("optimizer.{state}.{name}");
            if ckpt.tensors.contains_key(&key) {
                let shape = if state == "step" { vec![1] } else { p.value().shape().to_vec() };
                found.insert(state, ckpt.tensor(&key, &shape, device)?);
            }
        }
        // A parameter without state had not taken a step yet (frozen, or no momentum).
        if !found.is_empty() {
            states.push((p.clone(), found));
        }
    }
    let step = meta("step").parse().map_err(|_| TrainError::Resume(format!("{}: bad `step` metadata", path.display())))?;
    opt.restore(step, states).map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
    for (name, counter) in model.net.named_counters() {
        if let Ok(v) = meta(&format!("counter.{name}")).parse() {
            counter.store(v, Ordering::Relaxed);
        }
    }
    Ok((epoch, batches))
}
