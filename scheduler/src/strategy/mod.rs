//! Sub-model scheduling strategies: each decides, stage by stage or step by step, which
//! sub-models train, which are frozen (a frozen parameter leaves the backward pass), and with
//! what learning rates: a policy plugged into the one training loop ([`Trainer`]), not a loop of
//! its own. One file per strategy; [`fit`] drives any of them over a data set and records what
//! each epoch cost (`tessera train` runs it with `full`; `compare` turns several runs into the
//! standard report).
pub mod balanced;
pub mod coupled;
pub mod dynamic;
pub mod fc;
pub mod full;
pub mod local_fc;
pub mod random;

use crate::data::{Dataset, Loader, LoaderSpec};
use crate::error::TrainError;
use crate::eval::{evaluate, evaluate_full};
use crate::trainer::{EpochStats, OnNan, OptimConfig, StepInfo, Trainer};
use std::time::Instant;
use tessera_engine::optim::{Cosine, LrSchedule};
use tessera_engine::{Device, Tensor};
use tessera_models::Model;

/// One epoch's data: the training set and how this epoch batches it.
pub struct EpochData<'a> {
    pub epoch: usize,
    pub epochs: usize,
    pub train: &'a Dataset,
    pub spec: LoaderSpec,
}

pub trait Strategy {
    fn name(&self) -> String;

    /// The learning-rate schedule of the run (default: cosine over all steps).
    fn schedule(&self, total_steps: usize) -> Box<dyn LrSchedule> {
        Box::new(Cosine { total_steps })
    }

    /// Called once on the trainer before training (and before a resumed run restores its
    /// state): a recipe sets its own optimizer groups, loss and frozen parameters here.
    fn configure(&mut self, _t: &mut Trainer) -> Result<(), TrainError> {
        Ok(())
    }

    /// Test loss and accuracy after an epoch (`last`: the run's last; default: the plain
    /// forward pass on every test image).
    fn evaluate(&mut self, t: &Trainer, test: &Dataset, spec: &LoaderSpec, _last: bool) -> Result<(f32, f32), TrainError> {
        evaluate(&t.model, test, spec, &t.device)
    }

    /// Called before each epoch: sets what trains; returns the stage's label for the report.
    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError>;

    /// One optimisation step on a batch (default: the ordinary full-network step).
    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        t.step_from(0, x, labels)
    }

    /// Trains one epoch (default: the loader's shuffled, augmented batches through
    /// [`Strategy::step`] in the trainer's loop).
    fn train_epoch(&mut self, t: &mut Trainer, data: &EpochData, progress: &mut dyn FnMut(&StepInfo)) -> Result<EpochStats, TrainError> {
        t.model.net.set_training(true);
        let loader = Loader::new(data.train, &data.spec)?;
        let (count, memory, skipped) = (loader.len(), loader.memory(), loader.skipped());
        let stats = t.run_epoch(data.epoch, 0, loader, count, &mut |t, x, labels| self.step(t, x, labels), progress)?;
        // `steps` counts the epoch's batches, those a resumed run had already trained included.
        Ok(EpochStats { loader_peak_bytes: memory.peak_bytes(), steps: skipped + stats.steps, ..stats })
    }

    /// Notes for the report (e.g. when each layer froze).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The strategies `compare` knows, by name.
pub const NAMES: [&str; 7] = ["full", "fc", "local-fc", "dynamic", "balanced", "coupled", "random"];

/// Options shared by the strategies that take any.
#[derive(Clone, Debug)]
pub struct StrategyOptions {
    pub order: fc::Order,
    pub neighbors: usize,
    pub criterion: dynamic::Criterion,
    pub threshold: f32,
    pub window: usize,
    pub gamma: f32,
    pub split: Option<usize>,
    /// random: the share of sub-models that trains, and how many steps each draw lasts
    /// (none: an epoch).
    pub fraction: f32,
    pub period: Option<usize>,
}

impl Default for StrategyOptions {
    fn default() -> Self {
        Self {
            order: fc::Order::Dfs,
            neighbors: 1,
            criterion: dynamic::Criterion::GradNorm,
            threshold: 0.1,
            window: 50,
            gamma: 0.1,
            split: None,
            fraction: 0.5,
            period: None,
        }
    }
}

/// Builds strategy `name` (one of [`NAMES`]).
pub fn by_name(name: &str, o: &StrategyOptions) -> Result<Box<dyn Strategy>, TrainError> {
    Ok(match name {
        "full" => Box::new(full::Full),
        "fc" => Box::new(fc::Fc::new(o.order)),
        "local-fc" => Box::new(local_fc::LocalFc::new(o.neighbors)),
        "dynamic" => Box::new(dynamic::Dynamic::new(o.criterion, o.threshold, o.window)),
        "balanced" => Box::new(balanced::Balanced::new(o.gamma)),
        "coupled" => Box::new(coupled::Coupled::new(o.split)),
        "random" => Box::new(random::Random::new(o.fraction, o.period)),
        other => return Err(TrainError::Config(format!("unknown strategy `{other}`; known: {}", NAMES.join(", ")))),
    })
}

/// How a run batches and for how long.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// Loader threads (0: one per core) and the loader's memory limit in bytes.
    pub workers: usize,
    pub memory_limit: Option<usize>,
    /// Data-parallel: (rank, ranks), each rank's share of every batch ([`LoaderSpec::shard`]).
    pub shard: (usize, usize),
    /// Evaluate on the test set after every epoch (else after the last one only; the other
    /// epochs' records hold NaN test metrics).
    pub evaluate_each_epoch: bool,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self { epochs: 1, batch: 128, seed: 0, workers: 0, memory_limit: None, shard: (0, 1), evaluate_each_epoch: true }
    }
}

impl RunSpec {
    /// Checks every value against its range (`settings`).
    pub fn validate(&self) -> Result<(), TrainError> {
        use crate::settings::{BATCH, EPOCHS, LOADER_MEMORY, WORKERS};
        EPOCHS.check_usize(self.epochs)?;
        BATCH.check_usize(self.batch)?;
        WORKERS.check_usize(self.workers)?;
        if let Some(bytes) = self.memory_limit {
            LOADER_MEMORY.check_usize(bytes)?;
        }
        Ok(())
    }

    /// Steps in the whole run over `images` training images.
    pub fn total_steps(&self, images: usize) -> usize {
        images.div_ceil(self.batch.max(1)) * self.epochs
    }

    /// Epoch `epoch`'s training batches.
    pub fn train_loader(&self, epoch: usize) -> LoaderSpec {
        LoaderSpec { workers: self.workers, memory_limit: self.memory_limit, shard: self.shard, ..LoaderSpec::train(self.batch, self.seed, epoch as u64) }
    }

    /// Evaluation batches.
    pub fn eval_loader(&self) -> LoaderSpec {
        LoaderSpec { workers: self.workers, memory_limit: self.memory_limit, shard: self.shard, ..LoaderSpec::eval(self.batch) }
    }
}

/// `values` summed over the data-parallel ranks (themselves in one process).
fn across_ranks(t: &Trainer, values: Vec<f32>) -> Result<Vec<f32>, TrainError> {
    match &t.reducer {
        Some(r) => r.world().sum(values),
        None => Ok(values),
    }
}

/// One epoch of a run.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub stage: String,
    /// Training wall time of this epoch (evaluation excluded), and cumulated over the run.
    pub seconds: f64,
    pub elapsed: f64,
    /// Evaluation wall time.
    pub eval_seconds: f64,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
    pub images_per_sec: f64,
    pub backward_flops: f64,
    pub forward_flops: f64,
    /// The optimizer's arithmetic: per trained parameter and step, the rule's operations.
    pub update_flops: f64,
    pub trainable_params: usize,
    /// Batches skipped for a non-finite loss or gradient (`--on-nan skip`).
    pub skipped_batches: usize,
    /// The most bytes of batches the input pipeline held at once.
    pub loader_peak_bytes: usize,
    /// Data-parallel: gradient bytes this rank sent to the all-reduce, seconds the collectives
    /// took, and seconds the step waited for them after the backward pass (the part not hidden
    /// behind it). 0 in one process.
    #[serde(default)]
    pub allreduce_bytes: u64,
    #[serde(default)]
    pub allreduce_seconds: f64,
    #[serde(default)]
    pub allreduce_exposed_seconds: f64,
    /// `compare`'s drift probe, timed before this epoch's turn (0 outside `compare`).
    #[serde(default)]
    pub probe_seconds: f64,
    /// On a GPU, the most bytes of device buffers in tensors at once during the epoch
    /// (training and evaluation; PyTorch's `max_memory_allocated`). None on the CPU.
    #[serde(default)]
    pub device_peak_bytes: Option<u64>,
}

impl EpochRecord {
    /// The epoch's record: a line of metrics.jsonl, and of `train --json`.
    pub fn record(&self) -> serde_json::Value {
        crate::json::shortest_floats(serde_json::json!({
            "epoch": self.epoch,
            "stage": self.stage,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "test_loss": self.test_loss,
            "test_accuracy": self.test_accuracy,
            "seconds": self.seconds,
            "eval_seconds": self.eval_seconds,
            "images_per_sec": self.images_per_sec,
            "skipped_batches": self.skipped_batches,
            "loader_peak_bytes": self.loader_peak_bytes,
            "allreduce_bytes": self.allreduce_bytes,
            "allreduce_seconds": self.allreduce_seconds,
            "allreduce_exposed_seconds": self.allreduce_exposed_seconds,
            "device_peak_bytes": self.device_peak_bytes,
        }))
    }
}

/// Trains `t` with `strategy` from epoch `done + 1` to `spec.epochs` on `train` — the first of
/// them from batch `skip` on (a run resumed mid-epoch) — evaluating on `test` after every
/// epoch; `on_epoch` hears each finished epoch (checkpoints, metrics). When the trainer's stop
/// flag ends an epoch early, the result is [`TrainError::Interrupted`] with no checkpoint:
/// the caller saves one.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    t: &mut Trainer,
    strategy: &mut dyn Strategy,
    train: &Dataset,
    test: &Dataset,
    spec: &RunSpec,
    (done, skip): (usize, usize),
    progress: &mut dyn FnMut(&StepInfo),
    on_epoch: &mut dyn FnMut(&Trainer, &EpochRecord) -> Result<(), TrainError>,
) -> Result<Vec<EpochRecord>, TrainError> {
    if train.is_empty() {
        return Err(TrainError::Config("the training set holds no image".into()));
    }
    let (mut records, mut elapsed) = (Vec::new(), 0.0);
    for epoch in done + 1..=spec.epochs {
        let skip = if epoch == done + 1 { skip } else { 0 };
        let record = fit_epoch(t, strategy, (train, test), spec, (epoch, skip), &mut elapsed, progress)?;
        on_epoch(t, &record)?;
        records.push(record);
    }
    Ok(records)
}

/// Epoch `epoch` of [`fit`] (from batch `skip` on), evaluated on `test`; `elapsed` is the
/// run's training time so far, advanced by this epoch's. `compare` calls it turn by turn.
pub fn fit_epoch(
    t: &mut Trainer,
    strategy: &mut dyn Strategy,
    (train, test): (&Dataset, &Dataset),
    spec: &RunSpec,
    (epoch, skip): (usize, usize),
    elapsed: &mut f64,
    progress: &mut dyn FnMut(&StepInfo),
) -> Result<EpochRecord, TrainError> {
    let data = EpochData { epoch, epochs: spec.epochs, train, spec: LoaderSpec { skip, ..spec.train_loader(epoch) } };
    let (fwd, bwd, upd) = (t.forward_flops, t.backward_flops, t.update_flops);
    let comm = |t: &Trainer| t.reducer.as_ref().map_or((0, 0.0, 0.0), |r| (r.bytes, r.world().comm_seconds(), r.exposed.as_secs_f64()));
    let comm_before = comm(t);
    // The epoch's time is all the strategy does for it: its preparation (e.g. fc's feature
    // cache) counts, not only the steps.
    let start = Instant::now();
    t.device.reset_peak_memory();
    let stage = strategy.begin_epoch(t, &data)?;
    let trainable_params = t.trainable_params();
    let stats = strategy.train_epoch(t, &data, progress)?;
    if stats.interrupted {
        return Err(TrainError::Interrupted { epoch, batches: stats.steps, checkpoint: None });
    }
    let seconds = start.elapsed().as_secs_f64();
    *elapsed += seconds;
    let eval_start = Instant::now();
    let eval = spec.eval_loader();
    let (test_loss, test_accuracy) =
        if spec.evaluate_each_epoch || epoch == spec.epochs { strategy.evaluate(t, test, &eval, epoch == spec.epochs)? } else { (f32::NAN, f32::NAN) };
    // Data-parallel: each rank trained and evaluated its shards; the record is the whole's.
    let n = eval.shard_rows(test.len()) as f32;
    // (A skipped step is skipped on every rank: the guard checks the summed gradients.)
    let i = stats.images as f32;
    let sums = across_ranks(t, vec![stats.loss * i, stats.accuracy * i, i, test_loss * n, test_accuracy * n, n])?;
    let (images, test_n) = (sums[2].max(1.0), sums[5].max(1.0));
    let stats = EpochStats { loss: sums[0] / images, accuracy: sums[1] / images, images: sums[2] as usize, ..stats };
    let (test_loss, test_accuracy) = (sums[3] / test_n, sums[4] / test_n);
    let comm_after = comm(t);
    let record = EpochRecord {
        epoch,
        stage,
        seconds,
        elapsed: *elapsed,
        eval_seconds: eval_start.elapsed().as_secs_f64(),
        train_loss: stats.loss,
        train_accuracy: stats.accuracy,
        test_loss,
        test_accuracy,
        images_per_sec: stats.images as f64 / seconds.max(1e-9),
        backward_flops: t.backward_flops - bwd,
        forward_flops: t.forward_flops - fwd,
        update_flops: t.update_flops - upd,
        trainable_params,
        skipped_batches: stats.skipped,
        loader_peak_bytes: stats.loader_peak_bytes,
        allreduce_bytes: comm_after.0 - comm_before.0,
        allreduce_seconds: comm_after.1 - comm_before.1,
        allreduce_exposed_seconds: comm_after.2 - comm_before.2,
        probe_seconds: 0.0,
        device_peak_bytes: t.device.memory().map(|m| m.peak_live_bytes),
    };
    t.report(&crate::monitor::Report::Epoch(record.clone()))?;
    Ok(record)
}

/// A whole strategy run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StrategyRun {
    pub strategy: String,
    pub epochs: Vec<EpochRecord>,
    /// Final test accuracy, and which test samples were right (for bootstrap intervals).
    pub test_accuracy: f32,
    pub sample_correct: Vec<bool>,
    pub peak_rss_bytes: Option<u64>,
    pub notes: Vec<String>,
}

/// Trains `model` with `strategy` per `spec` and `optim`; the final evaluation keeps which
/// test samples were right. `progress` hears each finished epoch.
#[allow(clippy::too_many_arguments)]
pub fn run(
    strategy: &mut dyn Strategy,
    model: Model,
    device: Device,
    train: &Dataset,
    test: &Dataset,
    spec: &RunSpec,
    optim: &OptimConfig,
    progress: &mut dyn FnMut(&EpochRecord),
) -> Result<StrategyRun, TrainError> {
    spec.validate()?;
    optim.validate()?;
    let classes = train.classes().len();
    let schedule = strategy.schedule(spec.total_steps(train.len()));
    let mut t = Trainer::new(model, device, classes, optim, schedule, OnNan::Stop)?;
    strategy.configure(&mut t)?;
    crate::memory::reset_peak_rss();
    let epochs = fit(&mut t, strategy, train, test, spec, (0, 0), &mut |_| {}, &mut |_, r| {
        progress(r);
        Ok(())
    })?;
    let eval = evaluate_full(&t.model, test, &spec.eval_loader(), &t.device)?;
    Ok(StrategyRun {
        strategy: strategy.name(),
        epochs,
        test_accuracy: eval.accuracy,
        sample_correct: eval.sample_correct,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        notes: strategy.notes(),
    })
}

/// Stage of `epoch` (1-based) when `epochs` epochs are spread over `stages` stages in order:
/// ⌈epoch·stages/epochs⌉ − 1, so the last epoch always runs the last stage; with fewer
/// epochs than stages, stages are sampled evenly.
pub fn stage_of(epoch: usize, epochs: usize, stages: usize) -> usize {
    ((epoch * stages).div_ceil(epochs.max(1))).clamp(1, stages.max(1)) - 1
}
