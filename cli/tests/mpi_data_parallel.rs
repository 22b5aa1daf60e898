//! Data-parallel training over MPI: `mpirun -np 2 tessera train` (each rank half of every
//! global batch, gradients summed across the ranks) ends with the weights of one process on
//! the same global batch, within 1e-5 relative, on the CPU backend. CI installs OpenMPI
//! (`.ci/install-deps`): a missing `mpirun` fails this test instead of skipping it.
#![cfg(feature = "mpi")]
mod common;

use std::path::Path;
use std::process::Command;

/// `epochs` of simple-cnn (no BatchNorm: per-rank statistics cannot differ from one
/// process's) on `data` into `out`, started by `launcher` (none: one process).
fn train(data: &Path, out: &Path, launcher: &[&str], epochs: &str, extra: &[&str]) -> String {
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let args = [&["train", "--model", "simple-cnn", "--epochs", epochs, "--batch", "20", "--lr", "0.05", "--workers", "1"][..], extra].concat();
    let mut cmd = match launcher.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(tessera);
            c
        }
        None => Command::new(tessera),
    };
    let o = cmd
        .args(args)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .env("TESSERA_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("{launcher:?}: {e} (install openmpi-bin)"));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{launcher:?}: {stderr}\n{}", String::from_utf8_lossy(&o.stdout));
    stderr
}

#[test]
fn two_ranks_reach_the_weights_of_one_process() {
    let root = std::env::temp_dir().join(format!("tessera-mpi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // 5 × 40 training images: 10 steps of the global batch of 20.
    common::write_coloured_cifar_sized(&root.join("data"), 40);
    let data = root.join("data");
    let mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"];
    train(&data, &root.join("one"), &[], "1", &[]);
    let stderr = train(&data, &root.join("two"), &mpirun, "1", &[]);
    assert!(stderr.contains("data-parallel over 2 ranks"), "{stderr}");
    assert_close(&root.join("one/epoch-001.safetensors"), &root.join("two/epoch-001.safetensors"), 1e-5);
    // The checkpoint does not depend on the rank count: the 2-rank run goes on in one process.
    // (Both runs resume with --epochs 2: the same learning-rate schedule from here on.)
    train(&data, &root.join("one"), &[], "2", &["--resume"]);
    train(&data, &root.join("two"), &[], "2", &["--resume"]);
    // 20 steps of sums in another order: the differences grow, bounded here at 1e-4.
    assert_close(&root.join("one/epoch-002.safetensors"), &root.join("two/epoch-002.safetensors"), 1e-4);

    // Rank 0 alone wrote the metrics: a line per epoch, the whole batch's figures.
    let metrics = |run: &str| std::fs::read_to_string(root.join(run).join("metrics.jsonl")).unwrap().lines().next().map(String::from).unwrap();
    let (m1, m2): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&metrics("one")).unwrap(), serde_json::from_str(&metrics("two")).unwrap());
    for key in ["train_loss", "test_accuracy"] {
        assert!((m1[key].as_f64().unwrap() - m2[key].as_f64().unwrap()).abs() < 1e-4, "{key}: {m1} vs {m2}");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bench_allreduce_sums_over_two_ranks() {
    let o = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            env!("CARGO_BIN_EXE_tessera"),
            "bench",
            "allreduce",
            "--sizes",
            "4096,65536",
            "--iters",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Rank 0 alone prints: a row per size, over both ranks, with a positive bandwidth.
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["ranks"] == 2 && r["busbw_GB/s"].as_f64().is_some_and(|b| b > 0.0)), "{rows:?}");
}

/// Every tensor of two checkpoints (weights and momentum buffers) within `tolerance` of its
/// largest magnitude.
fn assert_close(a: &Path, b: &Path, tolerance: f32) {
    let load = |p: &Path| tessera_engine::checkpoint::Checkpoint::load(p).unwrap();
    let (one, two) = (load(a), load(b));
    let mut compared = 0;
    for (name, (a, shape)) in &one.tensors {
        let (b, shape_b) = two.tensors.get(name).unwrap_or_else(|| panic!("{name} missing from the 2-rank run"));
        assert_eq!(shape, shape_b, "{name}");
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        assert!(err <= tolerance, "{name}: relative difference {err:e}");
        compared += 1;
    }
    assert!(compared >= 12, "{compared} tensors compared (weights and momentum buffers)");
}
