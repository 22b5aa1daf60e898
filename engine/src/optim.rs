//! SGD with parameter groups and a per-group learning-rate multiplier evaluated every step
//! ("SGD with a dynamic schedule": lr_i(step) = base_lr · s(step, i, n)), including FreezeOut's
//! schedules. A group whose multiplier reaches zero is frozen: its parameters stop requiring
//! gradients and so leave the backward pass.
use crate::error::Result;
use crate::nn::Param;
use crate::ops::{sgd_step_in_place, SgdHyper};
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::sync::Arc;

/// Parameters that share a learning-rate multiplier (a layer, a sub-model).
pub struct ParamGroup {
    pub name: String,
    pub params: Vec<Arc<Param>>,
    /// A constant factor on this group's learning rate.
    pub lr_scale: f32,
}

impl ParamGroup {
    pub fn new(name: impl Into<String>, params: Vec<Arc<Param>>) -> Self {
        Self { name: name.into(), params, lr_scale: 1.0 }
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

/// torch.optim.SGD (momentum, dampening, nesterov, weight decay) over parameter groups.
pub struct Sgd {
    pub lr: f32,
    pub hyper: SgdHyper,
    groups: Vec<ParamGroup>,
    schedule: Box<dyn LrSchedule>,
    momentum_buffers: HashMap<usize, Tensor>,
    step: usize,
}

impl Sgd {
    pub fn new(groups: Vec<ParamGroup>, lr: f32, hyper: SgdHyper) -> Self {
        Self { lr, hyper, groups, schedule: Box::new(Constant), momentum_buffers: HashMap::new(), step: 0 }
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
        let lrs = self.current_lrs();
        for (group, lr) in self.groups.iter().zip(lrs) {
            if lr == 0.0 {
                for p in &group.params {
                    p.set_requires_grad(false);
                    self.momentum_buffers.remove(&key(p));
                }
                continue;
            }
            for p in group.params.iter().filter(|p| p.requires_grad()) {
                let Some(grad) = p.grad() else { continue };
                let mut buf = self.momentum_buffers.remove(&key(p));
                let updated = p.update(|value| sgd_step_in_place(value, &grad, &mut buf, lr, self.hyper));
                if let Some(b) = buf {
                    self.momentum_buffers.insert(key(p), b);
                }
                updated?;
            }
        }
        self.step += 1;
        Ok(())
    }

    pub fn zero_grad(&self) {
        self.groups.iter().flat_map(|g| &g.params).for_each(|p| p.zero_grad());
    }

    /// The momentum buffer of `param`, if it has one (for checkpoints and tests).
    pub fn momentum_buffer(&self, param: &Arc<Param>) -> Option<&Tensor> {
        self.momentum_buffers.get(&key(param))
    }

    /// Restores a momentum buffer and the step counter (resuming from a checkpoint).
    pub fn restore(&mut self, step: usize, buffers: Vec<(Arc<Param>, Tensor)>) {
        self.step = step;
        for (p, b) in buffers {
            self.momentum_buffers.insert(key(&p), b);
        }
    }
}

fn key(p: &Arc<Param>) -> usize {
    Arc::as_ptr(p) as usize
}
