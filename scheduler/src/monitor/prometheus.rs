//! `--metrics-addr`: a run's metrics in Prometheus's text exposition format at
//! `http://ADDR/metrics`, labelled by run and strategy. The `prometheus` crate keeps and
//! encodes them; `tiny_http` serves them from a thread of their own while the run trains.
use super::{Labels, Report, Sink};
use crate::error::TrainError;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The metrics, by name, as `docs/alerts.yml` and the README list them.
struct Metrics {
    registry: Registry,
    gauges: HashMap<&'static str, GaugeVec>,
    counters: HashMap<&'static str, IntCounterVec>,
    /// Each counter's last total per label set: reports carry totals, counters take steps.
    totals: HashMap<(&'static str, Labels), u64>,
}

const GAUGES: [(&str, &str); 13] = [
    ("tessera_train_loss", "Mean training loss of the current epoch so far"),
    ("tessera_train_accuracy", "Training accuracy of the current epoch so far"),
    ("tessera_test_loss", "Test loss after the last finished epoch"),
    ("tessera_test_accuracy", "Test accuracy after the last finished epoch"),
    ("tessera_images_per_second", "Training throughput of the current epoch so far"),
    ("tessera_step_seconds", "Mean wall time of a step in the current epoch so far"),
    ("tessera_epoch", "The epoch in progress (1-based)"),
    ("tessera_epochs_completed", "Epochs finished and evaluated"),
    ("tessera_trainable_submodels", "Sub-models that train now"),
    ("tessera_frozen_submodels", "Sub-models frozen now"),
    ("tessera_resident_memory_bytes", "Resident memory of the training process"),
    ("tessera_loader_peak_bytes", "Most bytes of batches the input pipeline held at once in the last epoch"),
    ("tessera_last_report_timestamp_seconds", "UNIX time of the run's last report"),
];

const COUNTERS: [(&str, &str); 3] = [
    ("tessera_steps_total", "Training steps run"),
    ("tessera_skipped_batches_total", "Batches skipped for a non-finite loss or gradient (--on-nan skip)"),
    ("tessera_nonfinite_steps_total", "Steps whose loss or gradients were not finite"),
];

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let labels = ["run", "strategy"];
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let g = GaugeVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(g.clone()))?;
            gauges.insert(name, g);
        }
        let mut counters = HashMap::new();
        for (name, help) in COUNTERS {
            let c = IntCounterVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(c.clone()))?;
            counters.insert(name, c);
        }
        Ok(Self { registry, gauges, counters, totals: HashMap::new() })
    }

    fn set(&self, name: &str, labels: &Labels, value: f64) {
        self.gauges[name].with_label_values(&[&labels.run, &labels.strategy]).set(value);
    }

    /// Raises counter `name` to `total` (a counter never goes down: a smaller total, as after
    /// a resume, only moves the mark).
    fn raise(&mut self, name: &'static str, labels: &Labels, total: u64) {
        let last = self.totals.entry((name, labels.clone())).or_insert(0);
        let counter = self.counters[name].with_label_values(&[&labels.run, &labels.strategy]);
        counter.inc_by(total.saturating_sub(*last));
        *last = total;
    }

    fn update(&mut self, labels: &Labels, report: &Report) {
        match report {
            Report::Step(s) => {
                for (name, value) in [
                    ("tessera_train_loss", s.loss as f64),
                    ("tessera_train_accuracy", s.accuracy as f64),
                    ("tessera_images_per_second", s.images_per_sec as f64),
                    ("tessera_step_seconds", s.step_seconds as f64),
                    ("tessera_epoch", s.epoch as f64),
                    ("tessera_trainable_submodels", s.trainable_submodels as f64),
                    ("tessera_frozen_submodels", s.frozen_submodels as f64),
                    ("tessera_resident_memory_bytes", s.resident_bytes as f64),
                ] {
                    self.set(name, labels, value);
                }
                self.raise("tessera_steps_total", labels, s.step as u64);
                self.raise("tessera_skipped_batches_total", labels, s.skipped_batches as u64);
                self.raise("tessera_nonfinite_steps_total", labels, s.nonfinite_steps as u64);
            }
            Report::Epoch(r) => {
                for (name, value) in [
                    ("tessera_train_loss", r.train_loss as f64),
                    ("tessera_train_accuracy", r.train_accuracy as f64),
                    ("tessera_test_loss", r.test_loss as f64),
                    ("tessera_test_accuracy", r.test_accuracy as f64),
                    ("tessera_epochs_completed", r.epoch as f64),
                    ("tessera_loader_peak_bytes", r.loader_peak_bytes as f64),
                ] {
                    self.set(name, labels, value);
                }
            }
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.set("tessera_last_report_timestamp_seconds", labels, now);
    }

    fn encode(&self) -> Vec<u8> {
        let mut text = Vec::new();
        // Encoding gauges and counters into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut text);
        text
    }
}

/// The exporter: a handle to the metrics (clones share them: one per lane of a comparison)
/// and the server that shows them until the last handle drops.
#[derive(Clone)]
pub struct Exporter {
    metrics: Arc<Mutex<Metrics>>,
    server: Arc<Server>,
}

struct Server {
    http: Arc<tiny_http::Server>,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
    }
}

impl Exporter {
    /// Serves the metrics at `http://addr/metrics` (port 0: any free port; [`Exporter::addr`]
    /// says which).
    pub fn serve(addr: &str) -> Result<Self, TrainError> {
        let http = tiny_http::Server::http(addr).map_err(|e| TrainError::Config(format!("--metrics-addr {addr}: cannot listen there ({e})")))?;
        let bound = http.server_addr().to_ip().map_or_else(|| addr.to_string(), |a| a.to_string());
        let (http, metrics) = (Arc::new(http), Arc::new(Mutex::new(Metrics::new().map_err(|e| TrainError::Config(format!("the metrics: {e}")))?)));
        let (serving, shown) = (http.clone(), metrics.clone());
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let text = shown.lock().map(|m| m.encode()).unwrap_or_default();
                        let kind = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4; charset=utf-8").expect("a valid header");
                        tiny_http::Response::from_data(text).with_header(kind)
                    } else {
                        tiny_http::Response::from_data(b"Tessera serves its metrics at /metrics\n".to_vec()).with_status_code(404)
                    };
                    // A scraper that hung up gets nothing; the run goes on.
                    let _ = request.respond(response);
                }
            })
            .map_err(|error| TrainError::Io { path: "the metrics thread".into(), error })?;
        Ok(Self { metrics, server: Arc::new(Server { http, addr: bound }) })
    }

    /// The address served (the port chosen when asked for port 0).
    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    /// The exposition text as a scrape would get it.
    pub fn text(&self) -> String {
        self.metrics.lock().map(|m| String::from_utf8_lossy(&m.encode()).into_owned()).unwrap_or_default()
    }
}

impl Sink for Exporter {
    fn report(&mut self, labels: &Labels, report: &Report) -> Result<(), TrainError> {
        if let Ok(mut m) = self.metrics.lock() {
            m.update(labels, report);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Snapshot;
    use std::io::{Read, Write};

    #[test]
    fn a_scrape_shows_each_run_and_strategy_with_counters_that_only_rise() {
        let mut e = Exporter::serve("127.0.0.1:0").unwrap();
        let (a, b) = (Labels { run: "r".into(), strategy: "full".into() }, Labels { run: "r".into(), strategy: "fc".into() });
        e.report(&a, &Report::Step(Snapshot { epoch: 1, step: 10, loss: 2.5, nonfinite_steps: 1, ..Default::default() })).unwrap();
        e.report(&b, &Report::Step(Snapshot { epoch: 1, step: 4, loss: 1.5, ..Default::default() })).unwrap();
        e.report(&a, &Report::Step(Snapshot { epoch: 1, step: 25, loss: 2.0, nonfinite_steps: 1, ..Default::default() })).unwrap();
        let mut s = std::net::TcpStream::connect(e.addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.") && got.contains("text/plain; version=0.0.4"), "{got}");
        assert!(got.contains(r#"tessera_train_loss{run="r",strategy="full"} 2"#), "{got}");
        assert!(got.contains(r#"tessera_train_loss{run="r",strategy="fc"} 1.5"#), "{got}");
        assert!(got.contains(r#"tessera_steps_total{run="r",strategy="full"} 25"#), "{got}");
        assert!(got.contains(r#"tessera_nonfinite_steps_total{run="r",strategy="full"} 1"#), "{got}");
        assert!(got.contains("# TYPE tessera_steps_total counter"), "{got}");
    }
}
