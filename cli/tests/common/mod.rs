//! Helpers shared by the CLI's end-to-end tests.
use std::path::Path;

/// A fresh folder under the system temp dir, removed with everything in it when the returned
/// guard drops at the end of the test (each run left its data sets and runs behind before).
#[allow(dead_code)]
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("creating a scratch folder under the temp dir")
}

/// A CIFAR-10-binary data set of noisy 32×32 images whose colour gives the class (robust to
/// the training crops and flips): 200 images in each of the five training files.
#[allow(dead_code)] // each test binary uses its own share of these helpers
pub fn write_coloured_cifar(dir: &Path) {
    write_coloured_cifar_sized(dir, 200);
}

/// The same with `per_file` images in each training file (the test file keeps 200).
#[allow(dead_code)]
pub fn write_coloured_cifar_sized(dir: &Path, per_file: usize) {
    let record = |k: u8, i: usize| -> Vec<u8> {
        let k16 = k as usize;
        let base = [40 + 18 * k16, 220 - 18 * k16, 40 + 50 * (k16 % 4)];
        let mut r = vec![k];
        for level in base {
            r.extend((0..32 * 32).map(|p| (level + (i * 31 + p * 13) % 30) as u8));
        }
        r
    };
    std::fs::create_dir_all(dir).unwrap();
    for file in 1..=5 {
        let bytes: Vec<u8> = (0..per_file).flat_map(|i| record((i % 10) as u8, i + 100_000 * file)).collect();
        std::fs::write(dir.join(format!("data_batch_{file}.bin")), bytes).unwrap();
    }
    let test: Vec<u8> = (0..200).flat_map(|i| record((i % 10) as u8, i)).collect();
    std::fs::write(dir.join("test_batch.bin"), test).unwrap();
}

/// `tessera train` of simple-cnn for 2 epochs (batch 25, lr 0.02) on `data` into `out`, with
/// `workers` loader threads: the run the interruption tests stop and resume.
#[allow(dead_code)]
pub fn two_epoch_run(data: &Path, out: &Path, workers: usize) -> Vec<String> {
    ["train", "--model", "simple-cnn", "--epochs", "2", "--batch", "25", "--lr", "0.02", "--data"]
        .iter()
        .map(|s| s.to_string())
        .chain([data.display().to_string(), "--out".into(), out.display().to_string(), "--workers".into(), workers.to_string()])
        .collect()
}

/// Waits (at most 2 minutes) for `run`'s epoch-1 checkpoint, then 300 ms into epoch 2.
#[allow(dead_code)]
pub fn wait_into_epoch_two(run: &Path) {
    let start = std::time::Instant::now();
    while !run.join("epoch-001.safetensors").exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(120), "epoch 1 never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
}

/// Asserts that two checkpoints hold the same tensors, bit for bit.
#[allow(dead_code)]
pub fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (tessera_engine::checkpoint::Checkpoint::load(a).unwrap(), tessera_engine::checkpoint::Checkpoint::load(b).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, (values, shape)) in &a.tensors {
        assert_eq!(Some(&(values.clone(), shape.clone())), b.tensors.get(name), "{name} differs");
    }
}
