//! A short training run end to end: image folders → model → SGD → per-epoch checkpoint and
//! metrics; the checkpoint loads back into a fresh model with identical test results.
use std::path::{Path, PathBuf};
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;
use tessera_scheduler::data::{load_image_folder, FolderOptions, Normalize};
use tessera_scheduler::train::{evaluate, load_weights, train, TrainConfig};

/// A tiny two-class image folder set written as PNGs: bright top half vs bright bottom half.
fn write_folders(root: &Path) {
    for split in ["train", "test"] {
        for (k, class) in ["top", "bottom"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..24u32 {
                let img = image::RgbImage::from_fn(32, 32, |_, y| {
                    let lit = (y < 16) == (k == 0);
                    let noise = ((i * 37 + y * 11) % 40) as u8;
                    image::Rgb([if lit { 200 } else { 40 } + noise; 3])
                });
                img.save(dir.join(format!("{i:03}.png"))).unwrap();
            }
        }
    }
}

#[test]
fn trains_checkpoints_and_reloads() {
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_folders(&root);
    let out = root.join("run");
    let cfg = TrainConfig { model: "simple-cnn".into(), data: root.clone(), epochs: 3, batch: 16, lr: 0.02, out: Some(out.clone()), ..Default::default() };
    let mut steps = 0;
    let reports = train(&cfg, &mut |_| steps += 1).unwrap();
    assert_eq!((reports.len(), steps), (3, 9), "3 epochs of 48 images in batches of 16");
    assert!(reports[2].train_loss < reports[0].train_loss, "loss falls: {reports:?}");
    assert!(reports[2].test_accuracy >= 0.9, "{reports:?}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);

    let ckpt = Checkpoint::load(&out.join("epoch-003.safetensors")).unwrap();
    assert_eq!(ckpt.metadata.get("epoch").map(String::as_str), Some("3"));
    let dev = Device::cpu();
    let fresh = tessera_models::build("simple-cnn", 2, &dev, 99).unwrap();
    load_weights(&fresh, &ckpt, &dev).unwrap();
    let test = load_image_folder(&root.join("test"), &FolderOptions::default()).unwrap();
    let (_, acc) = evaluate(&fresh, &test, 16, Normalize::CIFAR10, &dev).unwrap();
    assert_eq!(acc, reports[2].test_accuracy, "the reloaded weights reproduce the run's test accuracy");

    // The exported state dict: weights and buffers only, loadable by the model again.
    let exported = out.join("weights.safetensors");
    let n = tessera_scheduler::interop::export_weights(&out.join("epoch-003.safetensors"), &exported, Default::default()).unwrap();
    let w = Checkpoint::load(&exported).unwrap();
    assert_eq!(n, w.tensors.len());
    assert!(w.tensors.keys().all(|k| !k.starts_with("optimizer.")));
    load_weights(&fresh, &w, &dev).unwrap();

    // A checkpoint for another architecture fails naming the tensor and both shapes.
    let other = tessera_models::build("resnet20-cifar", 2, &dev, 0).unwrap();
    let e = load_weights(&other, &ckpt, &dev).err().unwrap().to_string();
    assert!(e.contains("epoch-003.safetensors") && e.contains("conv1.weight") && e.contains("missing"), "{e}");
    // Same architecture, another head: the mis-shaped tensor is named with both shapes.
    let three = tessera_models::build("simple-cnn", 3, &dev, 0).unwrap();
    let e = load_weights(&three, &ckpt, &dev).err().unwrap().to_string();
    assert!(e.contains("epoch-003.safetensors") && e.contains("shape [2, 4096]") && e.contains("expects [3, 4096]"), "{e}");
    std::fs::write(out.join("broken.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    assert!(Checkpoint::load(&out.join("broken.safetensors")).err().unwrap().to_string().contains("broken.safetensors"));
}

#[test]
fn resuming_gives_the_weights_of_an_uninterrupted_run() {
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_folders(&root);
    let base = TrainConfig { model: "simple-cnn".into(), data: root.clone(), epochs: 2, batch: 16, lr: 0.02, ..Default::default() };
    let straight = TrainConfig { out: Some(root.join("straight")), ..base.clone() };
    train(&straight, &mut |_| {}).unwrap();
    // A run that died after epoch 1 (of 2: the cosine schedule spans both): only epoch 1's
    // checkpoint survives; resuming must recompute epoch 2 exactly.
    let split = TrainConfig { out: Some(root.join("split")), ..base.clone() };
    train(&split, &mut |_| {}).unwrap();
    std::fs::remove_file(root.join("split/epoch-002.safetensors")).unwrap();
    std::fs::remove_file(root.join("split/metrics.jsonl")).unwrap();
    let resumed = train(&TrainConfig { resume: true, ..split }, &mut |_| {}).unwrap();
    assert_eq!(resumed.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![2], "only the missing epoch runs");
    let a = Checkpoint::load(&root.join("straight/epoch-002.safetensors")).unwrap();
    let b = Checkpoint::load(&root.join("split/epoch-002.safetensors")).unwrap();
    let mut names: Vec<&String> = a.tensors.keys().collect();
    names.sort();
    assert!(names.iter().any(|n| n.starts_with("optimizer.momentum.")));
    for name in names {
        assert_eq!(a.tensors[name], b.tensors[name], "{name} differs after resume");
    }
    let e = train(&TrainConfig { resume: true, out: Some(root.join("empty")), ..base }, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("cannot resume") || e.contains("empty"), "{e}");
}

#[test]
fn a_failed_save_keeps_the_last_good_checkpoint() {
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-failsave-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_folders(&root);
    let out = root.join("run");
    let one = TrainConfig { model: "simple-cnn".into(), data: root.clone(), epochs: 1, batch: 16, lr: 0.02, out: Some(out.clone()), ..Default::default() };
    train(&one, &mut |_| {}).unwrap();
    let good = std::fs::read(out.join("epoch-001.safetensors")).unwrap();
    // Epoch 2's checkpoint cannot be written (its temporary path is taken by a folder).
    std::fs::create_dir_all(out.join("epoch-002.safetensors.partial")).unwrap();
    let e = train(&TrainConfig { epochs: 2, resume: true, ..one }, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("epoch-002.safetensors"), "{e}");
    assert!(!out.join("epoch-002.safetensors").exists(), "no partial checkpoint under the final name");
    assert_eq!(std::fs::read(out.join("epoch-001.safetensors")).unwrap(), good, "the last good checkpoint is untouched");
}

#[test]
fn a_non_finite_loss_stops_naming_the_step_or_is_skipped() {
    use tessera_scheduler::train::OnNan;
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_folders(&root);
    let out = root.join("run");
    let base = TrainConfig { model: "simple-cnn".into(), data: root.clone(), epochs: 1, batch: 16, lr: 0.02, out: Some(out.clone()), ..Default::default() };
    train(&base, &mut |_| {}).unwrap();
    let good = std::fs::read(out.join("epoch-001.safetensors")).unwrap();
    // Resumed with an absurd learning rate, the weights blow up within a few steps.
    let wild = TrainConfig { epochs: 3, lr: 1e12, resume: true, ..base.clone() };
    let e = train(&wild, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("non-finite") && e.contains("epoch 2, step") && e.contains("first seen in"), "{e}");
    assert_eq!(std::fs::read(out.join("epoch-001.safetensors")).unwrap(), good, "the last good checkpoint is kept");
    assert!(!out.join("epoch-002.safetensors").exists());

    let skipping = TrainConfig { on_nan: OnNan::Skip, out: None, resume: false, ..wild };
    let reports = train(&skipping, &mut |_| {}).unwrap();
    assert!(reports.iter().map(|r| r.skipped_batches).sum::<usize>() > 0, "{reports:?}");
}
