//! Checkpoint backup and failover: `--backup-dir` keeps a verified copy of every checkpoint;
//! with the run folder's newest checkpoint corrupted, `--resume` says so, continues from the
//! backup copy and ends with the weights of a run that was never damaged.
mod common;

use std::path::Path;
use std::process::{Command, Output};

fn tessera(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(cwd).output().unwrap()
}

#[test]
fn resume_fails_over_to_the_backup_copy() {
    let scratch = common::scratch("tessera-backup-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 8);
    let run = |out: &str, epochs: &str, extra: &[&str]| {
        let args = [
            &["train", "--model", "simple-cnn", "--data", "data", "--batch", "10", "--lr", "0.02", "--workers", "1", "--epochs", epochs, "--out", out][..],
            extra,
        ]
        .concat();
        let o = tessera(&root, &args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // The reference: one epoch, then resumed to two, nothing damaged.
    run("clean", "1", &[]);
    run("clean", "2", &["--resume"]);

    run("damaged", "1", &["--backup-dir", "backup"]);
    assert!(root.join("backup/epoch-001.safetensors").is_file(), "no backup copy");
    let primary = root.join("damaged/epoch-001.safetensors");
    let mut bytes = std::fs::read(&primary).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&primary, bytes).unwrap();

    let said = run("damaged", "2", &["--resume", "--backup-dir", "backup"]);
    assert!(said.contains("skipping damaged/epoch-001.safetensors") && said.contains("checksum mismatch"), "{said}");
    assert!(said.contains("resuming from backup/epoch-001.safetensors (epoch 1 of 2)"), "{said}");
    common::assert_same_tensors(&root.join("clean/epoch-002.safetensors"), &root.join("damaged/epoch-002.safetensors"));
    common::assert_same_tensors(&root.join("damaged/epoch-002.safetensors"), &root.join("backup/epoch-002.safetensors"));
    let _ = std::fs::remove_dir_all(&root);
}
