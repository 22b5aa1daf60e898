//! `random`: the baseline a clever schedule must beat (the seed's §5.4). Each epoch — or
//! every `period` steps — a seeded random subset of fraction·n sub-models (rounded, at least one) trains and the
//! rest are frozen (a frozen parameter leaves the backward pass). Draw d uses the run's seed
//! and d alone, so a resumed or repeated run draws the same subsets.
use super::{EpochData, Strategy};
use crate::error::TrainError;
use crate::trainer::Trainer;
use rand::{rngs::StdRng, SeedableRng};
use tessera_engine::Tensor;

pub struct Random {
    fraction: f32,
    period: Option<usize>,
    seed: u64,
    /// Steps taken in this run, and the subsets drawn so far (for the notes).
    steps: usize,
    draws: Vec<Vec<usize>>,
}

impl Random {
    pub fn new(fraction: f32, period: Option<usize>) -> Self {
        Self { fraction, period, seed: 0, steps: 0, draws: Vec::new() }
    }

    /// Subset `draw` of `n` sub-models: fraction·n of them, rounded (at least one), sorted.
    pub fn subset(seed: u64, draw: u64, n: usize, fraction: f32) -> Vec<usize> {
        let k = ((fraction * n as f32).round() as usize).clamp(1, n.max(1));
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ draw);
        let mut chosen = rand::seq::index::sample(&mut rng, n, k).into_vec();
        chosen.sort_unstable();
        chosen
    }

    /// Draws subset `draw` and makes it the trainable one; returns its names.
    fn apply(&mut self, t: &Trainer, draw: u64) -> String {
        let chosen = Self::subset(self.seed, draw, t.submodel_count(), self.fraction);
        t.set_trainable(&chosen);
        let names: Vec<&str> = chosen.iter().map(|&i| t.model.submodels[i].name.as_str()).collect();
        self.draws.push(chosen);
        names.join("+")
    }
}

impl Strategy for Random {
    fn name(&self) -> String {
        match self.period {
            None => format!("random ({:.0} % per epoch)", self.fraction * 100.0),
            Some(p) => format!("random ({:.0} % per {p} steps)", self.fraction * 100.0),
        }
    }

    fn begin_epoch(&mut self, t: &mut Trainer, data: &EpochData) -> Result<String, TrainError> {
        self.seed = data.spec.seed;
        Ok(match self.period {
            None => self.apply(t, data.epoch as u64),
            // The subset of the period this epoch starts in; the step redraws at each boundary.
            Some(p) => {
                self.steps = t.steps();
                format!("every {p} steps, from {}", self.apply(t, (self.steps / p) as u64))
            }
        })
    }

    fn step(&mut self, t: &mut Trainer, x: Tensor, labels: &[usize]) -> Result<(), TrainError> {
        if let Some(p) = self.period {
            if self.steps > 0 && self.steps.is_multiple_of(p) {
                self.apply(t, (self.steps / p) as u64);
            }
            self.steps += 1;
        }
        t.step_from(0, x, labels)
    }

    fn notes(&self) -> Vec<String> {
        let shown: Vec<String> = self.draws.iter().take(12).map(|d| format!("{d:?}")).collect();
        vec![format!("subsets drawn (sub-model indices): {}{}", shown.join(" "), if self.draws.len() > 12 { " …" } else { "" })]
    }
}
