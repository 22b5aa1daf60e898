//! SIGTERM (what a scheduler sends before it kills a job; Ctrl-C's SIGINT alike) in the middle
//! of an epoch: the run finishes its current step, writes a checkpoint of that point, says how
//! to resume and exits 130; `--resume` continues from the next batch and ends with exactly the
//! weights of a run that was never interrupted.
mod common;

use common::{assert_same_tensors, wait_into_epoch_two, write_coloured_cifar_sized};
use std::path::Path;
use std::process::{Command, Stdio};

/// The run, with 2 loader threads.
fn train_args(data: &Path, out: &Path) -> Vec<String> {
    common::two_epoch_run(data, out, 2)
}

#[test]
fn a_terminated_run_checkpoints_mid_epoch_and_resumes_to_the_uninterrupted_weights() {
    let scratch = common::scratch("tessera-sigterm-");
    let root = scratch.path().to_path_buf();
    let data = root.join("data");
    write_coloured_cifar_sized(&data, 600);
    let tessera = env!("CARGO_BIN_EXE_tessera");

    let straight = root.join("straight");
    assert!(Command::new(tessera).args(train_args(&data, &straight)).stdout(Stdio::null()).status().unwrap().success());

    let stopped = root.join("stopped");
    let child = Command::new(tessera).args(train_args(&data, &stopped)).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_into_epoch_two(&stopped);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted in epoch 2 after") && stderr.contains("--resume"), "{stderr}");
    // The finished epoch's row reaches a redirected stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("1 ")), "{stdout}");
    let partial: Vec<String> = std::fs::read_dir(&stopped)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().map(String::from))
        .filter(|n| n.starts_with("interrupted-epoch-002-batch-"))
        .collect();
    assert_eq!(partial.len(), 1, "one checkpoint of the interruption: {partial:?}");
    assert!(!stopped.join("epoch-002.safetensors").exists(), "the signal came after epoch 2: make the epochs longer");

    let mut resume = train_args(&data, &stopped);
    resume.push("--resume".into());
    let out = Command::new(tessera).args(&resume).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains(partial[0].as_str()) && stderr.contains("epoch 2 of 2, after its batch"), "{stderr}");
    assert!(!stopped.join(&partial[0]).exists(), "the finished epoch supersedes its interruption's checkpoint");

    assert_same_tensors(&straight.join("epoch-002.safetensors"), &stopped.join("epoch-002.safetensors"));
}
