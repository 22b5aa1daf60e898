//! Sub-model scheduling strategies: each decides, stage by stage or step by step, which
//! sub-models train, which are frozen (a frozen parameter leaves the backward pass), and with
//! what learning rates. One file per strategy; [`run`] drives any of them over a data set
//! and records what the run cost (`compare` turns several runs into the standard report).
pub mod balanced;
pub mod coupled;
pub mod dynamic;
pub mod fc;
pub mod full;
pub mod local_fc;

use crate::data::{Augment, Batches, ImageSet, Normalize};
use crate::train::{argmax_hits, evaluate_full, TrainError};
use std::time::Instant;
use tessera_engine::autograd as ag;
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::ops::SgdHyper;
use tessera_engine::optim::{Cosine, LrSchedule, ParamGroup, Sgd};
use tessera_engine::{Device, Tensor, Var};
use tessera_models::Model;

/// A model under training, with its optimizer (one parameter group per sub-model, in the
/// order of `model.submodels`) and counters of the work done.
pub struct Trainer {
    pub model: Model,
    pub sgd: Sgd,
    pub device: Device,
    pub classes: usize,
    /// GEMM FLOPs (2 per multiply-add of every convolution and linear layer) run so far.
    pub forward_flops: f64,
    pub backward_flops: f64,
}

/// What one step reports.
pub struct StepOutput {
    pub loss: f32,
    /// [batch, classes] logits of the model's (final) head.
    pub logits: Vec<f32>,
}

impl Trainer {
    /// SGD over one group per sub-model, with `schedule` over `total_steps`.
    pub fn new(model: Model, device: Device, classes: usize, lr: f32, hyper: SgdHyper, schedule: Box<dyn LrSchedule>) -> Self {
        let groups = model.submodels.iter().map(|sub| ParamGroup::new(sub.name.clone(), model.params_of(sub).into_iter().map(|(_, p)| p).collect())).collect();
        let sgd = Sgd::new(groups, lr, hyper).with_schedule(schedule);
        Self { model, sgd, device, classes, forward_flops: 0.0, backward_flops: 0.0 }
    }

    /// The default schedule: cosine annealing over the run.
    pub fn cosine(total_steps: usize) -> Box<dyn LrSchedule> {
        Box::new(Cosine { total_steps })
    }

    pub fn submodel_count(&self) -> usize {
        self.model.submodels.len()
    }

    /// Trains exactly the sub-models at `indices` (and any extra groups, e.g. auxiliary
    /// heads); every other sub-model is frozen. Returns the trainable parameter count.
    pub fn set_trainable(&self, indices: &[usize]) -> usize {
        let n = self.submodel_count();
        for (i, group) in self.sgd.groups().iter().enumerate() {
            let on = i >= n || indices.contains(&i);
            group.params.iter().for_each(|p| p.set_requires_grad(on));
        }
        self.trainable_params()
    }

    pub fn trainable_params(&self) -> usize {
        self.sgd.groups().iter().flat_map(|g| &g.params).filter(|p| p.requires_grad()).map(|p| p.value().numel()).sum()
    }

    /// Whether sub-model `i` has a trainable parameter.
    pub fn is_trainable(&self, i: usize) -> bool {
        self.sgd.groups()[i].params.iter().any(|p| p.requires_grad())
    }

    /// Runs stages `stages` of the network on `x`, counting forward FLOPs.
    pub fn forward_stages(&mut self, stages: std::ops::Range<usize>, x: &Var) -> Result<Var, TrainError> {
        let (out, flops) = count_gemm_flops(|| stages.into_iter().try_fold(x.clone(), |h, s| self.model.net.forward_stage(s, &h)));
        self.forward_flops += flops;
        Ok(out?)
    }

    /// Backward from `loss`, counting its FLOPs.
    pub fn backward(&mut self, loss: &Var) -> Result<(), TrainError> {
        let (done, flops) = count_gemm_flops(|| loss.backward());
        done?;
        self.backward_flops += flops;
        Ok(())
    }

    /// Backward from `loss`, one SGD update, gradients cleared.
    pub fn backward_and_update(&mut self, loss: &Var) -> Result<(), TrainError> {
        self.backward(loss)?;
        self.sgd.step()?;
        self.sgd.zero_grad();
        Ok(())
    }

    /// The ordinary step on a batch entering at stage `first`: forward, cross-entropy, backward, update.
    pub fn step_from(&mut self, first: usize, x: Tensor, labels: &[usize]) -> Result<StepOutput, TrainError> {
        let n = self.submodel_count();
        let logits = self.forward_stages(first..n, &Var::constant(x))?;
        let loss = ag::cross_entropy(&logits, labels)?;
        self.backward_and_update(&loss)?;
        finish(&loss, &logits)
    }

    /// ‖∇‖₂ over each sub-model's trainable parameters (0 for frozen ones) after a backward pass.
    pub fn grad_norms(&self) -> Result<Vec<f32>, TrainError> {
        let n = self.submodel_count();
        let mut norms = Vec::with_capacity(n);
        for g in &self.sgd.groups()[..n] {
            let mut sq = 0f64;
            for p in g.params.iter().filter(|p| p.requires_grad()) {
                if let Some(grad) = p.grad() {
                    sq += grad.to_vec()?.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
                }
            }
            norms.push(sq.sqrt() as f32);
        }
        Ok(norms)
    }
}

/// The loss value and logits of a finished step; a non-finite loss is an error.
pub fn finish(loss: &Var, logits: &Var) -> Result<StepOutput, TrainError> {
    let loss = loss.value().to_vec()?[0];
    if !loss.is_finite() {
        return Err(TrainError::NonFinite { epoch: 0, step: 0, what: format!("loss {loss}"), place: "a strategy step".into() });
    }
    Ok(StepOutput { loss, logits: logits.value().to_vec()? })
}

/// One epoch's data: the training set and how to batch it.
pub struct EpochData<'a> {
    pub epoch: usize,
    pub epochs: usize,
    pub train: &'a ImageSet,
    pub batch: usize,
    pub seed: u64,
    pub norm: Normalize,
}

/// What training one epoch gave.
#[derive(Clone, Debug, Default)]
pub struct EpochStats {
    pub loss: f32,
    pub accuracy: f32,
    pub images: usize,
}

/// Running sums of an epoch's loss and hits.
#[derive(Default)]
pub struct Tally {
    loss: f64,
    hits: usize,
    seen: usize,
}

impl Tally {
    pub fn add(&mut self, out: &StepOutput, labels: &[usize], classes: usize) {
        self.loss += out.loss as f64 * labels.len() as f64;
        self.hits += argmax_hits(&out.logits, classes, labels);
        self.seen += labels.len();
    }

    pub fn stats(&self) -> EpochStats {
        let n = self.seen.max(1) as f64;
        EpochStats { loss: (self.loss / n) as f32, accuracy: (self.hits as f64 / n) as f32, images: self.seen }
    }
}

pub trait Strategy {
    fn name(&self) -> String;

    /// The learning-rate schedule of the run's SGD (default: cosine over all steps).
    fn schedule(&self, total_steps: usize) -> Box<dyn LrSchedule> {
        Trainer::cosine(total_steps)
    }

    /// Called before each epoch: sets what trains; returns the stage's label for the report.
    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError>;

    /// One optimisation step on a batch (default: the ordinary full-network step).
    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<StepOutput, TrainError> {
        t.step_from(0, x, labels)
    }

    /// Trains one epoch (default: shuffled, augmented batches through [`Strategy::step`]).
    fn train_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<EpochStats, TrainError> {
        let mut tally = Tally::default();
        t.model.net.set_training(true);
        for b in Batches::new(data.train, data.batch, data.seed, data.epoch as u64, true, Some(Augment::CIFAR), data.norm) {
            let out = self.step(t, Tensor::from_vec(b.x, &b.shape, &t.device)?, &b.labels)?;
            tally.add(&out, &b.labels, t.classes);
        }
        Ok(tally.stats())
    }

    /// Notes for the report (e.g. when each layer froze).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The strategies `compare` knows, by name.
pub const NAMES: [&str; 6] = ["full", "fc", "local-fc", "dynamic", "balanced", "coupled"];

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
}

impl Default for StrategyOptions {
    fn default() -> Self {
        Self { order: fc::Order::Dfs, neighbors: 1, criterion: dynamic::Criterion::GradNorm, threshold: 0.1, window: 50, gamma: 0.1, split: None }
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
        other => return Err(TrainError::Config(format!("unknown strategy `{other}`; known: {}", NAMES.join(", ")))),
    })
}

/// One epoch of a strategy run.
#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub stage: String,
    /// Training wall time of this epoch (evaluation excluded), and cumulated over the run.
    pub seconds: f64,
    pub elapsed: f64,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: f32,
    pub images_per_sec: f64,
    pub backward_flops: f64,
    pub forward_flops: f64,
    pub trainable_params: usize,
}

/// A whole strategy run.
#[derive(Clone, Debug)]
pub struct StrategyRun {
    pub strategy: String,
    pub epochs: Vec<EpochRecord>,
    /// Final test accuracy, and which test samples were right (for bootstrap intervals).
    pub test_accuracy: f32,
    pub sample_correct: Vec<bool>,
    pub peak_rss_bytes: Option<u64>,
    pub notes: Vec<String>,
}

/// Run settings shared by every strategy of a comparison.
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub seed: u64,
}

/// Trains `model` with `strategy` for `s.epochs` epochs on `train`, evaluating on `test`
/// after every epoch; `progress` hears each finished epoch.
pub fn run(
    strategy: &mut dyn Strategy,
    model: Model,
    device: Device,
    train: &ImageSet,
    test: &ImageSet,
    s: &RunSettings,
    progress: &mut dyn FnMut(&EpochRecord),
) -> Result<StrategyRun, TrainError> {
    let classes = train.classes.len();
    let hyper = SgdHyper { momentum: s.momentum, dampening: 0.0, weight_decay: s.weight_decay, nesterov: false };
    let total_steps = train.len().div_ceil(s.batch) * s.epochs;
    let mut t = Trainer::new(model, device, classes, s.lr, hyper, strategy.schedule(total_steps));
    crate::memory::reset_peak_rss();
    let norm = Normalize::CIFAR10;
    let (mut epochs, mut elapsed) = (Vec::new(), 0.0);
    let mut last_eval = None;
    for epoch in 1..=s.epochs {
        let data = EpochData { epoch, epochs: s.epochs, train, batch: s.batch, seed: s.seed, norm };
        let (fwd, bwd) = (t.forward_flops, t.backward_flops);
        let start = Instant::now();
        let stage = strategy.begin_epoch(&mut t, &data)?;
        let trainable_params = t.trainable_params();
        let stats = strategy.train_epoch(&mut t, &data)?;
        let seconds = start.elapsed().as_secs_f64();
        elapsed += seconds;
        let eval = evaluate_full(&t.model, test, s.batch, norm, &t.device)?;
        let record = EpochRecord {
            epoch,
            stage,
            seconds,
            elapsed,
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            test_accuracy: eval.accuracy,
            images_per_sec: stats.images as f64 / seconds.max(1e-9),
            backward_flops: t.backward_flops - bwd,
            forward_flops: t.forward_flops - fwd,
            trainable_params,
        };
        progress(&record);
        epochs.push(record);
        last_eval = Some(eval);
    }
    let eval = last_eval.ok_or_else(|| TrainError::Config("a run needs at least one epoch".into()))?;
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
