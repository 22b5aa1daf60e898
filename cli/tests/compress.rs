//! `tessera compress` end to end on a resnet20-cifar trained one epoch on a small data set:
//! pruned weights stay zero through fine-tuning; 50 % structured channel pruning removes the
//! FLOPs it should (hand-derived). On a simple-cnn trained to 80 % there (resnet20 does not
//! get past chance-level noise on 200 images), int8 and f16 files are smaller, load with
//! `eval` and `forward`, score what the report says and give logits near the f32 ones; bad
//! requests are errors, not panics.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tessera_engine::checkpoint::Checkpoint;

fn tessera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).current_dir(dir).output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A folder with data and a 1-epoch resnet20-cifar checkpoint, made once per test binary.
fn trained() -> (PathBuf, PathBuf) {
    static SETUP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = SETUP.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("tessera-compress-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        common::write_coloured_cifar_sized(&root.join("data"), 40);
        ok(tessera(
            &root,
            &["train", "--model", "resnet20-cifar", "--epochs", "1", "--batch", "25", "--lr", "0.05", "--data", "data", "--out", "run", "--workers", "1"],
        ));
        ok(tessera(
            &root,
            &["train", "--model", "simple-cnn", "--epochs", "2", "--batch", "25", "--lr", "0.02", "--data", "data", "--out", "cnn", "--workers", "1"],
        ));
        root
    });
    (root.clone(), root.join("run/epoch-001.safetensors"))
}

/// `tessera compress` of resnet20's checkpoint (`cnn/…` in `extra`'s place: simple-cnn's).
/// Called at the end of each of the 4 tests: the last one to finish removes the shared folder
/// (a failed test leaves it for a look).
fn finished(root: &Path) {
    static DONE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if DONE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 4 {
        let _ = std::fs::remove_dir_all(root);
    }
}

fn compress(root: &Path, out: &str, extra: &[&str]) -> serde_json::Value {
    compress_file(root, "run/epoch-001.safetensors", out, extra)
}

fn compress_file(root: &Path, file: &str, out: &str, extra: &[&str]) -> serde_json::Value {
    let ckpt = root.join(file);
    let mut args = vec!["compress", "--checkpoint", ckpt.to_str().unwrap(), "--data", "data", "--out", out, "--batch", "25", "--rounds", "1", "--gpu", "none"];
    args.extend_from_slice(extra);
    ok(tessera(root, &args));
    serde_json::from_str(&std::fs::read_to_string(root.join(out).join("compress.json")).unwrap()).unwrap()
}

#[test]
fn pruned_weights_stay_zero_through_fine_tuning() {
    let (root, ckpt) = trained();
    let r = compress(&root, "unstructured", &["--prune", "0.5", "--scope", "per-layer", "--finetune-epochs", "1", "--lr", "0.05"]);
    assert_eq!(r["finetune_accuracy"].as_array().unwrap().len(), 1);
    let (before, after) = (Checkpoint::load(&ckpt).unwrap(), Checkpoint::load(&root.join("unstructured/compressed.safetensors")).unwrap());
    let mut layers = 0;
    for (name, (original, shape)) in &before.tensors {
        if !name.ends_with(".weight") || !(shape.len() == 2 || shape.len() == 4) || name.starts_with("optimizer.") {
            continue;
        }
        layers += 1;
        let (tuned, _) = &after.tensors[name];
        // The mask: the half of the original weights with the smallest magnitude.
        let mut order: Vec<usize> = (0..original.len()).collect();
        order.sort_by(|&a, &b| original[a].abs().total_cmp(&original[b].abs()).then(a.cmp(&b)));
        let k = (0.5 * original.len() as f32).round() as usize;
        assert!(order[..k].iter().all(|&i| tuned[i] == 0.0), "{name}: a pruned weight came back during fine-tuning");
        let moved = order[k..].iter().filter(|&&i| tuned[i] != original[i]).count();
        assert!(moved > (original.len() - k) / 2, "{name}: fine-tuning moved only {moved} kept weights");
    }
    assert_eq!(layers, 22, "every conv and linear weight of resnet20");
    let total = &r["after"]["total"];
    // Half the conv and linear weights; batch-norm parameters and the fc bias are not pruned.
    assert!((total["nonzeros"].as_f64().unwrap() / total["params"].as_f64().unwrap()) < 0.51, "{total}");
    finished(&root);
}

/// 2·out·in·9·H² per 3×3 conv: resnet20's 9 blocks (widths 16/32/64 at 32/16/8 px).
fn block_conv_flops() -> f64 {
    let mut total = 0.0;
    let mut inputs = 16.0;
    for (width, px) in [(16.0, 32.0), (32.0, 16.0), (64.0, 8.0)] {
        for _ in 0..3 {
            let conv = |i: f64, o: f64| 2.0 * o * i * 9.0 * px * px;
            total += conv(inputs, width) + conv(width, width);
            inputs = width;
        }
    }
    total
}

#[test]
fn structured_pruning_removes_the_expected_flops_and_the_file_loads() {
    let (root, _) = trained();
    let r = compress(&root, "channels", &["--prune", "0.5", "--structured", "channels", "--finetune-epochs", "1"]);
    let (before, after) = (r["before"]["total"]["flops"].as_f64().unwrap(), r["after"]["total"]["flops"].as_f64().unwrap());
    // Each block's first conv keeps half its outputs, its second conv reads half as many
    // inputs: both convs of every block halve; stem, shortcuts and fc do not change.
    let expected = before - 0.5 * block_conv_flops();
    assert!((after - expected).abs() < 1.0, "after {after}, expected {expected} (before {before})");
    let pruned = r["pruned"].as_array().unwrap();
    assert_eq!(pruned.len(), 9);
    assert!(pruned.iter().all(|p| p[1].as_u64().unwrap() * 2 == p[2].as_u64().unwrap()), "{pruned:?}");
    assert!(r["after"]["total"]["params"].as_u64() < r["before"]["total"]["params"].as_u64());
    let file = root.join("channels/compressed.safetensors");
    let stored = Checkpoint::load(&file).unwrap();
    assert_eq!(stored.tensors["layer3.2.conv1.weight"].1, vec![32, 64, 3, 3]);
    // `eval` loads the narrower layers and scores what the report says.
    let out = ok(tessera(&root, &["eval", "--checkpoint", file.to_str().unwrap(), "--data", "data", "--json"]));
    let eval: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!((eval["accuracy"].as_f64().unwrap() - r["after"]["accuracy"].as_f64().unwrap()).abs() < 1e-6, "{eval} vs {}", r["after"]);
    assert!(std::fs::read_to_string(root.join("channels/compress.md")).unwrap().contains("tessera eval --checkpoint"));
    // The narrower model compresses again (int8): the file still says it is pruned, so it loads.
    let again = compress_file(&root, "channels/compressed.safetensors", "channels-int8", &["--quantize", "int8", "--calibrate", "20"]);
    assert_eq!(again["after"]["total"]["flops"], r["after"]["total"]["flops"]);
    assert_eq!(Checkpoint::load(&root.join("channels-int8/compressed.safetensors")).unwrap().metadata["tessera.pruned"], "channels");
    finished(&root);
}

#[test]
fn int8_and_f16_files_are_smaller_and_load_with_eval_and_forward() {
    let (root, _) = trained();
    let r = compress_file(&root, "cnn/epoch-002.safetensors", "int8", &["--quantize", "int8", "--calibrate", "50"]);
    let ratio = r["before"]["total"]["bytes"].as_f64().unwrap() / r["after"]["total"]["bytes"].as_f64().unwrap();
    assert!(ratio >= 3.5, "int8 is only {ratio:.2}× smaller");
    assert_eq!(r["quantized_layers"], 3);
    let (acc_before, acc_after) = (r["before"]["accuracy"].as_f64().unwrap(), r["after"]["accuracy"].as_f64().unwrap());
    // The test images of a class are near copies: accuracy moves in steps of a class (0.1).
    assert!(acc_before >= 0.5 && (acc_before - acc_after).abs() <= 0.1 + 1e-6, "int8 moved accuracy from {acc_before} to {acc_after}");
    let file = root.join("int8/compressed.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("3.weight").unwrap().dtype(), safetensors::Dtype::I8);
    assert_eq!(st.tensor("3.weight_scale").unwrap().shape(), &[64]);
    assert_eq!(st.tensor("3.input_scale").unwrap().shape(), &[] as &[usize]);
    let out = ok(tessera(&root, &["eval", "--checkpoint", file.to_str().unwrap(), "--data", "data", "--json"]));
    let eval: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!((eval["accuracy"].as_f64().unwrap() - acc_after).abs() < 1e-6);
    // `forward` runs the int8 model; its logits stay near the f32 model's.
    let x: Vec<f32> = (0..4 * 3 * 32 * 32).map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0).collect();
    let x = tessera_engine::Tensor::from_vec(x, &[4, 3, 32, 32], &tessera_engine::Device::cpu()).unwrap();
    tessera_engine::checkpoint::save(&root.join("x.safetensors"), &[("x".into(), x)], &Default::default()).unwrap();
    let logits = |weights: &Path, out: &str| -> Vec<f32> {
        ok(tessera(&root, &["forward", "--model", "simple-cnn", "--weights", weights.to_str().unwrap(), "--input", "x.safetensors", "--out", out]));
        let (values, shape) = Checkpoint::load(&root.join(out)).unwrap().tensors["logits"].clone();
        assert_eq!(shape, vec![4, 10]);
        values
    };
    let (f32_logits, int8_logits) = (logits(&root.join("int8/original.safetensors"), "f32.safetensors"), logits(&file, "int8.safetensors"));
    let rms = |v: Vec<f32>| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let rel = rms(f32_logits.iter().zip(&int8_logits).map(|(a, b)| a - b).collect()) / rms(f32_logits.clone());
    assert!(rel < 0.05, "int8 logits are {:.1} % (RMS) from the f32 ones", rel * 100.0);
    // The GPU's int8 kernels run the file too (skipped with the GPU tests).
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_none() {
        let out = ok(tessera(
            &root,
            &["bench", "forward", "--checkpoint", file.to_str().unwrap(), "--batch", "4", "--rounds", "1", "--device", "cpu,gpu:0", "--json"],
        ));
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    let r = compress_file(&root, "cnn/epoch-002.safetensors", "f16", &["--quantize", "f16"]);
    let ratio = r["before"]["total"]["bytes"].as_f64().unwrap() / r["after"]["total"]["bytes"].as_f64().unwrap();
    assert!(ratio > 1.99, "f16 is {ratio:.2}× smaller");
    assert!((r["before"]["accuracy"].as_f64().unwrap() - r["after"]["accuracy"].as_f64().unwrap()).abs() <= 0.1 + 1e-6, "{r}");
    finished(&root);
}

#[test]
fn bad_requests_are_errors_naming_the_problem() {
    let (root, ckpt) = trained();
    let c = ckpt.to_str().unwrap();
    let fails = |args: &[&str], needle: &str| {
        let o = tessera(&root, args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(if needle.starts_with("error: invalid value") { 2 } else { 1 }), "{stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    fails(&["compress", "--checkpoint", c, "--data", "data", "--out", "x"], "nothing to do");
    fails(&["compress", "--checkpoint", c, "--data", "data", "--out", "x", "--prune", "0.5", "--scope", "sub-model:head"], "no sub-model `head`");
    fails(&["compress", "--checkpoint", c, "--data", "data", "--out", "x", "--prune", "1.5"], "error: invalid value");
    compress(&root, "q", &["--quantize", "int8", "--calibrate", "10"]);
    let q = root.join("q/compressed.safetensors");
    fails(&["compress", "--checkpoint", q.to_str().unwrap(), "--data", "data", "--out", "x", "--quantize", "int8"], "already quantised");
    finished(&root);
}
