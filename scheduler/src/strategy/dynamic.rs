//! `dynamic`: layers freeze, front to back, once they stop changing (AutoFreeze / Egeria
//! style). Each sub-model's statistic — its gradient norm, or the variance of its output
//! activations — is averaged over a sliding window of steps; when the first still-training
//! sub-model's window mean moves by less than `threshold` (relative) from the previous
//! window's, it freezes and its backward work disappears from every later step. The head
//! never freezes. `freezeout` instead anneals sub-model i's learning rate to zero at t_i
//! (FreezeOut, through the SGD's per-group schedule).
use super::{EpochData, Strategy};
use crate::error::TrainError;
use crate::trainer::Trainer;
use tessera_engine::autograd as ag;
use tessera_engine::ops;
use tessera_engine::optim::{Cosine, FreezeOut, LrSchedule, Spacing};
use tessera_engine::{no_grad, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    GradNorm,
    ActivationVariance,
    FreezeOut,
}

impl std::str::FromStr for Criterion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grad-norm" => Ok(Self::GradNorm),
            "act-var" => Ok(Self::ActivationVariance),
            "freezeout" => Ok(Self::FreezeOut),
            other => Err(format!("unknown criterion `{other}`: expected grad-norm, act-var or freezeout")),
        }
    }
}

pub struct Dynamic {
    criterion: Criterion,
    threshold: f32,
    window: usize,
    /// Per sub-model: this window's statistics and the previous window's mean.
    current: Vec<Vec<f32>>,
    previous: Vec<Option<f32>>,
    /// Sub-models 0..frozen are frozen.
    frozen: usize,
    steps: usize,
    /// (step, sub-model, relative change) of each freeze.
    events: Vec<(usize, String, f32)>,
    /// (step, sub-model, relative change) of every window end that compared the first
    /// still-training sub-model with its previous window.
    measured: Vec<(usize, String, f32)>,
}

impl Dynamic {
    pub fn new(criterion: Criterion, threshold: f32, window: usize) -> Self {
        Self {
            criterion,
            threshold,
            window: window.max(1),
            current: Vec::new(),
            previous: Vec::new(),
            frozen: 0,
            steps: 0,
            events: Vec::new(),
            measured: Vec::new(),
        }
    }

    /// Sub-models frozen so far (a prefix of the network).
    pub fn frozen(&self) -> usize {
        self.frozen
    }

    /// Every window change measured, as (step, sub-model, relative change).
    pub fn window_changes(&self) -> &[(usize, String, f32)] {
        &self.measured
    }

    /// At a window's end: freeze the first training sub-model if its statistic settled.
    fn end_window(&mut self, t: &mut Trainer) {
        let means: Vec<Option<f32>> = self.current.iter().map(|w| (!w.is_empty()).then(|| w.iter().sum::<f32>() / w.len() as f32)).collect();
        let i = self.frozen;
        if i + 1 < t.submodel_count() {
            if let (Some(now), Some(Some(before))) = (means[i], self.previous.get(i)) {
                let change = (now - before).abs() / before.abs().max(1e-12);
                self.measured.push((self.steps, t.model.submodels[i].name.clone(), change));
                if change < self.threshold {
                    self.frozen += 1;
                    t.set_trainable(&(self.frozen..t.submodel_count()).collect::<Vec<_>>());
                    self.events.push((self.steps, t.model.submodels[i].name.clone(), change));
                }
            }
        }
        self.previous = means;
        self.current.iter_mut().for_each(Vec::clear);
    }
}

/// Variance of a tensor's values: E[x²] − E[x]², on its device.
fn variance(x: &Tensor) -> Result<f32, TrainError> {
    let axes: Vec<usize> = (0..x.rank()).collect();
    let mean = ops::mean(x, &axes, false)?.to_vec()?[0];
    let mean_sq = ops::mean(&ops::mul(x, x)?, &axes, false)?.to_vec()?[0];
    Ok(mean_sq - mean * mean)
}

impl Strategy for Dynamic {
    fn name(&self) -> String {
        match self.criterion {
            Criterion::GradNorm => "dynamic (grad-norm)".into(),
            Criterion::ActivationVariance => "dynamic (act-var)".into(),
            Criterion::FreezeOut => "dynamic (freezeout)".into(),
        }
    }

    fn schedule(&self, total_steps: usize) -> Box<dyn LrSchedule> {
        match self.criterion {
            Criterion::FreezeOut => Box::new(FreezeOut { t0: 0.5, total_steps, spacing: Spacing::Cubic, scale_lr: true }),
            _ => Box::new(Cosine { total_steps }),
        }
    }

    fn begin_epoch(&mut self, t: &mut Trainer, _: &EpochData) -> Result<String, TrainError> {
        let n = t.submodel_count();
        if self.current.is_empty() {
            self.current = vec![Vec::new(); n];
            self.previous = vec![None; n];
            t.set_trainable(&(0..n).collect::<Vec<_>>());
        }
        if self.criterion == Criterion::FreezeOut {
            // The SGD freezes groups whose rate reached zero; count the frozen prefix.
            self.frozen = (0..n).take_while(|&i| !t.is_trainable(i)).count();
        }
        let names: Vec<&str> = t.model.submodels[..self.frozen].iter().map(|s| s.name.as_str()).collect();
        Ok(if names.is_empty() { "all".into() } else { format!("frozen: {}", names.join(",")) })
    }

    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        let n = t.submodel_count();
        // Stage by stage, so the activation statistic can see each sub-model's output.
        let mut h = Var::constant(x);
        for stage in 0..n {
            h = t.forward_stages(stage..stage + 1, &h)?;
            if self.criterion == Criterion::ActivationVariance && stage >= self.frozen {
                let v = no_grad(|| variance(h.value()))?;
                self.current[stage].push(v);
            }
        }
        let loss = ag::cross_entropy(&h, labels)?;
        t.backward(&loss)?;
        if self.criterion == Criterion::GradNorm {
            for (i, norm) in t.grad_norms()?.into_iter().enumerate().skip(self.frozen) {
                self.current[i].push(norm);
            }
        }
        t.finish_step(&loss, &h, labels)?;
        self.steps += 1;
        if self.criterion != Criterion::FreezeOut && self.steps.is_multiple_of(self.window) {
            self.end_window(t);
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        self.events.iter().map(|(step, name, change)| format!("{name} froze at step {step} (window change {:.1} %)", change * 100.0)).collect()
    }
}
