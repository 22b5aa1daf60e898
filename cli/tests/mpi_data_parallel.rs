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
    train_model("simple-cnn", data, out, launcher, epochs, extra)
}

fn train_model(model: &str, data: &Path, out: &Path, launcher: &[&str], epochs: &str, extra: &[&str]) -> String {
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let args = [&["train", "--model", model, "--epochs", epochs, "--batch", "20", "--lr", "0.05", "--workers", "1"][..], extra].concat();
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
    let scratch = common::scratch("tessera-mpi-");
    let root = scratch.path().to_path_buf();
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

#[test]
fn sync_bn_over_two_ranks_takes_one_process_step() {
    let scratch = common::scratch("tessera-mpi-syncbn-");
    let root = scratch.path().to_path_buf();
    write_noise_cifar(&root.join("data"));
    let data = root.join("data");
    let mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"];
    // One step of resnet20-cifar (19 BatchNorm layers) on all 20 images. Train-mode BatchNorm
    // gradients are sensitive to summation order: one process given the same batch in another
    // row order moves the early layers' gradients by ~4e-3 (relative), so that is the scale
    // of agreement to expect, not 1e-5.
    train_model("resnet20-cifar", &data, &root.join("one"), &[], "1", &[]);
    train_model("resnet20-cifar", &data, &root.join("synced"), &mpirun, "1", &["--sync-bn"]);
    assert_close(&root.join("one/epoch-001.safetensors"), &root.join("synced/epoch-001.safetensors"), 3e-2);
    // Per-rank statistics (no --sync-bn) over 10 images each are another step altogether.
    train_model("resnet20-cifar", &data, &root.join("per-rank"), &mpirun, "1", &[]);
    let far = std::panic::catch_unwind(|| assert_close(&root.join("one/epoch-001.safetensors"), &root.join("per-rank/epoch-001.safetensors"), 0.3));
    assert!(far.is_err(), "per-rank statistics gave one process's step: the comparison cannot tell them apart");
    let _ = std::fs::remove_dir_all(&root);
}

/// A CIFAR-10-binary set of 20 training and 20 test images of uniform noise with a bright band
/// whose row gives the class: batch statistics that are not degenerate.
fn write_noise_cifar(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut record = |k: usize| -> Vec<u8> {
        let mut r = vec![k as u8];
        for c in 0..3 {
            for p in 0..32 * 32 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let band = (p / 32) / 3 == k && c < 3;
                r.push(if band { 255 } else { (state >> 56) as u8 });
            }
        }
        r
    };
    for file in 1..=5 {
        let bytes: Vec<u8> = (0..4).flat_map(|i| record((i + 4 * (file - 1)) % 10)).collect();
        std::fs::write(dir.join(format!("data_batch_{file}.bin")), bytes).unwrap();
    }
    let test: Vec<u8> = (0..20).flat_map(|i| record(i % 10)).collect();
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
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

/// `mpirun -np 2 tessera` with `args`, from `cwd`.
fn mpirun(cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", "2", env!("CARGO_BIN_EXE_tessera")]).args(args).current_dir(cwd).env("TESSERA_THREADS", "1");
    c
}

#[test]
fn a_data_parallel_compare_matches_one_process_and_frozen_layers_send_nothing() {
    let scratch = common::scratch("tessera-mpi-compare-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 40);
    // dynamic with a threshold every window meets: the stem freezes after its first windows.
    let args = |out: &'static str| {
        ["compare", "--model", "simple-cnn", "--data", "data", "--strategies", "full,dynamic", "--epochs", "3", "--batch", "20", "--lr", "0.05"]
            .into_iter()
            .chain(["--window", "2", "--threshold", "1e9", "--workers", "1", "--out", out])
            .collect::<Vec<_>>()
    };
    let o = Command::new(env!("CARGO_BIN_EXE_tessera")).args(args("one")).current_dir(&root).env("TESSERA_THREADS", "1").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = mpirun(&root, &args("two")).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = |run: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(root.join(run).join("report.json")).unwrap()).unwrap() };
    let (one, two) = (report("one"), report("two"));
    for (a, b) in one["strategies"].as_array().unwrap().iter().zip(two["strategies"].as_array().unwrap()) {
        for (ea, eb) in a["epochs"].as_array().unwrap().iter().zip(b["epochs"].as_array().unwrap()) {
            for key in ["train_loss", "test_accuracy"] {
                let (x, y) = (ea[key].as_f64().unwrap(), eb[key].as_f64().unwrap());
                assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{} epoch {}: {key} {x} in one process, {y} over 2 ranks", a["strategy"], ea["epoch"]);
            }
        }
    }
    // Bytes: full sends every gradient every step; dynamic sends nothing for what froze.
    let bytes = |s: &serde_json::Value| s["epochs"].as_array().unwrap().iter().map(|e| e["allreduce_bytes"].as_u64().unwrap()).collect::<Vec<_>>();
    let (full, dynamic) = (bytes(&two["strategies"][0]), bytes(&two["strategies"][1]));
    assert_eq!(full, vec![60_362 * 4 * 10; 3], "simple-cnn's 60 362 parameters × 4 bytes × 10 steps per epoch");
    assert!(dynamic[2] < full[2], "frozen layers still sent bytes: {dynamic:?} vs {full:?}");
    assert_eq!(bytes(&one["strategies"][0]), vec![0; 3], "one process sends nothing");
    // Each rank did half of full training's backward work: full is still the 100 % reference.
    assert!((two["strategies"][0]["backward_flops_share"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{}", two["strategies"][0]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_killed_rank_stops_the_job_and_resume_reaches_the_uninterrupted_weights() {
    let scratch = common::scratch("tessera-mpi-kill-");
    let root = scratch.path().to_path_buf();
    let data = root.join("data");
    // 6 000 images: two ranks take ~2 s an epoch here, so the kill lands well inside epoch 2.
    common::write_coloured_cifar_sized(&data, 1200);
    let run = |out: &Path| common::two_epoch_run(&data, out, 1);
    let straight = root.join("straight");
    let o = mpirun(&root, &run(&straight).iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let killed = root.join("killed");
    let job = mpirun(&root, &run(&killed).iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_into_epoch_two(&killed);
    let rank1 = rank_pid(&killed, 1).expect("rank 1's process");
    assert!(Command::new("kill").args(["-KILL", &rank1.to_string()]).status().unwrap().success());
    let o = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the job went on without rank 1");
    assert!(stderr.contains("rank 1"), "the message names the rank: {stderr}");
    assert!(!killed.join("epoch-002.safetensors").exists(), "rank 1 died after epoch 2: make the epochs longer");

    let mut resume = run(&killed);
    resume.push("--resume".into());
    let o = mpirun(&root, &resume.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::assert_same_tensors(&straight.join("epoch-002.safetensors"), &killed.join("epoch-002.safetensors"));
    let _ = std::fs::remove_dir_all(&root);
}

/// The pid of the tessera process that is rank `rank` of the run writing to `out`.
fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
        let (environ, cmdline) = (read("environ"), String::from_utf8_lossy(&read("cmdline")).replace('\0', " "));
        environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) && cmdline.contains("tessera") && cmdline.contains(&out.display().to_string())
    })
}
