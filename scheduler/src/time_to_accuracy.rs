//! `tessera bench time-to-accuracy`: a recipe trained end to end several times, each run's
//! wall time and final accuracy, and when it first reached a target accuracy — with the
//! recipe's PyTorch reference (scripts/airbench94_torch.py) run on the same cores, alternating
//! with ours run by run. As airbench times itself: the images are decoded before the clock
//! starts; the clock covers the whitening initialisation, training and the final (test-time
//! augmented) evaluation, not the optional per-epoch evaluations.
use crate::data::{materialize, Dataset};
use crate::error::TrainError;
use crate::recipe::Recipe;
use crate::run_state::load_splits;
use crate::strategy::EpochRecord;
use crate::train::{train_on, TrainConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct TimeToAccuracySpec {
    pub recipe: Recipe,
    pub data: PathBuf,
    pub target: f32,
    pub runs: usize,
    /// The first run's seed; run i uses first_seed + i.
    pub first_seed: u64,
    pub device: String,
    pub limit_per_class: Option<usize>,
    /// Also evaluate (untimed) after every epoch, so the target can be met before the end.
    pub evaluate_each_epoch: bool,
    pub workers: usize,
}

/// One run of one engine.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunTime {
    /// `tessera <device>` or `pytorch <version> cpu`.
    pub engine: String,
    pub run: usize,
    pub seed: u64,
    /// Timed: training (with the whitening initialisation) and the final evaluation.
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub seconds: f64,
    /// The final evaluation's accuracy (with the recipe's test-time augmentation).
    pub accuracy: f32,
    /// Timed seconds until an evaluation first met the target; none if none did.
    pub time_to_target: Option<f64>,
    /// (epoch, training seconds so far, test accuracy) where an epoch was evaluated.
    pub curve: Vec<(usize, f64, f32)>,
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// A Tessera run's record read as a [`RunTime`].
fn tessera_run(records: &[EpochRecord], device: &str, run: usize, seed: u64, target: f32) -> RunTime {
    let train_seconds: f64 = records.iter().map(|r| r.seconds).sum();
    let last = records.last();
    let eval_seconds = last.map_or(0.0, |r| r.eval_seconds);
    let curve: Vec<(usize, f64, f32)> = records.iter().filter(|r| r.test_accuracy.is_finite()).map(|r| (r.epoch, r.elapsed, r.test_accuracy)).collect();
    // An earlier epoch's evaluation counts its own time; the final one is in `seconds`.
    let time_to_target = records.iter().find(|r| r.test_accuracy >= target).map(|r| r.elapsed + r.eval_seconds);
    RunTime {
        engine: format!("tessera {device}"),
        run,
        seed,
        train_seconds,
        eval_seconds,
        seconds: train_seconds + eval_seconds,
        accuracy: last.map_or(0.0, |r| r.test_accuracy),
        time_to_target,
        curve,
    }
}

/// One run of the PyTorch reference with `python`, or why not.
fn torch_run(python: &str, spec: &TimeToAccuracySpec, run: usize, threads: usize) -> Result<RunTime, String> {
    const SCRIPT: &str = include_str!("../../scripts/airbench94_torch.py");
    let seed = spec.first_seed + run as u64;
    let (_, epochs) = spec.recipe.batch_and_epochs();
    let Recipe::Airbench94(h) = spec.recipe;
    let mut args = vec!["--data".to_string(), spec.data.display().to_string(), "--runs".into(), "1".into(), "--first-seed".into(), seed.to_string()];
    args.extend(["--epochs".into(), h.epochs.to_string(), "--threads".into(), threads.to_string()]);
    if let Some(n) = spec.limit_per_class {
        args.extend(["--limit-per-class".into(), n.to_string()]);
    }
    if spec.evaluate_each_epoch {
        args.push("--eval-each-epoch".into());
    }
    let v = crate::bench::run_python(python, SCRIPT, args)?;
    let f = |k: &str| v[k].as_f64().ok_or_else(|| format!("no `{k}` in its output"));
    let (train_seconds, eval_seconds, accuracy) = (f("train_seconds")?, f("eval_seconds")?, f("accuracy")? as f32);
    let mut elapsed = 0.0;
    let mut curve = Vec::new();
    for e in v["epochs"].as_array().into_iter().flatten() {
        elapsed += e["seconds"].as_f64().unwrap_or(0.0);
        if let Some(acc) = e["test_accuracy"].as_f64() {
            curve.push((e["epoch"].as_u64().unwrap_or(0) as usize, elapsed, acc as f32));
        }
    }
    // Its per-epoch evaluations are not timed; the target met at the end counts the final one.
    let early = curve.iter().take(epochs.saturating_sub(1)).find(|c| c.2 >= spec.target).map(|c| c.1);
    let time_to_target = early.or((accuracy >= spec.target).then_some(train_seconds + eval_seconds));
    Ok(RunTime {
        engine: format!("pytorch {} cpu", v["torch"].as_str().unwrap_or("?")),
        run,
        seed,
        train_seconds,
        eval_seconds,
        seconds: train_seconds + eval_seconds,
        accuracy,
        time_to_target,
        curve,
    })
}

/// `spec.runs` runs of the recipe on Tessera, each followed by one of the PyTorch reference
/// (unless `torch_python` is None; on `threads` threads); `progress` hears each run as it
/// ends. The reference's failure is returned beside Tessera's runs, not as an error.
pub fn time_to_accuracy(
    spec: &TimeToAccuracySpec,
    torch_python: Option<&str>,
    threads: usize,
    progress: &mut dyn FnMut(&RunTime),
) -> Result<(Vec<RunTime>, Option<String>), TrainError> {
    let (train, test) = load_splits(&spec.data, spec.limit_per_class)?;
    // Decoded once, before any clock starts (the reference decodes before its clock too).
    let (train, test): (Dataset, Dataset) = (Arc::new(materialize(train.as_ref())?), Arc::new(materialize(test.as_ref())?));
    let (batch, epochs) = spec.recipe.batch_and_epochs();
    let (mut runs, mut torch_failure) = (Vec::new(), None);
    for run in 0..spec.runs {
        let seed = spec.first_seed + run as u64;
        let cfg = TrainConfig {
            model: spec.recipe.model().to_string(),
            data: spec.data.clone(),
            run: crate::strategy::RunSpec { epochs, batch, seed, workers: spec.workers, evaluate_each_epoch: spec.evaluate_each_epoch, ..Default::default() },
            device: spec.device.clone(),
            recipe: Some(spec.recipe),
            ..TrainConfig::default()
        };
        let records = train_on(&cfg, (&train, &test), &mut |_| {}, None)?;
        let ours = tessera_run(&records, &spec.device, run, seed, spec.target);
        progress(&ours);
        runs.push(ours);
        if let (Some(python), None) = (torch_python, &torch_failure) {
            match torch_run(python, spec, run, threads) {
                Ok(theirs) => {
                    progress(&theirs);
                    runs.push(theirs);
                }
                Err(why) => torch_failure = Some(why),
            }
        }
    }
    Ok((runs, torch_failure))
}
