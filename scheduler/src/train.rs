//! `tessera train`: a model trained on a data folder with the `full` strategy through the one
//! training loop, evaluated after every epoch, with checkpoints, `metrics.jsonl` and resume.
use crate::data::Dataset;
use crate::distributed::{GradReducer, World};
use crate::error::TrainError;
use crate::monitor::WatchSpec;
use crate::recipe::Recipe;
use crate::run_state::{back_up, load_splits, resume_from_verified, save_checkpoint, CheckpointMeta};
use crate::strategy::{fit, full::Full, EpochRecord, RunSpec, Strategy};
use crate::trainer::{OnNan, OptimConfig, Precision, StepInfo, Trainer};
use std::io::Write;
use std::path::PathBuf;
use tessera_engine::Device;
use tessera_models::build;

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub model: String,
    /// A folder with `train/` and `test/` image folders (the ImageNet layout), or the CIFAR-10
    /// binary release.
    pub data: PathBuf,
    /// Epochs, batch, seed, loader threads and memory.
    pub run: RunSpec,
    pub optim: OptimConfig,
    pub device: String,
    pub limit_per_class: Option<usize>,
    /// Where checkpoints and metrics.jsonl go (none: nothing is written).
    pub out: Option<PathBuf>,
    /// Continue from the newest `epoch-NNN.safetensors` in `out`.
    pub resume: bool,
    /// Replace the run already in `out` (its checkpoints and metrics) instead of refusing.
    pub overwrite: bool,
    /// Let an epoch in which every batch was skipped (`OnNan::Skip`) pass instead of failing.
    pub allow_empty_epochs: bool,
    /// What a non-finite loss or gradient does: stop with an error, or skip the batch.
    pub on_nan: OnNan,
    /// Set (e.g. by a SIGINT/SIGTERM handler) to end the run after the current step, saving
    /// an interrupted-run checkpoint that `resume` continues from.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// A second folder that receives a verified copy of every checkpoint; `resume` continues
    /// from the newest checkpoint that verifies in either folder.
    pub backup_dir: Option<PathBuf>,
    /// Data-parallel: BatchNorm statistics over all ranks' rows (PyTorch's SyncBatchNorm)
    /// instead of each rank's own.
    pub sync_bn: bool,
    /// The data-parallel job this process is a rank of: each rank trains on its shard of every
    /// batch and the gradients are summed over the ranks; rank 0 alone writes the run folder.
    pub world: std::sync::Arc<World>,
    /// Live metrics (`--metrics-addr`, `--tensorboard`) and `--alert-exit`.
    pub watch: WatchSpec,
    /// On a GPU: allocations beyond this many bytes fail with an error naming the tensor
    /// (none: the device-local memory the driver reports, where it reports any).
    pub gpu_memory_limit: Option<usize>,
    /// f32, or mixed precision on GPUs with SHADER_F16 (elsewhere f32; see
    /// [`crate::trainer::precision_notice`]).
    pub precision: Precision,
    /// A recipe (`--recipe`): its model, optimizer, schedule, augmentation and evaluation in
    /// place of `model`, `optim` and the `full` strategy.
    pub recipe: Option<Recipe>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: "resnet20-cifar".into(),
            data: PathBuf::from("../shared/data/cifar10"),
            run: RunSpec::default(),
            optim: OptimConfig::default(),
            device: "cpu".into(),
            limit_per_class: None,
            out: None,
            resume: false,
            overwrite: false,
            allow_empty_epochs: false,
            on_nan: OnNan::Stop,
            stop: None,
            world: Default::default(),
            sync_bn: false,
            backup_dir: None,
            watch: WatchSpec::default(),
            gpu_memory_limit: None,
            precision: Precision::F32,
            recipe: None,
        }
    }
}

impl TrainConfig {
    /// Checks every setting against its range (`settings`); messages name the flag (a config
    /// file's keys are the flags' names).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.run.validate()?;
        self.optim.validate()?;
        self.watch.validate()?;
        if let Some(n) = self.gpu_memory_limit {
            crate::settings::GPU_MEMORY_LIMIT.check_usize(n)?;
        }
        if let Some(n) = self.limit_per_class {
            crate::settings::LIMIT_PER_CLASS.check_usize(n)?;
        }
        if let Some(recipe) = &self.recipe {
            if self.model != recipe.model() {
                return Err(TrainError::Config(format!("--recipe {} trains the model {}, not {}", recipe.name(), recipe.model(), self.model)));
            }
        }
        if self.run.batch < self.world.size {
            return Err(TrainError::Config(format!("--batch {} is the global batch: {} ranks need at least one image each", self.run.batch, self.world.size)));
        }
        Ok(())
    }
}

/// Trains per `cfg`; `progress` hears refreshes (at most twice a second) and epoch ends.
/// Returns one record per epoch run.
pub fn train(cfg: &TrainConfig, progress: &mut dyn FnMut(&StepInfo)) -> Result<Vec<EpochRecord>, TrainError> {
    train_with(cfg, progress, None)
}

/// [`train`], with a hook the trainer calls after every backward pass (tests inject faults).
pub fn train_with(cfg: &TrainConfig, progress: &mut dyn FnMut(&StepInfo), grad_hook: Option<crate::trainer::GradHook>) -> Result<Vec<EpochRecord>, TrainError> {
    cfg.validate()?;
    let (train_set, test_set) = load_splits(&cfg.data, cfg.limit_per_class)?;
    train_on(cfg, (&train_set, &test_set), progress, grad_hook)
}

/// [`train_with`] on data sets already loaded (`cfg.data` and `cfg.limit_per_class` are not
/// read): `bench time-to-accuracy` decodes its images once, before the clock starts.
pub fn train_on(
    cfg: &TrainConfig,
    (train_set, test_set): (&Dataset, &Dataset),
    progress: &mut dyn FnMut(&StepInfo),
    grad_hook: Option<crate::trainer::GradHook>,
) -> Result<Vec<EpochRecord>, TrainError> {
    cfg.validate()?;
    let device = Device::parse(&cfg.device)?;
    if let Some(limit) = cfg.gpu_memory_limit {
        device.set_memory_limit(Some(limit as u64));
    }
    if train_set.is_empty() {
        return Err(TrainError::Config(format!("{}: the training set holds no image", cfg.data.display())));
    }
    let model = build(&cfg.model, train_set.classes().len(), &device, cfg.run.seed)?;
    let mut strategy: Box<dyn Strategy> = match &cfg.recipe {
        Some(recipe) => recipe.strategy(train_set.len(), cfg.run.batch),
        None => Box::new(Full),
    };
    let schedule = strategy.schedule(cfg.run.total_steps(train_set.len()));
    let mut t = Trainer::new(model, device.clone(), train_set.classes().len(), &cfg.optim, schedule, cfg.on_nan)?;
    strategy.configure(&mut t)?;
    t.set_precision(cfg.precision)?;
    t.grad_hook = grad_hook;
    let world = &cfg.world;
    let run = RunSpec { shard: (world.rank, world.size), ..cfg.run.clone() };
    if world.size > 1 {
        t.reducer = Some(GradReducer::new(world.clone()));
    }
    // The setting holds the world, and MPI ends only when the world drops: it is unset when
    // this run ends, however it ends. (In one process the batch's statistics are the global.)
    struct SyncBn;
    impl Drop for SyncBn {
        fn drop(&mut self) {
            tessera_engine::nn::set_sync_batch_norm(None);
        }
    }
    let _sync = SyncBn;
    tessera_engine::nn::set_sync_batch_norm(if cfg.sync_bn && world.size > 1 { Some(world.clone()) } else { None });
    // Rank 0 alone keeps the run folder; the others read it only to resume.
    let out = cfg.out.as_ref().filter(|_| world.is_root());
    if let Some(out) = out {
        // A run folder (and its backup) is continued (--resume), replaced (--overwrite) or new:
        // never mixed.
        for dir in std::iter::once(out).chain(cfg.backup_dir.as_ref()) {
            if !cfg.resume && crate::run_state::holds_a_run(dir)? {
                if !cfg.overwrite {
                    return Err(TrainError::Config(format!(
                        "{} already holds a training run; pass --resume to continue it, --overwrite to replace it, or another folder",
                        dir.display()
                    )));
                }
                crate::run_state::clear_run(dir)?;
            }
        }
        std::fs::create_dir_all(out).map_err(|error| TrainError::Io { path: out.clone(), error })?;
    }
    let done = match (&cfg.out, cfg.resume) {
        (Some(out), true) => {
            let dirs: Vec<&std::path::Path> = std::iter::once(out.as_path()).chain(cfg.backup_dir.as_deref()).collect();
            resume_from_verified(&dirs, &t.model, &mut t.opt, &cfg.model, &device)?
        }
        (None, true) => return Err(TrainError::Resume("--resume needs --out (the run folder)".into())),
        _ => (0, 0),
    };
    t.stop = cfg.stop.clone();
    // Rank 0 reports for the run (its metrics are the global batch's at each epoch's end).
    t.alert = cfg.watch.alert(t.classes);
    if world.is_root() {
        t.monitor = cfg.watch.start(&run_name(cfg))?.monitor(&strategy.name(), false)?;
    }
    // A checkpoint in the run folder, and its verified copy in the backup folder.
    let save = |t: &Trainer, out: &std::path::Path, meta: &CheckpointMeta| -> Result<PathBuf, TrainError> {
        let saved = save_checkpoint(out, &t.model, &t.opt, meta)?;
        if let Some(backup) = &cfg.backup_dir {
            back_up(&saved, backup)?;
        }
        Ok(saved)
    };
    let result = fit(&mut t, strategy.as_mut(), train_set, test_set, &run, done, progress, &mut |t, record| {
        if record.skipped_batches > 0 && record.images_per_sec == 0.0 && !cfg.allow_empty_epochs {
            return Err(TrainError::Config(format!(
                "every batch of epoch {} was skipped for a non-finite loss or gradient: nothing was learned (lower --lr, or pass --allow-empty-epochs)",
                record.epoch
            )));
        }
        let Some(out) = out else { return Ok(()) };
        save(t, out, &CheckpointMeta { model: &cfg.model, epoch: record.epoch, seed: cfg.run.seed, batches: None })?;
        let path = out.join("metrics.jsonl");
        let io = |error| TrainError::Io { path: path.clone(), error };
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
        writeln!(f, "{}", record.record()).map_err(io)
    });
    match result {
        // Interrupted mid-epoch: the state after the last finished step, so --resume continues
        // from the next batch exactly as the run would have.
        Err(TrainError::Interrupted { epoch, batches, .. }) => {
            let meta = CheckpointMeta { model: &cfg.model, epoch: epoch - 1, seed: cfg.run.seed, batches: Some(batches) };
            let checkpoint = out.map(|out| save(&t, out, &meta)).transpose()?;
            Err(TrainError::Interrupted { epoch, batches, checkpoint })
        }
        other => other,
    }
}

/// The run's name in metrics and the registry: its folder's name (else the model's).
pub fn run_name(cfg: &TrainConfig) -> String {
    cfg.out.as_deref().map_or_else(|| cfg.model.clone(), |o| crate::monitor::run_name(o, &cfg.model))
}
