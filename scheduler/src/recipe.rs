//! Training recipes: a model together with the whole method that trains it — optimizer groups
//! and their hyper-parameters, schedule, loss, augmentation, initialisation from data, weight
//! averaging and test-time augmentation — as one [`Strategy`] that the one training loop runs
//! (`tessera train --recipe NAME`, `tessera bench time-to-accuracy`).
//!
//! `airbench94` is Jordan's CIFAR-10 method ("94% on CIFAR-10 in 3.29 Seconds on a Single
//! GPU", arXiv 2404.00498), reimplemented from the paper and its public description:
//! - the network `airbench94` (models), its whitening filters set from 5000 training images;
//! - Nesterov SGD, momentum 0.85, batch 1024, with the learning rate (11.5) and weight decay
//!   (0.0153) given per 1024 examples and divided by 1024·(1 + 1/(1 − momentum)), so a step's
//!   size does not depend on the momentum; weight decay decoupled from the learning rate (each
//!   group's decay is wd/lr); batch-norm biases at 64× the learning rate;
//! - a triangular schedule, 0.2 → 1 over the first 23 % of the steps → 0.07 at the end;
//! - label smoothing 0.2; translation by 2 px with reflected borders; alternating flips;
//! - the whitening bias trained for the first 3 epochs, then frozen;
//! - from epoch 4 on, Lookahead every 5 steps over the parameters and batch-norm statistics
//!   with decay 0.95⁵·(step/total)³, and the averaged weights copied back at every epoch's end;
//! - 9.9 epochs (the last one cut short), and test-time augmentation (mirror + translate) at
//!   the end.
//!
//! One reading of ours: airbench's loss is the *sum* over the batch; ours is the mean, so the
//! learning rate here is airbench's times the batch and each group's decay is divided by it:
//! the same update.
use crate::data::{Augment, Dataset, Loader, LoaderSpec, Subset};
use crate::error::TrainError;
use crate::eval::{evaluate, evaluate_full_tta, Tta};
use crate::strategy::{EpochData, Strategy};
use crate::trainer::{EpochStats, StepInfo, Trainer};
use std::sync::Arc;
use tessera_engine::nn::patch_whitening;
use tessera_engine::ops::SgdHyper;
use tessera_engine::optim::{Lookahead, LrSchedule, Optimizer, ParamGroup, Rule, Triangle};
use tessera_engine::Tensor;
use tessera_models::airbench;

/// The recipes `--recipe` knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recipe {
    Airbench94(Airbench94Hyper),
}

/// Recipe names, as `--recipe` takes them.
pub const NAMES: [&str; 1] = ["airbench94"];

impl std::str::FromStr for Recipe {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "airbench94" => Ok(Self::Airbench94(Airbench94Hyper::default())),
            other => Err(format!("unknown recipe `{other}`; known: {}", NAMES.join(", "))),
        }
    }
}

impl Recipe {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Airbench94(_) => "airbench94",
        }
    }

    /// The model the recipe trains.
    pub fn model(&self) -> &'static str {
        match self {
            Self::Airbench94(_) => "airbench94",
        }
    }

    /// Its batch, and its whole epochs (a fractional last epoch counts as one).
    pub fn batch_and_epochs(&self) -> (usize, usize) {
        match self {
            Self::Airbench94(h) => (h.batch, h.epochs.ceil() as usize),
        }
    }

    /// The recipe with `epochs` epochs in place of its own (quick runs).
    pub fn with_epochs(self, epochs: f32) -> Self {
        match self {
            Self::Airbench94(h) => Self::Airbench94(Airbench94Hyper { epochs, ..h }),
        }
    }

    /// The strategy that trains with it over `train_images` images in batches of `batch`.
    pub fn strategy(&self, train_images: usize, batch: usize) -> Box<dyn Strategy> {
        match *self {
            Self::Airbench94(h) => Box::new(Airbench94::new(h, train_images, batch)),
        }
    }
}

/// airbench94's hyper-parameters, as the paper gives them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Airbench94Hyper {
    pub epochs: f32,
    pub batch: usize,
    /// Learning rate and weight decay per 1024 examples, in the momentum-decoupled form.
    pub lr: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    /// The batch-norm biases' learning-rate factor (their decay is not scaled).
    pub bias_scaler: f32,
    pub label_smoothing: f32,
    /// Epochs during which the whitening layer's bias trains.
    pub whiten_bias_epochs: usize,
    /// Training images whose 2×2 patches set the whitening filters, and the ε added to the
    /// eigenvalues.
    pub whiten_images: usize,
    pub whiten_eps: f32,
    /// Lookahead: from which epoch (0-based), every how many steps, and its decay's base and
    /// power: decay = base^every · (step/total)^power.
    pub lookahead_start_epoch: usize,
    pub lookahead_every: usize,
    pub lookahead_base: f32,
    pub lookahead_power: f32,
    pub tta: Tta,
}

impl Default for Airbench94Hyper {
    fn default() -> Self {
        Self {
            epochs: 9.9,
            batch: 1024,
            lr: 11.5,
            weight_decay: 0.0153,
            momentum: 0.85,
            bias_scaler: 64.0,
            label_smoothing: 0.2,
            whiten_bias_epochs: 3,
            whiten_images: 5000,
            whiten_eps: 5e-4,
            lookahead_start_epoch: 3,
            lookahead_every: 5,
            lookahead_base: 0.95,
            lookahead_power: 3.0,
            tta: Tta::MirrorTranslate,
        }
    }
}

impl Airbench94Hyper {
    /// The learning rate of our mean-over-the-batch loss for batches of `batch`, and the
    /// weight decay each step applies (lr × the group's decay), both from the decoupled form.
    pub fn lr_and_decay(&self, batch: usize) -> (f32, f32) {
        let kilostep = 1024.0 * (1.0 + 1.0 / (1.0 - self.momentum));
        (self.lr / kilostep * batch as f32, self.weight_decay * batch as f32 / kilostep)
    }

    /// Steps in the run: ⌈(whole batches per epoch) × epochs⌉.
    pub fn total_steps(&self, train_images: usize, batch: usize) -> usize {
        ((train_images / batch.max(1)) as f64 * self.epochs as f64).ceil() as usize
    }
}

/// The airbench94 recipe as a strategy (see the module's notes).
pub struct Airbench94 {
    h: Airbench94Hyper,
    batch: usize,
    total_steps: usize,
    /// The current epoch, 0-based as airbench counts.
    epoch: usize,
    lookahead: Option<Lookahead>,
}

impl Airbench94 {
    pub fn new(h: Airbench94Hyper, train_images: usize, batch: usize) -> Self {
        Self { h, batch, total_steps: h.total_steps(train_images, batch), epoch: 0, lookahead: None }
    }

    fn param(t: &Trainer, name: &str) -> Result<Arc<tessera_engine::nn::Param>, TrainError> {
        let found = t.model.net.named_params().into_iter().find(|(n, _)| n == name);
        found
            .map(|(_, p)| p)
            .ok_or_else(|| TrainError::Config(format!("the airbench94 recipe needs the airbench94 model (no parameter `{name}` in {})", t.model.name)))
    }

    /// The whitening filters from the 2×2 patches of `whiten_images` training images spread
    /// evenly over the set (airbench takes its first 5000, which in a class-sorted folder would
    /// be one class), and a zero bias.
    fn init_whitening(&self, t: &Trainer, train: &Dataset) -> Result<(), TrainError> {
        let n = self.h.whiten_images.clamp(1, train.len());
        let stride = train.len() / n;
        let indices: Vec<usize> = (0..n).map(|i| i * stride).collect();
        let labels = indices.iter().map(|&i| train.label(i)).collect();
        let subset: Dataset = Arc::new(Subset { base: train.clone(), indices, labels, classes: train.classes().to_vec() });
        let batch = Loader::new(&subset, &LoaderSpec::eval(n))?.next().ok_or_else(|| TrainError::Config("no image to whiten with".into()))??;
        let images = Tensor::from_vec(batch.x, &batch.shape, &t.device)?;
        let weight = Self::param(t, &format!("{}.weight", airbench::WHITEN))?;
        let filters = patch_whitening(&images, [weight.value().shape()[2], weight.value().shape()[3]], self.h.whiten_eps)?;
        weight.set_value(filters);
        let bias = Self::param(t, &format!("{}.bias", airbench::WHITEN))?;
        bias.set_value(Tensor::zeros(bias.value().shape(), &t.device)?);
        Ok(())
    }

    fn new_lookahead(t: &Trainer) -> Lookahead {
        let params: Vec<_> = t.model.net.named_params().into_iter().map(|(_, p)| p).collect();
        let buffers: Vec<_> = t.model.net.named_buffers().into_iter().map(|(_, b)| b).collect();
        Lookahead::new(&params, &buffers)
    }
}

impl Strategy for Airbench94 {
    fn name(&self) -> String {
        "airbench94".into()
    }

    fn schedule(&self, _: usize) -> Box<dyn LrSchedule> {
        Box::new(Triangle { total_steps: self.total_steps, peak: 0.23, start: 0.2, end: 0.07 })
    }

    /// Two groups per sub-model where it has batch norms — its batch-norm biases (at
    /// `bias_scaler`× the rate) and the rest — each with the decay that makes lr × decay the
    /// recipe's; Nesterov SGD; label smoothing; the whitening filters frozen.
    fn configure(&mut self, t: &mut Trainer) -> Result<(), TrainError> {
        let h = self.h;
        if self.total_steps == 0 {
            return Err(TrainError::Config(format!(
                "airbench94 trains on whole batches of {}: the training set holds fewer images than one (lower --batch, or raise --limit-per-class)",
                self.batch
            )));
        }
        let (lr, decay) = h.lr_and_decay(self.batch);
        let norm_biases: Vec<String> = airbench::NORMS.iter().map(|i| format!("{i}.bias")).collect();
        let (mut groups, mut bias_groups) = (Vec::new(), Vec::new());
        for sub in &t.model.submodels {
            let (biases, rest): (Vec<_>, Vec<_>) = t.model.params_of(sub).into_iter().partition(|(n, _)| norm_biases.contains(n));
            groups.push(ParamGroup::new(sub.name.clone(), rest.into_iter().map(|(_, p)| p).collect()).with_hyper(1.0, decay / lr));
            if !biases.is_empty() {
                let biases = biases.into_iter().map(|(_, p)| p).collect();
                bias_groups.push(ParamGroup::new(format!("{}.norm-biases", sub.name), biases).with_hyper(h.bias_scaler, decay / (lr * h.bias_scaler)));
            }
        }
        if bias_groups.len() != 3 {
            return Err(TrainError::Config(format!("the airbench94 recipe needs the airbench94 model (its three conv groups), got {}", t.model.name)));
        }
        groups.extend(bias_groups);
        let rule = Rule::Sgd(SgdHyper { momentum: h.momentum, dampening: 0.0, weight_decay: 0.0, nesterov: true });
        t.opt = Optimizer::new(groups, lr, rule).with_schedule(self.schedule(self.total_steps));
        t.label_smoothing = h.label_smoothing;
        Self::param(t, &format!("{}.weight", airbench::WHITEN))?.set_requires_grad(false);
        Ok(())
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        self.epoch = data.epoch - 1;
        if t.opt.steps_taken() == 0 {
            self.init_whitening(t, data.train)?;
        }
        Self::param(t, &format!("{}.bias", airbench::WHITEN))?.set_requires_grad(self.epoch < self.h.whiten_bias_epochs);
        // A run resumed past Lookahead's first epoch: the weights are the averaged ones (each
        // epoch ends by copying them back), so the average restarts from them exactly.
        if self.lookahead.is_none() && self.epoch > self.h.lookahead_start_epoch {
            self.lookahead = Some(Self::new_lookahead(t));
        }
        Ok("airbench94".into())
    }

    /// The ordinary step, then Lookahead every `lookahead_every` steps from its first epoch on
    /// (the first time it only starts the average).
    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        t.step_from(0, x, labels)?;
        let step = t.opt.steps_taken();
        if self.epoch >= self.h.lookahead_start_epoch && step.is_multiple_of(self.h.lookahead_every.max(1)) {
            match &mut self.lookahead {
                None => self.lookahead = Some(Self::new_lookahead(t)),
                Some(slow) => {
                    let progress = step as f32 / self.total_steps.max(1) as f32;
                    let decay = self.h.lookahead_base.powi(self.h.lookahead_every as i32) * progress.powf(self.h.lookahead_power);
                    slow.sync(1.0 - decay.clamp(0.0, 1.0))?;
                }
            }
        }
        Ok(())
    }

    /// Whole batches with airbench's augmentation, up to the run's last step; then the
    /// averaged weights are copied back.
    fn train_epoch(&mut self, t: &mut Trainer, data: &EpochData, progress: &mut dyn FnMut(&StepInfo)) -> Result<EpochStats, TrainError> {
        t.model.net.set_training(true);
        let spec = LoaderSpec { augment: Some(Augment::AIRBENCH), drop_last: true, ..data.spec.clone() };
        let loader = Loader::new(data.train, &spec)?;
        let (memory, skipped) = (loader.memory(), loader.skipped());
        let left = self.total_steps.saturating_sub(t.opt.steps_taken());
        let steps = loader.len().saturating_sub(skipped).min(left);
        let stats = t.run_epoch(data.epoch, 0, loader.take(steps), skipped + steps, &mut |t, x, labels| self.step(t, x, labels), progress)?;
        if let Some(slow) = &mut self.lookahead {
            slow.sync(0.0)?;
        }
        Ok(EpochStats { loader_peak_bytes: memory.peak_bytes(), steps: skipped + stats.steps, ..stats })
    }

    /// The plain forward pass after each epoch, the recipe's test-time augmentation after the
    /// last.
    fn evaluate(&mut self, t: &Trainer, test: &Dataset, spec: &LoaderSpec, last: bool) -> Result<(f32, f32), TrainError> {
        if !last || self.h.tta == Tta::None {
            return evaluate(&t.model, test, spec, &t.device);
        }
        let report = evaluate_full_tta(&t.model, test, spec, &t.device, self.h.tta)?;
        Ok((report.loss, report.accuracy))
    }

    fn notes(&self) -> Vec<String> {
        let (lr, decay) = self.h.lr_and_decay(self.batch);
        vec![format!("airbench94: {} steps of {}, lr {lr} (mean loss), decay lr·wd = {decay}", self.total_steps, self.batch)]
    }
}
