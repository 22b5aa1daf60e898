//! A short training run end to end: image folders → model → SGD → per-epoch checkpoint and
//! metrics; the checkpoint loads back into a fresh model with identical test results.
use std::path::PathBuf;
use std::sync::Arc;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;
use tessera_scheduler::data::{load_image_folder, FolderOptions, LoaderSpec};
use tessera_scheduler::eval::evaluate;
use tessera_scheduler::run_state::load_weights;
use tessera_scheduler::strategy::RunSpec;
use tessera_scheduler::train::{train, TrainConfig};
use tessera_scheduler::trainer::OptimConfig;

mod common;
use common::write_folders;

/// A fresh folder `tessera-<name>-<pid>` holding the two-class image folders, and a run of
/// simple-cnn on them: `epochs` epochs, batch 16, SGD at 0.02.
fn simple_run(name: &str, epochs: usize) -> (PathBuf, TrainConfig) {
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    write_folders(&root);
    let cfg = TrainConfig {
        model: "simple-cnn".into(),
        data: root.clone(),
        run: RunSpec { epochs, batch: 16, ..Default::default() },
        optim: OptimConfig::default().with_lr(0.02),
        ..Default::default()
    };
    (root, cfg)
}

#[test]
fn trains_checkpoints_and_reloads() {
    let (root, cfg) = simple_run("train", 3);
    let out = root.join("run");
    let cfg = TrainConfig { out: Some(out.clone()), ..cfg };
    let mut ends = Vec::new();
    let reports = train(&cfg, &mut |s| ends.push((s.epoch, s.step, s.steps_per_epoch))).unwrap();
    assert_eq!(reports.len(), 3);
    // Progress refreshes at most twice a second and once at each epoch's end.
    ends.dedup_by_key(|e| e.0);
    assert_eq!(ends.len(), 3, "{ends:?}");
    assert!(ends.iter().all(|&(_, step, of)| of == 3 && step <= 3), "3 epochs of 48 images in batches of 16: {ends:?}");
    assert!(reports[2].train_loss < reports[0].train_loss, "loss falls: {reports:?}");
    assert!(reports[2].test_accuracy >= 0.9, "{reports:?}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);

    let ckpt = Checkpoint::load(&out.join("epoch-003.safetensors")).unwrap();
    assert_eq!(ckpt.metadata.get("epoch").map(String::as_str), Some("3"));
    let dev = Device::cpu();
    let fresh = tessera_models::build("simple-cnn", 2, &dev, 99).unwrap();
    load_weights(&fresh, &ckpt, &dev).unwrap();
    let test = Arc::new(load_image_folder(&root.join("test"), &FolderOptions::default()).unwrap());
    let (_, acc) = evaluate(&fresh, &(test as tessera_scheduler::data::Dataset), &LoaderSpec::eval(16), &dev).unwrap();
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
    let (root, base) = simple_run("resume", 2);
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
    let (root, one) = simple_run("failsave", 1);
    let out = root.join("run");
    let one = TrainConfig { out: Some(out.clone()), ..one };
    train(&one, &mut |_| {}).unwrap();
    let good = std::fs::read(out.join("epoch-001.safetensors")).unwrap();
    // Epoch 2's checkpoint cannot be written (its temporary path is taken by a folder).
    std::fs::create_dir_all(out.join("epoch-002.safetensors.partial")).unwrap();
    let e = train(&TrainConfig { run: RunSpec { epochs: 2, ..one.run.clone() }, resume: true, ..one }, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("epoch-002.safetensors"), "{e}");
    assert!(!out.join("epoch-002.safetensors").exists(), "no partial checkpoint under the final name");
    assert_eq!(std::fs::read(out.join("epoch-001.safetensors")).unwrap(), good, "the last good checkpoint is untouched");
}

#[test]
fn a_non_finite_loss_stops_naming_the_step_or_is_skipped() {
    use tessera_scheduler::trainer::OnNan;
    let (root, base) = simple_run("nan", 1);
    let out = root.join("run");
    let base = TrainConfig { out: Some(out.clone()), ..base };
    train(&base, &mut |_| {}).unwrap();
    let good = std::fs::read(out.join("epoch-001.safetensors")).unwrap();
    // Resumed with an absurd learning rate, the weights blow up within a few steps.
    let wild = TrainConfig { run: RunSpec { epochs: 3, ..base.run.clone() }, optim: OptimConfig::default().with_lr(1e12), resume: true, ..base.clone() };
    let e = train(&wild, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("non-finite") && e.contains("epoch 2, step") && e.contains("first seen in"), "{e}");
    assert_eq!(std::fs::read(out.join("epoch-001.safetensors")).unwrap(), good, "the last good checkpoint is kept");
    assert!(!out.join("epoch-002.safetensors").exists());

    // Skipping every batch of an epoch is an error unless allowed: nothing was learned.
    let skipping = TrainConfig { on_nan: OnNan::Skip, out: None, resume: false, ..wild };
    let e = train(&skipping, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("every batch of epoch") && e.contains("--allow-empty-epochs"), "{e}");
    let reports = train(&TrainConfig { allow_empty_epochs: true, ..skipping }, &mut |_| {}).unwrap();
    assert!(reports.iter().map(|r| r.skipped_batches).sum::<usize>() > 0, "{reports:?}");
}

/// The devices to train on: the CPU backend and every GPU adapter (none is a failure unless
/// TESSERA_SKIP_GPU_TESTS says so).
fn devices() -> Vec<String> {
    let mut d = vec!["cpu".to_string()];
    d.extend(tessera_tests::gpu_devices().iter().map(|d| match d {
        Device::Gpu(gpu) => format!("gpu:{}", gpu.summary.index),
        Device::Cpu(_) => "cpu".into(),
    }));
    d
}

/// A hook that makes one element of parameter `target`'s gradient NaN at step `at`, and
/// records, each time it fires at that step, whether the weights equal those it first saw.
fn nan_injector(target: &'static str, at: usize, seen: Arc<std::sync::Mutex<Vec<bool>>>) -> tessera_scheduler::trainer::GradHook {
    let mut first: Option<Vec<Vec<f32>>> = None;
    Box::new(move |step, model| {
        if step != at {
            return Ok(());
        }
        let weights: Vec<Vec<f32>> = model.net.named_params().iter().map(|(_, p)| p.value().to_vec().unwrap()).collect();
        match &first {
            None => first = Some(weights),
            Some(w) => seen.lock().unwrap().push(*w == weights),
        }
        let (_, p) = model.net.named_params().into_iter().find(|(n, _)| n == target).unwrap();
        let g = p.grad().unwrap();
        let mut values = g.to_vec().unwrap();
        let middle = values.len() / 2;
        values[middle] = f32::NAN;
        p.set_grad(Some(tessera_engine::Tensor::from_vec(values, g.shape(), g.device()).unwrap()));
        Ok(())
    })
}

#[test]
fn a_nan_gradient_leaves_the_weights_untouched_and_stops_naming_the_parameter_or_is_skipped() {
    use tessera_scheduler::train::train_with;
    use tessera_scheduler::trainer::OnNan;
    let (_root, on_cpu) = simple_run("nangrad", 1);
    for device in devices() {
        let base = TrainConfig { device: device.clone(), ..on_cpu.clone() };
        // Stop: the error names the step and the parameter; when the step is rerun to find the
        // place, the weights are still those the flagged step saw (steps 2 and 3 updated nothing).
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let e = train_with(&base, &mut |_| {}, Some(nan_injector("3.weight", 2, seen.clone()))).err().unwrap().to_string();
        assert!(e.contains("non-finite gradient at epoch 1, step 2") && e.contains("parameter `3.weight`"), "{device}: {e}");
        assert_eq!(*seen.lock().unwrap(), vec![true], "{device}: weights changed after the flagged step");

        // Skip: the step is counted, the next step sees the weights the flagged one saw.
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (hook_at_2, seen_at_3) = (nan_injector("3.weight", 2, Arc::new(Default::default())), seen.clone());
        let mut hook_at_2 = hook_at_2;
        let mut before_3: Option<Vec<Vec<f32>>> = None;
        let hook: tessera_scheduler::trainer::GradHook = Box::new(move |step, model| {
            let weights: Vec<Vec<f32>> = model.net.named_params().iter().map(|(_, p)| p.value().to_vec().unwrap()).collect();
            match step {
                2 => before_3 = Some(weights),
                3 => seen_at_3.lock().unwrap().push(before_3.as_ref() == Some(&weights)),
                _ => {}
            }
            hook_at_2(step, model)
        });
        let skipping = TrainConfig { on_nan: OnNan::Skip, ..base };
        let records = train_with(&skipping, &mut |_| {}, Some(hook)).unwrap();
        assert_eq!(records[0].skipped_batches, 1, "{device}");
        assert_eq!(*seen.lock().unwrap(), vec![true], "{device}: the skipped step changed the weights");
    }
}

#[test]
fn a_data_set_larger_than_the_loaders_memory_limit_trains() {
    let root: PathBuf = std::env::temp_dir().join(format!("tessera-bigdata-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    common::write_image_folders(&root, 150);
    // 300 training images of 3×32×32 f32 values: 3.7 MB as batches; the loader may hold 64 KiB
    // (five batches of 4), so it can never hold more than a sliver of the set.
    let limit = 64 << 10;
    let set_bytes = 300 * 3 * 32 * 32 * 4;
    let cfg = TrainConfig {
        model: "simple-cnn".into(),
        data: root.clone(),
        run: RunSpec { epochs: 1, batch: 4, workers: 4, memory_limit: Some(limit), ..Default::default() },
        optim: OptimConfig::default().with_lr(0.02),
        ..Default::default()
    };
    let records = train(&cfg, &mut |_| {}).unwrap();
    let peak = records[0].loader_peak_bytes;
    assert!(peak > 0 && peak <= limit && set_bytes > 50 * limit, "loader peak {peak} B against a {limit} B limit and a {set_bytes} B set");
    assert!(records[0].test_accuracy > 0.9, "{records:?}");
    let tiny = TrainConfig { run: RunSpec { memory_limit: Some(1000), ..cfg.run.clone() }, ..cfg };
    let e = train(&tiny, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("memory limit of 1000 bytes") && e.contains("batch"), "{e}");
}

/// `--nesterov` turns on SGD's Nesterov momentum and is refused where it has no meaning.
#[test]
fn nesterov_is_an_sgd_setting_that_needs_momentum() {
    use tessera_engine::optim::Rule;
    use tessera_scheduler::trainer::OptimizerKind;
    let sgd = OptimConfig::from_flags(OptimizerKind::Sgd, 0.1, None, None, 0).unwrap();
    let Rule::Sgd(h) = sgd.with_nesterov(true).unwrap().rule else { panic!("SGD stays SGD") };
    assert!(h.nesterov && h.momentum == 0.9);
    let Rule::Sgd(h) = sgd.with_nesterov(false).unwrap().rule else { panic!("SGD stays SGD") };
    assert!(!h.nesterov);
    let no_momentum = OptimConfig::from_flags(OptimizerKind::Sgd, 0.1, Some(0.0), None, 0).unwrap();
    assert!(no_momentum.with_nesterov(true).unwrap_err().to_string().contains("needs momentum"));
    let adamw = OptimConfig::from_flags(OptimizerKind::AdamW, 1e-3, None, None, 0).unwrap();
    assert!(adamw.with_nesterov(true).unwrap_err().to_string().contains("SGD setting"));
}
