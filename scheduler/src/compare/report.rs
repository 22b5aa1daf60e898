//! `compare`'s figures and files: per strategy, raw and drift-normalised training time, time
//! and executed-FLOP ratios against `full`, the verdict on whether the time is a saving, peak
//! memory, accuracy with a bootstrap interval — as report.md, report.json and report.svg.
use super::{CompareConfig, Interleaved};
use crate::data::Dataset;
use crate::error::TrainError;
use crate::plot::{line_chart, Series};
use crate::strategy::StrategyRun;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use tessera_engine::autograd as ag;
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::{Device, Tensor, Var};

/// Mean and sample standard deviation of one figure over the repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Self { mean, std: var.sqrt(), n }
    }

    /// `mean` alone for one repeat, else `mean ± std`, with `digits` decimals.
    fn show(&self, digits: usize, unit: &str) -> String {
        if self.n > 1 {
            format!("{:.digits$}{unit} ± {:.digits$}", self.mean, self.std)
        } else {
            format!("{:.digits$}{unit}", self.mean)
        }
    }
}

/// A strategy's figures over the repeats, against `full` where there is a `full` lane.
pub struct Row {
    /// The last repeat's run (epochs, accuracy, per-sample hits, notes).
    pub run: StrategyRun,
    /// Training seconds as measured, and normalised by the drift probe.
    pub seconds: Stat,
    pub normalised_seconds: Stat,
    /// Per repeat, this strategy's time over full's of the same repeat.
    pub time_ratio: Option<Stat>,
    pub normalised_ratio: Option<Stat>,
    /// Executed FLOPs (GEMM forward and backward, optimizer updates) over full's.
    pub flops_ratio: Option<f64>,
    /// Backward GEMM FLOPs as a share of full training over the same images.
    pub backward_share: f64,
    pub peak_rss_bytes: Option<u64>,
    pub ci95: (f32, f32),
    /// What the time ratio means, given the probe's spread and the FLOP ratio.
    pub verdict: String,
    /// Final test accuracy over the repeats.
    pub accuracy: Stat,
    /// A comparison over seeds: the bootstrap 95 % interval of the mean accuracy over seeds,
    /// and the difference from full's mean with whether it exceeds the seed-to-seed spread
    /// (the larger of the two standard deviations over seeds).
    pub seeds: Option<SeedSpread>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeedSpread {
    pub ci95: (f64, f64),
    pub vs_full: Option<f64>,
    pub beyond_spread: Option<bool>,
}

impl Row {
    /// The strategy's record: an element of report.json's `strategies` and a `--json` line.
    pub fn record(&self) -> serde_json::Value {
        let r = self;
        let stat = |s: Option<Stat>| s.map(|s| (s.mean, s.std)).unzip();
        let (time_ratio, time_ratio_std) = stat(r.time_ratio);
        let (normalised_ratio, normalised_ratio_std) = stat(r.normalised_ratio);
        json!({
            "strategy": r.run.strategy,
            "train_seconds": r.seconds.mean,
            "train_seconds_std": r.seconds.std,
            "normalised_seconds": r.normalised_seconds.mean,
            "normalised_seconds_std": r.normalised_seconds.std,
            "time_ratio": time_ratio,
            "time_ratio_std": time_ratio_std,
            "normalised_time_ratio": normalised_ratio,
            "normalised_time_ratio_std": normalised_ratio_std,
            "flops_ratio": r.flops_ratio,
            "backward_flops_share": r.backward_share,
            "allreduce_bytes": r.run.epochs.iter().map(|e| e.allreduce_bytes).sum::<u64>(),
            "peak_rss_bytes": r.peak_rss_bytes,
            "test_accuracy": r.run.test_accuracy,
            "ci95": [r.ci95.0, r.ci95.1],
            "verdict": r.verdict,
            "test_accuracy_mean": r.accuracy.mean,
            "test_accuracy_std": r.accuracy.std,
            "seed_ci95": r.seeds.map(|s| [s.ci95.0, s.ci95.1]),
            "accuracy_vs_full": r.seeds.and_then(|s| s.vs_full),
            "beyond_seed_spread": r.seeds.and_then(|s| s.beyond_spread),
            "notes": r.run.notes,
            "epochs": r.run.epochs.iter().map(|e| json!({
                "epoch": e.epoch, "stage": e.stage, "seconds": e.seconds, "elapsed": e.elapsed, "probe_seconds": e.probe_seconds,
                "train_loss": e.train_loss, "train_accuracy": e.train_accuracy, "test_accuracy": e.test_accuracy,
                "images_per_sec": e.images_per_sec, "backward_flops": e.backward_flops, "forward_flops": e.forward_flops,
                "update_flops": e.update_flops, "trainable_params": e.trainable_params, "allreduce_bytes": e.allreduce_bytes,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Bootstrap 95 % interval of the accuracy from per-sample hits (1000 resamples, seeded).
pub fn bootstrap_ci(correct: &[bool], seed: u64) -> (f32, f32) {
    if correct.is_empty() {
        return (0.0, 0.0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = correct.len();
    let mut accs: Vec<f32> = (0..1000).map(|_| (0..n).filter(|_| correct[rng.gen_range(0..n)]).count() as f32 / n as f32).collect();
    accs.sort_by(f32::total_cmp);
    (accs[25], accs[974])
}

/// Bootstrap 95 % interval of the mean of `values` (1000 resamples, seeded): over seeds.
pub fn bootstrap_mean_ci(values: &[f64], seed: u64) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..1000).map(|_| (0..n).map(|_| values[rng.gen_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    (means[25], means[974])
}

/// Backward FLOPs of one image through the whole network with everything trainable.
pub(super) fn full_backward_flops_per_image(model_name: &str, classes: usize, image: (usize, usize)) -> Result<f64, TrainError> {
    let device = Device::cpu();
    let model = tessera_models::build(model_name, classes, &device, 0)?;
    let x = Var::constant(Tensor::zeros(&[2, 3, image.0, image.1], &device)?);
    let loss = ag::cross_entropy(&model.net.forward(&x)?, &[0, 0])?;
    let (done, flops) = count_gemm_flops(|| loss.backward());
    done?;
    Ok(flops / 2.0)
}

fn executed_flops(run: &StrategyRun) -> f64 {
    run.epochs.iter().map(|e| e.forward_flops + e.backward_flops + e.update_flops).sum()
}

/// A run's training seconds: as measured, and with each epoch scaled by `unit` / the probe's
/// time around its turn (the time it would have taken on a machine as fast as the probe's mean).
fn seconds(run: &StrategyRun, unit: f64) -> (f64, f64) {
    let raw = run.epochs.iter().map(|e| e.seconds).sum();
    let normalised = run.epochs.iter().map(|e| if e.probe_seconds > 0.0 { e.seconds * unit / e.probe_seconds } else { e.seconds }).sum();
    (raw, normalised)
}

/// The report's rows from the repeats (each holding the lanes in the same order);
/// `full_backward` is the backward FLOPs of full training over the run's images.
/// `over_seeds`: each repeat ran with a seed of its own.
pub(super) fn rows(repeats: &[Interleaved], full_backward: f64, seed: u64, over_seeds: bool) -> Vec<Row> {
    let probes: Vec<f64> = repeats.iter().flat_map(|r| r.probe.seconds.iter().copied()).collect();
    let probe = super::probe::ProbeTimes { seconds: probes };
    let (unit, spread) = (probe.mean(), probe.spread());
    let last = repeats.last().expect("at least one repeat");
    let full = last.runs.iter().position(|r| r.strategy == "full");
    (0..last.runs.len())
        .map(|i| {
            let times: Vec<(f64, f64)> = repeats.iter().map(|r| seconds(&r.runs[i], unit)).collect();
            let ratio = |pick: fn((f64, f64)) -> f64| {
                full.map(|f| {
                    Stat::of(&repeats.iter().map(|r| pick(seconds(&r.runs[i], unit)) / pick(seconds(&r.runs[f], unit)).max(1e-12)).collect::<Vec<_>>())
                })
            };
            let run = last.runs[i].clone();
            let accuracies = |i: usize| repeats.iter().map(|r| r.runs[i].test_accuracy as f64).collect::<Vec<_>>();
            let accuracy = Stat::of(&accuracies(i));
            let seeds = over_seeds.then(|| {
                let full_accuracy = full.map(|f| Stat::of(&accuracies(f)));
                let vs_full = full_accuracy.filter(|_| full != Some(i)).map(|f| accuracy.mean - f.mean);
                let beyond_spread = full_accuracy.zip(vs_full).map(|(f, d)| d.abs() > accuracy.std.max(f.std));
                SeedSpread { ci95: bootstrap_mean_ci(&accuracies(i), seed), vs_full, beyond_spread }
            });
            let flops_ratio = full.map(|f| executed_flops(&run) / executed_flops(&last.runs[f]).max(1.0));
            let normalised_ratio = ratio(|t| t.1);
            let verdict = match (full, normalised_ratio, flops_ratio) {
                (Some(f), _, _) if f == i => "reference".to_string(),
                (Some(_), Some(t), Some(flops)) => verdict(t.mean, flops, spread),
                _ => "no `full` lane to compare with".to_string(),
            };
            Row {
                seconds: Stat::of(&times.iter().map(|t| t.0).collect::<Vec<_>>()),
                normalised_seconds: Stat::of(&times.iter().map(|t| t.1).collect::<Vec<_>>()),
                time_ratio: ratio(|t| t.0),
                normalised_ratio,
                flops_ratio,
                backward_share: run.epochs.iter().map(|e| e.backward_flops).sum::<f64>() / full_backward.max(1.0),
                peak_rss_bytes: repeats.iter().filter_map(|r| r.runs[i].peak_rss_bytes).max(),
                ci95: bootstrap_ci(&run.sample_correct, seed),
                verdict,
                accuracy,
                seeds,
                run,
            }
        })
        .collect()
}

/// What a normalised time ratio `t` against full means, beside the executed-FLOP ratio and the
/// probe's `spread` (slowest probe / fastest − 1): a saving only when it exceeds the drift and
/// the FLOPs account for it. Ratios are compared on a log scale: with spread s, `t` and `f`
/// agree when t / f lies within [1 / (1 + s), 1 + s].
pub fn verdict(t: f64, flops: f64, spread: f64) -> String {
    let tolerance = (1.0 + spread).ln();
    let drift = format!("probe spread {:.0} %", spread * 100.0);
    if (t / flops.max(1e-12)).ln().abs() > tolerance {
        format!(
            "time ×{t:.2}, executed FLOPs ×{flops:.2}: they differ by more than the machine's drift ({drift}), so the time is not presented as a measured saving (GEMM FLOPs leave out data loading and elementwise work)"
        )
    } else if t.ln() < -tolerance {
        format!("saves {:.0} % of full's time (FLOPs ×{flops:.2} agree; {drift})", (1.0 - t) * 100.0)
    } else if t.ln() > tolerance {
        format!("costs {:.0} % more than full (FLOPs ×{flops:.2} agree; {drift})", (t - 1.0) * 100.0)
    } else {
        format!("no difference from full beyond the machine's drift ({drift})")
    }
}

fn write(path: &Path, text: &str) -> Result<(), TrainError> {
    std::fs::write(path, text).map_err(|error| TrainError::Io { path: path.into(), error })
}

/// `initial`: (loss, accuracy) of the shared initial weights on the test set.
pub(super) fn write_report(
    cfg: &CompareConfig,
    train: &Dataset,
    test: &Dataset,
    initial: (f32, f32),
    repeats: &[Interleaved],
    rows: &[Row],
) -> Result<(), TrainError> {
    let s = &cfg.settings;
    let probes: Vec<f64> = repeats.iter().flat_map(|r| r.probe.seconds.iter().copied()).collect();
    let probe = super::probe::ProbeTimes { seconds: probes };
    let mib = |b: Option<u64>| b.map_or("n/a".to_string(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64));
    let ratio = |r: Option<Stat>| r.map_or("n/a".to_string(), |r| r.show(2, "×"));
    let mut md = String::new();
    let scored = if cfg.holdout { "held-out images (every 10th training image; the test set is not used: \"test\" below means these)" } else { "test images" };
    let _ = writeln!(md, "# Strategy comparison: {} ({} granularity) on {} training / {} {scored}\n", cfg.model, cfg.granularity, train.len(), test.len());
    let _ = writeln!(
        md,
        "Device {}, {} epochs, batch {}, lr {} (cosine), optimizer {:?}, {}{}; {} repeat(s){}. Same initial weights (test accuracy {:.2} %, where every curve starts) and data order for every strategy. The strategies train in turns — epoch 1 of each, then epoch 2 of each, the order rotated every turn — {}. Wall time is training only (evaluation excluded).\n",
        cfg.device, s.epochs, s.batch, cfg.optim.lr, cfg.optim.rule,
        if cfg.seeds.is_empty() { format!("seed {}", s.seed) } else { format!("seeds {:?}, one repeat each", cfg.seeds) },
        cfg.init.as_ref().map(|p| format!(", initial weights {}", p.display())).unwrap_or_default(),
        cfg.repeat,
        if cfg.repeat > 1 { " (figures: mean ± standard deviation)" } else { "" },
        initial.1 * 100.0,
        if let Some(layout) = &cfg.layout {
            layout.clone()
        } else if cfg.world.size > 1 {
            format!("data-parallel over {} ranks (all-reduce bytes: what each rank sent per epoch; peak memory: n/a, the strategies share each rank's process)", cfg.world.size)
        } else {
            "each in a process of its own when run by `tessera compare`".to_string()
        }
    );
    let _ = writeln!(
        md,
        "Drift probe (a 3×3 convolution of one batch and a batch × 512 × 512 GEMM, timed before the first turn and after every turn): {:.2} ms mean, {:.2}–{:.2} ms, spread {:.0} %. Normalised time: each epoch's seconds × the probe's mean / the mean of the two probes around its turn. Executed FLOPs: GEMM forward and backward plus optimizer updates; a time ratio is called a saving only when it lies beyond the probe's spread s (outside [1/(1+s), 1+s]) and the FLOP ratio agrees with it within that spread.\n",
        probe.mean() * 1e3,
        probe.seconds.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
        probe.seconds.iter().copied().fold(0.0, f64::max) * 1e3,
        probe.spread() * 100.0
    );
    let over_seeds = !cfg.seeds.is_empty();
    let (accuracy_head, interval_head) = match over_seeds {
        true => ("test accuracy (mean ± std over seeds) | vs full", "bootstrap 95 % CI of the mean over seeds"),
        false => ("test accuracy", "bootstrap 95 % CI"),
    };
    let _ = writeln!(
        md,
        "| strategy | train s | normalised s | time vs full | normalised vs full | executed FLOPs vs full | backward FLOPs vs full | all-reduce MB per epoch | peak RSS MiB (own process) | {accuracy_head} | {interval_head} | verdict |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}---|---|", if over_seeds { "---:|" } else { "" });
    for r in rows {
        let (accuracy, interval) = match r.seeds {
            Some(seeds) => (
                format!(
                    "{:.2} ± {:.2} % | {}",
                    r.accuracy.mean * 100.0,
                    r.accuracy.std * 100.0,
                    match (seeds.vs_full, seeds.beyond_spread) {
                        (Some(d), Some(true)) => format!("{:+.2} points, beyond the seed spread", d * 100.0),
                        (Some(d), _) => format!("{:+.2} points, within the seed spread", d * 100.0),
                        (None, _) => "–".into(),
                    }
                ),
                format!("{:.2}–{:.2} %", seeds.ci95.0 * 100.0, seeds.ci95.1 * 100.0),
            ),
            None => (format!("{:.2} %", r.run.test_accuracy * 100.0), format!("{:.2}–{:.2} %", r.ci95.0 * 100.0, r.ci95.1 * 100.0)),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.1} % | {:.1} | {} | {accuracy} | {interval} | {} |",
            r.run.strategy,
            r.seconds.show(1, ""),
            r.normalised_seconds.show(1, ""),
            ratio(r.time_ratio),
            ratio(r.normalised_ratio),
            r.flops_ratio.map_or("n/a".into(), |f| format!("{f:.2}×")),
            r.backward_share * 100.0,
            r.run.epochs.iter().map(|e| e.allreduce_bytes as f64).sum::<f64>() / r.run.epochs.len().max(1) as f64 / 1e6,
            mib(r.peak_rss_bytes),
            r.verdict
        );
    }
    for r in rows {
        let _ = writeln!(
            md,
            "\n## {}\n\n| epoch | stage | seconds | probe ms | trainable params | backward GFLOP | train loss | test accuracy |\n|---:|---|---:|---:|---:|---:|---:|---:|",
            r.run.strategy
        );
        for e in &r.run.epochs {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.2} | {} | {:.1} | {:.4} | {:.2} % |",
                e.epoch,
                e.stage,
                e.seconds,
                e.probe_seconds * 1e3,
                e.trainable_params,
                e.backward_flops / 1e9,
                e.train_loss,
                e.test_accuracy * 100.0
            );
        }
        for note in &r.run.notes {
            let _ = writeln!(md, "\n- {note}");
        }
    }
    let _ = writeln!(md, "\n![test accuracy against training wall time](report.svg)");
    write(&cfg.out.join("report.md"), &md)?;

    let json_rows: Vec<_> = rows.iter().map(Row::record).collect();
    let doc = json!({
        "model": cfg.model, "granularity": cfg.granularity.to_string(), "device": cfg.device, "epochs": s.epochs, "batch": s.batch, "lr": cfg.optim.lr,
        "optimizer": format!("{:?}", cfg.optim.rule), "warmup_steps": cfg.optim.warmup_steps, "seed": s.seed, "seeds": cfg.seeds, "repeat": cfg.repeat,
        "train_images": train.len(), "test_images": test.len(), "holdout": cfg.holdout, "initial_test_loss": initial.0, "initial_test_accuracy": initial.1,
        "probe": {"seconds": repeats.iter().map(|r| &r.probe.seconds).collect::<Vec<_>>(), "mean": probe.mean(), "spread": probe.spread()},
        "strategies": json_rows,
    });
    write(&cfg.out.join("report.json"), &serde_json::to_string_pretty(&crate::json::shortest_floats(doc)).expect("JSON of plain values"))?;

    let series: Vec<Series> = rows
        .iter()
        .map(|r| Series {
            name: r.run.strategy.clone(),
            points: std::iter::once((0.0, initial.1 as f64)).chain(r.run.epochs.iter().map(|e| (e.elapsed, e.test_accuracy as f64))).collect(),
        })
        .collect();
    let title = format!("{}: test accuracy against training wall time", cfg.model);
    let x_desc = if cfg.repeat > 1 { "training wall time (s, last repeat)" } else { "training wall time (s)" };
    line_chart(&cfg.out.join("report.svg"), &title, x_desc, "test accuracy", &series)?;
    Ok(())
}
