//! The standard run report (`tessera compare`): every strategy trains the same model from the
//! same initial weights on the same data order, and the report puts side by side what each
//! bought and cost — wall time (total and per stage), backward FLOPs executed as a share of
//! full training, images/s, peak memory, final test accuracy with a bootstrap 95 % interval,
//! trainable parameters per stage — as report.md, report.json and a plot of test accuracy
//! against training wall time.
use crate::data::Dataset;
use crate::error::TrainError;
use crate::eval::evaluate;
use crate::plot::{line_chart, Series};
use crate::run_state::load_weights;
use crate::strategy::{self, EpochRecord, RunSpec, StrategyOptions, StrategyRun};
use crate::trainer::OptimConfig;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tessera_engine::autograd as ag;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::{Device, Tensor, Var};

pub struct CompareConfig {
    pub model: String,
    pub strategies: Vec<String>,
    pub settings: RunSpec,
    pub optim: OptimConfig,
    pub options: StrategyOptions,
    pub device: String,
    /// Start every strategy from this checkpoint's weights (e.g. to fine-tune a trained
    /// backbone) instead of the seed's initialisation.
    pub init: Option<PathBuf>,
    pub out: PathBuf,
}

/// A strategy's run with the figures the report derives from it.
pub struct Row {
    pub run: StrategyRun,
    pub seconds: f64,
    pub backward_share: f64,
    pub ci95: (f32, f32),
}

impl Row {
    /// The strategy's record: an element of report.json's `strategies` and a `--json` line.
    pub fn record(&self) -> serde_json::Value {
        let r = self;
        json!({
            "strategy": r.run.strategy,
            "train_seconds": r.seconds,
            "backward_flops_share": r.backward_share,
            "peak_rss_bytes": r.run.peak_rss_bytes,
            "test_accuracy": r.run.test_accuracy,
            "ci95": [r.ci95.0, r.ci95.1],
            "notes": r.run.notes,
            "epochs": r.run.epochs.iter().map(|e| json!({
                "epoch": e.epoch, "stage": e.stage, "seconds": e.seconds, "elapsed": e.elapsed,
                "train_loss": e.train_loss, "train_accuracy": e.train_accuracy, "test_accuracy": e.test_accuracy,
                "images_per_sec": e.images_per_sec, "backward_flops": e.backward_flops, "forward_flops": e.forward_flops,
                "trainable_params": e.trainable_params,
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

/// Backward FLOPs of one image through the whole network with everything trainable.
fn full_backward_flops_per_image(model_name: &str, classes: usize, image: (usize, usize)) -> Result<f64, TrainError> {
    let device = Device::cpu();
    let model = tessera_models::build(model_name, classes, &device, 0)?;
    let x = Var::constant(Tensor::zeros(&[2, 3, image.0, image.1], &device)?);
    let loss = ag::cross_entropy(&model.net.forward(&x)?, &[0, 0])?;
    let (done, flops) = count_gemm_flops(|| loss.backward());
    done?;
    Ok(flops / 2.0)
}

/// Trains every strategy of `cfg` and writes the report into `cfg.out`.
pub fn compare(cfg: &CompareConfig, train: &Dataset, test: &Dataset, progress: &mut dyn FnMut(&str, &EpochRecord)) -> Result<Vec<Row>, TrainError> {
    // The report's folder before hours of training: a bad --out fails at once.
    std::fs::create_dir_all(&cfg.out).map_err(|error| TrainError::Io { path: cfg.out.clone(), error })?;
    let device = Device::parse(&cfg.device)?;
    let classes = train.classes().len();
    let init = cfg.init.as_deref().map(Checkpoint::load).transpose()?;
    let per_image = full_backward_flops_per_image(&cfg.model, classes, train.dims())?;
    // Every strategy starts from the same weights: their measured accuracy is where each
    // curve of report.svg starts (t = 0), not an assumed chance level.
    let initial = {
        let model = tessera_models::build(&cfg.model, classes, &device, cfg.settings.seed)?;
        if let Some(ckpt) = &init {
            load_weights(&model, ckpt, &device)?;
        }
        evaluate(&model, test, &cfg.settings.eval_loader(), &device)?
    };
    let mut rows = Vec::new();
    for name in &cfg.strategies {
        let mut s = strategy::by_name(name, &cfg.options)?;
        let model = tessera_models::build(&cfg.model, classes, &device, cfg.settings.seed)?;
        if let Some(ckpt) = &init {
            load_weights(&model, ckpt, &device)?;
        }
        let label = s.name();
        let run = strategy::run(s.as_mut(), model, device.clone(), train, test, &cfg.settings, &cfg.optim, &mut |r| progress(&label, r))?;
        let seconds = run.epochs.iter().map(|e| e.seconds).sum();
        let images = (train.len() * cfg.settings.epochs) as f64;
        let backward: f64 = run.epochs.iter().map(|e| e.backward_flops).sum();
        let ci95 = bootstrap_ci(&run.sample_correct, cfg.settings.seed);
        rows.push(Row { backward_share: backward / (per_image * images).max(1.0), seconds, ci95, run });
    }
    write_report(cfg, train, test, initial, &rows)?;
    Ok(rows)
}

fn write(path: &Path, text: &str) -> Result<(), TrainError> {
    std::fs::write(path, text).map_err(|error| TrainError::Io { path: path.into(), error })
}

/// `initial`: (loss, accuracy) of the shared initial weights on the test set.
fn write_report(cfg: &CompareConfig, train: &Dataset, test: &Dataset, initial: (f32, f32), rows: &[Row]) -> Result<(), TrainError> {
    let s = &cfg.settings;
    let full_seconds = rows.iter().find(|r| r.run.strategy == "full").map(|r| r.seconds);
    let mib = |b: Option<u64>| b.map_or("n/a".to_string(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64));
    let mut md = String::new();
    let _ = writeln!(md, "# Strategy comparison: {} on {} training / {} test images\n", cfg.model, train.len(), test.len());
    let _ = writeln!(
        md,
        "Device {}, {} epochs, batch {}, lr {} (cosine), optimizer {:?}, seed {}{}. Same initial weights (test accuracy {:.2} %, where every curve starts) and data order for every strategy. Wall time is training only (evaluation excluded); backward FLOPs are GEMM FLOPs (convolutions, linear layers) as a share of full training over the same images.\n",
        cfg.device, s.epochs, s.batch, cfg.optim.lr, cfg.optim.rule, s.seed,
        cfg.init.as_ref().map(|p| format!(", initial weights {}", p.display())).unwrap_or_default(),
        initial.1 * 100.0
    );
    let _ = writeln!(md, "| strategy | train wall s | vs full | images/s | backward FLOPs vs full | peak RSS MiB | test accuracy | bootstrap 95 % CI |");
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let images: usize = train.len() * s.epochs;
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {:.0} | {:.1} % | {} | {:.2} % | {:.2}–{:.2} % |",
            r.run.strategy,
            r.seconds,
            full_seconds.map_or("n/a".into(), |f| format!("{:.2}×", r.seconds / f)),
            images as f64 / r.seconds.max(1e-9),
            r.backward_share * 100.0,
            mib(r.run.peak_rss_bytes),
            r.run.test_accuracy * 100.0,
            r.ci95.0 * 100.0,
            r.ci95.1 * 100.0
        );
    }
    for r in rows {
        let _ = writeln!(
            md,
            "\n## {}\n\n| epoch | stage | seconds | trainable params | backward GFLOP | train loss | test accuracy |\n|---:|---|---:|---:|---:|---:|---:|",
            r.run.strategy
        );
        for e in &r.run.epochs {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {} | {:.1} | {:.4} | {:.2} % |",
                e.epoch,
                e.stage,
                e.seconds,
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
        "model": cfg.model, "device": cfg.device, "epochs": s.epochs, "batch": s.batch, "lr": cfg.optim.lr,
        "optimizer": format!("{:?}", cfg.optim.rule), "warmup_steps": cfg.optim.warmup_steps, "seed": s.seed,
        "train_images": train.len(), "test_images": test.len(), "initial_test_loss": initial.0, "initial_test_accuracy": initial.1,
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
    line_chart(&cfg.out.join("report.svg"), &title, "training wall time (s)", "test accuracy", &series)?;
    Ok(())
}
