//! `balanced`: an auxiliary classifier head (global average pool + linear) at every sub-model
//! boundary, trained with the network on Σᵢ wᵢ·Lᵢ. The weights adapt every step so that the
//! heads contribute equally (wᵢ·Lᵢ equal: wᵢ ∝ 1/Lᵢ, smoothed), and a head whose loss fell by
//! more than `gamma` (relative) in the last step has its weight scaled down by gamma/change,
//! keeping each head's relative loss change per step under gamma. Test accuracy is the final
//! head's: the auxiliary heads only shape training.
use super::{EpochData, Strategy};
use crate::error::TrainError;
use crate::trainer::Trainer;
use rand::{rngs::StdRng, SeedableRng};
use std::sync::Arc;
use tessera_engine::autograd as ag;
use tessera_engine::nn::{Linear, Module, Param};
use tessera_engine::optim::ParamGroup;
use tessera_engine::{Tensor, Var};

/// Smoothing of the weights towards their target per step.
const SMOOTHING: f32 = 0.1;

pub struct Balanced {
    gamma: f32,
    /// One head per boundary after sub-models 0..n−1 (the last sub-model is the real head).
    heads: Vec<Linear>,
    /// One weight per head, the final head's last; they sum to the number of heads.
    pub weights: Vec<f32>,
    previous: Vec<f32>,
}

impl Balanced {
    pub fn new(gamma: f32) -> Self {
        Self { gamma, heads: Vec::new(), weights: Vec::new(), previous: Vec::new() }
    }

    /// Creates the heads from one sample's stage outputs and hands them to the optimizer.
    fn build_heads(&mut self, t: &mut Trainer, data: &EpochData) -> Result<(), TrainError> {
        let n = t.submodel_count();
        let (h, w) = data.train.dims();
        let mut x = Var::constant(Tensor::zeros(&[1, 3, h, w], &t.device)?);
        let rng = &mut StdRng::seed_from_u64(data.spec.seed ^ 0xba1a);
        for stage in 0..n - 1 {
            x = tessera_engine::no_grad(|| t.model.forward_stage(stage, &x))?;
            let features = if x.shape().len() == 4 { x.shape()[1] } else { x.value().numel() };
            let head = Linear::new(features, t.classes, true, &t.device, rng)?;
            let params: Vec<Arc<Param>> = head.named_params().into_iter().map(|(_, p)| p).collect();
            t.opt.push_group(ParamGroup::new(format!("aux head {}", t.model.submodels[stage].name), params));
            self.heads.push(head);
        }
        self.weights = vec![1.0; n];
        Ok(())
    }

    /// The new weights after a step with per-head losses `losses`.
    fn adapt(&mut self, losses: &[f32]) {
        let k = losses.len() as f32;
        let inverse_sum: f32 = losses.iter().map(|l| 1.0 / l.max(1e-6)).sum();
        for (i, &l) in losses.iter().enumerate() {
            let target = k / l.max(1e-6) / inverse_sum;
            let mut w = (1.0 - SMOOTHING) * self.weights[i] + SMOOTHING * target;
            if let Some(&before) = self.previous.get(i) {
                let change = (before - l) / before.max(1e-6);
                if change > self.gamma {
                    w *= self.gamma / change;
                }
            }
            self.weights[i] = w;
        }
        let total: f32 = self.weights.iter().sum();
        self.weights.iter_mut().for_each(|w| *w *= k / total);
        self.previous = losses.to_vec();
    }
}

/// Global average pool (4-D inputs) and flatten: [N, C, H, W] → [N, C]; [N, F] as is.
fn pooled(h: &Var) -> Result<Var, TrainError> {
    if h.shape().len() != 4 {
        return Ok(h.clone());
    }
    let p = ag::adaptive_avg_pool2d(h, [1, 1])?;
    Ok(ag::reshape(&p, &[h.shape()[0], h.shape()[1]])?)
}

impl Strategy for Balanced {
    fn name(&self) -> String {
        format!("balanced (γ={})", self.gamma)
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        if self.heads.is_empty() {
            self.build_heads(t, data)?;
        }
        t.set_trainable(&(0..t.submodel_count()).collect::<Vec<_>>());
        Ok(format!("weights {}", self.weights.iter().map(|w| format!("{w:.2}")).collect::<Vec<_>>().join("/")))
    }

    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        let n = t.submodel_count();
        let mut h = Var::constant(x);
        let mut losses = Vec::with_capacity(n);
        for stage in 0..n {
            h = t.forward_stages(stage..stage + 1, &h)?;
            if let Some(head) = self.heads.get(stage) {
                losses.push(ag::cross_entropy(&head.forward(&pooled(&h)?)?, labels)?);
            }
        }
        losses.push(ag::cross_entropy(&h, labels)?);
        let mut total = ag::scale(&losses[0], self.weights[0])?;
        for (l, &w) in losses.iter().zip(&self.weights).skip(1) {
            total = ag::add(&total, &ag::scale(l, w)?)?;
        }
        t.backward(&total)?;
        t.finish_step(losses.last().expect("the final head's loss"), &h, labels)?;
        // The weights follow the heads' losses step by step: one read per step, the price
        // of this strategy's policy (the ordinary step reads nothing).
        let values = tessera_engine::Tensor::to_vecs(&losses.iter().map(|l| l.value().clone()).collect::<Vec<_>>())?;
        self.adapt(&values.iter().map(|v| v[0]).collect::<Vec<f32>>());
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        vec![format!("final head weights (aux… final): {}", self.weights.iter().map(|w| format!("{w:.3}")).collect::<Vec<_>>().join(", "))]
    }
}

#[cfg(test)]
mod tests {
    use super::Balanced;

    /// The weights move 10 % toward wᵢ ∝ 1/Lᵢ, a head whose loss fell by more than γ in a step is
    /// scaled by γ/change, and the weights keep summing to the head count.
    #[test]
    fn a_head_whose_loss_fell_faster_than_gamma_is_capped() {
        let (before, after) = ([2.0f32, 2.0, 2.0], [1.0f32, 1.9, 2.0]);
        let adapted = |gamma: f32| {
            let mut b = Balanced::new(gamma);
            b.weights = vec![1.0; 3];
            b.adapt(&before);
            b.weights = vec![1.0; 3];
            b.adapt(&after);
            b.weights
        };
        // By hand: targets 3·(1/Lᵢ)/Σ(1/Lⱼ); w = 0.9 + 0.1·target; head 0 fell 50 % > γ = 0.1,
        // so it is scaled by 0.1/0.5; head 1 fell 5 % < γ and is not; then normalised to 3.
        let inv: Vec<f32> = after.iter().map(|l| 1.0 / l).collect();
        let sum: f32 = inv.iter().sum();
        let mut want: Vec<f32> = inv.iter().map(|i| 0.9 + 0.1 * 3.0 * i / sum).collect();
        want[0] *= 0.1 / 0.5;
        let total: f32 = want.iter().sum();
        want.iter_mut().for_each(|w| *w *= 3.0 / total);
        let capped = adapted(0.1);
        for (got, want) in capped.iter().zip(&want) {
            assert!((got - want).abs() < 1e-6, "{capped:?} against {want:?}");
        }
        // Without the cap (γ above every change) the fast head keeps the larger weight.
        let uncapped = adapted(10.0);
        assert!(capped[0] < 0.5 * uncapped[0], "{capped:?} against {uncapped:?}");
    }
}
