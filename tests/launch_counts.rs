//! Freezing the first half of a network removes exactly that half's backward kernels. Its
//! own test binary: the launch counter is per adapter, and no other test may launch meanwhile.
use rand::{rngs::StdRng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::gpu::GpuBackend;
use tessera_engine::nn::{Conv2d, Flatten, Linear, Module, ReLU, Sequential};
use tessera_engine::ops::Conv2dOpts;
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_tests::{gpu_devices, random_vec};

/// Backward-pass launches of `model.forward(input)` followed by cross-entropy.
fn backward_launches(gpu: &GpuBackend, layers: &[Box<dyn Module>], input: &Var, labels: &[usize]) -> u64 {
    // Fresh gradient slots: accumulating into earlier gradients would add launches.
    layers.iter().flat_map(|l| l.named_params()).for_each(|(_, p)| p.zero_grad());
    let out = layers.iter().fold(input.clone(), |h, l| l.forward(&h).unwrap());
    let loss = ag::cross_entropy(&out, labels).unwrap();
    let before = gpu.stats().launches;
    loss.backward().unwrap();
    gpu.stats().launches - before
}

#[test]
fn freezing_the_first_half_removes_its_backward_kernels() {
    let Some(dev) = gpu_devices().into_iter().next() else { return };
    let Device::Gpu(gpu) = &dev else { unreachable!() };
    let mut rng = StdRng::seed_from_u64(4);
    let same = Conv2dOpts::new(1, 1);
    let model = Sequential::new()
        .with(Conv2d::new(3, 8, 3, same, true, &dev, &mut rng).unwrap())
        .with(ReLU)
        .with(Conv2d::new(8, 8, 3, same, true, &dev, &mut rng).unwrap())
        .with(ReLU)
        .with(Conv2d::new(8, 8, 3, same, true, &dev, &mut rng).unwrap())
        .with(ReLU)
        .with(Conv2d::new(8, 8, 3, same, true, &dev, &mut rng).unwrap())
        .with(ReLU)
        .with(Flatten)
        .with(Linear::new(8 * 64, 4, true, &dev, &mut rng).unwrap());
    let y = [0, 1, 2, 3, 0, 1, 2, 3];
    let input = Var::constant(Tensor::from_vec(random_vec(8 * 192, 5), &[8, 3, 8, 8], &dev).unwrap());
    let layers = model.layers();

    let full = backward_launches(gpu, layers, &input, &y);
    for layer in &layers[..4] {
        layer.set_requires_grad(false);
    }
    let frozen = backward_launches(gpu, layers, &input, &y);
    // The same tail, fed the frozen half's output as a constant: the work that must remain.
    let mid = no_grad(|| layers[..4].iter().fold(input.clone(), |h, l| l.forward(&h).unwrap()));
    let tail_only = backward_launches(gpu, &layers[4..], &Var::constant(mid.value().clone()), &y);
    println!("backward launches: full {full}, first half frozen {frozen}, tail alone {tail_only}");
    assert_eq!(frozen, tail_only, "a frozen prefix must run no backward kernel");
    // conv: swap01 + im2col + dW GEMM + bias sum (b launches: 2 products on software
    // adapters, 1 gather-sum elsewhere), plus dX GEMM + col2im when its input needs a
    // gradient; relu 1; linear 3; cross-entropy 1. Full: conv1 (no dX) 3 + b, conv2–4 3·(5 + b),
    // relus 4, linear 3, loss 1 = 26 + 4b. Frozen: conv3 (no dX) 3 + b + relu 1 + conv4 5 + b
    // + relu 1 + linear 3 + loss 1 = 14 + 2b.
    let b = if gpu.is_software() { 2 } else { 1 };
    assert_eq!((full, frozen), (26 + 4 * b, 14 + 2 * b), "backward launch counts");
}
