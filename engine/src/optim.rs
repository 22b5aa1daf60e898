//! SGD and AdamW with parameter groups and a per-group learning-rate multiplier evaluated every step
//! ("SGD with a dynamic schedule": lr_i(step) = base_lr · s(step, i, n)), including FreezeOut's
//! schedules. A group whose multiplier reaches zero is frozen: its parameters stop requiring
//! gradients and so leave the backward pass.
use crate::error::Result;
use crate::nn::{Buffer, Param};
use crate::ops::{adamw_step_in_place, sgd_step_in_place, AdamWHyper, AdamWState, SgdHyper};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// Parameters that share a learning-rate multiplier (a layer, a sub-model).
pub struct ParamGroup {
    pub name: String,
    pub params: Vec<Arc<Param>>,
    /// A constant factor on this group's learning rate.
    pub lr_scale: f32,
    /// This group's weight decay in place of the rule's (PyTorch's per-group `weight_decay`).
    pub weight_decay: Option<f32>,
}

impl ParamGroup {
    pub fn new(name: impl Into<String>, params: Vec<Arc<Param>>) -> Self {
        Self { name: name.into(), params, lr_scale: 1.0, weight_decay: None }
    }

    /// With learning-rate factor `lr_scale` and weight decay `weight_decay` of its own.
    pub fn with_hyper(self, lr_scale: f32, weight_decay: f32) -> Self {
        Self { lr_scale, weight_decay: Some(weight_decay), ..self }
    }
}

/// s(step, group, groups): the multiplier of the base learning rate; 0 freezes the group.
pub trait LrSchedule: Send + Sync {
    fn multiplier(&self, step: usize, group: usize, groups: usize) -> f32;
}

impl LrSchedule for Box<dyn LrSchedule> {
    fn multiplier(&self, step: usize, group: usize, groups: usize) -> f32 {
        self.as_ref().multiplier(step, group, groups)
    }
}

/// The plain schedule: every group at the base rate.
pub struct Constant;

impl LrSchedule for Constant {
    fn multiplier(&self, _: usize, _: usize, _: usize) -> f32 {
        1.0
    }
}

/// Cosine annealing of every group from the base rate to zero over `total_steps`.
pub struct Cosine {
    pub total_steps: usize,
}

impl LrSchedule for Cosine {
    fn multiplier(&self, step: usize, _: usize, _: usize) -> f32 {
        let t = (step as f32 / self.total_steps.max(1) as f32).min(1.0);
        // Never exactly 0 before the end: 0 would freeze the groups.
        (0.5 * (1.0 + (std::f32::consts::PI * t).cos())).max(if t < 1.0 { 1e-6 } else { 0.0 })
    }
}

/// A triangle: from `start` up to 1 at step ⌊`peak`·total⌋, then down to `end` at
/// `total_steps`, linear in between and `end` after (airbench's schedule; numpy's `interp`
/// over those three points, as its LambdaLR reads it).
pub struct Triangle {
    pub total_steps: usize,
    pub peak: f32,
    pub start: f32,
    pub end: f32,
}

impl LrSchedule for Triangle {
    fn multiplier(&self, step: usize, _: usize, _: usize) -> f32 {
        let total = self.total_steps.max(1);
        let top = ((self.peak * total as f32) as usize).min(total);
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        match step {
            s if s >= total => self.end,
            s if s < top => lerp(self.start, 1.0, s as f32 / top as f32),
            s => lerp(1.0, self.end, (s - top) as f32 / (total - top) as f32),
        }
    }
}

/// Linear warm-up in front of any schedule: over the first `steps` steps the multiplier is
/// (step + 1)/steps times the inner schedule's — PyTorch's `LinearLR(start_factor=1/steps,
/// total_iters=steps − 1)` chained with it — and the inner schedule's alone after.
pub struct Warmup {
    pub steps: usize,
    pub inner: Box<dyn LrSchedule>,
}

impl LrSchedule for Warmup {
    fn multiplier(&self, step: usize, group: usize, groups: usize) -> f32 {
        let ramp = if step < self.steps { (step + 1) as f32 / self.steps as f32 } else { 1.0 };
        ramp * self.inner.multiplier(step, group, groups)
    }
}

/// How FreezeOut spaces the layers' freezing times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linear,
    Cubic,
}

/// FreezeOut (Brock et al. 2017): layer i anneals its rate to zero by cosine and freezes at
/// t_i·total_steps, t_i = scale(t_0 + (1 − t_0)·i/(n − 1)), scale = identity (linear) or
/// cube (cubic); the last layer trains to the end. With `scale_lr`, layer i starts at
/// base_lr / t_i, so every layer covers the same area under its rate curve.
pub struct FreezeOut {
    pub t0: f32,
    pub total_steps: usize,
    pub spacing: Spacing,
    pub scale_lr: bool,
}

impl FreezeOut {
    /// The fraction of training after which group `i` of `n` is frozen.
    pub fn t_i(&self, i: usize, n: usize) -> f32 {
        let linear = if n <= 1 { 1.0 } else { self.t0 + (1.0 - self.t0) * i as f32 / (n - 1) as f32 };
        match self.spacing {
            Spacing::Linear => linear,
            Spacing::Cubic => linear.powi(3),
        }
    }
}

impl LrSchedule for FreezeOut {
    fn multiplier(&self, step: usize, i: usize, n: usize) -> f32 {
        let t_i = self.t_i(i, n);
        let t = step as f32 / self.total_steps.max(1) as f32;
        if t >= t_i {
            return 0.0;
        }
        let start = if self.scale_lr { 1.0 / t_i } else { 1.0 };
        start * 0.5 * (1.0 + (std::f32::consts::PI * t / t_i).cos())
    }
}

/// The update rule and its hyper-parameters: torch.optim.SGD or torch.optim.AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Sgd(SgdHyper),
    AdamW(AdamWHyper),
}

impl Default for Rule {
    fn default() -> Self {
        Self::Sgd(SgdHyper::default())
    }
}

impl From<SgdHyper> for Rule {
    fn from(h: SgdHyper) -> Self {
        Self::Sgd(h)
    }
}

impl From<AdamWHyper> for Rule {
    fn from(h: AdamWHyper) -> Self {
        Self::AdamW(h)
    }
}

impl Rule {
    /// Arithmetic operations per parameter element of one update, as the kernels run them
    /// (SGD: decay 2, momentum 3, step 2; AdamW: decay 2, first moment 3, second 4, the
    /// bias-corrected ratio 5, step 2).
    pub fn flops_per_param(&self) -> f64 {
        match self {
            Self::Sgd(h) if h.momentum != 0.0 => 7.0,
            Self::Sgd(_) => 4.0,
            Self::AdamW(_) => 16.0,
        }
    }

    /// The names of a parameter's state tensors, as PyTorch's optimizer state dict has them.
    pub fn state_names(&self) -> &'static [&'static str] {
        match self {
            Self::Sgd(_) => &["momentum"],
            Self::AdamW(_) => &["exp_avg", "exp_avg_sq", "step"],
        }
    }
}

/// The rule with each parameter's state, keyed by the parameter's address: SGD's momentum
/// buffers (none before the first step, or without momentum) or AdamW's moments and count.
enum Slots {
    Sgd(SgdHyper, HashMap<usize, Tensor>),
    AdamW(AdamWHyper, HashMap<usize, AdamWState>),
}

impl Slots {
    fn forget(&mut self, key: usize) {
        match self {
            Self::Sgd(_, bufs) => drop(bufs.remove(&key)),
            Self::AdamW(_, states) => drop(states.remove(&key)),
        }
    }
}

/// An optimizer over parameter groups: a [`Rule`], a base learning rate and a schedule.
pub struct Optimizer {
    pub lr: f32,
    slots: Slots,
    groups: Vec<ParamGroup>,
    schedule: Box<dyn LrSchedule>,
    step: usize,
}

impl Optimizer {
    pub fn new(groups: Vec<ParamGroup>, lr: f32, rule: impl Into<Rule>) -> Self {
        let slots = match rule.into() {
            Rule::Sgd(h) => Slots::Sgd(h, HashMap::new()),
            Rule::AdamW(h) => Slots::AdamW(h, HashMap::new()),
        };
        Self { lr, slots, groups, schedule: Box::new(Constant), step: 0 }
    }

    pub fn rule(&self) -> Rule {
        match &self.slots {
            Slots::Sgd(h, _) => Rule::Sgd(*h),
            Slots::AdamW(h, _) => Rule::AdamW(*h),
        }
    }

    pub fn with_schedule(mut self, schedule: impl LrSchedule + 'static) -> Self {
        self.schedule = Box::new(schedule);
        self
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Adds a group (e.g. an auxiliary head created after the optimizer).
    pub fn push_group(&mut self, group: ParamGroup) {
        self.groups.push(group);
    }

    pub fn steps_taken(&self) -> usize {
        self.step
    }

    /// Each group's learning rate at the current step.
    pub fn current_lrs(&self) -> Vec<f32> {
        let n = self.groups.len();
        self.groups.iter().enumerate().map(|(i, g)| self.lr * g.lr_scale * self.schedule.multiplier(self.step, i, n)).collect()
    }

    /// Applies one update to every parameter that has a gradient, then advances the step.
    /// Groups whose rate has reached zero are frozen first.
    pub fn step(&mut self) -> Result<()> {
        self.step_guarded(None)
    }

    /// [`Optimizer::step`], the kernels reading a step guard's state
    /// (`ops::StepGuard::state`): on a flagged step no weight or state changes. The schedule
    /// still advances, as PyTorch's does when a GradScaler skips a step.
    pub fn step_guarded(&mut self, guard: Option<&Tensor>) -> Result<()> {
        let lrs = self.current_lrs();
        for (group, lr) in self.groups.iter().zip(lrs) {
            if lr == 0.0 {
                for p in &group.params {
                    p.set_requires_grad(false);
                    self.slots.forget(key(p));
                }
                continue;
            }
            let decay = |d: f32| group.weight_decay.unwrap_or(d);
            for p in group.params.iter().filter(|p| p.requires_grad()) {
                let Some(grad) = p.grad() else { continue };
                match &mut self.slots {
                    Slots::Sgd(h, bufs) => {
                        let h = SgdHyper { weight_decay: decay(h.weight_decay), ..*h };
                        let mut buf = bufs.remove(&key(p));
                        let updated = p.update(|value| sgd_step_in_place(value, &grad, &mut buf, lr, h, guard));
                        if let Some(b) = buf {
                            bufs.insert(key(p), b);
                        }
                        updated?;
                    }
                    Slots::AdamW(h, states) => {
                        let mut state = match states.remove(&key(p)) {
                            Some(state) => state,
                            None => AdamWState::zeros(&p.value())?,
                        };
                        let h = AdamWHyper { weight_decay: decay(h.weight_decay), ..*h };
                        let updated = p.update(|value| adamw_step_in_place(value, &grad, &mut state, lr, h, guard));
                        states.insert(key(p), state);
                        updated?;
                    }
                }
                if let Some(mask) = p.mask() {
                    p.update(|value| -> Result<()> {
                        *value = crate::ops::mul(value, &mask)?;
                        Ok(())
                    })?;
                }
            }
        }
        self.step += 1;
        Ok(())
    }

    pub fn zero_grad(&self) {
        self.groups.iter().flat_map(|g| &g.params).for_each(|p| p.zero_grad());
    }

    /// `param`'s state tensors under [`Rule::state_names`] (for checkpoints and tests); empty
    /// before its first step.
    pub fn state_of(&self, param: &Arc<Param>) -> Vec<(&'static str, Tensor)> {
        match &self.slots {
            Slots::Sgd(_, bufs) => bufs.get(&key(param)).map(|b| vec![("momentum", b.clone())]).unwrap_or_default(),
            Slots::AdamW(_, states) => states
                .get(&key(param))
                .map(|s| vec![("exp_avg", s.exp_avg.clone()), ("exp_avg_sq", s.exp_avg_sq.clone()), ("step", s.step.clone())])
                .unwrap_or_default(),
        }
    }

    /// Restores the step counter and each listed parameter's state (resuming from a
    /// checkpoint): each parameter's tensors under the names of [`Rule::state_names`].
    pub fn restore(&mut self, step: usize, states: Vec<(Arc<Param>, HashMap<&'static str, Tensor>)>) -> Result<()> {
        self.step = step;
        for (p, mut tensors) in states {
            let mut take = |name: &str| tensors.remove(name).ok_or_else(|| crate::Error::OptimizerState(format!("`{name}` is missing")));
            match &mut self.slots {
                Slots::Sgd(_, bufs) => drop(bufs.insert(key(&p), take("momentum")?)),
                Slots::AdamW(_, all) => {
                    let state = AdamWState { exp_avg: take("exp_avg")?, exp_avg_sq: take("exp_avg_sq")?, step: take("step")? };
                    all.insert(key(&p), state);
                }
            }
        }
        Ok(())
    }
}

fn key(p: &Arc<Param>) -> usize {
    Arc::as_ptr(p) as usize
}

/// Lookahead (Zhang et al., 2019, "k steps forward, 1 step back"), as airbench uses it: slow
/// weights φ, started at the parameters' values; every k optimizer steps the caller pulls
/// them toward the fast weights θ and restarts θ from them: φ ← φ + α·(θ − φ), θ ← φ
/// (α = 1 − airbench's decay; α = 0 resets θ to φ). Buffers given (BatchNorm's running
/// statistics, which airbench's state-dict average includes) are averaged alike. Optimizer
/// state is left as is.
pub struct Lookahead {
    params: Vec<(Arc<Param>, Tensor)>,
    buffers: Vec<(Arc<Buffer>, Tensor)>,
}

impl Lookahead {
    pub fn new(params: &[Arc<Param>], buffers: &[Arc<Buffer>]) -> Self {
        Self { params: params.iter().map(|p| (p.clone(), p.value())).collect(), buffers: buffers.iter().map(|b| (b.clone(), b.value())).collect() }
    }

    /// One synchronisation with step size `alpha` in [0, 1].
    pub fn sync(&mut self, alpha: f32) -> Result<()> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(crate::error::shape_err("lookahead", format!("α must be in [0, 1], got {alpha}")));
        }
        // φ + α·(θ − φ), as torch.lerp: a value that did not move (a frozen parameter) stays
        // exactly as it was.
        let pull = |slow: &Tensor, fast: &Tensor| match alpha {
            0.0 => Ok(slow.clone()),
            _ => crate::ops::axpby(1.0, slow, alpha, &crate::ops::axpby(1.0, fast, -1.0, slow)?),
        };
        for (param, slow) in &mut self.params {
            *slow = pull(slow, &param.value())?;
            param.set_value(slow.clone());
        }
        for (buffer, slow) in &mut self.buffers {
            *slow = pull(slow, &buffer.value())?;
            buffer.set_value(slow.clone());
        }
        Ok(())
    }
}
