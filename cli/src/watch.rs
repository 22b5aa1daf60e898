//! The monitoring flags of `compare`, `run-plan` and `run-task` (`train` has them as config
//! keys too): live metrics for Prometheus, TensorBoard event files, `--alert-exit`.
use crate::flags::real32;
use clap::Args;
use tessera_scheduler::monitor::WatchSpec;
use tessera_scheduler::settings;

#[derive(Args, Clone, Default)]
pub struct WatchArgs {
    /// Serve live metrics in Prometheus's text format at http://ADDR/metrics while training
    /// (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Write TensorBoard event files (scalars per refresh and per epoch) into DIR.
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<std::path::PathBuf>,
    /// Stop (exit status 3) when the training loss rises past FACTOR × its running minimum;
    /// the last checkpoint is kept.
    #[arg(long, value_name = "FACTOR", value_parser = real32(settings::ALERT_EXIT))]
    pub alert_exit: Option<f32>,
}

impl WatchArgs {
    pub fn spec(&self) -> WatchSpec {
        WatchSpec { metrics_addr: self.metrics_addr.clone(), tensorboard: self.tensorboard.clone(), alert_exit: self.alert_exit }
    }
}

/// The exit status of a run `--alert-exit` stopped (1 is any other error).
pub const ALERT_EXIT_STATUS: u8 = 3;

/// Whether `e` is a run that `--alert-exit` stopped.
pub fn is_alert_exit(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<tessera_scheduler::TrainError>(), Some(tessera_scheduler::TrainError::Diverged { .. })))
}
