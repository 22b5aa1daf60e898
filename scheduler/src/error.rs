//! The error of every training, evaluation and analysis call.
use std::path::PathBuf;
use tessera_engine::checkpoint;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Model(#[from] tessera_models::ModelError),
    #[error(transparent)]
    Engine(#[from] tessera_engine::Error),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("non-finite {what} at epoch {epoch}, step {step}; first seen in {place} (--on-nan skip skips such batches)")]
    NonFinite { epoch: usize, step: usize, what: String, place: String },
    #[error("interrupted in epoch {epoch} after {batches} batches{}", match checkpoint { Some(p) => format!("; its state is in {}: continue with --resume", p.display()), None => "; no run folder, so nothing was saved".into() })]
    Interrupted { epoch: usize, batches: usize, checkpoint: Option<PathBuf> },
    #[error("training loss {loss} at epoch {epoch}, step {step} is past --alert-exit {factor} × its running minimum {lowest}: the run diverged (lower --lr, or add --warmup-steps)")]
    Diverged { epoch: usize, step: usize, loss: f32, lowest: f32, factor: f32 },
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{0}")]
    Config(String),
    #[error("data-parallel training: {0}")]
    Distributed(String),
    #[error(transparent)]
    Plot(#[from] crate::plot::PlotError),
}
