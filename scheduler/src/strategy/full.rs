//! `full`: the baseline. Every sub-model trains every step.
use super::{EpochData, Strategy};
use crate::error::TrainError;
use crate::trainer::Trainer;

pub struct Full;

impl Strategy for Full {
    fn name(&self) -> String {
        "full".into()
    }

    fn begin_epoch(&mut self, t: &mut Trainer, _: &EpochData) -> Result<String, TrainError> {
        let all: Vec<usize> = (0..t.submodel_count()).collect();
        t.set_trainable(&all);
        Ok("all".into())
    }
}
