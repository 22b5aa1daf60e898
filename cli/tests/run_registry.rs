//! The run registry end to end: `compare` and `train` runs register (two trains writing one
//! registry at once lose nothing), `runs diff` of two comparisons shows their config and
//! metric differences, `runs tag`/`show` round-trip, and `models promote` then `models
//! versions` names a verified checkpoint — the backup copy when the primary is damaged.
mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn tessera(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(cwd).output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `--json` output as records.
fn records(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn runs_register_diff_and_promote_to_verified_model_versions() {
    let scratch = common::scratch("tessera-registry-cli-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 20);
    let reg = ["--registry", "reg.sqlite"];
    let compare = |out: &str, lr: &str| {
        let args = [
            &["compare", "--model", "simple-cnn", "--data", "data", "--strategies", "full,fc", "--epochs", "2", "--batch", "25", "--lr", lr, "--out", out][..],
            &reg,
        ]
        .concat();
        ok(tessera(&root, &args));
    };
    compare("cmp-a", "0.02");
    compare("cmp-b", "0.05");
    let diff = records(&ok(tessera(&root, &[&["runs", "diff", "cmp-a", "cmp-b", "--json"][..], &reg].concat())));
    let row = |section: &str, key: &str| diff.iter().find(|d| d["section"] == section && d["key"] == key).cloned();
    let lr = row("config", "lr").unwrap_or_else(|| panic!("no lr row in {diff:?}"));
    assert_eq!((lr["a"].as_f64(), lr["b"].as_f64()), (Some(0.02), Some(0.05)), "{lr}");
    assert!(row("result", "full.test_accuracy").is_some() || row("result", "fc (dfs).test_accuracy").is_some(), "no metric difference in {diff:?}");
    assert!(row("last_epoch", "full.train_loss").is_some(), "{diff:?}");
    assert!(row("config", "model").is_none() && row("run", "data_hash").is_none(), "equal settings listed: {diff:?}");

    // Two trains at once, one registry; one keeps a backup copy of its checkpoints.
    let train = |out: &str, extra: &[&str]| {
        let args = [
            &["train", "--model", "simple-cnn", "--data", "data", "--epochs", "2", "--batch", "25", "--lr", "0.02", "--workers", "1", "--out", out][..],
            &reg,
            extra,
        ]
        .concat();
        Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(&root).spawn().unwrap()
    };
    let (a, b) = (train("train-a", &[]), train("train-b", &["--backup-dir", "backup-b"]));
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success());
    }
    let runs = records(&ok(tessera(&root, &[&["runs", "list", "--json"][..], &reg].concat())));
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(runs.len(), 4, "{names:?}");
    assert!(["cmp-a", "cmp-b", "train-a", "train-b"].iter().all(|n| names.contains(n)), "{names:?}");
    assert!(runs.iter().all(|r| r["status"] == "ok" && r["record"] == "run"), "{runs:?}");
    for name in ["train-a", "train-b", "cmp-a"] {
        let shown = &records(&ok(tessera(&root, &[&["runs", "show", name, "--json"][..], &reg].concat())))[0];
        let epochs = shown["epochs"].as_array().unwrap();
        assert_eq!(epochs.len(), if name.starts_with("cmp") { 4 } else { 2 }, "{name}: {shown}");
        assert_eq!(shown["data_files"], 6, "{shown}");
        assert!(shown["code_version"].as_str().is_some_and(|v| !v.is_empty()), "{shown}");
    }
    let b = &records(&ok(tessera(&root, &[&["runs", "show", "train-b", "--json"][..], &reg].concat())))[0];
    let copies: Vec<(&str, i64)> = b["checkpoints"].as_array().unwrap().iter().map(|c| (c["copy"].as_str().unwrap(), c["epoch"].as_i64().unwrap())).collect();
    assert_eq!(copies, vec![("backup", 1), ("primary", 1), ("backup", 2), ("primary", 2)], "{b}");

    ok(tessera(&root, &[&["runs", "tag", "train-a", "baseline"][..], &reg].concat()));
    let a = &records(&ok(tessera(&root, &[&["runs", "show", "train-a", "--json"][..], &reg].concat())))[0];
    assert_eq!(a["tags"], serde_json::json!(["baseline"]));

    // Promote: train-a's newest checkpoint; train-b's damaged primary falls back to its backup.
    let v1 = records(&ok(tessera(&root, &[&["models", "promote", "train-a", "--as", "colours", "--json"][..], &reg].concat())));
    assert!(v1[0]["checkpoint"].as_str().unwrap().ends_with("train-a/epoch-002.safetensors"), "{v1:?}");
    let primary = root.join("train-b/epoch-002.safetensors");
    let mut bytes = std::fs::read(&primary).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&primary, bytes).unwrap();
    let v2 = records(&ok(tessera(&root, &[&["models", "promote", "train-b", "--as", "colours", "--json"][..], &reg].concat())));
    assert!(v2[0]["checkpoint"].as_str().unwrap().ends_with("backup-b/epoch-002.safetensors"), "{v2:?}");
    let o = tessera(&root, &[&["models", "promote", "train-b", "--as", "colours:2"][..], &reg].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("colours:2 exists already"), "{}", String::from_utf8_lossy(&o.stderr));
    let versions = records(&ok(tessera(&root, &[&["models", "versions", "colours", "--json"][..], &reg].concat())));
    let summary: Vec<(i64, &str)> = versions.iter().map(|v| (v["version"].as_i64().unwrap(), v["verifies"].as_str().unwrap())).collect();
    assert_eq!(summary, vec![(1, "yes"), (2, "yes")], "{versions:?}");
    assert_eq!(versions[1]["run"], v2[0]["run"]);
    // A version whose checkpoint is damaged later says so.
    std::fs::write(root.join("train-a/epoch-002.safetensors"), b"not a checkpoint").unwrap();
    let versions = records(&ok(tessera(&root, &[&["models", "versions", "colours", "--json"][..], &reg].concat())));
    assert!(versions[0]["verifies"].as_str().unwrap().starts_with("no:"), "{versions:?}");
    let _ = std::fs::remove_dir_all(&root);
}
