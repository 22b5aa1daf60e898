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
use crate::strategy::StrategyOptions;
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
/// another name (two `full@a,full@b` lanes are an A/A check of the comparison itself) — with
/// options of its own after colons: `dynamic:threshold=0.05:window=20@t05` (the keys are the
/// strategy flags' names: order, neighbors, criterion, threshold, window, gamma, split,
/// fraction, period). Returns the strategy and the name its report row carries.
pub fn strategy_of(spec: &str, cfg: &CompareConfig) -> Result<(Box<dyn Strategy>, String), TrainError> {
    let (head, label) = match spec.split_once('@') {
        Some((head, label)) if !label.is_empty() => (head, Some(label)),
        Some(_) => return Err(TrainError::Config(format!("`{spec}`: a label after `@` is empty"))),
        None => (spec, None),
    };
    let mut parts = head.split(':');
    let name = parts.next().unwrap_or_default();
    let overrides: Vec<&str> = parts.collect();
    let options = with_overrides(&cfg.options, &overrides).map_err(|e| TrainError::Config(format!("`{spec}`: {e}")))?;
    let s = strategy::by_name(name, &options)?;
    let shown = match (label, overrides.is_empty()) {
        (Some(label), _) => format!("{}@{label}", s.name()),
        (None, true) => s.name(),
        (None, false) => format!("{} [{}]", s.name(), overrides.join(", ")),
    };
    Ok((s, shown))
}

/// `options` with `key=value` settings applied, each checked as its flag is.
fn with_overrides(options: &StrategyOptions, settings: &[&str]) -> Result<StrategyOptions, String> {
    use crate::settings::{FRACTION, GAMMA, NEIGHBORS, PERIOD, SPLIT, THRESHOLD, WINDOW};
    let mut o = options.clone();
    for setting in settings {
        let (key, value) = setting.split_once('=').ok_or_else(|| format!("`{setting}` is not KEY=VALUE"))?;
        let whole = |w: crate::settings::Whole| w.parse(value).map(|v| v as usize);
        let real = |r: crate::settings::Real| r.parse(value).map(|v| v as f32);
        match key {
            "order" => o.order = value.parse()?,
            "neighbors" => o.neighbors = whole(NEIGHBORS)?,
            "criterion" => o.criterion = value.parse()?,
            "threshold" => o.threshold = real(THRESHOLD)?,
            "window" => o.window = whole(WINDOW)?,
            "gamma" => o.gamma = real(GAMMA)?,
            "split" => o.split = Some(whole(SPLIT)?),
            "fraction" => o.fraction = real(FRACTION)?,
            "period" => o.period = Some(whole(PERIOD)?),
            other => return Err(format!("unknown option `{other}` (order, neighbors, criterion, threshold, window, gamma, split, fraction, period)")),
        }
    }
    Ok(o)
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
        let (mut strategy, _) = strategy_of(spec, cfg)?;
        let classes = train.classes().len();
        let model = tessera_models::build_at(&cfg.model, classes, &device, cfg.settings.seed, cfg.granularity)?;
        if let Some(ckpt) = init {
            load_weights(&model, ckpt, &device)?;
        }
        let schedule = strategy.schedule(cfg.settings.total_steps(train.len()));
        let mut trainer = Trainer::new(model, device, classes, &cfg.optim, schedule, OnNan::Stop)?;
        strategy.configure(&mut trainer)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_sets_options_of_its_own() {
        let base = StrategyOptions::default();
        let o = with_overrides(&base, &["threshold=0.05", "window=20", "fraction=0.25", "period=7"]).unwrap();
        assert_eq!((o.threshold, o.window, o.fraction, o.period), (0.05, 20, 0.25, Some(7)));
        assert_eq!(o.neighbors, base.neighbors, "the rest as the flags say");
        assert!(with_overrides(&base, &["threshold"]).unwrap_err().contains("KEY=VALUE"));
        assert!(with_overrides(&base, &["speed=2"]).unwrap_err().contains("unknown option `speed`"));
        assert!(with_overrides(&base, &["window=0"]).is_err(), "ranges are the flags'");
    }
}
