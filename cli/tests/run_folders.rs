//! `tessera train`'s run folders never vanish or mix: a run without --out gets a fresh folder
//! it names; a folder holding a run is refused unless --resume (which says where it continues,
//! or that the run is finished) or --overwrite; a config file's relative paths mean its folder.
mod common;

use std::path::Path;
use std::process::{Command, Output};

fn tessera<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(cwd).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn runs_never_vanish_or_mix() {
    let scratch = common::scratch("tessera-run-folders-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 4);
    let base = ["train", "--model", "simple-cnn", "--data", "data", "--batch", "8", "--epochs", "1"];

    // No --out: a fresh runs/simple-cnn-<time>, named on stderr.
    let o = tessera(&root, &base);
    assert!(o.status.success(), "{}", stderr(&o));
    // (Beside it, the run registry: registry.sqlite and its WAL files.)
    let runs: Vec<_> = std::fs::read_dir(root.join("runs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(runs.len(), 1);
    assert!(root.join("runs/registry.sqlite").is_file());
    let run = &runs[0];
    let name = run.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("simple-cnn-20") && run.join("epoch-001.safetensors").is_file(), "{name}");
    assert!(stderr(&o).contains(&format!("run folder: runs/{name}")), "{}", stderr(&o));
    let out = format!("runs/{name}");
    let with_out = |extra: &[&'static str]| -> Vec<String> {
        base.iter().copied().chain(["--out", out.as_str()]).chain(extra.iter().copied()).map(String::from).collect()
    };

    // The same folder again without --resume: refused, and the run is untouched.
    let before = std::fs::read(run.join("metrics.jsonl")).unwrap();
    let o = tessera(&root, &with_out(&[]));
    assert!(!o.status.success() && stderr(&o).contains("already holds a training run") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).unwrap(), before);

    // --resume on a finished run says so; with more epochs it names where it continues.
    let o = tessera(&root, &with_out(&["--resume"]));
    assert!(o.status.success() && stderr(&o).contains("is finished: epoch 1 of 1"), "{}", stderr(&o));
    let mut two = with_out(&["--resume"]);
    let at = two.iter().position(|a| a == "--epochs").unwrap();
    two[at + 1] = "2".into();
    let o = tessera(&root, &two);
    assert!(o.status.success() && stderr(&o).contains("resuming from") && stderr(&o).contains("epoch-001.safetensors (epoch 1 of 2)"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), 2);

    // --overwrite replaces the run whole: one epoch, one metrics line, epoch 2's file gone.
    let o = tessera(&root, &with_out(&["--overwrite"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().count(), 1);
    assert!(!run.join("epoch-002.safetensors").exists());

    // --json rows carry metrics.jsonl's keys.
    let o = tessera(&root, &[&base[..], &["--out", "runs/json", "--json"]].concat());
    let row: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    let line: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("runs/json/metrics.jsonl")).unwrap()).unwrap();
    for key in ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "eval_seconds", "images_per_sec", "skipped_batches"] {
        assert!(row.get(key).is_some() && line.get(key).is_some(), "{key}: {row} / {line}");
    }
}

#[test]
fn a_config_files_relative_paths_mean_its_folder() {
    let scratch = common::scratch("tessera-config-paths-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("exp/data"), 4);
    std::fs::write(root.join("exp/run.toml"), "model = \"simple-cnn\"\ndata = \"data\"\nout = \"out\"\nepochs = 1\nbatch = 8\n").unwrap();
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    // Run from another folder: data and out resolve next to the file.
    let o = tessera(&root.join("elsewhere"), &["train", "--config", "../exp/run.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(root.join("exp/out/epoch-001.safetensors").is_file());
    assert!(!root.join("elsewhere/out").exists());
}
