//! Data sets, training runs, the sub-model scheduling strategies and the standard run report.
pub mod bench;
pub mod compare;
pub mod compress;
pub mod correlation;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod importance;
pub mod interop;
pub mod json;
pub mod memory;
pub mod monitor;
pub mod plot;
pub mod recipe;
pub mod robustness;
pub mod run_state;
pub mod search;
pub mod settings;
pub mod slurm;
pub mod strategy;
pub mod tasks;
pub mod train;
pub mod trainer;
pub mod untrusted;

pub use error::TrainError;
