//! Live metrics where monitoring already lives: a real Prometheus (Debian's package, which
//! `.ci/install-deps` installs: a missing one fails these tests) scrapes a training run and
//! gives its loss series back through its HTTP API; `promtool` tests the shipped alert rules;
//! TensorBoard's own event reader (the `tensorboard` Python package, which `.ci/install-deps`
//! installs in /opt/tessera-tools/venv; TESSERA_TENSORBOARD_PYTHON names another interpreter)
//! reads every epoch's loss back;
//! `--alert-exit` stops a diverging run with its last checkpoint kept.
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tessera(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(cwd).output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tessera-observe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` from 127.0.0.1:`port`: (status line, body).
fn get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((head.lines().next().unwrap_or("").to_string(), body.to_string()))
}

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Prometheus kills itself when the test ends, however it ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `metrics.jsonl`'s `key` per epoch.
fn jsonl_column(run: &Path, key: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[key].as_f64().unwrap()).collect()
}

#[test]
fn prometheus_scrapes_a_training_run_and_serves_its_loss_series_back() {
    let root = scratch("prometheus");
    common::write_coloured_cifar_sized(&root.join("data"), 600);
    let (exporter, api) = (free_port(), free_port());
    std::fs::write(
        root.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: tessera\n    static_configs:\n      - targets: ['127.0.0.1:{exporter}']\n"),
    )
    .unwrap();
    let server = Command::new("prometheus")
        .args(["--config.file=prometheus.yml", "--storage.tsdb.path=tsdb", &format!("--web.listen-address=127.0.0.1:{api}")])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("prometheus.log")).unwrap())
        .spawn()
        .expect("Prometheus (Debian's `prometheus` package, which .ci/install-deps installs)");
    let _server = Prometheus(server);
    let start = Instant::now();
    while !get(api, "/-/ready").is_ok_and(|(status, _)| status.contains("200")) {
        assert!(start.elapsed() < Duration::from_secs(60), "Prometheus never got ready: {}", std::fs::read_to_string(root.join("prometheus.log")).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Prometheus applies its scrape configs a few seconds after it is ready: the run starts
    // once the target is listed, so that every epoch is scraped.
    while !get(api, "/api/v1/targets").is_ok_and(|(_, body)| body.contains(&format!("127.0.0.1:{exporter}"))) {
        assert!(start.elapsed() < Duration::from_secs(60), "Prometheus never listed its target");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = format!("127.0.0.1:{exporter}");
    let o = tessera(
        &root,
        &["train", "--model", "simple-cnn", "--data", "data", "--epochs", "4", "--batch", "25", "--lr", "0.02", "--out", "live", "--metrics-addr", &addr],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The last scrape is in the head block at once; give the query engine a moment.
    std::thread::sleep(Duration::from_millis(500));
    let query = |q: &str| -> Vec<serde_json::Value> {
        let (status, body) = get(api, &format!("/api/v1/query?query={}", encode(q))).unwrap();
        assert!(status.contains("200"), "{q}: {status} {body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["data"]["result"].as_array().unwrap().clone()
    };
    let series = query(r#"tessera_train_loss{run="live",strategy="full",job="tessera"}[10m]"#);
    assert_eq!(series.len(), 1, "{series:?}");
    let samples: Vec<f64> = series[0]["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().parse().unwrap()).collect();
    assert!(samples.len() >= 8, "only {} loss samples: {samples:?}", samples.len());
    assert!(samples.iter().all(|l| l.is_finite() && *l > 0.0 && *l < 10.0), "{samples:?}");
    // A live series: it moved as the run trained, and went below chance's loss (ln 10).
    let mut distinct = samples.clone();
    distinct.dedup();
    assert!(distinct.len() >= 4 && samples.iter().any(|l| *l < 10f64.ln()), "{samples:?}");
    // The epochs' test accuracies reached Prometheus exactly as metrics.jsonl holds them (an
    // epoch's value is served through the next epoch, so every one but the last is scraped).
    let accuracies: Vec<f64> =
        query(r#"tessera_test_accuracy{run="live"}[10m]"#)[0]["values"].as_array().unwrap().iter().map(|v| v[1].as_str().unwrap().parse().unwrap()).collect();
    for (epoch, want) in jsonl_column(&root.join("live"), "test_accuracy").iter().enumerate().take(3) {
        assert!(accuracies.iter().any(|got| (got - want).abs() < 1e-6), "epoch {}: {want} not among {accuracies:?}", epoch + 1);
    }
    let steps = query(r#"max_over_time(tessera_steps_total{run="live"}[10m])"#);
    let steps: f64 = steps[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(steps > 100.0 && steps <= 480.0, "{steps} steps (4 epochs of 120)");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let o = Command::new("promtool").args(["test", "rules", "alerts_test.yml"]).current_dir(&docs).output().expect("promtool (Debian's `prometheus` package)");
    let said = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && said.contains("SUCCESS"), "{said}");
    let o = Command::new("promtool").args(["check", "rules", "alerts.yml"]).current_dir(&docs).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 rules found"), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn tensorboards_reader_finds_every_epochs_loss() {
    let root = scratch("tensorboard");
    common::write_coloured_cifar_sized(&root.join("data"), 20);
    let o = tessera(
        &root,
        &["train", "--model", "simple-cnn", "--data", "data", "--epochs", "3", "--batch", "25", "--lr", "0.02", "--out", "run", "--tensorboard", "tb"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scalars = tensorboard_scalars(&root.join("tb"));
    let read = |tag: &str| -> Vec<(u64, f64)> {
        scalars[tag].as_array().unwrap_or_else(|| panic!("no `{tag}` in {scalars}")).iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap())).collect()
    };
    for (tag, key) in [("epoch/train_loss", "train_loss"), ("epoch/test_loss", "test_loss"), ("epoch/test_accuracy", "test_accuracy")] {
        let want = jsonl_column(&root.join("run"), key);
        let got = read(tag);
        assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3], "{tag}");
        for ((_, g), w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{tag}: {got:?} vs metrics.jsonl {want:?}");
        }
    }
    assert!(!read("step/loss").is_empty());
    let _ = std::fs::remove_dir_all(&root);
}

/// Every scalar series of the event files in `dir`, as TensorBoard's reader gives them:
/// `{tag: [[step, value], …]}`.
fn tensorboard_scalars(dir: &Path) -> serde_json::Value {
    let python = std::env::var("TESSERA_TENSORBOARD_PYTHON").unwrap_or_else(|_| "/opt/tessera-tools/venv/bin/python".into());
    let script = "import sys, json\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1]); ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))\n";
    let o = Command::new(&python).args(["-c", script]).arg(dir).output().unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(o.status.success(), "{python} with the tensorboard package (.ci/install-deps installs it): {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `compare`'s lanes and `run-plan`'s tasks are processes of their own: their reports reach
/// the parent's sinks, one TensorBoard run (subfolder) each.
#[test]
fn compare_lanes_and_plan_tasks_report_through_their_parent() {
    let root = scratch("children");
    common::write_coloured_cifar_sized(&root.join("data"), 20);
    let o = tessera(
        &root,
        &[
            "compare",
            "--model",
            "simple-cnn",
            "--data",
            "data",
            "--strategies",
            "full,fc",
            "--epochs",
            "2",
            "--batch",
            "25",
            "--out",
            "cmp",
            "--tensorboard",
            "tb",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("cmp/report.json")).unwrap()).unwrap();
    for (i, lane) in ["full", "fc"].iter().enumerate() {
        let scalars = tensorboard_scalars(&root.join("tb").join(lane));
        let got: Vec<f64> =
            scalars["epoch/train_loss"].as_array().unwrap_or_else(|| panic!("{lane}: {scalars}")).iter().map(|p| p[1].as_f64().unwrap()).collect();
        let want: Vec<f64> = report["strategies"][i]["epochs"].as_array().unwrap().iter().map(|e| e["train_loss"].as_f64().unwrap()).collect();
        assert_eq!(got.len(), 2, "{lane}: {got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{lane}: {got:?} vs report.json {want:?}");
        }
    }
    let o = tessera(&root, &["plan", "--classes", "10", "--tasks", "2", "--time-budget", "1", "--out", "plan.json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tessera(&root, &["run-plan", "--plan", "plan.json", "--data", "data", "--batch", "25", "--out", "tasks", "--tensorboard", "tbp"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    // The tasks' own lines still reach stdout; their reports do not.
    assert_eq!(stdout.lines().filter(|l| l.starts_with("task ") && l.contains(" steps ")).count(), 2, "{stdout}");
    assert!(!stdout.contains("\"monitor\""), "{stdout}");
    for task in ["task-0", "task-1"] {
        let scalars = tensorboard_scalars(&root.join("tbp").join(task));
        assert!(scalars["step/loss"].as_array().is_some_and(|s| !s.is_empty()), "{task}: {scalars}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn alert_exit_stops_a_diverging_run_and_keeps_its_last_checkpoint() {
    let root = scratch("alert");
    common::write_coloured_cifar_sized(&root.join("data"), 100);
    let base = ["train", "--model", "simple-cnn", "--data", "data", "--batch", "25", "--out", "run", "--workers", "1"];
    let o = tessera(&root, &[&base[..], &["--epochs", "1", "--lr", "0.02"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Epoch 2 at a rate of 0.5 diverges within its 20 steps (a loss of ~1e28 here; a
    // non-finite step on another machine is skipped, not an error).
    let diverging = [&base[..], &["--epochs", "2", "--lr", "0.5", "--resume", "--on-nan", "skip"]].concat();
    let o = tessera(&root, &[&diverging[..], &["--alert-exit", "2"]].concat());
    let said = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{said}");
    assert!(said.contains("past --alert-exit 2 × its running minimum") && said.contains("at epoch 2"), "{said}");
    assert!(said.contains("the last checkpoint, run/epoch-001.safetensors, is untouched"), "{said}");
    tessera_engine::checkpoint::Checkpoint::load(&root.join("run/epoch-001.safetensors")).expect("the kept checkpoint verifies");
    assert!(!root.join("run/epoch-002.safetensors").exists());
    // Without the alert the same run is not stopped by one.
    let o = tessera(&root, &diverging);
    assert_ne!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&root);
}
