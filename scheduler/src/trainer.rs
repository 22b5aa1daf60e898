//! The one training loop. Every command that trains — `train`, each `compare` strategy,
//! `run-task`, the correlation probes, `bench train` — runs its steps through [`Trainer`]: a
//! model, the optimizer built from an [`OptimConfig`], FLOP counters, and the step guard that
//! keeps loss and accuracy sums and the non-finite check on the device. A step reads nothing
//! back; the host reads the guard's few values at progress refreshes and at an epoch's end.
use crate::data::{Batch, DataError};
use crate::distributed::GradReducer;
use crate::error::TrainError;
use crate::monitor::{DivergenceAlert, Monitor, Report, Snapshot};
use std::time::{Duration, Instant};
use tessera_engine::autograd as ag;
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::ops::{AdamWHyper, Labels, LossScaling, SgdHyper, StepGuard, StepTotals};
use tessera_engine::optim::{LrSchedule, Optimizer, ParamGroup, Rule, Warmup};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::Model;

/// How often the host reads the step guard to refresh progress (at most twice a second).
pub const REFRESH: Duration = Duration::from_millis(500);

/// Which optimizer, as `--optimizer` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptimizerKind {
    #[default]
    Sgd,
    AdamW,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgd" => Ok(Self::Sgd),
            "adamw" => Ok(Self::AdamW),
            other => Err(format!("unknown --optimizer `{other}`: expected sgd or adamw")),
        }
    }
}

/// A run's optimizer: the update rule, the base learning rate and a linear warm-up in front
/// of whatever schedule the run uses. [`OptimConfig::build`] is the one place an optimizer is
/// made from settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub rule: Rule,
    pub lr: f32,
    pub warmup_steps: usize,
}

impl Default for OptimConfig {
    /// SGD at 0.1 with momentum 0.9 and weight decay 5e-4 ([`SgdHyper::default`]).
    fn default() -> Self {
        Self { rule: Rule::default(), lr: 0.1, warmup_steps: 0 }
    }
}

impl OptimConfig {
    /// From flags: `kind` with its defaults, overridden by the values given (`momentum`
    /// applies to SGD only).
    pub fn from_flags(kind: OptimizerKind, lr: f32, momentum: Option<f32>, weight_decay: Option<f32>, warmup_steps: usize) -> Result<Self, TrainError> {
        let rule = match kind {
            OptimizerKind::Sgd => {
                let d = SgdHyper::default();
                Rule::Sgd(SgdHyper { momentum: momentum.unwrap_or(d.momentum), weight_decay: weight_decay.unwrap_or(d.weight_decay), ..d })
            }
            OptimizerKind::AdamW => {
                if momentum.is_some() {
                    return Err(TrainError::Config("--momentum is an SGD setting; AdamW's β1 is 0.9".into()));
                }
                let d = AdamWHyper::default();
                Rule::AdamW(AdamWHyper { weight_decay: weight_decay.unwrap_or(d.weight_decay), ..d })
            }
        };
        Ok(Self { rule, lr, warmup_steps })
    }

    /// With Nesterov momentum (`torch.optim.SGD(nesterov=True)`: the step is d + momentum·m);
    /// an SGD setting, and one that needs momentum.
    pub fn with_nesterov(self, nesterov: bool) -> Result<Self, TrainError> {
        match self.rule {
            _ if !nesterov => Ok(self),
            Rule::Sgd(h) if h.momentum > 0.0 => Ok(Self { rule: Rule::Sgd(SgdHyper { nesterov, ..h }), ..self }),
            Rule::Sgd(_) => Err(TrainError::Config("--nesterov needs momentum (--momentum > 0)".into())),
            Rule::AdamW(_) => Err(TrainError::Config("--nesterov is an SGD setting".into())),
        }
    }

    /// Checks every value against its range (`settings`): a config file bypasses the flags'
    /// parsers, so runs check here too.
    pub fn validate(&self) -> Result<(), TrainError> {
        use crate::settings::{LR, MOMENTUM, WARMUP_STEPS, WEIGHT_DECAY};
        LR.check_f32(self.lr)?;
        WARMUP_STEPS.check_usize(self.warmup_steps)?;
        match self.rule {
            Rule::Sgd(h) => {
                MOMENTUM.check_f32(h.momentum)?;
                WEIGHT_DECAY.check_f32(h.weight_decay)?;
                if !(0.0..=1.0).contains(&h.dampening) {
                    return Err(TrainError::Config(format!("SGD dampening must be in [0, 1], got {}", h.dampening)));
                }
            }
            Rule::AdamW(h) => {
                WEIGHT_DECAY.check_f32(h.weight_decay)?;
                let beta_ok = |b: f32| (0.0..1.0).contains(&b);
                if !(beta_ok(h.beta1) && beta_ok(h.beta2) && h.eps.is_finite() && h.eps > 0.0) {
                    return Err(TrainError::Config(format!("AdamW needs betas in [0, 1) and a positive ε, got {h:?}")));
                }
            }
        }
        Ok(())
    }

    /// A config with this learning rate.
    pub fn with_lr(self, lr: f32) -> Self {
        Self { lr, ..self }
    }

    /// The optimizer over `groups` with `schedule` (behind the warm-up, if any).
    pub fn build(&self, groups: Vec<ParamGroup>, schedule: Box<dyn LrSchedule>) -> Optimizer {
        let opt = Optimizer::new(groups, self.lr, self.rule);
        match self.warmup_steps {
            0 => opt.with_schedule(schedule),
            steps => opt.with_schedule(Warmup { steps, inner: schedule }),
        }
    }
}

/// What training does with a batch whose loss or gradients are not finite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNan {
    #[default]
    Stop,
    Skip,
}

impl std::str::FromStr for OnNan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stop" => Ok(Self::Stop),
            "skip" => Ok(Self::Skip),
            other => Err(format!("unknown --on-nan `{other}`: expected stop or skip")),
        }
    }
}

/// The arithmetic of training, as `--precision` names it: f32 throughout, or mixed (f16
/// activations and f16 products with f32 accumulation, f32 master weights and optimizer state,
/// dynamic loss scaling) on GPUs with SHADER_F16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Mixed,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "mixed" => Ok(Self::Mixed),
            other => Err(format!("unknown --precision `{other}`: expected f32 or mixed")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Mixed => "mixed",
        })
    }
}

/// Why `precision` falls back to f32 on `device`, if it does: mixed precision needs a GPU
/// whose adapter has SHADER_F16.
pub fn precision_notice(device: &Device, precision: Precision) -> Option<String> {
    match (device, precision) {
        (_, Precision::F32) => None,
        (Device::Gpu(gpu), Precision::Mixed) if gpu.has_shader_f16() => None,
        (Device::Gpu(gpu), Precision::Mixed) => Some(format!("--precision mixed: adapter `{}` lacks SHADER_F16; training in f32", gpu.name())),
        (Device::Cpu(_), Precision::Mixed) => {
            Some("--precision mixed: the CPU backend computes in f32 (mixed precision needs a GPU with SHADER_F16); training in f32".to_string())
        }
    }
}

/// What the progress display hears at each refresh and at an epoch's end.
pub struct StepInfo {
    pub epoch: usize,
    pub step: usize,
    pub steps_per_epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub images_per_sec: f32,
}

/// What training one epoch gave.
#[derive(Clone, Debug, Default)]
pub struct EpochStats {
    pub loss: f32,
    pub accuracy: f32,
    pub images: usize,
    /// Steps skipped for a non-finite loss or gradient (`OnNan::Skip`).
    pub skipped: usize,
    /// Training wall time, evaluation excluded.
    pub seconds: f64,
    /// The most bytes of batches the input pipeline held at once (0 where none ran).
    pub loader_peak_bytes: usize,
    /// Steps run by this call, and whether the stop flag ended the epoch early.
    pub steps: usize,
    pub interrupted: bool,
}

/// The input of a step, kept until the guard is next read so that the place where a
/// non-finite value began can be found after the fact.
struct KeptStep {
    step: usize,
    first_stage: usize,
    x: Tensor,
    labels: Vec<usize>,
}

/// One optimisation step on a batch (x, labels): a strategy's policy.
pub type StepFn<'a> = dyn FnMut(&mut Trainer, Tensor, &[usize]) -> Result<(), TrainError> + 'a;

/// Called after each backward pass with the step number and the model (tests inject faults
/// through it; it runs again when a flagged step is replayed).
pub type GradHook = Box<dyn FnMut(usize, &Model) -> Result<(), TrainError>>;

/// A model under training with its optimizer (one parameter group per sub-model, in the order
/// of `model.submodels`), its step guard and counters of the work done.
pub struct Trainer {
    pub model: Model,
    pub opt: Optimizer,
    pub device: Device,
    pub classes: usize,
    /// GEMM FLOPs (2 per multiply-add of every convolution and linear layer) run so far.
    pub forward_flops: f64,
    pub backward_flops: f64,
    /// The optimizer's arithmetic so far ([`Rule::flops_per_param`] per trained element).
    pub update_flops: f64,
    pub grad_hook: Option<GradHook>,
    /// Data-parallel training: sums each step's gradients over the ranks (none: one process).
    pub reducer: Option<GradReducer>,
    /// Set (by a signal handler) to end the epoch after the current step.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Hears a snapshot at every refresh and each epoch's record (live metrics).
    pub monitor: Option<Monitor>,
    /// `--alert-exit`: ends the run when the loss diverges.
    pub alert: Option<DivergenceAlert>,
    /// Label smoothing ε of the training loss (PyTorch's `label_smoothing`; 0: none).
    pub label_smoothing: f32,
    on_nan: OnNan,
    /// Mixed precision is on (`set_precision`): forward passes run under autocast and the
    /// guard keeps a dynamic loss scale.
    mixed: bool,
    guard: StepGuard,
    /// The guard's totals as last read.
    totals: StepTotals,
    steps: usize,
    kept: Vec<KeptStep>,
}

impl Trainer {
    /// `model` with the optimizer of `optim` over one group per sub-model and `schedule`.
    pub fn new(model: Model, device: Device, classes: usize, optim: &OptimConfig, schedule: Box<dyn LrSchedule>, on_nan: OnNan) -> Result<Self, TrainError> {
        let mut groups: Vec<ParamGroup> =
            model.submodels.iter().map(|sub| ParamGroup::new(sub.name.clone(), model.params_of(sub).into_iter().map(|(_, p)| p).collect())).collect();
        // A parameter no sub-model claims still trains, in a group of its own after them.
        let claimed = |p: &std::sync::Arc<tessera_engine::nn::Param>| groups.iter().flat_map(|g| &g.params).any(|q| std::sync::Arc::ptr_eq(p, q));
        let rest: Vec<_> = model.net.named_params().into_iter().map(|(_, p)| p).filter(|p| !claimed(p)).collect();
        if !rest.is_empty() {
            groups.push(ParamGroup::new("unassigned", rest));
        }
        let opt = optim.build(groups, schedule);
        let guard = StepGuard::new(&device, on_nan == OnNan::Stop)?;
        Ok(Self {
            model,
            opt,
            device,
            classes,
            forward_flops: 0.0,
            backward_flops: 0.0,
            update_flops: 0.0,
            grad_hook: None,
            reducer: None,
            stop: None,
            monitor: None,
            alert: None,
            label_smoothing: 0.0,
            on_nan,
            mixed: false,
            guard,
            totals: StepTotals::default(),
            steps: 0,
            kept: Vec::new(),
        })
    }

    /// Trains in `precision` from the next step. Mixed precision needs a GPU with SHADER_F16;
    /// elsewhere training stays f32 and the returned notice says why. Call before the first
    /// step (the guard, with its counts, starts afresh).
    pub fn set_precision(&mut self, precision: Precision) -> Result<Option<String>, TrainError> {
        let notice = precision_notice(&self.device, precision);
        self.mixed = precision == Precision::Mixed && notice.is_none();
        let scaling = self.mixed.then(LossScaling::default);
        self.guard = StepGuard::with_scaling(&self.device, self.on_nan == OnNan::Stop, scaling)?;
        self.totals = StepTotals::default();
        Ok(notice)
    }

    /// The precision steps run in.
    pub fn precision(&self) -> Precision {
        if self.mixed {
            Precision::Mixed
        } else {
            Precision::F32
        }
    }

    pub fn submodel_count(&self) -> usize {
        self.model.submodels.len()
    }

    /// Steps run so far (applied or skipped).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Trains exactly the sub-models at `indices` (and any extra groups, e.g. auxiliary
    /// heads); every other sub-model is frozen. Returns the trainable parameter count.
    pub fn set_trainable(&self, indices: &[usize]) -> usize {
        let n = self.submodel_count();
        for (i, group) in self.opt.groups().iter().enumerate() {
            let on = i >= n || indices.contains(&i);
            group.params.iter().for_each(|p| p.set_requires_grad(on));
        }
        self.trainable_params()
    }

    pub fn trainable_params(&self) -> usize {
        self.opt.groups().iter().flat_map(|g| &g.params).filter(|p| p.requires_grad()).map(|p| p.value().numel()).sum()
    }

    /// Whether sub-model `i` has a trainable parameter.
    pub fn is_trainable(&self, i: usize) -> bool {
        self.opt.groups()[i].params.iter().any(|p| p.requires_grad())
    }

    /// The next backward pass is on `rows` of a global batch of `global` rows (data-parallel:
    /// this rank's gradient weighs rows / global in the sum over ranks).
    pub fn set_batch_share(&self, rows: usize, global: usize) {
        if let Some(r) = &self.reducer {
            r.world().set_share(rows as f32 / global.max(1) as f32);
        }
    }

    /// Runs stages `stages` of the network on `x`, counting forward FLOPs.
    pub fn forward_stages(&mut self, stages: std::ops::Range<usize>, x: &Var) -> Result<Var, TrainError> {
        let mixed = self.mixed;
        let (out, flops) = count_gemm_flops(|| ag::autocast(mixed, || stages.into_iter().try_fold(x.clone(), |h, s| self.model.forward_stage(s, &h))));
        self.forward_flops += flops;
        Ok(out?)
    }

    /// Backward from `loss`, counting its FLOPs. Data-parallel, each bucket of gradients
    /// starts its sum over the ranks as soon as it is complete, and the gradients are the
    /// global batch's when this returns.
    pub fn backward(&mut self, loss: &Var) -> Result<(), TrainError> {
        // Mixed precision: d(loss) = the loss scale, so gradients come out scaled by it.
        let seed = self.guard.loss_scale()?;
        let Some(reducer) = self.reducer.as_mut() else {
            let (done, flops) = count_gemm_flops(|| loss.backward_seeded(seed.as_ref(), &mut |_| {}));
            done?;
            self.backward_flops += flops;
            return Ok(());
        };
        let trainable = self.opt.groups().iter().flat_map(|g| &g.params).filter(|p| p.requires_grad()).cloned().collect();
        reducer.begin(trainable);
        let mut failed = None;
        let (done, flops) = count_gemm_flops(|| {
            loss.backward_seeded(seed.as_ref(), &mut |slot| {
                if let Err(e) = reducer.gradient_done(slot) {
                    failed.get_or_insert(e);
                }
            })
        });
        done?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.backward_flops += flops;
        reducer.finish(&self.device)
    }

    /// The end of every step, after its backward pass: the guard checks `loss` (the one the
    /// progress reports) and every gradient, the optimizer updates unless the step is
    /// flagged, gradients are cleared, `loss` and the hits of `logits` add to the epoch's
    /// sums. Nothing is read back.
    pub fn finish_step(&mut self, loss: &Var, logits: &Var, labels: &[usize]) -> Result<(), TrainError> {
        if let Some(hook) = self.grad_hook.as_mut() {
            hook(self.steps, &self.model)?;
        }
        self.guard.check(loss.value())?;
        for p in self.opt.groups().iter().flat_map(|g| &g.params).filter(|p| p.requires_grad()) {
            if let Some(g) = p.grad() {
                self.guard.check_gradient(&g)?;
            }
        }
        self.opt.step_guarded(Some(self.guard.state()))?;
        self.update_flops += self.trainable_params() as f64 * self.opt.rule().flops_per_param();
        self.opt.zero_grad();
        self.guard.add_metrics(loss.value(), logits.value(), &Labels::new(logits.value(), labels)?)?;
        self.guard.close(self.steps)?;
        Ok(())
    }

    /// The ordinary step on a batch entering at stage `first`: forward, cross-entropy,
    /// backward, the guarded update.
    pub fn step_from(&mut self, first: usize, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        let n = self.submodel_count();
        let logits = self.forward_stages(first..n, &Var::constant(x))?;
        let loss = self.loss(&logits, labels)?;
        self.backward(&loss)?;
        self.finish_step(&loss, &logits, labels)
    }

    /// The training loss: cross-entropy, label-smoothed by [`Trainer::label_smoothing`].
    pub fn loss(&self, logits: &Var, labels: &[usize]) -> Result<Var, TrainError> {
        Ok(ag::cross_entropy_smoothed(logits, labels, self.label_smoothing)?)
    }

    /// ‖∇‖₂ over each sub-model's trainable parameters (0 for frozen ones) after a backward
    /// pass. Reads every gradient back: strategies that steer by it pay for that.
    pub fn grad_norms(&self) -> Result<Vec<f32>, TrainError> {
        let n = self.submodel_count();
        // Gradients carry the loss scale under mixed precision.
        let scale = match self.guard.loss_scale()? {
            Some(s) => s.to_vec()?[0] as f64,
            None => 1.0,
        };
        let mut norms = Vec::with_capacity(n);
        for g in &self.opt.groups()[..n] {
            let mut sq = 0f64;
            for p in g.params.iter().filter(|p| p.requires_grad()) {
                if let Some(grad) = p.grad() {
                    sq += grad.to_vec()?.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
                }
            }
            norms.push((sq.sqrt() / scale) as f32);
        }
        Ok(norms)
    }

    /// Trains one epoch on `batches` (`count` of them), each entering at stage `first_stage`
    /// and stepped by `step` (the strategy's; [`Trainer::step_from`] by default). Reads the
    /// guard at most every [`REFRESH`] and once at the end; with `OnNan::Stop` a flagged step
    /// ends the epoch with [`TrainError::NonFinite`] naming it and where it began.
    pub fn run_epoch(
        &mut self,
        epoch: usize,
        first_stage: usize,
        batches: impl Iterator<Item = Result<Batch, DataError>>,
        count: usize,
        step: &mut StepFn,
        progress: &mut dyn FnMut(&StepInfo),
    ) -> Result<EpochStats, TrainError> {
        let start = Instant::now();
        let at_start = self.totals;
        self.guard.reset_metrics(&at_start)?;
        let first_step = self.steps + 1;
        let (mut refreshed, mut done, mut interrupted) = (start, 0, false);
        for b in batches {
            let b = b?;
            self.set_batch_share(b.labels.len(), b.global);
            let x = Tensor::from_vec(b.x, &b.shape, &self.device)?;
            self.steps += 1;
            self.guard.open()?;
            if self.on_nan == OnNan::Stop {
                self.kept.push(KeptStep { step: self.steps, first_stage, x: x.clone(), labels: b.labels.clone() });
            }
            step(self, x, &b.labels)?;
            done += 1;
            let mut stop = self.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst));
            if let Some(r) = &self.reducer {
                // The ranks stop after the same step, or one would wait forever for the others.
                stop = r.world().sum(vec![stop as u8 as f32])?[0] > 0.0;
            }
            if stop {
                interrupted = true;
                break;
            }
            if refreshed.elapsed() >= REFRESH {
                self.refresh(epoch, (first_step, done, count), start, progress)?;
                refreshed = Instant::now();
            }
        }
        let totals = self.refresh(epoch, (first_step, done, count), start, progress)?;
        Ok(EpochStats {
            loss: totals.mean_loss(),
            accuracy: totals.accuracy(),
            images: totals.images,
            skipped: totals.flagged_steps - at_start.flagged_steps + totals.overflow_steps - at_start.overflow_steps,
            seconds: start.elapsed().as_secs_f64(),
            loader_peak_bytes: 0,
            steps: done,
            interrupted,
        })
    }

    /// Reads the guard (one host read on a GPU) after `done` of `count` steps of the epoch
    /// that began at `first_step` and `start`, reports to the monitor and the progress display
    /// and checks the loss against `--alert-exit`. Under `OnNan::Stop`, a flagged step is an
    /// error naming it and where it began.
    fn refresh(
        &mut self,
        epoch: usize,
        (first_step, done, count): (usize, usize, usize),
        start: Instant,
        progress: &mut dyn FnMut(&StepInfo),
    ) -> Result<StepTotals, TrainError> {
        self.totals = self.guard.read()?;
        let t = self.totals;
        let seconds = start.elapsed().as_secs_f32().max(1e-9);
        let info =
            StepInfo { epoch, step: done, steps_per_epoch: count, loss: t.mean_loss(), accuracy: t.accuracy(), images_per_sec: t.images as f32 / seconds };
        if self.monitor.is_some() {
            let n = self.submodel_count();
            let trainable = (0..n).filter(|&i| self.is_trainable(i)).count();
            let snapshot = Snapshot {
                epoch,
                step: self.steps,
                loss: info.loss,
                accuracy: info.accuracy,
                images_per_sec: info.images_per_sec,
                step_seconds: seconds / done.max(1) as f32,
                trainable_submodels: trainable,
                frozen_submodels: n - trainable,
                skipped_batches: if self.on_nan == OnNan::Skip { t.flagged_steps } else { 0 },
                nonfinite_steps: t.flagged_steps,
                resident_bytes: crate::memory::current_rss_bytes().unwrap_or(0),
            };
            self.report(&Report::Step(snapshot))?;
        }
        let kept = std::mem::take(&mut self.kept);
        if let (OnNan::Stop, Some(bad)) = (self.on_nan, self.totals.first_flagged_step) {
            let (what, place) = match kept.into_iter().find(|k| k.step == bad) {
                Some(k) => self.locate_non_finite(k)?,
                None => ("loss or gradient".into(), "a step whose input was not kept".into()),
            };
            return Err(TrainError::NonFinite { epoch, step: bad + 1 - first_step, what, place });
        }
        if let Some(alert) = self.alert.as_mut().filter(|_| t.images > 0) {
            alert.check(epoch, done, info.loss)?;
        }
        progress(&info);
        Ok(t)
    }

    /// Hands `report` to the monitor, if any.
    pub fn report(&mut self, report: &Report) -> Result<(), TrainError> {
        self.monitor.as_mut().map_or(Ok(()), |m| m.report(report))
    }

    /// Reruns a flagged step (the weights are still those it saw: a sticky flag stops every
    /// update after it) and finds where the non-finite value first appears: a parameter that
    /// holds one, the first sub-model whose output has one, the loss, or the first parameter
    /// (forward order) whose gradient has one.
    fn locate_non_finite(&mut self, k: KeptStep) -> Result<(String, String), TrainError> {
        for (name, p) in self.model.net.named_params() {
            if !p.value().all_finite()? {
                return Ok(("parameter value".into(), format!("parameter `{name}`")));
            }
        }
        let n = self.submodel_count();
        let x = Var::constant(k.x);
        let logits = self.model.forward_stage(k.first_stage, &x).and_then(|h| (k.first_stage + 1..n).try_fold(h, |h, s| self.model.forward_stage(s, &h)))?;
        let loss = self.loss(&logits, &k.labels)?;
        let value = loss.value().to_vec()?[0];
        if !value.is_finite() {
            let mut h = x;
            for (s, sub) in self.model.submodels.iter().enumerate().skip(k.first_stage) {
                h = no_grad(|| self.model.forward_stage(s, &h))?;
                if !h.value().all_finite()? {
                    return Ok((format!("loss {value}"), format!("the output of sub-model `{}`", sub.name)));
                }
            }
            return Ok((format!("loss {value}"), "the loss (every layer's output is finite)".into()));
        }
        loss.backward()?;
        if let Some(hook) = self.grad_hook.as_mut() {
            hook(k.step, &self.model)?;
        }
        let mut found = None;
        for (name, p) in self.model.net.named_params() {
            if let Some(g) = p.grad() {
                if found.is_none() && !g.all_finite()? {
                    found = Some(name);
                }
            }
        }
        self.opt.zero_grad();
        Ok(match found {
            Some(name) => ("gradient".into(), format!("parameter `{name}`")),
            None => ("loss or gradient".into(), "a step that was finite when rerun (a loss term other than cross-entropy?)".into()),
        })
    }
}
