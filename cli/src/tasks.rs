//! `tessera plan` / `run-plan` / `run-task`: task decomposition, trained as parallel processes.
use crate::flags::{model_name, real32, real64, whole};
use crate::jobs::{unfinished, JobDir};
use crate::runs::Registration;
use crate::table::{note, print_record};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use tessera_engine::Device;
use tessera_registry::NewRun;
use tessera_scheduler::data::Dataset;
use tessera_scheduler::json::shortest_floats;
use tessera_scheduler::monitor::{pass_on, Forward, Labels, Monitor};
use tessera_scheduler::run_state::load_splits;
use tessera_scheduler::settings;
use tessera_scheduler::tasks::{evaluate_merged, train_task, Plan, TaskConfig};
use tessera_scheduler::trainer::{OptimConfig, OptimizerKind};

#[derive(Args)]
pub struct PlanArgs {
    /// Number of classes K.
    #[arg(long, value_parser = whole(settings::CLASSES))]
    classes: usize,
    /// Number of tasks N.
    #[arg(long, value_parser = whole(settings::TASKS))]
    tasks: usize,
    /// Wall-time budget of each task, in seconds.
    #[arg(long, value_parser = real64(settings::TIME_BUDGET))]
    time_budget: f64,
    /// Where the output is written (a file, or a folder created if missing).
    #[arg(long, default_value = "plan.json")]
    out: PathBuf,
    /// Print the plan as one JSON line (a `plan` record: plan.json's document).
    #[arg(long)]
    json: bool,
    /// --emit slurm DIR: DIR/plan.json and a Slurm job array with a task per plan task
    /// running `tessera run-task` with the flags after `--` (e.g. `-- --data
    /// ../shared/data/cifar10 --model simple-cnn`).
    #[command(flatten)]
    emit: crate::jobs::EmitArgs,
    /// run-task's flags, after `--` (with --emit).
    #[arg(last = true)]
    task_flags: Vec<String>,
}

/// Settings of the task models, shared by run-plan and the run-task children it starts.
#[derive(Args, Clone)]
pub struct TaskArgs {
    /// The plan file `tessera plan` wrote.
    #[arg(long)]
    plan: PathBuf,
    /// Data folder: `train/` and `test/` image folders, or the CIFAR-10 binary release.
    #[arg(long)]
    data: PathBuf,
    /// The model (`tessera models` lists them).
    #[arg(long, default_value = "simple-cnn", value_parser = model_name())]
    model: String,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = whole(settings::BATCH))]
    batch: usize,
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    optimizer: OptimizerKind,
    /// The peak of the cosine over the time budget (0.05 left simple-cnn, which has no batch
    /// norm, at 10–60 % on the colour-coded test set in 2 of 3 runs; 0.02 and 0.01 at 100 %).
    #[arg(long, default_value_t = 0.02, value_parser = real32(settings::LR))]
    lr: f32,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CPU threads of each task's backend (0: one per core).
    #[arg(long, default_value_t = 0, value_parser = whole(settings::THREADS))]
    threads: usize,
    /// Use only the first N images of each class.
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// Folder for the task checkpoints.
    #[arg(long, default_value = "runs/plan")]
    out: PathBuf,
}

#[derive(Args)]
pub struct RunPlanArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Concurrent task processes (default: one per core, at most one per task).
    #[arg(long, value_parser = whole(settings::WORKERS))]
    workers: Option<usize>,
    /// Print the results as JSON lines (`task` and `merged` records, as in OUT/results.json).
    #[arg(long)]
    json: bool,
    /// Each task's metrics labelled `task-N`, its events in DIR/task-N.
    #[command(flatten)]
    watch: crate::watch::WatchArgs,
    /// The run registry this run registers in [default: registry.sqlite beside --out].
    #[arg(long, value_name = "FILE")]
    registry: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunTaskArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// The task of the plan to train (0-based).
    #[arg(long, value_parser = whole(settings::TASK_INDEX))]
    index: usize,
    /// Metrics labelled `task-N`, events in DIR/task-N.
    #[command(flatten)]
    watch: crate::watch::WatchArgs,
    /// Write progress reports to stdout for the run-plan that started this task.
    #[arg(long, hide = true)]
    forward_reports: bool,
}

pub fn plan(a: PlanArgs) -> Result<()> {
    let plan = Plan::new(a.classes, a.tasks, a.time_budget)?;
    if let Some(job) = a.emit.job_dir("tasks")? {
        let script = emit_slurm(&plan, &job, &a.task_flags)?;
        note(a.json, &format!("wrote {} (an array of {} tasks): sbatch it, then `tessera merge {}`", script.display(), plan.tasks.len(), job.dir.display()));
        return Ok(());
    }
    crate::create_parent(&a.out)?;
    let text = plan.to_json();
    std::fs::write(&a.out, &text).with_context(|| format!("writing {}", a.out.display()))?;
    if a.json {
        print_record("plan", &serde_json::from_str(&text).context("the plan's own JSON")?);
    } else {
        for (t, classes) in plan.tasks.iter().enumerate() {
            println!("task {t}: classes {classes:?}, budget {} s", plan.budget_secs);
        }
    }
    note(a.json, &format!("wrote {}", a.out.display()));
    Ok(())
}

fn config(a: &TaskArgs) -> Result<TaskConfig> {
    Ok(TaskConfig {
        model: a.model.clone(),
        data: a.data.clone(),
        limit_per_class: a.limit_per_class,
        batch: a.batch,
        optim: OptimConfig::from_flags(a.optimizer, a.lr, None, None, 0)?,
        seed: a.seed,
        device: "cpu".into(),
        threads: a.threads,
        workers: 1,
        world: Default::default(),
        watch: Default::default(),
    })
}

/// A plan's name in metrics: its task folder's name.
fn run_name(a: &TaskArgs) -> String {
    tessera_scheduler::monitor::run_name(&a.out, "plan")
}

/// One task, in this process (what run-plan's children run).
pub fn run_task(a: RunTaskArgs) -> Result<()> {
    let plan = Plan::load(&a.task.plan)?;
    // Under mpirun or srun (an array task with --ranks): the task trains data-parallel.
    let cfg = TaskConfig { world: std::sync::Arc::new(tessera_scheduler::distributed::World::from_env()?), watch: a.watch.spec(), ..config(&a.task)? };
    let name = format!("task-{}", a.index);
    let monitor = match a.forward_reports {
        true => Some(Monitor::new(Labels { run: run_name(&a.task), strategy: name }, vec![Box::new(Forward)])),
        false if cfg.world.is_root() => cfg.watch.start(&run_name(&a.task))?.monitor(&name, true)?,
        false => None,
    };
    let r = train_task(&plan, a.index, &cfg, &a.task.out, monitor).with_context(|| format!("training task {}", a.index))?;
    if !cfg.world.is_root() {
        return Ok(());
    }
    println!(
        "task {}: {} steps ({:.2} epochs of its data) in {:.1} s after {:.1} s of start-up, trained over [{:.3}, {:.3}] (UNIX s) → {}",
        r.task,
        r.steps,
        r.epochs,
        r.seconds,
        r.startup_secs,
        r.trained_from,
        r.trained_until,
        r.checkpoint.display()
    );
    Ok(())
}

/// A task's process, and the thread passing on its stdout when it forwards reports.
type TaskProcess = (Child, Option<std::thread::JoinHandle<()>>);

/// Every task as a child process, at most `workers` at a time, then the merged classifier.
pub fn run_plan(a: RunPlanArgs) -> Result<()> {
    let plan = Plan::load(&a.task.plan)?;
    let registration = Registration::begin(a.registry.as_deref(), plan_run(&a, &plan), &a.task.data)?;
    let outcome = train_plan(&a, &plan);
    if let Err(e) = register_plan_outcome(registration, &a.task.out, outcome.is_ok()) {
        eprintln!("registry: {e:#}");
    }
    outcome
}

/// A plan's run as the registry keeps it: the plan and the task settings as its config.
fn plan_run(a: &RunPlanArgs, plan: &Plan) -> NewRun {
    let t = &a.task;
    let config = json!({
        "plan": t.plan, "tasks": plan.tasks, "budget_secs": plan.budget_secs, "data": t.data, "model": t.model, "batch": t.batch,
        "optimizer": format!("{:?}", t.optimizer).to_lowercase(), "lr": t.lr, "seed": t.seed, "threads": t.threads, "limit_per_class": t.limit_per_class,
        "workers": a.workers,
    });
    let strategy = format!("{} tasks", plan.tasks.len());
    NewRun {
        name: run_name(t),
        command: "run-plan".into(),
        config: crate::runs::run_config(config, None),
        strategy,
        device: "cpu".into(),
        out: t.out.clone(),
        ..Default::default()
    }
}

/// Registers how a plan's run ended and, when it finished, each task's and the merged
/// classifier's records (as `results.json` holds them) and the task checkpoints.
fn register_plan_outcome(mut r: Registration, out: &std::path::Path, finished: bool) -> Result<()> {
    let id = r.id;
    if finished {
        let text = std::fs::read_to_string(out.join("results.json")).with_context(|| format!("reading {}", out.join("results.json").display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        for t in doc["tasks"].as_array().into_iter().flatten() {
            r.registry().record_result(id, &format!("task-{}", t["task"]), t)?;
        }
        r.registry().record_result(id, "merged", &doc["merged"])?;
    }
    let mut checkpoints: Vec<PathBuf> = std::fs::read_dir(out).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())).collect();
    checkpoints.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("task-") && n.ends_with(".safetensors")));
    checkpoints.sort();
    for path in checkpoints {
        r.checkpoint(&path, "primary", None);
    }
    r.finish(if finished { "ok" } else { "failed" })
}

/// Trains every task of `plan` and merges them (`run-plan`'s work).
fn train_plan(a: &RunPlanArgs, plan: &Plan) -> Result<()> {
    // The plan against the data before any task starts (not task by task, after start-up).
    let (train, test) = load_splits(&a.task.data, a.task.limit_per_class).with_context(|| format!("loading {}", a.task.data.display()))?;
    if train.classes().len() != plan.classes {
        bail!("{} splits {} classes; {} has {}", a.task.plan.display(), plan.classes, a.task.data.display(), train.classes().len());
    }
    drop(train);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = a.workers.unwrap_or(cores).clamp(1, plan.tasks.len());
    let threads = (cores / workers).max(1);
    let exe = std::env::current_exe().context("locating the tessera binary")?;
    let watch = a.watch.spec().start(&run_name(&a.task))?;
    let start = Instant::now();
    let spawn = |t: usize| -> Result<TaskProcess> {
        let mut cmd = Command::new(&exe);
        cmd.arg("run-task").arg("--index").arg(t.to_string()).arg("--plan").arg(&a.task.plan).arg("--data").arg(&a.task.data);
        cmd.args(["--model", &a.task.model, "--batch", &a.task.batch.to_string(), "--lr", &a.task.lr.to_string(), "--seed", &a.task.seed.to_string()]);
        let optimizer = match a.task.optimizer {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::AdamW => "adamw",
        };
        cmd.args(["--optimizer", optimizer, "--threads", &threads.to_string()]);
        cmd.arg("--out").arg(&a.task.out);
        if let Some(n) = a.task.limit_per_class {
            cmd.args(["--limit-per-class", &n.to_string()]);
        }
        if let Some(f) = a.watch.alert_exit {
            cmd.args(["--alert-exit", &f.to_string()]);
        }
        let monitor = watch.monitor(&format!("task-{t}"), true)?;
        if monitor.is_some() {
            cmd.arg("--forward-reports").stdout(Stdio::piped());
        } else {
            // Under --json, stdout holds records only: the tasks' reports go to stderr.
            cmd.stdout(if a.json { Stdio::from(std::io::stderr()) } else { Stdio::inherit() });
        }
        let mut child = cmd.stderr(Stdio::inherit()).spawn().with_context(|| format!("starting task {t}"))?;
        let mut reader = None;
        if let (Some(mut monitor), Some(out)) = (monitor, child.stdout.take()) {
            // The task's reports go to this process's monitor; its other lines are printed.
            let json = a.json;
            reader = Some(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    match pass_on(&line, Some(&mut monitor)) {
                        Some(Err(e)) => eprintln!("task {t}'s metrics: {e}"),
                        Some(Ok(())) => {}
                        None if json => eprintln!("{line}"),
                        None => println!("{line}"),
                    }
                }
            }));
        }
        Ok((child, reader))
    };
    eprintln!("{} tasks, {workers} at a time, {threads} thread(s) each, budget {} s per task", plan.tasks.len(), plan.budget_secs);
    let mut pending: Vec<usize> = (0..plan.tasks.len()).rev().collect();
    let mut running: Vec<(usize, TaskProcess)> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < workers {
            let Some(t) = pending.pop() else { break };
            running.push((t, spawn(t)?));
        }
        let (t, (mut child, reader)) = running.remove(0);
        let status = child.wait().with_context(|| format!("waiting for task {t}"))?;
        // Its last lines are passed on before anything else prints.
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        if !status.success() {
            bail!("task {t} failed ({status})");
        }
    }
    let trained = start.elapsed().as_secs_f64();
    let merged = json!({"train_seconds": trained, "budget_secs": plan.budget_secs, "workers": workers});
    if !a.json {
        println!("all tasks trained in {trained:.1} s (budget {} s per task, {workers} at a time)", plan.budget_secs);
    }
    report_merged(plan, &a.task, &test, merged, &a.task.out.join("results.json"), a.json)?;
    Ok(())
}

/// Evaluates the task checkpoints in `task.out` merged into one classifier on `test`, prints
/// each task's accuracy beside its baselines and the merged accuracy (`task` and `merged`
/// records with `--json`), and writes them to `results`. `merged` holds how the tasks ran.
fn report_merged(plan: &Plan, task: &TaskArgs, test: &Dataset, mut merged: serde_json::Value, results: &std::path::Path, json: bool) -> Result<()> {
    let (accuracy, own) = evaluate_merged(plan, &task.out, test, &task.model, &Device::cpu(), 256)?;
    let tasks: Vec<_> = own
        .iter()
        .enumerate()
        .map(|(t, acc)| {
            // A task model that always answers "other" is right on every image of other tasks.
            let others = (0..test.len()).filter(|&i| !plan.tasks[t].contains(&test.label(i))).count() as f32 / test.len().max(1) as f32;
            json!({"task": t, "classes": plan.tasks[t], "accuracy": acc, "always_other_accuracy": others, "chance_accuracy": 1.0 / (plan.tasks[t].len() + 1) as f32})
        })
        .collect();
    merged["classes"] = json!(plan.classes);
    merged["accuracy"] = json!(accuracy);
    merged["chance_accuracy"] = json!(1.0 / plan.classes as f32);
    let doc = shortest_floats(json!({"plan": task.plan.display().to_string(), "test_images": test.len(), "tasks": &tasks, "merged": &merged}));
    std::fs::write(results, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", results.display()))?;
    if json {
        tasks.iter().for_each(|t| print_record("task", t));
        print_record("merged", &merged);
        eprintln!("wrote {}", results.display());
        return Ok(());
    }
    for (t, acc) in own.iter().enumerate() {
        let others = tasks[t]["always_other_accuracy"].as_f64().unwrap_or(f64::NAN);
        println!(
            "task {t} (classes {:?} + other): {:.2} % on the test set (always \"other\": {:.2} %, chance {:.2} %)",
            plan.tasks[t],
            acc * 100.0,
            others * 100.0,
            100.0 / (plan.tasks[t].len() + 1) as f32
        );
    }
    println!("merged {}-way classifier: test accuracy {:.2} % (chance {:.2} %)", plan.classes, accuracy * 100.0, 100.0 / plan.classes as f32);
    println!("wrote {}", results.display());
    Ok(())
}

/// `run-task`'s flags as `plan --emit` takes them after `--`, parsed as run-task would.
#[derive(clap::Parser)]
#[command(name = "tessera run-task", no_binary_name = true)]
struct TaskFlags {
    #[command(flatten)]
    task: RunTaskArgs,
}

fn task_flags(plan: &std::path::Path, out: &std::path::Path, flags: &[String]) -> Result<RunTaskArgs> {
    let words = ["--index".to_string(), "0".into(), "--plan".into(), plan.display().to_string(), "--out".into(), out.display().to_string()];
    let parsed = <TaskFlags as clap::Parser>::try_parse_from(words.iter().chain(flags)).map_err(|e| anyhow::anyhow!("the run-task flags after `--`: {e}"))?;
    Ok(parsed.task)
}

/// `plan --emit slurm DIR -- FLAGS`: DIR/plan.json and an array task per plan task running
/// `run-task FLAGS` into DIR/tasks.
fn emit_slurm(plan: &Plan, job: &JobDir, flags: &[String]) -> Result<std::path::PathBuf> {
    let (plan_path, out) = (job.dir.join("plan.json"), job.dir.join("tasks"));
    let task = task_flags(&plan_path, &out, flags)?;
    if !task.task.data.exists() {
        bail!("--data {}: no such folder (the run-task flags after `--` need one)", task.task.data.display());
    }
    std::fs::write(&plan_path, plan.to_json()).with_context(|| format!("writing {}", plan_path.display()))?;
    let mut command: Vec<String> = [job.exe.clone(), "run-task".into(), "--index".into(), "{item}".into()].into();
    command.extend(["--plan".into(), plan_path.display().to_string(), "--out".into(), out.display().to_string()]);
    command.extend(flags.iter().cloned());
    let items: Vec<String> = (0..plan.tasks.len()).map(|t| t.to_string()).collect();
    job.write("tessera-plan", &items, &command, json!({"kind": "plan", "tasks": plan.tasks.len(), "task_flags": flags}))
}

#[derive(Args)]
pub struct MergeArgs {
    /// A folder `plan --emit slurm` or `compare --emit slurm` wrote, whose array tasks have run.
    dir: PathBuf,
    /// Print the results as JSON lines (`task` and `merged` records, as in DIR/results.json).
    #[arg(long)]
    json: bool,
}

/// `tessera merge DIR`: the finished array tasks' checkpoints merged and evaluated; a missing
/// task is named with the end of its log.
pub fn merge(a: MergeArgs) -> Result<()> {
    let (dir, job) = crate::jobs::open(&a.dir)?;
    match job["kind"].as_str() {
        Some("plan") => {}
        Some("sweep") => return crate::compare::merge_sweep(&dir, &job, a.json),
        _ => bail!("{}: kind {} is not one merge knows (plan, sweep)", dir.join("job.json").display(), job["kind"]),
    }
    let flags: Vec<String> = serde_json::from_value(job["task_flags"].clone()).context("job.json: task_flags")?;
    let task = task_flags(&dir.join("plan.json"), &dir.join("tasks"), &flags)?.task;
    let plan = Plan::load(&task.plan)?;
    let missing: Vec<String> =
        (0..plan.tasks.len()).filter(|t| !task.out.join(format!("task-{t}.safetensors")).is_file()).map(|t| unfinished(&dir, t, "no checkpoint")).collect();
    if !missing.is_empty() {
        bail!("{} of {} tasks did not finish:\n{}", missing.len(), plan.tasks.len(), missing.join("\n"));
    }
    let (_, test) = load_splits(&task.data, task.limit_per_class).with_context(|| format!("loading {}", task.data.display()))?;
    report_merged(&plan, &task, &test, json!({"merged_from": dir.display().to_string()}), &dir.join("results.json"), a.json)
}
