//! The one output convention: every table command's `--json` prints JSON lines only, each a
//! record (`"record"` names its kind) whose other fields are exactly what the command's file
//! holds for that kind.
mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs tessera in `cwd`; returns stdout's lines parsed, failing on a line that is not a JSON
/// object with a `record`.
fn records(cwd: &Path, args: &[&str]) -> Vec<(String, Value)> {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(cwd).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{args:?}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<(String, Value)> = stdout
        .lines()
        .map(|line| {
            let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line) else { panic!("{args:?}: not a JSON object: {line}") };
            let Some(Value::String(kind)) = fields.remove("record") else { panic!("{args:?}: no record kind: {line}") };
            (kind, Value::Object(fields))
        })
        .collect();
    assert!(!lines.is_empty(), "{args:?} printed nothing");
    lines
}

fn file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The lines of kind `kind`, which must be exactly `expected` (the file's records).
fn assert_records(lines: &[(String, Value)], kind: &str, expected: &Value) {
    let got: Vec<&Value> = lines.iter().filter(|(k, _)| k == kind).map(|(_, v)| v).collect();
    let want: Vec<&Value> = match expected {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    assert_eq!(got, want, "`{kind}` records differ from the file's");
}

fn kinds(lines: &[(String, Value)]) -> Vec<&str> {
    let mut k: Vec<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
    k.dedup();
    k
}

#[test]
fn every_table_command_prints_the_records_its_files_hold() {
    let scratch = common::scratch("tessera-json-records-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 10);
    let small = ["--data", "data", "--limit-per-class", "3"];

    // train: its lines are metrics.jsonl's lines.
    let lines = records(&root, &[&["train", "--model", "simple-cnn", "--epochs", "2", "--batch", "10", "--out", "run", "--json"][..], &small].concat());
    let metrics: Vec<Value> = std::fs::read_to_string(root.join("run/metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_records(&lines, "epoch", &Value::Array(metrics));
    assert_eq!(kinds(&lines), ["epoch"]);

    // compare: report.json's strategies.
    let compare = ["compare", "--model", "simple-cnn", "--strategies", "full,fc", "--epochs", "2", "--batch", "10", "--repeat", "2", "--out", "cmp", "--json"];
    let lines = records(&root, &[&compare[..], &small].concat());
    let report = file(&root.join("cmp/report.json"));
    assert_records(&lines, "strategy", &report["strategies"]);
    assert_eq!(lines.len(), 2);
    // Each strategy ran in a process of its own (its own peak memory), twice, in turns: a
    // probe before the first turn and after each of the two, per repeat.
    for (_, r) in &lines {
        assert!(r["peak_rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20) && r["train_seconds_std"].is_number(), "{r}");
    }
    let probes = report["probe"]["seconds"].as_array().map(|r| r.iter().map(|t| t.as_array().map_or(0, Vec::len)).collect::<Vec<_>>());
    assert_eq!(probes, Some(vec![3, 3]));

    // importance: importance.json's layers.
    let lines = records(&root, &["importance", "--checkpoint", "run/epoch-002.safetensors", "--top", "3", "--out", "imp", "--json"]);
    assert_records(&lines, "layer", &file(&root.join("imp/importance.json"))["layers"]);

    // correlation: correlation.json's heads.
    let lines = records(&root, &[&["correlation", "--checkpoint", "run/epoch-002.safetensors", "--out", "corr", "--json"][..], &small].concat());
    assert_records(&lines, "head", &file(&root.join("corr/correlation.json"))["heads"]);
    assert_eq!(kinds(&lines), ["head"]);

    // robustness: every record kind of results.json.
    let lines = records(&root, &[&["robustness", "--run", "run", "--no-corruptions", "--out", "rob", "--json"][..], &small].concat());
    let results = file(&root.join("rob/results.json"));
    for (kind, key) in [("summary", "summary"), ("checkpoint", "checkpoints"), ("corruption", "corruptions"), ("submodel_fault", "submodel_faults")] {
        assert_records(&lines, kind, &results[key]);
    }
    assert_eq!(kinds(&lines), ["summary", "checkpoint", "submodel_fault"]);

    // plan: plan.json itself; run-plan: OUT/results.json's tasks and merged classifier.
    let lines = records(&root, &["plan", "--classes", "10", "--tasks", "2", "--time-budget", "0.5", "--out", "plan.json", "--json"]);
    assert_records(&lines, "plan", &file(&root.join("plan.json")));
    let lines = records(&root, &[&["run-plan", "--plan", "plan.json", "--batch", "10", "--out", "tasks", "--json"][..], &small].concat());
    let results = file(&root.join("tasks/results.json"));
    assert_records(&lines, "task", &results["tasks"]);
    assert_records(&lines, "merged", &results["merged"]);

    // check: --json prints the cells --json-out writes.
    let lines = records(&root, &["check", "--shaders", "--json", "--json-out", "shaders.json"]);
    assert_records(&lines, "translation", &file(&root.join("shaders.json"))["results"]);

    // Commands with no file: every line still parses, as one record kind.
    for (args, kind) in [
        (&["models", "--json"][..], "model"),
        (&["models", "show", "simple-cnn", "--json"], "submodel"),
        (&["bench", "gemm", "--device", "cpu", "--sizes", "16", "--seconds", "0.01", "--json"], "gemm"),
    ] {
        assert_eq!(kinds(&records(&root, args)), [kind], "{args:?}");
    }
    let lines = records(&root, &[&["eval", "--checkpoint", "run/epoch-002.safetensors", "--json"][..], &small[..2]].concat());
    assert_eq!(kinds(&lines), ["evaluation", "confusion_row"]);
    // f32 values at f32 precision: the learning rate of report.json is 0.1, not 0.10000000149.
    assert!(std::fs::read_to_string(root.join("cmp/report.json")).unwrap().contains("\"lr\": 0.1,"));
    let _ = std::fs::remove_dir_all(&root);
}
