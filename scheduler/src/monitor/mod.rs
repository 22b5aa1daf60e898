//! Live metrics of a run, in the formats users' tools already read: the one training loop
//! ([`crate::trainer::Trainer`]) reports a [`Snapshot`] at every progress refresh and each
//! epoch's record at its end to a [`Monitor`], which hands them to its sinks — a Prometheus
//! exporter ([`prometheus::Exporter`]), TensorBoard event files ([`tensorboard::EventWriter`]),
//! or a child process's stdout ([`Forward`]) that its parent reads back with [`forwarded`].
pub mod prometheus;
pub mod tensorboard;

use crate::error::TrainError;
use crate::strategy::EpochRecord;
use std::io::Write;
use std::path::PathBuf;

/// Whose metrics these are: the run, and the strategy (or task) within it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Labels {
    pub run: String,
    pub strategy: String,
}

/// A run at a progress refresh.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub epoch: usize,
    /// Steps run so far in the whole run.
    pub step: usize,
    /// The epoch's mean training loss and accuracy so far.
    pub loss: f32,
    pub accuracy: f32,
    pub images_per_sec: f32,
    /// Mean wall time of the epoch's steps so far.
    pub step_seconds: f32,
    pub trainable_submodels: usize,
    pub frozen_submodels: usize,
    /// Over the whole run: batches skipped for a non-finite loss or gradient
    /// (`--on-nan skip`), and steps flagged non-finite (skipped or not).
    pub skipped_batches: usize,
    pub nonfinite_steps: usize,
    /// The process's resident memory (0 where the OS does not say).
    pub resident_bytes: u64,
}

/// What a sink hears.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Report {
    Step(Snapshot),
    Epoch(EpochRecord),
}

/// Where reports go.
pub trait Sink: Send {
    fn report(&mut self, labels: &Labels, report: &Report) -> Result<(), TrainError>;
}

/// A run's labels and the sinks its reports go to.
pub struct Monitor {
    pub labels: Labels,
    sinks: Vec<Box<dyn Sink>>,
}

impl Monitor {
    pub fn new(labels: Labels, sinks: Vec<Box<dyn Sink>>) -> Self {
        Self { labels, sinks }
    }

    pub fn report(&mut self, report: &Report) -> Result<(), TrainError> {
        self.sinks.iter_mut().try_for_each(|s| s.report(&self.labels, report))
    }
}

/// What a command's monitoring flags ask for: `--metrics-addr`, `--tensorboard`, `--alert-exit`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchSpec {
    pub metrics_addr: Option<String>,
    pub tensorboard: Option<PathBuf>,
    pub alert_exit: Option<f32>,
}

impl WatchSpec {
    /// Whether any report has somewhere to go.
    pub fn reports(&self) -> bool {
        self.metrics_addr.is_some() || self.tensorboard.is_some()
    }

    /// Checks `--alert-exit`'s range (a config file bypasses the flag's parser).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.alert_exit.map_or(Ok(()), |f| crate::settings::ALERT_EXIT.check_f32(f).map(drop))
    }

    /// The `--alert-exit` rule, fresh for one trainer of a `classes`-way classifier.
    pub fn alert(&self, classes: usize) -> Option<DivergenceAlert> {
        self.alert_exit.map(|f| DivergenceAlert::new(f, classes))
    }

    /// Starts watching run `run`: binds the metrics address, if any.
    pub fn start(&self, run: &str) -> Result<Watch, TrainError> {
        self.validate()?;
        let exporter = self.metrics_addr.as_deref().map(prometheus::Exporter::serve).transpose()?;
        Ok(Watch { run: run.into(), exporter, tensorboard: self.tensorboard.clone() })
    }
}

/// A watched run: the exporter its strategies share and where their event files go.
pub struct Watch {
    run: String,
    exporter: Option<prometheus::Exporter>,
    tensorboard: Option<PathBuf>,
}

impl Watch {
    /// The address the metrics are served at, if any.
    pub fn metrics_addr(&self) -> Option<&str> {
        self.exporter.as_ref().map(|e| e.addr())
    }

    /// A monitor of strategy (or task) `strategy`: its metrics labelled with it, its events
    /// in the TensorBoard folder itself (`own_folder` false: a run of one strategy) or in a
    /// subfolder named after it (TensorBoard shows each subfolder as a run). None when no
    /// report has anywhere to go.
    pub fn monitor(&self, strategy: &str, own_folder: bool) -> Result<Option<Monitor>, TrainError> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(e) = &self.exporter {
            sinks.push(Box::new(e.clone()));
        }
        if let Some(dir) = &self.tensorboard {
            let dir = if own_folder { dir.join(strategy.replace(['/', '\\'], "_")) } else { dir.clone() };
            sinks.push(Box::new(tensorboard::EventWriter::create(&dir)?));
        }
        let labels = Labels { run: self.run.clone(), strategy: strategy.into() };
        Ok((!sinks.is_empty()).then(|| Monitor::new(labels, sinks)))
    }
}

/// The sink of a child process (a `compare` lane, a `run-plan` task): each report as a JSON
/// line `{"monitor": …}` on stdout, which the parent passes to its own monitor.
pub struct Forward;

impl Sink for Forward {
    fn report(&mut self, _: &Labels, report: &Report) -> Result<(), TrainError> {
        let line = serde_json::json!({ "monitor": report });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|error| TrainError::Io { path: "stdout".into(), error })
    }
}

/// A run's name in metrics and the registry: the name of its output folder `dir`, else
/// `fallback`.
pub fn run_name(dir: &std::path::Path, fallback: &str) -> String {
    dir.file_name().map_or_else(|| fallback.into(), |n| n.to_string_lossy().into_owned())
}

/// A child's stdout `line` in its parent: a report a [`Forward`] sink wrote goes to `monitor`
/// (when there is one) and gives `Some` with how that went; any other line gives `None`.
pub fn pass_on(line: &str, monitor: Option<&mut Monitor>) -> Option<Result<(), TrainError>> {
    let report = forwarded(line)?;
    Some(monitor.map_or(Ok(()), |m| m.report(&report)))
}

/// The report a [`Forward`] sink wrote as `line`, if it is one.
pub fn forwarded(line: &str) -> Option<Report> {
    #[derive(serde::Deserialize)]
    struct Line {
        monitor: Report,
    }
    serde_json::from_str::<Line>(line).ok().map(|l| l.monitor)
}

/// Stops a run whose training loss diverges: above `factor` × the lowest loss so far (the
/// running minimum of the refreshes' epoch means, starting from chance's loss: a loss that
/// explodes before the first refresh is caught too), the rule `--alert-exit` sets and
/// `docs/alerts.yml`'s `LossDiverging` watches.
#[derive(Clone, Debug)]
pub struct DivergenceAlert {
    pub factor: f32,
    lowest: f32,
}

impl DivergenceAlert {
    /// The rule for a classifier of `classes` classes (chance's cross-entropy: ln classes).
    pub fn new(factor: f32, classes: usize) -> Self {
        Self { factor, lowest: (classes.max(2) as f32).ln() }
    }

    /// Checks `loss` (a refresh's); an error when it is past the bound or not finite.
    pub fn check(&mut self, epoch: usize, step: usize, loss: f32) -> Result<(), TrainError> {
        if !loss.is_finite() || loss > self.factor * self.lowest {
            return Err(TrainError::Diverged { epoch, step, loss, lowest: self.lowest, factor: self.factor });
        }
        self.lowest = self.lowest.min(loss);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_report_reads_back_as_written() {
        let s = Snapshot { epoch: 2, step: 40, loss: 1.25, accuracy: 0.5, images_per_sec: 300.0, ..Default::default() };
        let line = serde_json::json!({ "monitor": Report::Step(s.clone()) }).to_string();
        match forwarded(&line) {
            Some(Report::Step(back)) => assert_eq!(back, s),
            other => panic!("{other:?}"),
        }
        assert!(forwarded("{\"ok\": \"ready\"}").is_none());
    }

    #[test]
    fn the_alert_fires_past_the_bound_over_the_running_minimum() {
        let mut a = DivergenceAlert::new(3.0, 10);
        for loss in [2.3, 1.9, 1.0, 2.9] {
            a.check(1, 1, loss).unwrap();
        }
        let e = a.check(1, 9, 3.2).unwrap_err().to_string();
        assert!(e.contains("3.2") && e.contains("running minimum 1") && e.contains("--alert-exit 3"), "{e}");
        assert!(DivergenceAlert::new(3.0, 10).check(1, 1, f32::NAN).is_err());
        // Chance's loss (ln 10 = 2.30) bounds the first refresh.
        assert!(DivergenceAlert::new(3.0, 10).check(1, 1, 6.8).is_ok());
        assert!(DivergenceAlert::new(3.0, 10).check(1, 1, 7.0).is_err());
    }
}
