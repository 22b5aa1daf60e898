//! A training run killed with SIGKILL in the middle of an epoch resumes from its last
//! checkpoint and ends with exactly the weights of a run that was never interrupted — with 4
//! loader threads against the uninterrupted run's one.
mod common;

use common::write_coloured_cifar_sized;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tessera_engine::checkpoint::Checkpoint;

fn train_args(data: &Path, out: &Path, workers: usize) -> Vec<String> {
    ["train", "--model", "simple-cnn", "--epochs", "2", "--batch", "25", "--lr", "0.02", "--data"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string(), "--out".into(), out.display().to_string(), "--workers".into(), workers.to_string()])
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let root = std::env::temp_dir().join(format!("tessera-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    write_coloured_cifar_sized(&data, 600);
    let tessera = env!("CARGO_BIN_EXE_tessera");

    let straight = root.join("straight");
    let status = Command::new(tessera).args(train_args(&data, &straight, 1)).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());

    let killed = root.join("killed");
    let mut child = Command::new(tessera).args(train_args(&data, &killed, 4)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !killed.join("epoch-001.safetensors").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "epoch 1 never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // into epoch 2
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("epoch-002.safetensors").exists(), "the kill came after epoch 2: make the epochs longer");

    let mut resume = train_args(&data, &killed, 4);
    resume.push("--resume".into());
    let out = Command::new(tessera).args(&resume).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (a, b) = (Checkpoint::load(&straight.join("epoch-002.safetensors")).unwrap(), Checkpoint::load(&killed.join("epoch-002.safetensors")).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (values, shape)) in &a.tensors {
        assert_eq!(Some(&(values.clone(), shape.clone())), b.tensors.get(name), "{name} differs after kill and resume");
    }
}
