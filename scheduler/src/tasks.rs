//! Task decomposition: K classes split into N tasks, one model per task trained on its own
//! labels under a wall-time budget (as parallel processes: `tessera run-plan`), then merged
//! into one K-way classifier. Each task model has one class more than its task, "other",
//! trained on an equal number of images of the other tasks' classes, so that its scores mean
//! "this image is one of mine" and the merged classifier can compare tasks: the merged score
//! of class c of task t is task t's log-probability of c, and the top score wins.
use crate::data::{Dataset, Loader, LoaderSpec, Subset};
use crate::error::TrainError;
use crate::run_state::{load_splits, load_weights};
use crate::trainer::{OnNan, OptimConfig, Trainer};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tessera_engine::checkpoint::{self, Checkpoint};
use tessera_engine::ops;
use tessera_engine::optim::Constant;
use tessera_engine::{no_grad, Device, Tensor, Var};

/// A decomposition: which classes each task owns and each task's wall-time budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub classes: usize,
    pub tasks: Vec<Vec<usize>>,
    pub budget_secs: f64,
}

/// The most classes a plan may split: a plan file is untrusted input, and every class costs
/// memory before any check of the data set could catch a wrong count.
pub const MAX_CLASSES: usize = 1 << 20;

impl Plan {
    /// Splits classes 0..k into `n` tasks of near-equal size, round robin (task t gets
    /// t, t + n, …), so neighbouring class indices land in different tasks.
    pub fn new(k: usize, n: usize, budget_secs: f64) -> Result<Self, TrainError> {
        if k == 0 || k > MAX_CLASSES {
            return Err(TrainError::Config(format!("--classes must be between 1 and {MAX_CLASSES}, got {k}")));
        }
        if n == 0 || n > k {
            return Err(TrainError::Config(format!("cannot split {k} classes into {n} tasks (need 1 ≤ tasks ≤ classes)")));
        }
        check_budget(budget_secs).map_err(|e| TrainError::Config(format!("--time-budget {e}")))?;
        Ok(Self { classes: k, tasks: (0..n).map(|t| (t..k).step_by(n).collect()).collect(), budget_secs })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&json!({"classes": self.classes, "tasks": self.tasks, "budget_secs": self.budget_secs})).expect("plain values")
    }

    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|error| TrainError::Io { path: path.into(), error })?;
        Self::from_json(&text).map_err(|detail| TrainError::Config(format!("{}: {detail}", path.display())))
    }

    /// Parses and checks a plan: 1 ≤ classes ≤ [`MAX_CLASSES`], a finite positive budget, and
    /// non-empty tasks of class indices that cover 0..classes once each.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let classes = v["classes"].as_u64().ok_or("no `classes` count (a whole number)")?;
        if classes == 0 || classes > MAX_CLASSES as u64 {
            return Err(format!("`classes` must be between 1 and {MAX_CLASSES}, got {classes}"));
        }
        let classes = classes as usize;
        let budget_secs = v["budget_secs"].as_f64().ok_or("no `budget_secs` (a number of seconds)")?;
        check_budget(budget_secs).map_err(|e| format!("`budget_secs` {e}"))?;
        let list = v["tasks"].as_array().ok_or("no `tasks` list")?;
        if list.is_empty() || list.len() > classes {
            return Err(format!("{} tasks for {classes} classes (need 1 ≤ tasks ≤ classes)", list.len()));
        }
        let mut seen = vec![false; classes];
        let mut tasks = Vec::with_capacity(list.len());
        for (t, task) in list.iter().enumerate() {
            let own = task.as_array().ok_or_else(|| format!("task {t} is not a list of class indices"))?;
            if own.is_empty() {
                return Err(format!("task {t} has no class: it would have nothing to train on"));
            }
            let mut cs = Vec::with_capacity(own.len());
            for c in own {
                let c = c.as_u64().filter(|&c| c < classes as u64).ok_or_else(|| format!("task {t}: `{c}` is not a class index below {classes}"))? as usize;
                if std::mem::replace(&mut seen[c], true) {
                    return Err(format!("class {c} belongs to two tasks"));
                }
                cs.push(c);
            }
            tasks.push(cs);
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(format!("class {missing} belongs to no task (the tasks must cover classes 0..{classes})"));
        }
        Ok(Self { classes, tasks, budget_secs })
    }
}

/// A time budget must be a finite number of seconds above zero.
fn check_budget(secs: f64) -> Result<(), String> {
    if secs.is_finite() && secs > 0.0 {
        Ok(())
    } else {
        Err(format!("must be a positive number of seconds, got {secs}"))
    }
}

/// One task's training settings.
#[derive(Clone, Debug)]
pub struct TaskConfig {
    pub model: String,
    pub data: PathBuf,
    pub limit_per_class: Option<usize>,
    pub batch: usize,
    /// The optimizer; its rate is the peak of the cosine over the budget.
    pub optim: OptimConfig,
    pub seed: u64,
    pub device: String,
    /// CPU threads of the backend (0: the process-wide default) and loader threads (0: one
    /// per core).
    pub threads: usize,
    pub workers: usize,
    /// Data-parallel (the task under mpirun/srun): every rank trains its share of each batch;
    /// rank 0 writes the checkpoint.
    pub world: Arc<crate::distributed::World>,
    /// `--alert-exit` (the metrics' sinks come with [`train_task`]'s monitor).
    pub watch: crate::monitor::WatchSpec,
}

/// What training one task did.
#[derive(Clone, Debug)]
pub struct TaskReport {
    pub task: usize,
    pub steps: usize,
    pub epochs: f64,
    /// Training time (the budget's clock) and the start-up before it (data, model).
    pub seconds: f64,
    pub startup_secs: f64,
    /// When training began and ended, in seconds since the UNIX epoch (to compare the
    /// intervals of tasks run as separate processes).
    pub trained_from: f64,
    pub trained_until: f64,
    pub checkpoint: PathBuf,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `set` relabelled for a task: its classes become 0..k, and as many images of other classes
/// as it has (drawn with `seed`) become class k, "other". A view: no image is copied.
pub fn task_view(set: &Dataset, own: &[usize], seed: u64) -> Subset {
    let k = own.len();
    let mut mine: Vec<usize> = (0..set.len()).filter(|&i| own.contains(&set.label(i))).collect();
    let mut others: Vec<usize> = (0..set.len()).filter(|&i| !own.contains(&set.label(i))).collect();
    others.shuffle(&mut StdRng::seed_from_u64(seed));
    others.truncate(mine.len());
    mine.extend(others);
    mine.sort_unstable();
    let classes = own.iter().map(|&c| set.classes()[c].clone()).chain(["other".to_string()]).collect();
    let labels = mine.iter().map(|&i| own.iter().position(|&c| c == set.label(i)).unwrap_or(k)).collect();
    Subset { base: set.clone(), indices: mine, labels, classes }
}

/// Trains task `task` of `plan` until its budget is spent (checked before every step: the
/// last step may overrun by one step's time; start-up — loading the data, building the
/// model — is not counted) and saves `out/task-<t>.safetensors`.
/// Rank 0's progress goes to `monitor`, if any.
pub fn train_task(plan: &Plan, task: usize, cfg: &TaskConfig, out: &Path, monitor: Option<crate::monitor::Monitor>) -> Result<TaskReport, TrainError> {
    let launched = Instant::now();
    crate::settings::BATCH.check_usize(cfg.batch)?;
    crate::settings::THREADS.check_usize(cfg.threads)?;
    cfg.optim.validate()?;
    let own = plan.tasks.get(task).ok_or_else(|| TrainError::Config(format!("the plan has {} tasks, not {}", plan.tasks.len(), task + 1)))?;
    let device = match Device::parse(&cfg.device)? {
        Device::Cpu(_) => Device::cpu_with_threads(cfg.threads),
        gpu => gpu,
    };
    let (train, _) = load_splits(&cfg.data, cfg.limit_per_class)?;
    if train.classes().len() != plan.classes {
        return Err(TrainError::Config(format!("{} has {} classes; the plan has {}", cfg.data.display(), train.classes().len(), plan.classes)));
    }
    let view: Dataset = Arc::new(task_view(&train, own, cfg.seed ^ task as u64));
    if view.is_empty() {
        return Err(TrainError::Config(format!("task {task} (classes {own:?}) has no training image in {}", cfg.data.display())));
    }
    let model = tessera_models::build(&cfg.model, own.len() + 1, &device, cfg.seed + task as u64)?;
    // The rate follows a cosine over the time budget, set before each step.
    let mut t = Trainer::new(model, device, own.len() + 1, &cfg.optim, Box::new(Constant), OnNan::Stop)?;
    t.alert = cfg.watch.alert(own.len() + 1);
    t.monitor = monitor.filter(|_| cfg.world.is_root());
    if cfg.world.size > 1 {
        t.reducer = Some(crate::distributed::GradReducer::new(cfg.world.clone()));
    }
    // The budget ends the run through the trainer's stop flag, which the ranks agree on after
    // every step: all of them stop after the same step.
    let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    t.stop = Some(over.clone());
    // The budget is for training: loading and decoding the data is start-up.
    let (start, trained_from) = (Instant::now(), unix_now());
    let startup_secs = launched.elapsed().as_secs_f64();
    let budget = plan.budget_secs;
    let base_lr = cfg.optim.lr;
    let mut images = 0usize;
    for epoch in 0.. {
        let spec = LoaderSpec { workers: cfg.workers, shard: (cfg.world.rank, cfg.world.size), ..LoaderSpec::train(cfg.batch, cfg.seed, epoch) };
        let loader = Loader::new(&view, &spec)?;
        let count = loader.len();
        let stats = t.run_epoch(
            epoch as usize + 1,
            0,
            loader,
            count,
            &mut |t, x, labels| {
                let elapsed = start.elapsed().as_secs_f64();
                // The step that crosses the budget is the last (its update at the cosine's end).
                over.store(elapsed >= budget, std::sync::atomic::Ordering::SeqCst);
                t.opt.lr = base_lr * 0.5 * (1.0 + (std::f64::consts::PI * elapsed.min(budget) / budget).cos()) as f32;
                t.step_from(0, x, labels)
            },
            &mut |_| {},
        )?;
        images += stats.images;
        if stats.interrupted {
            break;
        }
    }
    let (model, steps) = (&t.model, t.steps());
    let path = out.join(format!("task-{task}.safetensors"));
    let (seconds, trained_until) = (start.elapsed().as_secs_f64(), unix_now());
    // (Data-parallel, `images` are this rank's: about 1/N of the batches' rows.)
    let report = TaskReport {
        task,
        steps,
        epochs: (images * cfg.world.size) as f64 / view.len() as f64,
        seconds,
        startup_secs,
        trained_from,
        trained_until,
        checkpoint: path.clone(),
    };
    if !cfg.world.is_root() {
        return Ok(report);
    }
    std::fs::create_dir_all(out).map_err(|error| TrainError::Io { path: out.into(), error })?;
    let mut tensors: Vec<(String, Tensor)> = model.net.named_params().into_iter().map(|(n, p)| (n, p.value())).collect();
    tensors.extend(model.net.named_buffers().into_iter().map(|(n, b)| (n, b.value())));
    let classes = own.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let meta = HashMap::from([("model".to_string(), cfg.model.clone()), ("task".to_string(), task.to_string()), ("classes".to_string(), classes)]);
    checkpoint::save(&path, &tensors, &meta)?;
    Ok(report)
}

/// The merged classifier's accuracy on `test` from the task checkpoints in `dir`, and each
/// task model's own accuracy on its share of the test set (its classes vs "other").
pub fn evaluate_merged(plan: &Plan, dir: &Path, test: &Dataset, model_name: &str, device: &Device, batch: usize) -> Result<(f32, Vec<f32>), TrainError> {
    let mut scores = vec![f32::NEG_INFINITY; test.len() * plan.classes];
    let mut own_accuracy = Vec::new();
    for (t, own) in plan.tasks.iter().enumerate() {
        let ckpt = Checkpoint::load(&dir.join(format!("task-{t}.safetensors")))?;
        let model = tessera_models::build(model_name, own.len() + 1, device, 0)?;
        load_weights(&model, &ckpt, device)?;
        model.net.set_training(false);
        let (mut hits, mut seen, mut row) = (0usize, 0usize, 0usize);
        for b in Loader::new(test, &LoaderSpec::eval(batch))? {
            let b = b?;
            let logp = no_grad(|| -> Result<Vec<f32>, TrainError> {
                let logits = model.net.forward(&Var::constant(Tensor::from_vec(b.x, &b.shape, device)?))?;
                Ok(ops::log_softmax(logits.value())?.to_vec()?)
            })?;
            let k1 = own.len() + 1;
            for (i, &label) in b.labels.iter().enumerate() {
                let p = &logp[i * k1..(i + 1) * k1];
                for (j, &c) in own.iter().enumerate() {
                    scores[(row + i) * plan.classes + c] = p[j];
                }
                let truth = own.iter().position(|&c| c == label).unwrap_or(own.len());
                let guess = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j);
                hits += (guess == truth) as usize;
                seen += 1;
            }
            row += b.labels.len();
        }
        own_accuracy.push(hits as f32 / seen.max(1) as f32);
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let s = &scores[i * plan.classes..(i + 1) * plan.classes];
            s.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j) == Some(test.label(i))
        })
        .count();
    Ok((correct as f32 / test.len().max(1) as f32, own_accuracy))
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn a_plan_file_is_checked_before_use() {
        let ok = Plan::from_json(r#"{"classes": 4, "tasks": [[0, 2], [1, 3]], "budget_secs": 2.5}"#).unwrap();
        assert_eq!((ok.classes, ok.tasks.len(), ok.budget_secs), (4, 2, 2.5));
        for (text, says) in [
            (r#"{"classes": 2, "tasks": [[0, 1], []], "budget_secs": 1}"#, "task 1 has no class"),
            (r#"{"classes": 1000000000000, "tasks": [[0]], "budget_secs": 1}"#, "`classes` must be between 1 and"),
            (r#"{"classes": 0, "tasks": [], "budget_secs": 1}"#, "`classes` must be between 1 and"),
            (r#"{"classes": 2, "tasks": [[0], [1]], "budget_secs": -3}"#, "`budget_secs` must be a positive number"),
            (r#"{"classes": 2, "tasks": [[0], [1]], "budget_secs": 1e999}"#, "not JSON"),
            (r#"{"classes": 2, "tasks": [[0, "x"], [1]], "budget_secs": 1}"#, "is not a class index below 2"),
            (r#"{"classes": 2, "tasks": [[0, 0], [1]], "budget_secs": 1}"#, "class 0 belongs to two tasks"),
            (r#"{"classes": 3, "tasks": [[0], [1]], "budget_secs": 1}"#, "class 2 belongs to no task"),
            (r#"{"classes": 2, "tasks": [[0], [1], [0]], "budget_secs": 1}"#, "3 tasks for 2 classes"),
        ] {
            let e = Plan::from_json(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(Plan::new(3, 2, f64::INFINITY).unwrap_err().to_string().contains("--time-budget must be a positive number"));
        assert!(Plan::new(0, 1, 1.0).is_err() && Plan::new(usize::MAX, 1, 1.0).is_err());
    }
}
