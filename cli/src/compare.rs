//! `tessera compare`: the standard run report over several scheduling strategies.
use crate::flags::{model_name, real32, whole};
use anyhow::{Context, Result};
use clap::Args;
use tessera_scheduler::compare::{compare, CompareConfig};
use tessera_scheduler::run_state::load_splits;
use tessera_scheduler::settings;
use tessera_scheduler::strategy::{dynamic::Criterion, fc::Order, RunSpec, StrategyOptions, NAMES};
use tessera_scheduler::trainer::{OptimConfig, OptimizerKind};

#[derive(Args)]
pub struct CompareArgs {
    /// The model (`tessera models` lists them).
    #[arg(long, default_value = "resnet20-cifar", value_parser = model_name())]
    model: String,
    /// Folder holding `train/` and `test/` image folders (or the CIFAR-10 binary release).
    #[arg(long)]
    data: std::path::PathBuf,
    /// Comma-separated: full, fc, local-fc, dynamic, balanced, coupled.
    #[arg(long, default_value = "full,fc,dynamic")]
    strategies: String,
    /// Epochs to train.
    #[arg(long, default_value_t = 2, value_parser = whole(settings::EPOCHS))]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 128, value_parser = whole(settings::BATCH))]
    batch: usize,
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: OptimizerKind,
    /// Base learning rate (the peak of the schedule).
    #[arg(long, default_value_t = 0.1, value_parser = real32(settings::LR))]
    lr: f32,
    /// SGD's momentum [default: 0.9].
    #[arg(long, value_parser = real32(settings::MOMENTUM))]
    momentum: Option<f32>,
    /// Weight decay [default: 5e-4 with SGD, 0.01 with AdamW].
    #[arg(long, value_parser = real32(settings::WEIGHT_DECAY))]
    wd: Option<f32>,
    /// Linear warm-up of the learning rate over this many steps.
    #[arg(long, default_value_t = 0, value_parser = whole(settings::WARMUP_STEPS))]
    warmup_steps: usize,
    /// Threads reading batches ahead of the step (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = whole(settings::WORKERS))]
    workers: usize,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Use only the first N images of each class.
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// Start every strategy from this training checkpoint's weights.
    #[arg(long)]
    init: Option<std::path::PathBuf>,
    /// fc: visit the fully-connected sub-models depth- or breadth-first.
    #[arg(long, default_value = "dfs")]
    order: Order,
    /// local-fc: train each sub-model with those within this many graph hops.
    #[arg(long, default_value_t = 1, value_parser = whole(settings::NEIGHBORS))]
    neighbors: usize,
    /// dynamic: grad-norm, act-var or freezeout.
    #[arg(long, default_value = "grad-norm")]
    criterion: Criterion,
    /// dynamic: freeze when the windowed statistic moves by less than this (relative).
    #[arg(long, default_value_t = 0.1, value_parser = real32(settings::THRESHOLD))]
    threshold: f32,
    /// dynamic: window length in steps.
    #[arg(long, default_value_t = 50, value_parser = whole(settings::WINDOW))]
    window: usize,
    /// balanced: cap on each head's relative loss change per step.
    #[arg(long, default_value_t = 0.1, value_parser = real32(settings::GAMMA))]
    gamma: f32,
    /// coupled: the first sub-model of the back part (default: the middle one).
    #[arg(long, value_parser = whole(settings::SPLIT))]
    split: Option<usize>,
    /// Where report.md, report.json and report.svg go.
    #[arg(long, default_value = "runs/compare")]
    out: std::path::PathBuf,
    /// Print each strategy's result as a JSON line (`strategy` records, as in report.json).
    #[arg(long)]
    json: bool,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let strategies: Vec<String> = a.strategies.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if let Some(bad) = strategies.iter().find(|s| !NAMES.contains(&s.as_str())) {
        anyhow::bail!("unknown strategy `{bad}`; known: {}", NAMES.join(", "));
    }
    let (train, test) = load_splits(&a.data, a.limit_per_class).with_context(|| format!("loading {}", a.data.display()))?;
    let cfg = CompareConfig {
        model: a.model.clone(),
        strategies,
        settings: RunSpec { epochs: a.epochs, batch: a.batch, seed: a.seed, workers: a.workers, memory_limit: None },
        optim: OptimConfig::from_flags(a.optimizer, a.lr, a.momentum, a.wd, a.warmup_steps)?,
        options: StrategyOptions {
            order: a.order,
            neighbors: a.neighbors,
            criterion: a.criterion,
            threshold: a.threshold,
            window: a.window,
            gamma: a.gamma,
            split: a.split,
        },
        device: a.device.clone(),
        init: a.init.clone(),
        out: a.out.clone(),
    };
    eprintln!("comparing {} on {} training / {} test images", cfg.strategies.join(", "), train.len(), test.len());
    let rows = compare(&cfg, &train, &test, &mut |name, e| {
        eprintln!("{name:>22}  epoch {:>2}  {:<24} {:>7.1} s  loss {:.4}  test {:.2} %", e.epoch, e.stage, e.seconds, e.train_loss, e.test_accuracy * 100.0)
    })
    .with_context(|| format!("comparing strategies on {}", a.model))?;
    if a.json {
        rows.iter().for_each(|r| crate::table::print_record("strategy", &r.record()));
        return Ok(());
    }
    for r in &rows {
        println!(
            "{:>22}  {:>8.1} s  backward {:>5.1} %  test {:.2} % [{:.2}, {:.2}]",
            r.run.strategy,
            r.seconds,
            r.backward_share * 100.0,
            r.run.test_accuracy * 100.0,
            r.ci95.0 * 100.0,
            r.ci95.1 * 100.0
        );
    }
    println!("wrote {}/report.md, report.json, report.svg", a.out.display());
    Ok(())
}
