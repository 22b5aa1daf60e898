//! `local-fc`: each stage trains one sub-model together with its nearest dependency layers —
//! the sub-models within `neighbors` hops of it in the dependency graph, either direction —
//! with the rest frozen; sub-models are visited in order of importance, measured before the
//! first stage as each sub-model's gradient norm per parameter (RMS gradient) on one batch.
use super::{stage_of, EpochData, Strategy};
use crate::data::Loader;
use crate::error::TrainError;
use crate::trainer::Trainer;
use tessera_engine::autograd as ag;
use tessera_engine::{Tensor, Var};
use tessera_models::Model;

pub struct LocalFc {
    neighbors: usize,
    /// Sub-models by decreasing importance, with their RMS gradients.
    order: Vec<(usize, f32)>,
    names: Vec<String>,
}

impl LocalFc {
    pub fn new(neighbors: usize) -> Self {
        Self { neighbors, order: Vec::new(), names: Vec::new() }
    }

    /// Measures importance on the first batch of the epoch (no update is applied).
    fn rank(&mut self, t: &mut Trainer, data: &EpochData) -> Result<(), TrainError> {
        let n = t.submodel_count();
        t.set_trainable(&(0..n).collect::<Vec<_>>());
        let spec = crate::data::LoaderSpec { epoch: 0, ..data.spec.clone() };
        let b = Loader::new(data.train, &spec)?.next().ok_or_else(|| TrainError::Config("local-fc needs a non-empty training set".into()))??;
        let logits = t.forward_stages(0..n, &Var::constant(Tensor::from_vec(b.x, &b.shape, &t.device)?))?;
        // Through the trainer: data-parallel, every rank ranks by the whole batch's gradient.
        t.set_batch_share(b.labels.len(), b.global);
        t.backward(&ag::cross_entropy(&logits, &b.labels)?)?;
        let norms = t.grad_norms()?;
        t.opt.zero_grad();
        let mut order: Vec<(usize, f32)> = norms
            .into_iter()
            .enumerate()
            .map(|(i, norm)| {
                let count: usize = t.opt.groups()[i].params.iter().map(|p| p.value().numel()).sum();
                (i, norm / (count.max(1) as f32).sqrt())
            })
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        self.names = order.iter().map(|&(i, _)| t.model.submodels[i].name.clone()).collect();
        self.order = order;
        Ok(())
    }
}

/// Sub-models within `hops` of `center` in the undirected dependency graph.
pub fn neighbourhood(model: &Model, center: usize, hops: usize) -> Vec<usize> {
    let subs = &model.submodels;
    let adjacent = |i: usize, j: usize| subs[i].deps.contains(&subs[j].name) || subs[j].deps.contains(&subs[i].name);
    let mut reached = vec![center];
    let mut frontier = vec![center];
    for _ in 0..hops {
        let next: Vec<usize> = (0..subs.len()).filter(|&j| !reached.contains(&j) && frontier.iter().any(|&i| adjacent(i, j))).collect();
        reached.extend(&next);
        frontier = next;
    }
    reached.sort_unstable();
    reached
}

impl Strategy for LocalFc {
    fn name(&self) -> String {
        format!("local-fc (k={})", self.neighbors)
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        if self.order.is_empty() {
            self.rank(t, data)?;
        }
        let (center, _) = self.order[stage_of(data.epoch, data.epochs, self.order.len())];
        let trainable = neighbourhood(&t.model, center, self.neighbors);
        t.set_trainable(&trainable);
        let names: Vec<&str> = trainable.iter().map(|&i| t.model.submodels[i].name.as_str()).collect();
        Ok(format!("{} (+{})", t.model.submodels[center].name, names.len() - 1))
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "importance order (RMS gradient): {}",
            self.names.iter().zip(&self.order).map(|(n, (_, g))| format!("{n} {g:.2e}")).collect::<Vec<_>>().join(", ")
        )]
    }
}
