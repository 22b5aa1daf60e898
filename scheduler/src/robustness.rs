//! Robustness reports (`tessera robustness`): every epoch checkpoint of a run on the test set
//! (accuracy per checkpoint, mean and standard deviation, the mean confusion matrix, a
//! classification report in scikit-learn's layout, a bootstrap interval of the final
//! accuracy, learning curves), accuracy under input corruptions at severities 1–5, and
//! sub-model fault tolerance: accuracy with one sub-model's weights perturbed by relative
//! noise or reset to their initialisation.
use crate::compare::bootstrap_ci;
use crate::data::{Corruption, Dataset, ImageSet, LoaderSpec};
use crate::error::TrainError;
use crate::eval::{evaluate_full, model_from_checkpoint, EvalReport};
use crate::plot::{line_chart, line_panels, Panel, Series};
use rand::{rngs::StdRng, SeedableRng};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::{Device, Tensor};
use tessera_models::Model;

/// One checkpoint's evaluation.
pub struct CheckpointResult {
    pub epoch: usize,
    pub path: PathBuf,
    pub report: EvalReport,
}

/// Every `epoch-NNN.safetensors` of `run_dir`, by epoch.
pub fn run_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let found = crate::run_state::epoch_checkpoints(run_dir)?;
    if found.is_empty() {
        return Err(TrainError::Config(format!("{}: no epoch-NNN.safetensors checkpoints", run_dir.display())));
    }
    Ok(found)
}

/// Evaluates every checkpoint of `run_dir` on `test`; returns them and the last one's model.
pub fn evaluate_run(run_dir: &Path, test: &Arc<ImageSet>, device: &Device, batch: usize) -> Result<(Vec<CheckpointResult>, Model), TrainError> {
    let mut results = Vec::new();
    let mut last = None;
    for (epoch, path) in run_checkpoints(run_dir)? {
        let ckpt = Checkpoint::load(&path)?;
        let model = model_from_checkpoint(&path, &ckpt, device)?;
        let report = evaluate_full(&model, &(test.clone() as Dataset), &LoaderSpec::eval(batch), device)?;
        results.push(CheckpointResult { epoch, path, report });
        last = Some(model);
    }
    Ok((results, last.expect("at least one checkpoint")))
}

/// Mean and (population) standard deviation.
pub fn mean_std(values: &[f32]) -> (f32, f32) {
    let n = values.len().max(1) as f32;
    let mean = values.iter().sum::<f32>() / n;
    (mean, (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt())
}

/// scikit-learn's `classification_report(digits=4)` layout from a confusion matrix
/// (rows: true class, columns: predicted).
pub fn classification_report(confusion: &[Vec<f64>], classes: &[String]) -> String {
    let k = classes.len();
    let support: Vec<f64> = confusion.iter().map(|r| r.iter().sum()).collect();
    let predicted: Vec<f64> = (0..k).map(|j| confusion.iter().map(|r| r[j]).sum()).collect();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let rows: Vec<(f64, f64, f64)> = (0..k)
        .map(|i| {
            let (p, r) = (ratio(confusion[i][i], predicted[i]), ratio(confusion[i][i], support[i]));
            (p, r, ratio(2.0 * p * r, p + r))
        })
        .collect();
    let total: f64 = support.iter().sum();
    let width = classes.iter().map(|c| c.len()).max().unwrap_or(0).max("weighted avg".len());
    let mut out = String::new();
    let _ = writeln!(out, "{:>width$} {:>9} {:>9} {:>9} {:>9}\n", "", "precision", "recall", "f1-score", "support");
    for (i, (p, r, f)) in rows.iter().enumerate() {
        let _ = writeln!(out, "{:>width$} {p:>9.4} {r:>9.4} {f:>9.4} {:>9}", classes[i], support[i].round());
    }
    let accuracy = ratio((0..k).map(|i| confusion[i][i]).sum(), total);
    let _ = writeln!(out, "\n{:>width$} {:>9} {:>9} {accuracy:>9.4} {:>9}", "accuracy", "", "", total.round());
    let avg = |weights: &dyn Fn(usize) -> f64| {
        let wsum: f64 = (0..k).map(weights).sum();
        let mean = |f: &dyn Fn(&(f64, f64, f64)) -> f64| ratio(rows.iter().enumerate().map(|(i, r)| weights(i) * f(r)).sum(), wsum);
        (mean(&|r| r.0), mean(&|r| r.1), mean(&|r| r.2))
    };
    for (name, (p, r, f)) in [("macro avg", avg(&|_| 1.0)), ("weighted avg", avg(&|i| support[i]))] {
        let _ = writeln!(out, "{name:>width$} {p:>9.4} {r:>9.4} {f:>9.4} {:>9}", total.round());
    }
    out
}

/// Accuracy under each corruption at severities 1–5.
pub fn corruption_accuracy(model: &Model, test: &Arc<ImageSet>, device: &Device, batch: usize, seed: u64) -> Result<Vec<(Corruption, Vec<f32>)>, TrainError> {
    Corruption::ALL
        .iter()
        .map(|&c| {
            let accs = (1..=5)
                .map(|s| Ok(evaluate_full(model, &(Arc::new(c.apply(test, s, seed)) as Dataset), &LoaderSpec::eval(batch), device)?.accuracy))
                .collect::<Result<Vec<f32>, TrainError>>()?;
            Ok((c, accs))
        })
        .collect()
}

/// One sub-model's fault: accuracy with its weights noised and with them reset.
#[derive(Clone, Debug)]
pub struct SubModelFault {
    pub name: String,
    pub noise_accuracy: f32,
    pub reset_accuracy: f32,
}

/// For each sub-model: accuracy when its parameters get Gaussian noise of `scale` × their RMS,
/// and when its parameters and buffers are reset to the model's initialisation (`init`, the
/// same architecture built with the run's seed). The model is restored after each.
pub fn submodel_faults(
    model: &Model,
    init: &Model,
    test: &Arc<ImageSet>,
    device: &Device,
    batch: usize,
    scale: f32,
    seed: u64,
) -> Result<Vec<SubModelFault>, TrainError> {
    let mut out = Vec::new();
    for (i, sub) in model.submodels.iter().enumerate() {
        let params = model.params_of(sub);
        let buffers: Vec<_> = model.net.named_buffers().into_iter().filter(|(n, _)| sub.owns(n)).collect();
        let saved: Vec<Tensor> = params.iter().map(|(_, p)| p.value()).chain(buffers.iter().map(|(_, b)| b.value())).collect();
        let rng = &mut StdRng::seed_from_u64(seed + i as u64);
        for (_, p) in &params {
            let v = p.value().to_vec()?;
            let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len().max(1) as f32).sqrt();
            let noisy: Vec<f32> = v.iter().map(|x| x + scale * rms * crate::data::corrupt::normal(rng)).collect();
            p.set_value(Tensor::from_vec(noisy, p.value().shape(), device)?);
        }
        let noise_accuracy = evaluate_full(model, &(test.clone() as Dataset), &LoaderSpec::eval(batch), device)?.accuracy;
        let init_params: std::collections::HashMap<String, Tensor> = init.net.named_params().into_iter().map(|(n, p)| (n, p.value())).collect();
        let init_buffers: std::collections::HashMap<String, Tensor> = init.net.named_buffers().into_iter().map(|(n, b)| (n, b.value())).collect();
        for (n, p) in &params {
            p.set_value(init_params[n].to_device(device)?);
        }
        for (n, b) in &buffers {
            b.set_value(init_buffers[n].to_device(device)?);
        }
        let reset_accuracy = evaluate_full(model, &(test.clone() as Dataset), &LoaderSpec::eval(batch), device)?.accuracy;
        let mut saved = saved.into_iter();
        params.iter().for_each(|(_, p)| p.set_value(saved.next().expect("saved")));
        buffers.iter().for_each(|(_, b)| b.set_value(saved.next().expect("saved")));
        out.push(SubModelFault { name: sub.name.clone(), noise_accuracy, reset_accuracy });
    }
    Ok(out)
}

/// Settings of a robustness report.
pub struct RobustnessConfig {
    pub run: PathBuf,
    pub device: String,
    pub batch: usize,
    pub seed: u64,
    pub corruptions: bool,
    pub noise_scale: f32,
    pub out: PathBuf,
}

/// results.json's record kinds (a `--json` line's `record`) and the key holding them there:
/// one `summary`, then a `checkpoint` per checkpoint, a `corruption` per corruption, a
/// `submodel_fault` per sub-model.
pub const RECORDS: [(&str, &str); 4] =
    [("summary", "summary"), ("checkpoint", "checkpoints"), ("corruption", "corruptions"), ("submodel_fault", "submodel_faults")];

/// What `robustness_report` wrote: results.txt's text and results.json's document.
pub struct RobustnessReport {
    pub text: String,
    pub json: serde_json::Value,
}

/// Writes results.txt, results.json, learning_curves.png and corruptions.png into `cfg.out`.
pub fn robustness_report(cfg: &RobustnessConfig, test: &Arc<ImageSet>) -> Result<RobustnessReport, TrainError> {
    let device = Device::parse(&cfg.device)?;
    let (results, model) = evaluate_run(&cfg.run, test, &device, cfg.batch)?;
    let last = results.last().expect("at least one checkpoint");
    let ckpt = Checkpoint::load(&last.path)?;
    let accs: Vec<f32> = results.iter().map(|r| r.report.accuracy).collect();
    let (mean, std) = mean_std(&accs);
    let k = test.classes.len();
    let mut confusion = vec![vec![0f64; k]; k];
    for r in &results {
        for (i, row) in r.report.confusion.iter().enumerate() {
            row.iter().enumerate().for_each(|(j, &c)| confusion[i][j] += c as f64 / results.len() as f64);
        }
    }
    let ci = bootstrap_ci(&last.report.sample_correct, cfg.seed);

    let mut txt = String::new();
    let _ = writeln!(txt, "Robustness report: {} ({} checkpoints) on {} test images\n", cfg.run.display(), results.len(), test.len());
    let _ = writeln!(txt, "Accuracy per checkpoint:");
    for r in &results {
        let _ = writeln!(txt, "  epoch {:>3}  {:.4}  (loss {:.4})  {}", r.epoch, r.report.accuracy, r.report.loss, r.path.display());
    }
    let _ = writeln!(txt, "\nmean accuracy {mean:.4}, standard deviation {std:.4}");
    let _ = writeln!(txt, "final accuracy {:.4}, bootstrap 95 % interval [{:.4}, {:.4}] (1000 resamples)\n", last.report.accuracy, ci.0, ci.1);
    let _ = writeln!(txt, "Mean confusion matrix over the checkpoints (rows: true class, columns: predicted):");
    // Columns as wide as the longest class name: no header is cut.
    let width = test.classes.iter().map(|c| c.chars().count()).max().unwrap_or(4).max(6);
    let _ = writeln!(txt, "{:>width$} {}", "", test.classes.iter().map(|c| format!(" {c:>width$}")).collect::<String>());
    for (i, row) in confusion.iter().enumerate() {
        let _ = writeln!(txt, "{:>width$} {}", test.classes[i], row.iter().map(|v| format!(" {v:>width$.1}")).collect::<String>());
    }
    let cr = classification_report(&last.report.confusion.iter().map(|r| r.iter().map(|&c| c as f64).collect()).collect::<Vec<_>>(), &test.classes);
    let _ = writeln!(txt, "\nClassification report of the final checkpoint (epoch {}):\n{cr}", last.epoch);

    let mut corruption_rows = Vec::new();
    if cfg.corruptions {
        let table = corruption_accuracy(&model, test, &device, cfg.batch, cfg.seed)?;
        let clean = last.report.accuracy;
        let _ = writeln!(txt, "Accuracy under input corruptions (clean {clean:.4}):");
        let _ = writeln!(txt, "  {:<16} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}", "corruption", "1", "2", "3", "4", "5", "mean");
        let mut all: Vec<f32> = Vec::new();
        for (c, accs) in &table {
            let m = accs.iter().sum::<f32>() / accs.len() as f32;
            all.extend(accs.iter().copied());
            let _ = writeln!(txt, "  {:<16} {} {m:>8.4}", c.name(), accs.iter().map(|a| format!("{a:>8.4}")).collect::<Vec<_>>().join(" "));
        }
        let mean_corrupt = all.iter().sum::<f32>() / all.len().max(1) as f32;
        let _ = writeln!(txt, "  mean corruption accuracy {mean_corrupt:.4} = {:.1} % of clean\n", 100.0 * mean_corrupt / clean.max(1e-9));
        let series: Vec<Series> = table
            .iter()
            .map(|(c, accs)| Series {
                name: c.name().into(),
                points: std::iter::once((0.0, clean as f64)).chain(accs.iter().enumerate().map(|(s, &a)| ((s + 1) as f64, a as f64))).collect(),
            })
            .collect();
        line_chart(&cfg.out.join("corruptions.png"), "Accuracy under input corruptions", "severity (0 = clean)", "test accuracy", &series)?;
        corruption_rows = table;
    }

    let init_seed = ckpt.metadata.get("seed").and_then(|s| s.parse().ok()).unwrap_or(0);
    let init = tessera_models::build(model.name, k, &device, init_seed)?;
    let faults = submodel_faults(&model, &init, test, &device, cfg.batch, cfg.noise_scale, cfg.seed)?;
    let _ = writeln!(
        txt,
        "Sub-model fault tolerance (clean {:.4}; noise: Gaussian, {} × each tensor's RMS; reset: the run's initial weights, seed {init_seed}):",
        last.report.accuracy, cfg.noise_scale
    );
    let _ = writeln!(txt, "  {:<12} {:>10} {:>10}", "sub-model", "noise", "reset");
    for f in &faults {
        let _ = writeln!(txt, "  {:<12} {:>10.4} {:>10.4}", f.name, f.noise_accuracy, f.reset_accuracy);
    }
    if let Some(worst) = faults.iter().min_by(|a, b| a.reset_accuracy.total_cmp(&b.reset_accuracy)) {
        let _ = writeln!(txt, "  the most critical sub-model: {} (reset → {:.4})", worst.name, worst.reset_accuracy);
    }

    let metrics = read_metrics(&cfg.run.join("metrics.jsonl"));
    if !metrics.is_empty() {
        let pick = |key: &str| Series { name: key.into(), points: metrics.iter().filter_map(|m| Some((m["epoch"].as_f64()?, m[key].as_f64()?))).collect() };
        let (loss, acc) = ([pick("train_loss"), pick("test_loss")], [pick("train_accuracy"), pick("test_accuracy")]);
        line_panels(
            &cfg.out.join("learning_curves.png"),
            &[
                Panel { title: "loss", x_desc: "epoch", y_desc: "cross-entropy", series: &loss },
                Panel { title: "accuracy", x_desc: "epoch", y_desc: "accuracy", series: &acc },
            ],
        )?;
    }

    let json = serde_json::json!({
        "summary": {
            "run": cfg.run.display().to_string(), "test_images": test.len(), "checkpoints": results.len(),
            "mean_accuracy": mean, "std_accuracy": std, "final_accuracy": last.report.accuracy, "final_ci95": [ci.0, ci.1],
            "classes": test.classes, "mean_confusion": confusion, "noise_scale": cfg.noise_scale,
        },
        "checkpoints": results.iter().map(|r| serde_json::json!({"epoch": r.epoch, "path": r.path.display().to_string(), "accuracy": r.report.accuracy, "loss": r.report.loss})).collect::<Vec<_>>(),
        "corruptions": corruption_rows.iter().map(|(c, a)| serde_json::json!({
            "corruption": c.name(), "accuracy_by_severity": a, "mean_accuracy": a.iter().sum::<f32>() / a.len().max(1) as f32,
        })).collect::<Vec<_>>(),
        "submodel_faults": faults.iter().map(|f| serde_json::json!({"submodel": f.name, "noise_accuracy": f.noise_accuracy, "reset_accuracy": f.reset_accuracy})).collect::<Vec<_>>(),
    });
    let json = crate::json::shortest_floats(json);
    let write = |name: &str, text: &str| std::fs::write(cfg.out.join(name), text).map_err(|error| TrainError::Io { path: cfg.out.join(name), error });
    write("results.txt", &txt)?;
    write("results.json", &serde_json::to_string_pretty(&json).expect("plain values"))?;
    Ok(RobustnessReport { text: txt, json })
}

fn read_metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()).unwrap_or_default()
}
