//! `coupled`: the network is cut into a front (sub-models before `split`) and a back, which
//! train in alternation, epoch by epoch, with the other's weights fixed. They are coupled by a
//! supervision signal: while the front trains (through the frozen back's cross-entropy), its
//! output is also pulled towards the features the back was last trained on — the front's
//! output with its weights from the start of the phase — by an MSE term, so the back's
//! input does not drift away from what it learned.
use super::{EpochData, Strategy};
use crate::error::TrainError;
use crate::trainer::Trainer;
use std::sync::Arc;
use tessera_engine::autograd as ag;
use tessera_engine::nn::Param;
use tessera_engine::{no_grad, Tensor, Var};

/// Weight of the feature-matching term.
const COUPLING: f32 = 1.0;

pub struct Coupled {
    split: Option<usize>,
    /// The front's parameters at the start of the current front phase.
    snapshot: Vec<(Arc<Param>, Tensor)>,
    front_phase: bool,
}

impl Coupled {
    pub fn new(split: Option<usize>) -> Self {
        Self { split, snapshot: Vec::new(), front_phase: false }
    }

    fn split(&self, t: &Trainer) -> usize {
        self.split.unwrap_or(t.submodel_count() / 2).clamp(1, t.submodel_count() - 1)
    }
}

impl Strategy for Coupled {
    fn name(&self) -> String {
        "coupled".into()
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        let (n, split) = (t.submodel_count(), self.split(t));
        // Odd epochs train the back (on the current front's features), even ones the front.
        self.front_phase = data.epoch.is_multiple_of(2);
        let part: Vec<usize> = if self.front_phase { (0..split).collect() } else { (split..n).collect() };
        t.set_trainable(&part);
        self.snapshot =
            if self.front_phase { (0..split).flat_map(|i| t.opt.groups()[i].params.iter().map(|p| (p.clone(), p.value()))).collect() } else { Vec::new() };
        let names: Vec<&str> = part.iter().map(|&i| t.model.submodels[i].name.as_str()).collect();
        Ok(format!("{}: {}", if self.front_phase { "front" } else { "back" }, names.join(",")))
    }

    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        if !self.front_phase {
            return t.step_from(0, x, labels);
        }
        let (n, split) = (t.submodel_count(), self.split(t));
        let x = Var::constant(x);
        // The target: the front's output with its phase-start weights.
        let current: Vec<Tensor> = self.snapshot.iter().map(|(p, _)| p.value()).collect();
        self.snapshot.iter().for_each(|(p, old)| p.set_value(old.clone()));
        let target = no_grad(|| t.forward_stages(0..split, &x));
        self.snapshot.iter().zip(current).for_each(|((p, _), now)| p.set_value(now));
        let target = Var::constant(target?.value().clone());

        let features = t.forward_stages(0..split, &x)?;
        let logits = t.forward_stages(split..n, &features)?;
        let ce = ag::cross_entropy(&logits, labels)?;
        let diff = ag::add(&features, &ag::scale(&target, -1.0)?)?;
        let axes: Vec<usize> = (0..diff.shape().len()).collect();
        let mse = ag::mean(&ag::mul(&diff, &diff)?, &axes, false)?;
        t.backward(&ag::add(&ce, &ag::scale(&mse, COUPLING)?)?)?;
        t.finish_step(&ce, &logits, labels)
    }
}
