//! Mixed precision: dynamic loss scaling in the step guard (skip and halve on overflow, grow
//! after clean steps), the optimizers' unscaling, and autocast's f16 products and f16 saved
//! activations against the f32 computation. The memory it saves: tests/mixed_memory.rs.
use rand::{rngs::StdRng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::nn::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use tessera_engine::ops::{self, AdamWHyper, Conv2dOpts, Labels, LossScaling, SgdHyper, StepGuard};
use tessera_engine::tensor_f16::MixedTensor;
use tessera_engine::{Device, Tensor, Var};
use tessera_tests::{f16_gpu_devices, gpu_devices, max_rel_err, random_tensor};

fn devices() -> Vec<Device> {
    std::iter::once(Device::cpu()).chain(gpu_devices()).collect()
}

/// Nine steps at scale 1024, growth after 3 clean steps: overflows at steps 2 and 3 halve the
/// scale twice (256) and are skipped, not flagged; a NaN loss at step 6 is flagged (the
/// --on-nan policy) and starts the clean count again; steps 7–9 are clean, so the scale
/// doubles after step 9 (512).
#[test]
fn dynamic_loss_scaling_skips_and_halves_on_overflow_and_grows_after_clean_steps() {
    for d in devices() {
        let mut guard = StepGuard::with_scaling(&d, false, Some(LossScaling { initial: 1024.0, growth_interval: 3 })).unwrap();
        let mut scales = Vec::new();
        for step in 1..=9 {
            guard.open().unwrap();
            let loss = Tensor::from_vec(vec![if step == 6 { f32::NAN } else { 0.5 }], &[1], &d).unwrap();
            guard.check(&loss).unwrap();
            let overflow = [2, 3].contains(&step);
            guard.check_gradient(&Tensor::from_vec(vec![1.0, if overflow { f32::INFINITY } else { 2.0 }], &[2], &d).unwrap()).unwrap();
            let logits = random_tensor(&[2, 3], step, &d);
            guard.add_metrics(&loss, &logits, &Labels::new(&logits, &[0, 1]).unwrap()).unwrap();
            guard.close(step as usize).unwrap();
            scales.push(guard.loss_scale().unwrap().unwrap().to_vec().unwrap()[0]);
        }
        assert_eq!(scales, [1024.0, 512.0, 256.0, 256.0, 256.0, 256.0, 256.0, 256.0, 512.0], "{d}");
        let t = guard.read().unwrap();
        assert_eq!((t.flagged_steps, t.first_flagged_step, t.overflow_steps, t.applied_steps), (1, Some(6), 2, 6), "{d}: {t:?}");
        assert_eq!((t.loss_scale, t.clean_steps, t.images), (512.0, 0, 12), "{d}: {t:?}");
    }
}

/// A sticky guard (--on-nan stop) keeps a non-finite flag into later steps, but never an
/// overflow's: mixed precision skips that one step and goes on.
#[test]
fn an_overflow_never_sticks_but_a_non_finite_loss_does() {
    for d in devices() {
        let mut guard = StepGuard::with_scaling(&d, true, Some(LossScaling::default())).unwrap();
        let inf = Tensor::from_vec(vec![f32::INFINITY], &[1], &d).unwrap();
        let fine = Tensor::from_vec(vec![1.0], &[1], &d).unwrap();
        for (step, (loss, grad)) in [(&fine, &inf), (&fine, &fine), (&inf, &fine), (&fine, &fine)].into_iter().enumerate() {
            guard.open().unwrap();
            guard.check(loss).unwrap();
            guard.check_gradient(grad).unwrap();
            guard.close(step + 1).unwrap();
        }
        let t = guard.read().unwrap();
        // Step 2 applies after step 1's overflow; step 4 stays flagged after step 3's NaN loss.
        assert_eq!((t.overflow_steps, t.applied_steps, t.flagged_steps, t.first_flagged_step), (1, 1, 2, Some(3)), "{d}: {t:?}");
    }
}

/// With a guard at scale S, SGD and AdamW given S·g update exactly as with g and no scale.
#[test]
fn optimizers_divide_gradients_by_the_loss_scale() {
    for d in devices() {
        let scale = 4096.0;
        let guard = StepGuard::with_scaling(&d, false, Some(LossScaling { initial: scale, growth_interval: 10 })).unwrap();
        let plain = StepGuard::new(&d, false).unwrap();
        let g = random_tensor(&[33, 7], 1, &d);
        let scaled = ops::scale(&g, scale).unwrap();
        let h = SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false };
        let (mut p1, mut p2) = (random_tensor(&[33, 7], 2, &d), random_tensor(&[33, 7], 2, &d));
        let (mut b1, mut b2) = (None, None);
        let (mut q1, mut q2) = (random_tensor(&[33, 7], 3, &d), random_tensor(&[33, 7], 3, &d));
        let (mut s1, mut s2) = (ops::AdamWState::zeros(&q1).unwrap(), ops::AdamWState::zeros(&q2).unwrap());
        for _ in 0..3 {
            ops::sgd_step_in_place(&mut p1, &scaled, &mut b1, 0.1, h, Some(guard.state())).unwrap();
            ops::sgd_step_in_place(&mut p2, &g, &mut b2, 0.1, h, Some(plain.state())).unwrap();
            ops::adamw_step_in_place(&mut q1, &scaled, &mut s1, 1e-2, AdamWHyper::default(), Some(guard.state())).unwrap();
            ops::adamw_step_in_place(&mut q2, &g, &mut s2, 1e-2, AdamWHyper::default(), None).unwrap();
        }
        for (a, b) in [(&p1, &p2), (&q1, &q2)] {
            let err = max_rel_err(&a.to_vec().unwrap(), &b.to_vec().unwrap());
            assert!(err < 1e-6, "{d}: {err}");
        }
    }
}

/// Under autocast, a GPU activation is saved once in f16 (rounded as `half` rounds), however
/// many rules save it; parameters, CPU values and values outside autocast stay f32.
#[test]
fn autocast_saves_gpu_activations_in_f16_once() {
    for d in f16_gpu_devices().into_iter().chain([Device::cpu()]) {
        let x = Var::leaf(random_tensor(&[4, 300], 4, &d));
        let (y, saved) = ag::autocast(true, || {
            let y = ag::relu(&ag::scale(&x, 3.0).unwrap()).unwrap();
            (y.clone(), [y.saved().unwrap(), y.saved().unwrap(), x.saved().unwrap()])
        });
        assert!(matches!(saved[2], MixedTensor::F32(_)), "{d}: a parameter is saved in f32");
        let on_gpu = matches!(d, Device::Gpu(_));
        assert_eq!(saved[0].is_half(), on_gpu, "{d}");
        let want: Vec<f32> = y.value().to_vec().unwrap().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        let got = saved[0].tensor().unwrap().to_vec().unwrap();
        if on_gpu {
            assert_eq!(got, want, "{d}: the f16 copy is the value rounded to f16");
            // One copy: both saves widen to the same values from the same f16 storage.
            let (MixedTensor::F16(a), MixedTensor::F16(b)) = (&saved[0], &saved[1]) else { unreachable!() };
            assert_eq!(a.to_f16_vec().unwrap(), b.to_f16_vec().unwrap());
        }
        assert!(!ag::autocast(false, || y.saved().unwrap().is_half()), "{d}: outside autocast values are saved in f32");
    }
}

/// A small CNN's loss and every gradient under autocast on an f16 adapter (with the loss
/// scaled, as training does) agree with the f32 step within f16 rounding: 3e-3 of each
/// tensor's largest value (f16's step is 4.9e-4), except the weight of the convolution in
/// front of the batch norm, 5e-2: batch norm removes the part of its gradient along the
/// conv's own output, so what is left is a small difference of large sums and the operands'
/// rounding shows larger beside it (2.6e-2 measured on lavapipe). The f32 GPU step matches
/// the CPU's within 1e-4.
#[test]
fn mixed_precision_gradients_match_f32_within_f16_rounding() {
    let x = tessera_tests::random_vec(8 * 3 * 12 * 12, 9);
    let labels: Vec<usize> = (0..8).map(|i| i % 5).collect();
    let cpu = step_gradients(&Device::cpu(), &x, &labels, false);
    for d in f16_gpu_devices() {
        let f32_step = step_gradients(&d, &x, &labels, false);
        let mixed = step_gradients(&d, &x, &labels, true);
        for (((name, want), (_, f)), (_, m)) in cpu.iter().zip(&f32_step).zip(&mixed) {
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
            let dev = |got: &[f32]| got.iter().zip(want).fold(0f32, |a, (p, q)| a.max((p - q).abs())) / scale;
            let bound = if name == "0.weight" { 5e-2 } else { 3e-3 };
            assert!(dev(f) < 1e-4, "{d} f32 {name}: {}", dev(f));
            assert!(dev(m) < bound, "{d} mixed {name}: {}", dev(m));
            assert!(dev(m) > dev(f), "{d} mixed {name}: no further from the CPU than f32, so not f16 arithmetic");
        }
    }
}

/// The loss and every parameter's gradient of one step of a conv–BN–ReLU–pool–linear net.
fn step_gradients(d: &Device, x: &[f32], labels: &[usize], mixed: bool) -> Vec<(String, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(11);
    let same = Conv2dOpts::new(1, 1);
    let net = Sequential::new()
        .with(Conv2d::new(3, 16, 3, same, false, d, &mut rng).unwrap())
        .with(BatchNorm2d::new(16, d).unwrap())
        .with(ReLU)
        .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
        .with(Conv2d::new(16, 8, 3, same, false, d, &mut rng).unwrap())
        .with(ReLU)
        .with(Flatten)
        .with(Linear::new(8 * 6 * 6, 5, true, d, &mut rng).unwrap());
    let input = Var::constant(Tensor::from_vec(x.to_vec(), &[8, 3, 12, 12], d).unwrap());
    let loss = ag::autocast(mixed, || ag::cross_entropy(&net.forward(&input).unwrap(), labels).unwrap());
    // Mixed precision scales the loss (here by 2¹²) so that small gradients keep f16's precision.
    let scale = if mixed { 4096.0 } else { 1.0 };
    loss.backward_seeded(Some(&Tensor::from_vec(vec![scale], &[1], d).unwrap()), &mut |_| {}).unwrap();
    let mut out = vec![("loss".to_string(), loss.value().to_vec().unwrap())];
    for (name, p) in net.named_params() {
        let g = p.grad().expect("every parameter trains").to_vec().unwrap();
        out.push((name, g.iter().map(|v| v / scale).collect()));
    }
    out
}

/// f32 → f16 on every device rounds as IEEE does (the CPU's `half`): beyond ±65504's rounding
/// range to ±inf, NaN to NaN. Mixed precision's overflow check sees a scaled gradient that
/// leaves f16's range only because it becomes inf.
#[test]
fn f16_conversion_overflows_to_infinity_on_every_device() {
    let values = [1.0, -2.5e-8, 65504.0, 65519.0, 65520.0, -70000.0, 1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 3.0e-5];
    for d in devices() {
        let t = Tensor::from_vec(values.to_vec(), &[values.len()], &d).unwrap();
        let got = tessera_engine::HalfTensor::from_tensor(&t).unwrap().to_f16_vec().unwrap();
        for ((v, g), want) in values.iter().zip(&got).zip(values.iter().map(|&v| half::f16::from_f32(v))) {
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{d}: {v} → {g} ({:#06x}), want {want} ({:#06x})",
                g.to_bits(),
                want.to_bits()
            );
        }
    }
}
