//! What mixed precision saves: the activations a forward pass leaves for the backward, in
//! device bytes, f32 against autocast on each adapter with SHADER_F16. Alone in its binary:
//! memory accounting is per adapter, and another test on it would move the figures.
use rand::{rngs::StdRng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::nn::{BatchNorm2d, Conv2d, Module, ReLU, Sequential};
use tessera_engine::ops::Conv2dOpts;
use tessera_engine::{Device, Tensor, Var};
use tessera_tests::random_vec;

/// Device bytes live after a forward pass (the graph and what its rules saved, nothing
/// else) and the peak over forward and backward, above what the parameters hold.
fn held_and_peak(d: &Device, net: &Sequential, x: &[f32], mixed: bool) -> (u64, u64) {
    let Device::Gpu(gpu) = d else { unreachable!("GPUs only") };
    d.synchronize().unwrap();
    gpu.trim_pool();
    d.reset_peak_memory();
    let base = d.memory().unwrap().live_bytes;
    let input = Var::constant(Tensor::from_vec(x.to_vec(), &[16, 16, 32, 32], d).unwrap());
    let loss = ag::autocast(mixed, || ag::mean(&net.forward(&input).unwrap(), &[0, 1, 2, 3], false).unwrap());
    drop(input);
    let held = d.memory().unwrap().live_bytes - base;
    loss.backward().unwrap();
    d.synchronize().unwrap();
    let peak = d.memory().unwrap().peak_live_bytes - base;
    net.named_params().iter().for_each(|(_, p)| p.zero_grad());
    (held, peak)
}

#[test]
fn mixed_precision_holds_at_most_0_6x_the_activation_bytes_of_f32() {
    for d in tessera_tests::f16_gpu_devices() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut net = Sequential::new();
        for _ in 0..4 {
            net = net.with(Conv2d::new(16, 16, 3, Conv2dOpts::new(1, 1), false, &d, &mut rng).unwrap()).with(BatchNorm2d::new(16, &d).unwrap()).with(ReLU);
        }
        let x = random_vec(16 * 16 * 32 * 32, 1);
        let (f32_held, f32_peak) = held_and_peak(&d, &net, &x, false);
        let (mixed_held, mixed_peak) = held_and_peak(&d, &net, &x, true);
        let ratio = mixed_held as f64 / f32_held as f64;
        eprintln!("{d}: held after forward {f32_held} B (f32) vs {mixed_held} B (mixed) = {ratio:.2}×; peak {f32_peak} vs {mixed_peak} B");
        assert!(ratio <= 0.6, "{d}: mixed holds {ratio:.2}× f32's activation bytes");
        assert!(mixed_peak < f32_peak, "{d}: peak {mixed_peak} ≥ {f32_peak}");
    }
}
