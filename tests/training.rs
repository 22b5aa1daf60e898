//! End to end: a small CNN learns a separable synthetic task on both backends.
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::nn::{Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use tessera_engine::ops::{Conv2dOpts, SgdHyper};
use tessera_engine::optim::{Optimizer, ParamGroup};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_tests::gpu_devices;

/// 3×8×8 images; class k lights up quadrant k (+1) over uniform noise in [−0.5, 0.5].
fn quadrant_data(n: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * 192);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let k = rng.gen_range(0..4);
        for _c in 0..3 {
            for r in 0..8 {
                for col in 0..8 {
                    let lit = (r / 4) * 2 + col / 4 == k;
                    x.push(if lit { 1.0 } else { 0.0 } + rng.gen_range(-0.5..0.5));
                }
            }
        }
        y.push(k);
    }
    (x, y)
}

/// conv 3→8, ReLU, max-pool 2, conv 8→16, ReLU, max-pool 2, flatten, linear 64→4.
fn two_conv_cnn(dev: &Device, seed: u64) -> Sequential {
    let mut rng = StdRng::seed_from_u64(seed);
    let same = Conv2dOpts::new(1, 1);
    Sequential::new()
        .with(Conv2d::new(3, 8, 3, same, true, dev, &mut rng).unwrap())
        .with(ReLU)
        .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
        .with(Conv2d::new(8, 16, 3, same, true, dev, &mut rng).unwrap())
        .with(ReLU)
        .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
        .with(Flatten)
        .with(Linear::new(64, 4, true, dev, &mut rng).unwrap())
}

fn accuracy(model: &Sequential, x: &[f32], y: &[usize], dev: &Device) -> f32 {
    model.set_training(false);
    let logits = no_grad(|| {
        let input = Var::constant(Tensor::from_vec(x.to_vec(), &[y.len(), 3, 8, 8], dev).unwrap());
        model.forward(&input).unwrap().value().to_vec().unwrap()
    });
    model.set_training(true);
    let correct = y
        .iter()
        .enumerate()
        .filter(|(i, &label)| {
            let row = &logits[i * 4..(i + 1) * 4];
            row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j) == Some(label)
        })
        .count();
    correct as f32 / y.len() as f32
}

#[test]
fn two_conv_cnn_learns_a_separable_task_on_every_backend() {
    let (train_x, train_y) = quadrant_data(256, 1);
    let (test_x, test_y) = quadrant_data(128, 2);
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices());
    for dev in devices {
        let model = two_conv_cnn(&dev, 3);
        let params = model.named_params().into_iter().map(|(_, p)| p).collect();
        let hyper = SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false };
        let mut sgd = Optimizer::new(vec![ParamGroup::new("all", params)], 0.05, hyper);
        for _epoch in 0..4 {
            for b in 0..8 {
                let xs = &train_x[b * 32 * 192..(b + 1) * 32 * 192];
                let input = Var::constant(Tensor::from_vec(xs.to_vec(), &[32, 3, 8, 8], &dev).unwrap());
                let loss = ag::cross_entropy(&model.forward(&input).unwrap(), &train_y[b * 32..(b + 1) * 32]).unwrap();
                loss.backward().unwrap();
                sgd.step().unwrap();
                sgd.zero_grad();
            }
        }
        let acc = accuracy(&model, &test_x, &test_y, &dev);
        assert!(acc >= 0.95, "{dev}: test accuracy {acc}");
        println!("{dev}: test accuracy {acc}");
    }
}
