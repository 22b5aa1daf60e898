//! `tessera compare`: the standard run report over several scheduling strategies.
use crate::flags::{model_name, real32, whole};
use crate::runs::Registration;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tessera_engine::checkpoint::Checkpoint;
use tessera_registry::NewRun;
use tessera_scheduler::compare::lane::{strategy_of, Lane, LaneEnd, LocalLane};
use tessera_scheduler::compare::probe::ProbeTimes;
use tessera_scheduler::compare::{compare, compare_lanes, initial_accuracy, report_from_repeats, CompareConfig, Interleaved, Stat};
use tessera_scheduler::monitor::{pass_on, Forward, Labels, Monitor};
use tessera_scheduler::run_state::load_splits;
use tessera_scheduler::settings;
use tessera_scheduler::strategy::EpochRecord;
use tessera_scheduler::strategy::{dynamic::Criterion, fc::Order, RunSpec, StrategyOptions};
use tessera_scheduler::trainer::{OptimConfig, OptimizerKind};
use tessera_scheduler::TrainError;

/// What a strategy run needs besides its strategy and length: the model, the data, the
/// optimizer, the seed, the device and the strategies' options (`compare` and `search`).
#[derive(Args)]
pub struct RunArgs {
    /// The model (`tessera models` lists them).
    #[arg(long, default_value = "resnet20-cifar", value_parser = model_name())]
    model: String,
    /// Folder holding `train/` and `test/` image folders (or the CIFAR-10 binary release).
    #[arg(long)]
    data: std::path::PathBuf,
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
    /// How finely the model is cut into the sub-models the strategies schedule: stage, block
    /// or branch (ResNets), stage or layer (AlexNet, simple-cnn).
    #[arg(long, default_value = "stage")]
    granularity: tessera_models::Granularity,
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
    /// random: the share of sub-models that trains (fraction·n rounded, at least one).
    #[arg(long, default_value_t = 0.5, value_parser = real32(settings::FRACTION))]
    fraction: f32,
    /// random: draw a new subset every this many steps [default: every epoch].
    #[arg(long, value_parser = whole(settings::PERIOD))]
    period: Option<usize>,
}

#[derive(Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Comma-separated: full, fc, local-fc, dynamic, balanced, coupled; `NAME@LABEL` runs a
    /// strategy again under another name (`full,full@again`: an A/A check).
    #[arg(long, default_value = "full,fc,dynamic")]
    strategies: String,
    /// Train on 9 of every 10 training images and score on the held-out tenth, leaving the
    /// test set out: for choosing settings (a threshold, a fraction) without the test set.
    #[arg(long)]
    holdout: bool,
    /// Runs of the whole interleaved comparison (the report gives mean ± std).
    #[arg(long, default_value_t = 1, value_parser = whole(settings::REPEAT))]
    repeat: usize,
    /// Run the comparison once per seed (initial weights, data order, random draws): the
    /// report gives accuracy as mean ± std over the seeds with a bootstrap interval, and marks
    /// differences from full beyond the seed-to-seed spread.
    #[arg(long, value_delimiter = ',', conflicts_with = "repeat")]
    seeds: Vec<u64>,
    /// Epochs to train.
    #[arg(long, default_value_t = 2, value_parser = whole(settings::EPOCHS))]
    epochs: usize,
    /// Where report.md, report.json and report.svg go.
    #[arg(long, default_value = "runs/compare")]
    out: std::path::PathBuf,
    /// Print each strategy's result as a JSON line (`strategy` records, as in report.json).
    #[arg(long)]
    json: bool,
    /// --emit slurm DIR: instead of training, a Slurm job array with a task per strategy
    /// (each this command for its strategy, into DIR/strategies/<i>).
    #[command(flatten)]
    emit: crate::jobs::EmitArgs,
    #[command(flatten)]
    watch: crate::watch::WatchArgs,
    /// The run registry this comparison registers in [default: registry.sqlite beside --out].
    #[arg(long, value_name = "FILE")]
    registry: Option<std::path::PathBuf>,
}

impl RunArgs {
    /// The settings of a comparison of `strategies` (comma-separated) over `epochs`, run
    /// `repeat` times, its report in `out`.
    pub fn config(&self, strategies: &str, epochs: usize, repeat: usize, out: &std::path::Path) -> Result<CompareConfig> {
        Ok(CompareConfig {
            model: self.model.clone(),
            strategies: strategies.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            settings: RunSpec { epochs, batch: self.batch, seed: self.seed, workers: self.workers, ..RunSpec::default() },
            optim: OptimConfig::from_flags(self.optimizer, self.lr, self.momentum, self.wd, self.warmup_steps)?,
            options: StrategyOptions {
                order: self.order,
                neighbors: self.neighbors,
                criterion: self.criterion,
                threshold: self.threshold,
                window: self.window,
                gamma: self.gamma,
                split: self.split,
                fraction: self.fraction,
                period: self.period,
            },
            device: self.device.clone(),
            init: self.init.clone(),
            out: out.to_path_buf(),
            repeat,
            seeds: Vec::new(),
            holdout: false,
            granularity: self.granularity,
            world: Default::default(),
            layout: None,
            watch: Default::default(),
        })
    }

    /// The train and test sets of `--data` (with `--limit-per-class`).
    pub fn load(&self) -> Result<(tessera_scheduler::data::Dataset, tessera_scheduler::data::Dataset)> {
        load_splits(&self.data, self.limit_per_class).with_context(|| format!("loading {}", self.data.display()))
    }
}

/// The comparison's settings from the flags.
fn config(a: &CompareArgs) -> Result<CompareConfig> {
    let repeat = if a.seeds.is_empty() { a.repeat } else { a.seeds.len() };
    Ok(CompareConfig { watch: a.watch.spec(), seeds: a.seeds.clone(), holdout: a.holdout, ..a.run.config(&a.strategies, a.epochs, repeat, &a.out)? })
}

impl CompareArgs {
    /// The sets the comparison trains and scores on: train and test, or with --holdout the
    /// training set's 9/10 and its held-out tenth.
    fn load(&self) -> Result<(tessera_scheduler::data::Dataset, tessera_scheduler::data::Dataset)> {
        let (train, test) = self.run.load()?;
        Ok(if self.holdout { tessera_scheduler::search::hold_out(&train) } else { (train, test) })
    }
}

pub fn run(a: CompareArgs) -> Result<()> {
    let mut cfg = config(&a)?;
    if let Some(job) = a.emit.job_dir("strategies")? {
        return emit_sweep(&a, &cfg, &job);
    }
    // Under mpirun or srun: every strategy data-parallel over the job's ranks.
    cfg.world = std::sync::Arc::new(tessera_scheduler::distributed::World::from_env()?);
    for spec in &cfg.strategies {
        strategy_of(spec, &cfg)?;
    }
    let (train, test) = a.load()?;
    let world = cfg.world.clone();
    let mut progress = |name: &str, e: &EpochRecord| {
        if world.is_root() {
            eprintln!("{name:>22}  epoch {:>2}  {:<24} {:>7.1} s  loss {:.4}  test {:.2} %", e.epoch, e.stage, e.seconds, e.train_loss, e.test_accuracy * 100.0)
        }
    };
    // Rank 0 registers the comparison, and at its end how it ended and what each strategy gave.
    let registration = match world.is_root() {
        true => Some(Registration::begin(a.registry.as_deref(), compare_run(&a, &cfg), &a.run.data)?),
        false => None,
    };
    let outcome = if world.size > 1 {
        // Under mpirun every rank holds all the lanes; each lane's steps are data-parallel.
        if world.is_root() {
            eprintln!(
                "comparing {} on {} training / {} test images, in turns, data-parallel over {} ranks",
                cfg.strategies.join(", "),
                train.len(),
                test.len(),
                world.size
            );
        }
        compare(&cfg, &train, &test, &mut progress)
    } else {
        eprintln!("comparing {} on {} training / {} test images, in turns, one process per strategy", cfg.strategies.join(", "), train.len(), test.len());
        // Each lane gets the same flags as this command, and forwards its reports here.
        let flags: Vec<std::ffi::OsString> = std::env::args_os().skip_while(|a| a != "compare").skip(1).collect();
        cfg.watch.start(&cfg.run_name()).and_then(|watch| {
            if let Some(addr) = watch.metrics_addr() {
                eprintln!("metrics at http://{addr}/metrics");
            }
            let mut lanes = |k: usize| {
                let lane =
                    |spec: &String| -> Result<Box<dyn Lane>, TrainError> { Ok(Box::new(ProcessLane::spawn(spec, k, &flags, watch.monitor(spec, true)?)?)) };
                cfg.strategies.iter().map(lane).collect()
            };
            compare_lanes(&cfg, &train, &test, &mut lanes, &mut progress)
        })
    };
    if let Some(r) = registration {
        if let Err(e) = register_compare_outcome(r, &outcome) {
            eprintln!("registry: {e:#}");
        }
    }
    let rows = outcome.with_context(|| format!("comparing strategies on {}", a.run.model))?;
    if !world.is_root() {
        return Ok(());
    }
    print_rows(&rows, a.json, &a.out);
    Ok(())
}

/// The report's rows on stdout: `strategy` records, or a line per strategy.
/// A comparison as the registry keeps it: its settings as the config.
fn compare_run(a: &CompareArgs, cfg: &CompareConfig) -> NewRun {
    let o = &cfg.options;
    let config = json!({
        "model": cfg.model, "data": a.run.data, "strategies": cfg.strategies, "repeat": cfg.repeat, "epochs": cfg.settings.epochs,
        "batch": cfg.settings.batch, "seed": cfg.settings.seed, "workers": cfg.settings.workers, "lr": cfg.optim.lr,
        "warmup_steps": cfg.optim.warmup_steps, "device": cfg.device, "limit_per_class": a.run.limit_per_class, "init": cfg.init,
        "order": format!("{:?}", o.order).to_lowercase(), "neighbors": o.neighbors, "criterion": format!("{:?}", o.criterion).to_lowercase(),
        "threshold": o.threshold, "window": o.window, "granularity": cfg.granularity.to_string(), "gamma": o.gamma, "split": o.split, "fraction": o.fraction, "period": o.period, "ranks": cfg.world.size,
    });
    NewRun {
        name: cfg.run_name(),
        command: "compare".into(),
        config: crate::runs::run_config(config, Some(cfg.optim.rule)),
        strategy: cfg.strategies.join(","),
        device: cfg.device.clone(),
        out: cfg.out.clone(),
        ..Default::default()
    }
}

/// Registers how a comparison ended and, when it finished, each strategy's record (as
/// report.json holds it) and epochs.
fn register_compare_outcome(mut r: Registration, outcome: &Result<Vec<tessera_scheduler::compare::Row>, TrainError>) -> Result<()> {
    let id = r.id;
    for row in outcome.iter().flatten() {
        let mut record = row.record();
        let name = record["strategy"].as_str().unwrap_or_default().to_string();
        let epochs = record.as_object_mut().and_then(|m| m.remove("epochs")).unwrap_or_default();
        for e in epochs.as_array().into_iter().flatten() {
            r.registry().record_epoch(id, &name, e["epoch"].as_i64().unwrap_or(0), e)?;
        }
        r.registry().record_result(id, &name, &record)?;
    }
    r.finish(crate::runs::status_of(outcome))
}

fn print_rows(rows: &[tessera_scheduler::compare::Row], json: bool, out: &std::path::Path) {
    if json {
        rows.iter().for_each(|r| crate::table::print_record("strategy", &r.record()));
        return;
    }
    let ratio = |r: Option<Stat>| r.map_or("n/a".to_string(), |r| format!("{:.2}×", r.mean));
    for r in rows {
        println!(
            "{:>22}  {:>8.1} s  normalised {:>8.1} s ({})  test {:.2} % [{:.2}, {:.2}]  {}",
            r.run.strategy,
            r.seconds.mean,
            r.normalised_seconds.mean,
            ratio(r.normalised_ratio),
            r.run.test_accuracy * 100.0,
            r.ci95.0 * 100.0,
            r.ci95.1 * 100.0,
            r.verdict
        );
    }
    println!("wrote {}/report.md, report.json, report.svg", out.display());
}

/// This command's flags but those the array tasks set themselves (--strategies, --out,
/// --emit, --ranks, --json).
fn task_flags() -> Vec<String> {
    let args: Vec<String> = std::env::args().skip_while(|a| a != "compare").skip(1).collect();
    let (mut kept, mut skip) = (Vec::new(), 0);
    for a in args {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let name = a.split('=').next().unwrap_or_default();
        match name {
            "--strategies" | "--out" | "--ranks" if !a.contains('=') => skip = 1,
            "--emit" => skip = 2 - a.contains('=') as usize,
            "--strategies" | "--out" | "--ranks" | "--json" => {}
            _ => kept.push(a),
        }
    }
    kept
}

/// `compare --emit slurm DIR`: an array task per strategy, each this comparison for one
/// strategy into DIR/strategies/<i> (its runs.json is what `merge` reads).
fn emit_sweep(a: &CompareArgs, cfg: &CompareConfig, job: &crate::jobs::JobDir) -> Result<()> {
    for spec in &cfg.strategies {
        strategy_of(spec, cfg)?;
    }
    let flags = task_flags();
    let mut command: Vec<String> = vec![job.exe.clone(), "compare".into()];
    command.extend(flags.iter().cloned());
    command.extend(["--strategies".into(), "{item}".into(), "--out".into(), job.dir.join("strategies/{index}").display().to_string()]);
    let record = serde_json::json!({"kind": "sweep", "strategies": cfg.strategies, "compare_flags": flags});
    let script = job.write("tessera-sweep", &cfg.strategies, &command, record)?;
    let wrote = format!("wrote {} (an array of {} strategies): sbatch it, then `tessera merge {}`", script.display(), cfg.strategies.len(), job.dir.display());
    crate::table::note(a.json, &wrote);
    Ok(())
}

/// `compare`'s flags as a sweep's job.json keeps them, parsed as compare would.
#[derive(clap::Parser)]
#[command(name = "tessera compare", no_binary_name = true)]
struct SweepFlags {
    #[command(flatten)]
    compare: CompareArgs,
}

/// `tessera merge DIR` of a sweep (`dir` resolved by [`crate::jobs::open`]): each strategy's
/// runs.json, together, into DIR's report.
pub fn merge_sweep(dir: &std::path::Path, job: &serde_json::Value, json: bool) -> Result<()> {
    let strategies: Vec<String> = serde_json::from_value(job["strategies"].clone()).context("job.json: strategies")?;
    let flags: Vec<String> = serde_json::from_value(job["compare_flags"].clone()).context("job.json: compare_flags")?;
    let words = ["--strategies".to_string(), strategies.join(","), "--out".into(), dir.display().to_string()];
    let parsed = <SweepFlags as clap::Parser>::try_parse_from(words.iter().chain(&flags)).map_err(|e| anyhow::anyhow!("job.json's compare flags: {e}"))?;
    let mut cfg = config(&parsed.compare)?;
    cfg.layout = Some("each strategy an array task of a Slurm job, not in turns: each epoch is normalised by the drift probe of its own task".into());
    let mut per: Vec<Vec<Interleaved>> = Vec::new();
    let mut missing = Vec::new();
    for (i, name) in strategies.iter().enumerate() {
        let path = dir.join(format!("strategies/{i}/runs.json"));
        match std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<Vec<Interleaved>>(&t).ok()) {
            Some(runs) if runs.len() == cfg.repeat && runs.iter().all(|r| r.runs.len() == 1) => per.push(runs),
            _ => missing.push(crate::jobs::unfinished(dir, i, &format!("strategy `{name}` left no complete {}", path.display()))),
        }
    }
    if !missing.is_empty() {
        anyhow::bail!("{} of {} strategies did not finish:\n{}", missing.len(), strategies.len(), missing.join("\n"));
    }
    let repeats: Vec<Interleaved> = (0..cfg.repeat)
        .map(|r| Interleaved {
            runs: per.iter().map(|p| p[r].runs[0].clone()).collect(),
            probe: ProbeTimes { seconds: per.iter().flat_map(|p| p[r].probe.seconds.iter().copied()).collect() },
        })
        .collect();
    let (train, test) = parsed.compare.load()?;
    let initial = initial_accuracy(&cfg.for_repeat(cfg.repeat - 1), &test, train.classes().len())?;
    let rows = report_from_repeats(&cfg, &train, &test, initial, &repeats)?;
    print_rows(&rows, json, dir);
    Ok(())
}

/// A lane of `compare` in a `tessera compare-lane` process of its own: its peak memory is its
/// own. It answers each line on its stdin (`epoch N`, `finish`) with one JSON line.
struct ProcessLane {
    spec: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Hears the reports the lane forwards between its answers.
    monitor: Option<Monitor>,
}

impl ProcessLane {
    /// The lane of `spec` in repeat `repeat` (which picks its seed of `--seeds`).
    fn spawn(spec: &str, repeat: usize, flags: &[std::ffi::OsString], monitor: Option<Monitor>) -> Result<Self, TrainError> {
        let exe = std::env::current_exe().map_err(|e| TrainError::Config(format!("locating the tessera binary: {e}")))?;
        let mut child = Command::new(exe)
            .arg("compare-lane")
            .args(flags)
            .args(["--lane", spec, "--repeat-index", &repeat.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| TrainError::Config(format!("starting the lane of `{spec}`: {e}")))?;
        let (stdin, stdout) = (child.stdin.take().expect("piped"), BufReader::new(child.stdout.take().expect("piped")));
        let mut lane = Self { spec: spec.into(), child, stdin, stdout, monitor };
        // Ready (data loaded, model built) before the next lane starts: no start-up overlaps
        // another lane's epoch or the probe.
        lane.answer::<String>("start")?;
        Ok(lane)
    }

    /// Sends `line`; returns the lane's answer.
    fn ask<T: serde::de::DeserializeOwned>(&mut self, line: &str) -> Result<T, TrainError> {
        writeln!(self.stdin, "{line}").and_then(|_| self.stdin.flush()).map_err(|e| self.fail(format!("it stopped listening ({e})")))?;
        self.answer(line)
    }

    fn fail(&self, detail: String) -> TrainError {
        TrainError::Config(format!("the lane of `{}`: {detail}", self.spec))
    }

    /// The lane's answer to `line`.
    fn answer<T: serde::de::DeserializeOwned>(&mut self, line: &str) -> Result<T, TrainError> {
        let fail = |detail: String| TrainError::Config(format!("the lane of `{}`: {detail}", self.spec));
        let mut answer = String::new();
        loop {
            answer.clear();
            self.stdout.read_line(&mut answer).map_err(|e| fail(e.to_string()))?;
            match pass_on(&answer, self.monitor.as_mut()) {
                Some(passed) => passed?,
                None => break,
            }
        }
        let reply: LaneReply<T> = serde_json::from_str(&answer).map_err(|_| fail(format!("it ended without an answer to `{line}` (its error is above)")))?;
        match reply {
            LaneReply::Ok(value) => Ok(value),
            LaneReply::Error(e) => Err(fail(e)),
        }
    }
}

impl Lane for ProcessLane {
    fn epoch(&mut self, epoch: usize) -> Result<EpochRecord, TrainError> {
        self.ask(&format!("epoch {epoch}"))
    }

    fn finish(&mut self) -> Result<LaneEnd, TrainError> {
        self.ask("finish")
    }
}

impl Drop for ProcessLane {
    fn drop(&mut self) {
        // A lane ended early (another failed) does not outlive the comparison.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum LaneReply<T> {
    Ok(T),
    Error(String),
}

/// `tessera compare-lane`: one strategy of a comparison, an epoch per `epoch N` line on stdin.
#[derive(Args)]
pub struct LaneArgs {
    #[command(flatten)]
    compare: CompareArgs,
    /// The strategy spec this lane trains.
    #[arg(long)]
    lane: String,
    /// The repeat this lane belongs to (its seed of `--seeds`).
    #[arg(long, default_value_t = 0)]
    repeat_index: usize,
}

pub fn lane(a: LaneArgs) -> Result<()> {
    let cfg = config(&a.compare)?.for_repeat(a.repeat_index);
    let (train, test) = a.compare.load()?;
    let init = cfg.init.as_deref().map(Checkpoint::load).transpose()?;
    let reply = |r: LaneReply<serde_json::Value>| {
        println!("{}", serde_json::to_string(&r).expect("plain values"));
        std::io::stdout().flush()
    };
    let mut lane = match LocalLane::new(&a.lane, &cfg, &train, &test, init.as_ref()) {
        // The comparison's process serves the metrics: a lane forwards its reports there.
        Ok(mut lane) => {
            if cfg.watch.reports() {
                let labels = Labels { run: cfg.run_name(), strategy: a.lane.clone() };
                lane.watch(Some(Monitor::new(labels, vec![Box::new(Forward)])));
            }
            lane
        }
        Err(e) => {
            reply(LaneReply::Error(format!("{:#}", anyhow::Error::new(e))))?;
            std::process::exit(1);
        }
    };
    reply(LaneReply::Ok(serde_json::json!("ready")))?;
    for line in std::io::stdin().lines() {
        let line = line?;
        let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["epoch", n] => match n.parse() {
                Ok(n) => lane.epoch(n).map(|r| serde_json::to_value(r).expect("plain values")),
                Err(_) => Err(TrainError::Config(format!("`{line}`: not an epoch number"))),
            },
            ["finish"] => lane.finish().map(|mut end| {
                end.peak_rss_bytes = tessera_scheduler::memory::peak_rss_bytes();
                serde_json::to_value(end).expect("plain values")
            }),
            _ => Err(TrainError::Config(format!("`{line}`: expected `epoch N` or `finish`"))),
        };
        let done = line.trim() == "finish";
        match answer {
            Ok(v) => reply(LaneReply::Ok(v))?,
            Err(e) => {
                reply(LaneReply::Error(format!("{:#}", anyhow::Error::new(e))))?;
                std::process::exit(1);
            }
        }
        if done {
            break;
        }
    }
    Ok(())
}
