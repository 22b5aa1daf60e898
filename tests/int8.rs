//! Post-training int8 inference (ops/int8.rs, shaders/wgsl/int8_*.wgsl): the CPU twin and the
//! GPU's `dot4I8Packed` kernels against the dequantised f32 reference — the f32 conv of the
//! quantised-then-dequantised input and weights. Both sum the same products; int8 does it
//! exactly in i32, f32 with rounding, so the documented bound is 1e-4 of the largest output
//! magnitude (the f32 sums' rounding at these sizes is ~1e-6). And the int8 output stays near
//! the unquantised f32 one (relative RMS under 2 %): the scales are applied, not just stored.
use tessera_engine::ops::int8::{conv2d_int8, linear_int8, quantize, scale_for, Int8Weights};
use tessera_engine::ops::{add_channel, conv2d, Conv2dOpts};
use tessera_engine::{Device, Tensor};
use tessera_tests::{gpu_devices, random_vec};

const BOUND: f32 = 1e-4;

/// (input shape, weight shape, stride, padding)
const CASES: &[([usize; 4], [usize; 4], usize, usize)] =
    &[([2, 3, 9, 7], [5, 3, 3, 3], 1, 1), ([1, 6, 8, 8], [8, 6, 3, 3], 2, 1), ([2, 16, 5, 5], [4, 16, 1, 1], 1, 0), ([1, 5, 11, 11], [3, 5, 5, 5], 2, 2)];

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The f32 conv of the dequantised operands, plus bias.
fn reference(x: &[f32], xs: &[usize], w: &Int8Weights, bias: &[f32], opts: Conv2dOpts) -> Vec<f32> {
    let cpu = Device::cpu();
    let sa = w.input_scale();
    let xd: Vec<f32> = x.iter().map(|&v| quantize(v, 1.0 / sa) as f32 * sa).collect();
    let shape4 = if w.shape().len() == 2 { vec![w.shape()[0], w.shape()[1], 1, 1] } else { w.shape().to_vec() };
    let wd = Tensor::from_vec(w.dequantized(), &shape4, &cpu).unwrap();
    let y = conv2d(&Tensor::from_vec(xd, xs, &cpu).unwrap(), &wd, None, opts).unwrap();
    add_channel(&y, &Tensor::from_vec(bias.to_vec(), &[bias.len()], &cpu).unwrap(), 1).unwrap().to_vec().unwrap()
}

fn check(what: &str, got: &[f32], want: &[f32], exact_f32: &[f32]) {
    let scale = max_abs(want).max(1e-6);
    let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
    assert!(worst <= BOUND, "{what}: int8 differs from the dequantised reference by {worst:e} of its range (bound {BOUND:e})");
    let rms = |v: Vec<f32>| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let rel = rms(got.iter().zip(exact_f32).map(|(a, b)| a - b).collect()) / rms(exact_f32.to_vec());
    assert!(rel < 0.02, "{what}: int8 is {:.2} % (RMS) from the unquantised f32 conv", rel * 100.0);
}

#[test]
fn int8_conv_matches_the_dequantised_reference_on_cpu_and_every_gpu() {
    let cpu = Device::cpu();
    for (i, &(xs, ws, stride, pad)) in CASES.iter().enumerate() {
        let opts = Conv2dOpts::new(stride, pad);
        let x = random_vec(xs.iter().product(), 10 + i as u64);
        let wv = random_vec(ws.iter().product(), 20 + i as u64);
        let bias = random_vec(ws[0], 30 + i as u64);
        let input_scale = scale_for(max_abs(&x));
        let wt = Tensor::from_vec(wv.clone(), &ws, &cpu).unwrap();
        let bt = Tensor::from_vec(bias.clone(), &[ws[0]], &cpu).unwrap();
        let w_cpu = Int8Weights::quantize(&wt, Some(&bt), input_scale).unwrap();
        let want = reference(&x, &xs, &w_cpu, &bias, opts);
        let exact = conv2d(&Tensor::from_vec(x.clone(), &xs, &cpu).unwrap(), &wt, Some(&bt), opts).unwrap().to_vec().unwrap();
        let got = conv2d_int8(&Tensor::from_vec(x.clone(), &xs, &cpu).unwrap(), &w_cpu, opts).unwrap();
        assert_eq!(got.shape(), &[xs[0], ws[0], (xs[2] + 2 * pad - ws[2]) / stride + 1, (xs[3] + 2 * pad - ws[3]) / stride + 1]);
        let got = got.to_vec().unwrap();
        check(&format!("case {i} on cpu"), &got, &want, &exact);
        for dev in gpu_devices() {
            let w = Int8Weights::new(w_cpu.values().to_vec(), &ws, w_cpu.weight_scale().to_vec(), input_scale, bias.clone(), &dev).unwrap();
            let y = conv2d_int8(&Tensor::from_vec(x.clone(), &xs, &dev).unwrap(), &w, opts).unwrap().to_vec().unwrap();
            check(&format!("case {i} on {dev}"), &y, &want, &exact);
            // Same integers, same scales: the devices agree to the last rounding of the scale.
            let worst = y.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / max_abs(&got);
            assert!(worst < 1e-6, "case {i}: {dev} and cpu differ by {worst:e}");
        }
    }
}

#[test]
fn int8_linear_matches_the_dequantised_reference() {
    let cpu = Device::cpu();
    let (n, k, o) = (3, 10, 7);
    let x = random_vec(n * k, 1);
    let wt = Tensor::from_vec(random_vec(o * k, 2), &[o, k], &cpu).unwrap();
    let bias = random_vec(o, 3);
    let bt = Tensor::from_vec(bias.clone(), &[o], &cpu).unwrap();
    let w = Int8Weights::quantize(&wt, Some(&bt), scale_for(max_abs(&x))).unwrap();
    let want = reference(&x, &[n, k, 1, 1], &w, &bias, Conv2dOpts::default());
    let exact = tessera_engine::autograd::no_grad(|| {
        let xv = tessera_engine::Var::constant(Tensor::from_vec(x.clone(), &[n, k], &cpu).unwrap());
        tessera_engine::autograd::linear(&xv, &tessera_engine::Var::constant(wt.clone()), Some(&tessera_engine::Var::constant(bt.clone()))).unwrap()
    });
    for dev in std::iter::once(cpu.clone()).chain(gpu_devices()) {
        let wd = Int8Weights::new(w.values().to_vec(), &[o, k], w.weight_scale().to_vec(), w.input_scale(), bias.clone(), &dev).unwrap();
        let y = linear_int8(&Tensor::from_vec(x.clone(), &[n, k], &dev).unwrap(), &wd).unwrap();
        assert_eq!(y.shape(), &[n, o]);
        check(&format!("linear on {dev}"), &y.to_vec().unwrap(), &want, &exact.value().to_vec().unwrap());
    }
}

#[test]
fn bad_int8_weights_are_refused_not_panicked() {
    let cpu = Device::cpu();
    assert!(Int8Weights::new(vec![1; 5], &[2, 3], vec![1.0; 2], 1.0, vec![0.0; 2], &cpu).is_err());
    assert!(Int8Weights::new(vec![1; 6], &[2, 3], vec![1.0; 2], 0.0, vec![0.0; 2], &cpu).is_err());
    assert!(Int8Weights::new(vec![1; 6], &[2, 3], vec![1.0; 3], 1.0, vec![0.0; 2], &cpu).is_err());
    let w = Int8Weights::new(vec![1; 6], &[2, 3], vec![1.0; 2], 1.0, vec![0.0; 2], &cpu).unwrap();
    assert!(linear_int8(&Tensor::zeros(&[4, 5], &cpu).unwrap(), &w).is_err());
}
