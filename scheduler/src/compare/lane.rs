//! A lane of `compare`: one strategy's run, kept between turns so the strategies can take
//! their epochs in turns. [`LocalLane`] holds it in this process; the CLI's lanes hold it in a
//! process of its own each (an honest peak memory per strategy).
use super::CompareConfig;
use crate::data::Dataset;
use crate::data::LoaderSpec;
use crate::distributed::GradReducer;
use crate::error::TrainError;
use crate::eval::evaluate_full;
use crate::monitor::Monitor;
use crate::run_state::load_weights;
use crate::strategy::{self, fit_epoch, EpochRecord, RunSpec, Strategy};
use crate::trainer::{OnNan, Trainer};
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;

/// One strategy's run, an epoch at a time.
pub trait Lane {
    /// Trains and evaluates epoch `epoch` (1-based, called in order).
    fn epoch(&mut self, epoch: usize) -> Result<EpochRecord, TrainError>;
    /// The final evaluation (which test samples are right) and the run's notes.
    fn finish(&mut self) -> Result<LaneEnd, TrainError>;
}

/// What a lane knows at its end, beyond its epochs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LaneEnd {
    pub test_accuracy: f32,
    pub sample_correct: Vec<bool>,
    /// The peak resident memory of the lane's own process (none for lanes sharing one).
    pub peak_rss_bytes: Option<u64>,
    pub notes: Vec<String>,
}

/// A strategy spec of `--strategies`: `NAME`, or `NAME@LABEL` — the same strategy under
/// another name (two `full@a,full@b` lanes are an A/A check of the comparison itself).
/// Returns the strategy and the name its report row carries.
pub fn strategy_of(spec: &str, cfg: &CompareConfig) -> Result<(Box<dyn Strategy>, String), TrainError> {
    let (name, label) = match spec.split_once('@') {
        Some((name, label)) if !label.is_empty() => (name, Some(label)),
        Some(_) => return Err(TrainError::Config(format!("`{spec}`: a label after `@` is empty"))),
        None => (spec, None),
    };
    let s = strategy::by_name(name, &cfg.options)?;
    let shown = match label {
        Some(label) => format!("{}@{label}", s.name()),
        None => s.name(),
    };
    Ok((s, shown))
}

/// A lane in this process.
pub struct LocalLane {
    strategy: Box<dyn Strategy>,
    trainer: Trainer,
    train: Dataset,
    test: Dataset,
    spec: strategy::RunSpec,
    elapsed: f64,
}

impl LocalLane {
    /// Strategy `spec` (see [`strategy_of`]) on a fresh model of `cfg`: the seed's weights,
    /// or `init`'s.
    pub fn new(spec: &str, cfg: &CompareConfig, train: &Dataset, test: &Dataset, init: Option<&Checkpoint>) -> Result<Self, TrainError> {
        cfg.settings.validate()?;
        cfg.optim.validate()?;
        let device = Device::parse(&cfg.device)?;
        let (strategy, _) = strategy_of(spec, cfg)?;
        let classes = train.classes().len();
        let model = tessera_models::build_at(&cfg.model, classes, &device, cfg.settings.seed, cfg.granularity)?;
        if let Some(ckpt) = init {
            load_weights(&model, ckpt, &device)?;
        }
        let schedule = strategy.schedule(cfg.settings.total_steps(train.len()));
        let mut trainer = Trainer::new(model, device, classes, &cfg.optim, schedule, OnNan::Stop)?;
        trainer.alert = cfg.watch.alert(classes);
        let world = &cfg.world;
        if world.size > 1 {
            trainer.reducer = Some(GradReducer::new(world.clone()));
        }
        let spec = RunSpec { shard: (world.rank, world.size), ..cfg.settings.clone() };
        Ok(Self { strategy, trainer, train: train.clone(), test: test.clone(), spec, elapsed: 0.0 })
    }
}

impl LocalLane {
    /// Reports the lane's progress and epochs to `monitor`.
    pub fn watch(&mut self, monitor: Option<Monitor>) {
        self.trainer.monitor = monitor;
    }

    /// Ends the epoch in progress after its current step once `flag` is set (a time budget).
    pub fn stop_with(&mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.trainer.stop = Some(flag);
    }

    /// (loss, accuracy) of the lane's model on `data`.
    pub fn evaluate(&self, data: &Dataset) -> Result<(f32, f32), TrainError> {
        crate::eval::evaluate(&self.trainer.model, data, &self.spec.eval_loader(), &self.trainer.device)
    }
}

impl Lane for LocalLane {
    fn epoch(&mut self, epoch: usize) -> Result<EpochRecord, TrainError> {
        fit_epoch(&mut self.trainer, self.strategy.as_mut(), (&self.train, &self.test), &self.spec, (epoch, 0), &mut self.elapsed, &mut |_| {})
    }

    fn finish(&mut self) -> Result<LaneEnd, TrainError> {
        // Every test sample on every rank: the report's interval needs each one's hit.
        let whole = LoaderSpec { shard: (0, 1), ..self.spec.eval_loader() };
        let eval = evaluate_full(&self.trainer.model, &self.test, &whole, &self.trainer.device)?;
        Ok(LaneEnd {
            test_accuracy: eval.accuracy,
            sample_correct: eval.sample_correct,
            // Lanes sharing a process share its peak: only a lane of its own process knows its.
            peak_rss_bytes: None,
            notes: self.strategy.notes(),
        })
    }
}
