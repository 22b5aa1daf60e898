//! The airbench94 recipe's mechanism on a small synthetic set, epoch by epoch: its optimizer
//! groups and hyper-parameters, the whitening filters set from the data, what stays frozen
//! and when the whitening bias stops training, the run cut at its fractional epoch count, and
//! its arithmetic against the paper's figures.
use std::sync::Arc;
use tessera_engine::nn::Param;
use tessera_engine::{Device, Tensor};
use tessera_scheduler::data::{synthetic, Dataset, Normalize};
use tessera_scheduler::recipe::{Airbench94Hyper, Recipe};
use tessera_scheduler::strategy::{fit, RunSpec};
use tessera_scheduler::trainer::{OnNan, OptimConfig, Trainer};

#[test]
fn airbench94_hyper_parameters_are_the_papers() {
    let h = Airbench94Hyper::default();
    // kilostep = 1024·(1 + 1/0.15); lr = 11.5/kilostep per summed example, × 1024 for a mean.
    let (lr, decay) = h.lr_and_decay(1024);
    assert!((lr - 1.5).abs() < 1e-5, "{lr}");
    assert!((decay - 0.0153 * 1024.0 / (1024.0 * (1.0 + 1.0 / 0.15))).abs() < 1e-7, "{decay}");
    // 48 whole batches per epoch × 9.9 epochs.
    assert_eq!(h.total_steps(50_000, 1024), 476);
    assert_eq!(Recipe::Airbench94(h).batch_and_epochs(), (1024, 10));
    assert!("airbench95".parse::<Recipe>().is_err());
}

fn named(t: &Trainer, name: &str) -> Arc<Param> {
    t.model.net.named_params().into_iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn airbench94_recipe_whitens_freezes_and_stops_at_its_step_count() {
    let dev = Device::cpu();
    let set = synthetic(256, 10, 32, 1);
    let train: Dataset = Arc::new(set.clone());
    let test: Dataset = Arc::new(synthetic(64, 10, 32, 2));
    let h = Airbench94Hyper { epochs: 4.5, whiten_images: 64, ..Airbench94Hyper::default() };
    let recipe = Recipe::Airbench94(h);
    let batch = 32;
    let mut strategy = recipe.strategy(train.len(), batch);
    let model = tessera_models::build("airbench94", 10, &dev, 0).unwrap();
    let mut t = Trainer::new(model, dev.clone(), 10, &OptimConfig::default(), strategy.schedule(0), OnNan::Stop).unwrap();
    strategy.configure(&mut t).unwrap();

    // Five sub-model groups and three of batch-norm biases at 64× the rate; every group's
    // lr × decay is the recipe's decay.
    let (lr, decay) = h.lr_and_decay(batch);
    let groups = t.opt.groups();
    assert_eq!(groups.len(), 8);
    assert_eq!(groups[5].name, "block1.norm-biases");
    for g in groups {
        let scale = if g.name.ends_with("norm-biases") { 64.0 } else { 1.0 };
        assert_eq!(g.lr_scale, scale, "{}", g.name);
        assert!((lr * g.lr_scale * g.weight_decay.unwrap() - decay).abs() < 1e-9, "{}", g.name);
    }
    assert_eq!(groups[5].params.len(), 2);
    assert_eq!(t.label_smoothing, 0.2);

    let spec = RunSpec { epochs: 5, batch, seed: 4, ..RunSpec::default() };
    let (whiten_w, whiten_b) = (named(&t, "0.weight"), named(&t, "0.bias"));
    let mut seen: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let records = fit(&mut t, strategy.as_mut(), &train, &test, &spec, (0, 0), &mut |_| {}, &mut |_, _| {
        seen.push((whiten_w.value().to_vec().unwrap(), whiten_b.value().to_vec().unwrap()));
        Ok(())
    })
    .unwrap();

    // 8 whole batches per epoch × 4.5 epochs = 36 steps: the fifth epoch runs 4.
    assert_eq!(t.opt.steps_taken(), 36);
    assert_eq!(records.len(), 5);

    // The whitening filters: from every 4th image (64 of 256), normalised as the loader does.
    let norm = Normalize::CIFAR10;
    let picked: Vec<f32> = (0..64)
        .flat_map(|i| set.image(i * 4).iter().enumerate().map(|(k, &p)| (p as f32 / 255.0 - norm.mean[k / 1024]) / norm.std[k / 1024]).collect::<Vec<_>>())
        .collect();
    let want = tessera_engine::nn::patch_whitening(&Tensor::from_vec(picked, &[64, 3, 32, 32], &dev).unwrap(), [2, 2], 5e-4).unwrap().to_vec().unwrap();
    for (epoch, (w, _)) in seen.iter().enumerate() {
        assert_eq!(w, &want, "the whitening filters after epoch {} are the data's, frozen", epoch + 1);
    }
    // The bias trains for 3 epochs, then stays.
    assert!(seen[0].1.iter().any(|&v| v != 0.0), "the whitening bias trains in epoch 1");
    assert_ne!(seen[1].1, seen[2].1, "and in epoch 3");
    assert_eq!(seen[2].1, seen[3].1, "frozen in epoch 4");
    assert_eq!(seen[3].1, seen[4].1, "and 5");
    // Batch-norm scales never move.
    for i in tessera_models::airbench::NORMS {
        assert!(named(&t, &format!("{i}.weight")).value().to_vec().unwrap().iter().all(|&v| v == 1.0));
    }
    // The last epoch's evaluation ran the test-time augmentation: finite and better than chance
    // on a separable set.
    let last = records.last().unwrap();
    assert!(last.test_loss.is_finite() && last.test_accuracy > 0.2, "{last:?}");
}

#[test]
fn airbench94_recipe_refuses_another_model_and_too_few_images() {
    let dev = Device::cpu();
    let mut strategy = Recipe::Airbench94(Airbench94Hyper::default()).strategy(100, 10);
    let model = tessera_models::build("simple-cnn", 10, &dev, 0).unwrap();
    let mut t = Trainer::new(model, dev, 10, &OptimConfig::default(), strategy.schedule(0), OnNan::Stop).unwrap();
    let e = strategy.configure(&mut t).err().unwrap().to_string();
    assert!(e.contains("airbench94"), "{e}");
    // Fewer images than one batch: no whole batch to train on.
    let mut strategy = Recipe::Airbench94(Airbench94Hyper::default()).strategy(100, 1024);
    let model = tessera_models::build("airbench94", 10, &Device::cpu(), 0).unwrap();
    let mut t = Trainer::new(model, Device::cpu(), 10, &OptimConfig::default(), strategy.schedule(0), OnNan::Stop).unwrap();
    let e = strategy.configure(&mut t).err().unwrap().to_string();
    assert!(e.contains("whole batches of 1024"), "{e}");
}

/// The recipe on each GPU adapter against the CPU: two epochs (whitening from the data,
/// grouped Nesterov SGD on its schedule, label smoothing, airbench's augmentation) and the final
/// test-time-augmented evaluation give the same losses within 1e-3.
#[test]
fn airbench94_recipe_on_each_gpu_matches_the_cpu() {
    let train: Dataset = Arc::new(synthetic(64, 10, 32, 5));
    let test: Dataset = Arc::new(synthetic(16, 10, 32, 6));
    let h = Airbench94Hyper { epochs: 2.0, whiten_images: 32, ..Airbench94Hyper::default() };
    let run = |dev: &Device| {
        let batch = 32;
        let mut strategy = Recipe::Airbench94(h).strategy(train.len(), batch);
        let model = tessera_models::build("airbench94", 10, dev, 0).unwrap();
        let mut t = Trainer::new(model, dev.clone(), 10, &OptimConfig::default(), strategy.schedule(0), OnNan::Stop).unwrap();
        strategy.configure(&mut t).unwrap();
        let spec = RunSpec { epochs: 2, batch, seed: 9, ..RunSpec::default() };
        fit(&mut t, strategy.as_mut(), &train, &test, &spec, (0, 0), &mut |_| {}, &mut |_, _| Ok(())).unwrap()
    };
    let cpu = run(&Device::cpu());
    for dev in tessera_tests::gpu_devices() {
        let gpu = run(&dev);
        for (c, g) in cpu.iter().zip(&gpu) {
            for (what, a, b) in [("train loss", c.train_loss, g.train_loss), ("test loss", c.test_loss, g.test_loss)] {
                assert!((a - b).abs() < 1e-3, "{dev}, epoch {}: {what} {b} against the CPU's {a}", c.epoch);
            }
        }
    }
}
