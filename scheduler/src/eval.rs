//! Evaluation of a model on a data set: loss and accuracy counted on the device (one read per
//! pass), or the full report with per-sample losses and the confusion matrix.
use crate::data::{Dataset, Loader, LoaderSpec};
use crate::error::TrainError;
use crate::run_state::{load_splits, load_weights};
use std::path::Path;
use tessera_engine::checkpoint::{self, Checkpoint};
use tessera_engine::ops::{self, Labels, StepGuard};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::{build, Model};

/// Index of the largest value (the predicted class of a row of logits).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j)
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

/// Test-time augmentation: each batch's logits averaged over views of its images (airbench's
/// levels 0–2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tta {
    /// The images as they are.
    #[default]
    None,
    /// ½·(the images + their mirror images).
    Mirror,
    /// ½·Mirror + ½·the mean of Mirror over the images translated by one pixel up-left and
    /// down-right (borders reflected).
    MirrorTranslate,
}

impl std::str::FromStr for Tta {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "mirror" => Ok(Self::Mirror),
            "mirror-translate" => Ok(Self::MirrorTranslate),
            other => Err(format!("unknown test-time augmentation `{other}`: none, mirror or mirror-translate")),
        }
    }
}

/// A view of images `x` [N, C, H, W]: translated so that pixel (y, x) shows (y + shift,
/// x + shift), reflected about the border, then mirrored left-right if `mirror`.
pub fn view(x: &[f32], shape: &[usize], mirror: bool, shift: isize) -> Vec<f32> {
    let (h, w) = (shape[2], shape[3]);
    let reflect = |v: isize, size: usize| -> usize {
        let last = size as isize - 1;
        (if v < 0 {
            -v
        } else if v > last {
            2 * last - v
        } else {
            v
        })
        .clamp(0, last) as usize
    };
    let mut out = Vec::with_capacity(x.len());
    for plane in x.chunks(h * w) {
        for y in 0..h {
            let ys = reflect(y as isize + shift, h);
            for xo in 0..w {
                let xm = if mirror { w - 1 - xo } else { xo };
                out.push(plane[ys * w + reflect(xm as isize + shift, w)]);
            }
        }
    }
    out
}

/// The logits of `model` for images `x` (host values, `shape`) under `tta`.
pub fn tta_logits(model: &Model, x: Vec<f32>, shape: &[usize], device: &Device, tta: Tta) -> Result<Tensor, TrainError> {
    let run = |v: Vec<f32>| -> Result<Tensor, TrainError> { Ok(model.net.forward(&Var::constant(Tensor::from_vec(v, shape, device)?))?.value().clone()) };
    if tta == Tta::None {
        return run(x);
    }
    let mirror =
        |shift: isize| -> Result<Tensor, TrainError> { Ok(ops::axpby(0.5, &run(view(&x, shape, false, shift))?, 0.5, &run(view(&x, shape, true, shift))?)?) };
    match tta {
        Tta::None | Tta::Mirror => mirror(0),
        Tta::MirrorTranslate => {
            let translated = ops::axpby(0.5, &mirror(-1)?, 0.5, &mirror(1)?)?;
            Ok(ops::axpby(0.5, &mirror(0)?, 0.5, &translated)?)
        }
    }
}

/// Runs `model` (eval mode, no gradients) over `set` in order, handing each batch's logits
/// (under `tta`) and labels to `each`.
fn for_each_batch(
    model: &Model,
    set: &Dataset,
    (spec, tta): (&LoaderSpec, Tta),
    device: &Device,
    mut each: impl FnMut(&Tensor, &[usize]) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    model.net.set_training(false);
    let done = Loader::new(set, spec).map_err(TrainError::from).and_then(|loader| {
        loader.into_iter().try_for_each(|b| {
            let b = b?;
            no_grad(|| each(&tta_logits(model, b.x, &b.shape, device, tta)?, &b.labels))
        })
    });
    model.net.set_training(true);
    done
}

/// Evaluates `model` on `set`: per-sample losses and the confusion matrix (host reads per batch).
pub fn evaluate_full(model: &Model, set: &Dataset, spec: &LoaderSpec, device: &Device) -> Result<EvalReport, TrainError> {
    evaluate_full_tta(model, set, spec, device, Tta::None)
}

/// [`evaluate_full`] with test-time augmentation.
pub fn evaluate_full_tta(model: &Model, set: &Dataset, spec: &LoaderSpec, device: &Device, tta: Tta) -> Result<EvalReport, TrainError> {
    let classes = set.classes().len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let (mut sample_loss, mut sample_correct) = (Vec::with_capacity(set.len()), Vec::with_capacity(set.len()));
    for_each_batch(model, set, (spec, tta), device, |logits, labels| {
        let labelled = Labels::new(logits, labels)?;
        sample_loss.extend(ops::cross_entropy_per_sample(logits, &labelled)?.to_vec()?);
        let values = logits.to_vec()?;
        for (i, &label) in labels.iter().enumerate() {
            let predicted = argmax(&values[i * classes..(i + 1) * classes]);
            confusion[label][predicted] += 1;
            sample_correct.push(predicted == label);
        }
        Ok(())
    })?;
    let n = set.len().max(1);
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let loss = (sample_loss.iter().map(|&l| l as f64).sum::<f64>() / n as f64) as f32;
    Ok(EvalReport { loss, accuracy: correct as f32 / n as f32, confusion, classes: set.classes().to_vec(), sample_loss, sample_correct })
}

/// Mean loss and accuracy of `model` on `set`, summed on the device: one host read.
pub fn evaluate(model: &Model, set: &Dataset, spec: &LoaderSpec, device: &Device) -> Result<(f32, f32), TrainError> {
    let mut tally = StepGuard::new(device, false)?;
    for_each_batch(model, set, (spec, Tta::None), device, |logits, labels| {
        let labelled = Labels::new(logits, labels)?;
        let loss = ops::mean(&ops::cross_entropy_per_sample(logits, &labelled)?, &[0], false)?;
        tally.add_metrics(&loss, logits, &labelled)?;
        Ok(())
    })?;
    let totals = tally.read()?;
    Ok((totals.mean_loss(), totals.accuracy()))
}

/// The class count of model `name` whose weights `ckpt` (read from `path`) holds: the first
/// dimension of its last parameter (every model's last parameter is its classifier's bias or
/// weight, [classes(, in)]).
pub fn head_classes(name: &str, path: &Path, ckpt: &Checkpoint) -> Result<usize, TrainError> {
    let format = |detail: String| TrainError::Checkpoint(checkpoint::CheckpointError::Format { path: path.into(), detail });
    let probe = build(name, 1, &Device::cpu(), 0)?;
    let (head, _) = probe.net.named_params().pop().ok_or_else(|| format(format!("model `{name}` has no parameters")))?;
    match ckpt.tensors.get(&head) {
        Some((_, shape)) if !shape.is_empty() && shape[0] > 0 => Ok(shape[0]),
        Some((_, shape)) => Err(format(format!("tensor `{head}` has shape {shape:?}, not [classes, …]"))),
        None => Err(format(format!("tensor `{head}` is missing"))),
    }
}

/// The model a training checkpoint holds (its metadata names the architecture; the class
/// count is read off the final layer), with the checkpoint's weights loaded.
pub fn model_from_checkpoint(path: &Path, ckpt: &Checkpoint, device: &Device) -> Result<Model, TrainError> {
    let format = |detail: String| TrainError::Checkpoint(checkpoint::CheckpointError::Format { path: path.into(), detail });
    let name = ckpt.metadata.get("model").cloned().ok_or_else(|| format("no `model` in its metadata".into()))?;
    let classes = head_classes(&name, path, ckpt)?;
    let model = build(&name, classes, device, 0)?;
    load_weights(&model, ckpt, device)?;
    Ok(model)
}

/// Evaluates a training checkpoint (its metadata names the model) on `data/test` (the first
/// `limit_per_class` images of each class, if given), with test-time augmentation `tta`.
pub fn evaluate_checkpoint(path: &Path, data: &Path, device: &str, batch: usize, limit_per_class: Option<usize>, tta: Tta) -> Result<EvalReport, TrainError> {
    let device = Device::parse(device)?;
    let ckpt = Checkpoint::load(path)?;
    let model = model_from_checkpoint(path, &ckpt, &device)?;
    let (_, test) = load_splits(data, limit_per_class)?;
    check_classes(path, &model, data, &test)?;
    evaluate_full_tta(&model, &test, &LoaderSpec::eval(batch), &device, tta)
}

/// Errors unless `model` (read from `path`) has as many classes as `set` (from `data`).
pub fn check_classes(path: &Path, model: &Model, data: &Path, set: &Dataset) -> Result<(), TrainError> {
    if set.classes().len() == model_classes(model) {
        return Ok(());
    }
    Err(TrainError::Config(format!("{} holds a {}-class model; {} has {} classes", path.display(), model_classes(model), data.display(), set.classes().len())))
}

/// The class count of a built model (its last parameter's first dimension).
pub fn model_classes(model: &Model) -> usize {
    model.net.named_params().last().map_or(0, |(_, p)| p.value().shape().first().copied().unwrap_or(0))
}
