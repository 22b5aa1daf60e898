//! A training run killed with SIGKILL in the middle of an epoch resumes from its last
//! checkpoint and ends with exactly the weights of a run that was never interrupted — with 4
//! loader threads against the uninterrupted run's one.
mod common;

use common::{assert_same_tensors, two_epoch_run as train_args, wait_into_epoch_two, write_coloured_cifar_sized};
use std::process::{Command, Stdio};

#[test]
fn a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let scratch = common::scratch("tessera-kill-");
    let root = scratch.path().to_path_buf();
    let data = root.join("data");
    write_coloured_cifar_sized(&data, 600);
    let tessera = env!("CARGO_BIN_EXE_tessera");

    let straight = root.join("straight");
    let status = Command::new(tessera).args(train_args(&data, &straight, 1)).stdout(Stdio::null()).status().unwrap();
    assert!(status.success());

    let killed = root.join("killed");
    let mut child = Command::new(tessera).args(train_args(&data, &killed, 4)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_into_epoch_two(&killed);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("epoch-002.safetensors").exists(), "the kill came after epoch 2: make the epochs longer");

    let mut resume = train_args(&data, &killed, 4);
    resume.push("--resume".into());
    let out = Command::new(tessera).args(&resume).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_same_tensors(&straight.join("epoch-002.safetensors"), &killed.join("epoch-002.safetensors"));
}
