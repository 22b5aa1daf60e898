//! `fc` (the FC schedule): the feature extractor is frozen and the fully-connected sub-models
//! train one stage each, in depth- or breadth-first order over the sub-model graph, then all
//! together. The frozen backbone's outputs are computed once (eval mode, no augmentation) and
//! cached, so every stage costs only the head's forward and backward.
use super::{stage_of, EpochData, Strategy};
use crate::data::{Batch, Loader, LoaderSpec};
use crate::error::TrainError;
use crate::trainer::{EpochStats, StepInfo, Trainer};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use std::collections::VecDeque;
use tessera_engine::{no_grad, Tensor, Var};
use tessera_models::Model;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Dfs,
    Bfs,
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dfs" => Ok(Self::Dfs),
            "bfs" => Ok(Self::Bfs),
            other => Err(format!("unknown order `{other}`: expected dfs or bfs")),
        }
    }
}

/// The backbone's outputs for every training image, in set order.
struct FeatureCache {
    values: Vec<f32>,
    /// One sample's shape (without the batch axis).
    shape: Vec<usize>,
    labels: Vec<usize>,
}

pub struct Fc {
    order: Order,
    /// Stages: the sub-models each trains (FC sub-models one by one, then all of them).
    stages: Vec<Vec<usize>>,
    cache: Option<FeatureCache>,
}

/// Sub-models made of fully-connected layers only (every parameter of rank ≤ 2), never the first.
pub fn fc_submodels(model: &Model) -> Vec<usize> {
    (1..model.submodels.len())
        .filter(|&i| {
            let params = model.params_of(&model.submodels[i]);
            !params.is_empty() && params.iter().all(|(_, p)| p.value().rank() <= 2) && params.iter().any(|(_, p)| p.value().rank() == 2)
        })
        .collect()
}

/// `nodes` visited depth- or breadth-first along the sub-model graph (deps → dependents),
/// starting from those whose dependencies lie outside `nodes`.
pub fn graph_order(model: &Model, nodes: &[usize], order: Order) -> Vec<usize> {
    let subs = &model.submodels;
    let dependents = |i: usize| -> Vec<usize> { nodes.iter().copied().filter(|&j| subs[j].deps.contains(&subs[i].name)).collect() };
    let roots: Vec<usize> = nodes.iter().copied().filter(|&i| !subs[i].deps.iter().any(|d| nodes.iter().any(|&j| &subs[j].name == d))).collect();
    let mut seen = Vec::new();
    match order {
        Order::Dfs => {
            let mut stack: Vec<usize> = roots.into_iter().rev().collect();
            while let Some(i) = stack.pop() {
                if !seen.contains(&i) {
                    seen.push(i);
                    stack.extend(dependents(i).into_iter().rev());
                }
            }
        }
        Order::Bfs => {
            let mut queue: VecDeque<usize> = roots.into_iter().collect();
            while let Some(i) = queue.pop_front() {
                if !seen.contains(&i) {
                    seen.push(i);
                    queue.extend(dependents(i));
                }
            }
        }
    }
    seen
}

impl Fc {
    pub fn new(order: Order) -> Self {
        Self { order, stages: Vec::new(), cache: None }
    }

    fn first_head(&self) -> usize {
        self.stages.iter().flatten().copied().min().unwrap_or(0)
    }

    /// Runs the frozen backbone once over the training set (eval mode: running statistics).
    fn build_cache(&self, t: &mut Trainer, data: &EpochData) -> Result<FeatureCache, TrainError> {
        let first = self.first_head();
        t.model.net.set_training(false);
        let (mut values, mut shape, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        let spec = LoaderSpec { workers: data.spec.workers, memory_limit: data.spec.memory_limit, ..LoaderSpec::eval(data.spec.batch) };
        for b in Loader::new(data.train, &spec)? {
            let b = b?;
            let x = Var::constant(Tensor::from_vec(b.x, &b.shape, &t.device)?);
            let h = no_grad(|| t.forward_stages(0..first, &x))?;
            shape = h.shape()[1..].to_vec();
            values.extend(h.value().to_vec()?);
            labels.extend(b.labels);
        }
        t.model.net.set_training(true);
        Ok(FeatureCache { values, shape, labels })
    }
}

impl Strategy for Fc {
    fn name(&self) -> String {
        format!("fc ({})", if self.order == Order::Dfs { "dfs" } else { "bfs" })
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        if self.stages.is_empty() {
            let heads = fc_submodels(&t.model);
            if heads.is_empty() {
                return Err(TrainError::Config(format!("model `{}` has no fully-connected sub-model for the fc strategy", t.model.name)));
            }
            self.stages = graph_order(&t.model, &heads, self.order).into_iter().map(|i| vec![i]).collect();
            self.stages.push(heads);
        }
        let stage = &self.stages[stage_of(data.epoch, data.epochs, self.stages.len())];
        t.set_trainable(stage);
        Ok(stage.iter().map(|&i| t.model.submodels[i].name.as_str()).collect::<Vec<_>>().join("+"))
    }

    fn train_epoch(&mut self, t: &mut Trainer, data: &EpochData, progress: &mut dyn FnMut(&StepInfo)) -> Result<EpochStats, TrainError> {
        if self.cache.is_none() {
            self.cache = Some(self.build_cache(t, data)?);
        }
        let first = self.first_head();
        let cache = self.cache.as_ref().expect("built above");
        let per = cache.shape.iter().product::<usize>();
        let mut order: Vec<usize> = (0..cache.labels.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(data.spec.seed ^ (data.epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let chunks: Vec<&[usize]> = order.chunks(data.spec.batch.max(1)).collect();
        let (rank, ranks) = data.spec.shard;
        let batches = chunks.iter().map(|global| {
            // Data-parallel: this rank's rows of the cached batch.
            let chunk = &global[rank * global.len() / ranks..(rank + 1) * global.len() / ranks];
            let mut x = Vec::with_capacity(chunk.len() * per);
            chunk.iter().for_each(|&i| x.extend_from_slice(&cache.values[i * per..(i + 1) * per]));
            let shape: Vec<usize> = std::iter::once(chunk.len()).chain(cache.shape.iter().copied()).collect();
            Ok(Batch { x, shape, labels: chunk.iter().map(|&i| cache.labels[i]).collect(), global: global.len() })
        });
        t.run_epoch(data.epoch, first, batches, chunks.len(), &mut |t, x, labels| t.step_from(first, x, labels), progress)
    }
}
