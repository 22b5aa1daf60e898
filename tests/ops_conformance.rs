//! Per-op conformance, GPU against CPU, forward and backward, on random shapes: elementwise,
//! reductions, softmax family and cross-entropy. Max relative error ≤ 1e-4 (norm-wise, see
//! tessera_tests::max_rel_err).
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::ops::{self, ConvShape, Labels};
use tessera_engine::{Device, Error, Tensor};
use tessera_tests::{check_against_cpu, gpu_devices, random_tensor};

const TOL: f32 = 1e-4;

fn shapes(seed: u64, count: usize, rank: std::ops::RangeInclusive<usize>) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let r = rng.gen_range(rank.clone());
            (0..r).map(|_| rng.gen_range(1..9)).collect()
        })
        .collect()
}

#[test]
fn elementwise_ops_match() {
    for (i, shape) in shapes(1, 6, 1..=4).into_iter().enumerate() {
        let s = i as u64 * 3;
        check_against_cpu("elementwise", TOL, |d| {
            let (x, y) = (random_tensor(&shape, s, d), random_tensor(&shape, s + 1, d));
            Ok(vec![
                ops::axpby(0.5, &x, -2.0, &y)?,
                ops::add(&x, &y)?,
                ops::scale(&x, 3.0)?,
                ops::mul(&x, &y)?,
                ops::relu(&x)?,
                ops::relu_backward(&x, &y)?,
            ])
        });
        let axis = i % shape.len();
        check_against_cpu("add_channel", TOL, |d| {
            let x = random_tensor(&shape, s, d);
            let b = random_tensor(&[shape[axis]], s + 2, d);
            Ok(vec![ops::add_channel(&x, &b, axis)?])
        });
    }
}

#[test]
fn reductions_and_their_backward_match() {
    let mut rng = StdRng::seed_from_u64(2);
    for (i, shape) in shapes(3, 8, 1..=4).into_iter().enumerate() {
        let axes: Vec<usize> = (0..shape.len()).filter(|_| rng.gen_bool(0.5)).collect();
        let keepdim = i % 2 == 0;
        check_against_cpu("sum/mean", TOL, |d| {
            let x = random_tensor(&shape, i as u64, d);
            let s = ops::sum(&x, &axes, keepdim)?;
            let m = ops::mean(&x, &axes, keepdim)?;
            let back = ops::expand(&s, &shape, &axes, 0.5)?;
            Ok(vec![s, m, back])
        });
    }
    // A large reduction, to catch accumulation differences.
    check_against_cpu("sum 64x4096", 1e-4, |d| Ok(vec![ops::sum(&random_tensor(&[64, 4096], 9, d), &[1], false)?]));
}

#[test]
fn softmax_family_and_cross_entropy_match() {
    for (i, &(rows, cols)) in [(1, 1), (3, 10), (17, 7), (130, 33), (5, 1000)].iter().enumerate() {
        let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + i) % cols).collect();
        check_against_cpu("softmax family", TOL, |d| {
            // Scaled logits exercise the max-subtraction.
            let x = ops::scale(&random_tensor(&[rows, cols], i as u64, d), 20.0)?;
            let g = random_tensor(&[rows, cols], i as u64 + 1, d);
            let y = ops::softmax(&x)?;
            let ly = ops::log_softmax(&x)?;
            let lab = Labels::new(&x, &labels)?;
            let gs = Tensor::from_vec(vec![0.7], &[], d)?;
            Ok(vec![
                ops::softmax_backward(&y, &g)?,
                ops::log_softmax_backward(&ly, &g)?,
                ops::cross_entropy_per_sample(&x, &lab)?,
                ops::cross_entropy_backward(&x, &lab, &gs)?,
                y,
                ly,
            ])
        });
    }
}

#[test]
fn bad_input_names_the_op_and_shapes() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices().into_iter().take(1));
    for d in &devices {
        let x = random_tensor(&[4, 3], 1, d);
        let e = Labels::new(&x, &[0, 1, 3, 2]).err().unwrap().to_string();
        assert!(e.contains("cross_entropy") && e.contains("label 3 at index 2 is out of range for 3 classes"), "{e}");
        let e = Labels::new(&x, &[0, 1]).err().unwrap().to_string();
        assert!(e.contains("2 labels for a batch of 4"), "{e}");
        let e = ops::add(&x, &random_tensor(&[3, 4], 2, d)).unwrap_err();
        assert!(matches!(e, Error::Shape { op: "axpby", .. }) && e.to_string().contains("[4, 3] and [3, 4]"), "{e}");
        let e = ops::add_channel(&x, &random_tensor(&[4], 2, d), 1).unwrap_err().to_string();
        assert!(e.contains("add_channel") && e.contains("expected [3]"), "{e}");
        let e = ops::sum(&x, &[2], false).unwrap_err().to_string();
        assert!(e.contains("sum") && e.contains("axes [2] are invalid for shape [4, 3]"), "{e}");
    }
}

/// Direct convolution, the textbook loop, as the reference for the im2col route.
fn naive_conv2d(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], o: tessera_engine::ops::Conv2dOpts) -> Vec<f32> {
    let s = tessera_engine::ops::ConvShape::new(&xs, &ws, o).unwrap();
    let mut out = vec![0f32; s.out_shape().iter().product()];
    for n in 0..s.n {
        for oc in 0..s.o {
            for oh in 0..s.ho {
                for ow in 0..s.wo {
                    let mut acc = 0f32;
                    for c in 0..s.c {
                        for i in 0..s.kh {
                            for j in 0..s.kw {
                                let y = (oh * o.stride[0] + i * o.dilation[0]) as isize - o.padding[0] as isize;
                                let xx = (ow * o.stride[1] + j * o.dilation[1]) as isize - o.padding[1] as isize;
                                if y >= 0 && (y as usize) < s.h && xx >= 0 && (xx as usize) < s.w {
                                    acc += x[((n * s.c + c) * s.h + y as usize) * s.w + xx as usize]
                                        * w[((oc * s.c + c) * s.kh + i) * s.kw + j];
                                }
                            }
                        }
                    }
                    out[((n * s.o + oc) * s.ho + oh) * s.wo + ow] = acc;
                }
            }
        }
    }
    out
}

fn conv_cases() -> Vec<(tessera_engine::ops::Conv2dOpts, [usize; 4], [usize; 4])> {
    use tessera_engine::ops::Conv2dOpts;
    vec![
        // AlexNet's first layer shape (11×11 stride 4 pad 2) at a small size
        (Conv2dOpts::new(4, 2), [2, 3, 35, 35], [4, 3, 11, 11]),
        // AlexNet's 5×5 pad 2
        (Conv2dOpts::new(1, 2), [2, 4, 9, 9], [5, 4, 5, 5]),
        // ResNet stem 7×7 stride 2 pad 3, 3×3 pad 1, 1×1 stride 2
        (Conv2dOpts::new(2, 3), [1, 3, 20, 18], [4, 3, 7, 7]),
        (Conv2dOpts::new(1, 1), [3, 5, 8, 8], [6, 5, 3, 3]),
        (Conv2dOpts::new(2, 0), [2, 6, 9, 9], [8, 6, 1, 1]),
        // pointwise 1×1 (the CPU route multiplies the image itself), an odd batch across threads
        (Conv2dOpts::new(1, 0), [5, 6, 4, 4], [7, 6, 1, 1]),
        (Conv2dOpts::new(1, 1), [5, 3, 6, 5], [4, 3, 3, 3]),
        // padding wider than the input: whole taps fall outside it
        (Conv2dOpts::new(1, 2), [2, 2, 1, 3], [3, 2, 5, 5]),
        (Conv2dOpts { stride: [2, 1], padding: [1, 2], dilation: [2, 3] }, [1, 2, 11, 13], [3, 2, 3, 3]),
    ]
}

#[test]
fn conv2d_matches_direct_convolution_on_cpu() {
    let cpu = Device::cpu();
    for (i, (o, xs, ws)) in conv_cases().into_iter().enumerate() {
        let (x, w) = (random_tensor(&xs, i as u64, &cpu), random_tensor(&ws, i as u64 + 50, &cpu));
        let got = ops::conv2d(&x, &w, None, o).unwrap().to_vec().unwrap();
        let want = naive_conv2d(&x.to_vec().unwrap(), xs, &w.to_vec().unwrap(), ws, o);
        let err = tessera_tests::max_rel_err(&got, &want);
        assert!(err < 1e-5, "case {i}: {err:e}");
        // Each gradient alone equals the one computed beside the other.
        let g = random_tensor(&ConvShape::new(&xs, &ws, o).unwrap().out_shape(), i as u64 + 70, &cpu);
        let (dx, dw) = ops::conv2d_backward(&x, &w, &g, o, true, true).unwrap();
        let (dx_only, none) = ops::conv2d_backward(&x, &w, &g, o, true, false).unwrap();
        let (none2, dw_only) = ops::conv2d_backward(&x, &w, &g, o, false, true).unwrap();
        assert!(none.is_none() && none2.is_none());
        assert_eq!(dx.unwrap().to_vec().unwrap(), dx_only.unwrap().to_vec().unwrap(), "case {i}: dx");
        assert_eq!(dw.unwrap().to_vec().unwrap(), dw_only.unwrap().to_vec().unwrap(), "case {i}: dw");
    }
}

#[test]
fn conv2d_forward_and_backward_match() {
    for (i, (o, xs, ws)) in conv_cases().into_iter().enumerate() {
        check_against_cpu("conv2d", TOL, |d| {
            let (x, w) = (random_tensor(&xs, i as u64, d), random_tensor(&ws, i as u64 + 50, d));
            let b = random_tensor(&[ws[0]], i as u64 + 60, d);
            let y = ops::conv2d(&x, &w, Some(&b), o)?;
            let g = random_tensor(y.shape(), i as u64 + 70, d);
            let (dx, dw) = ops::conv2d_backward(&x, &w, &g, o, true, true)?;
            Ok(vec![y, dx.unwrap(), dw.unwrap(), ops::conv2d::conv2d_bias_backward(&g)?])
        });
    }
}

#[test]
fn conv2d_bad_input_names_op_and_shapes() {
    use tessera_engine::ops::Conv2dOpts;
    let cpu = Device::cpu();
    let w = random_tensor(&[4, 3, 3, 3], 1, &cpu);
    let e = ops::conv2d(&random_tensor(&[3, 8, 8], 1, &cpu), &w, None, Conv2dOpts::default()).unwrap_err().to_string();
    assert!(e.contains("conv2d") && e.contains("input must be 4-D [N, C, H, W], got [3, 8, 8]"), "{e}");
    let e = ops::conv2d(&random_tensor(&[1, 2, 8, 8], 1, &cpu), &w, None, Conv2dOpts::default()).unwrap_err().to_string();
    assert!(e.contains("input has 2 channels but weight [4, 3, 3, 3] expects 3"), "{e}");
    let e = ops::conv2d(&random_tensor(&[1, 3, 2, 2], 1, &cpu), &w, None, Conv2dOpts::default()).unwrap_err().to_string();
    assert!(e.contains("larger than the padded input [1, 3, 2, 2]"), "{e}");
}

#[test]
fn pooling_forward_and_backward_match() {
    use tessera_engine::ops::{pool_backward, pool_forward, PoolKind, PoolShape};
    type MakeShape = Box<dyn Fn(&[usize]) -> tessera_engine::Result<PoolShape>>;
    let cases: Vec<(&str, [usize; 4], MakeShape)> = vec![
        ("max 3/2/1 (ResNet stem)", [2, 3, 11, 10], Box::new(|x| PoolShape::window(PoolKind::Max, x, [3, 3], [2, 2], [1, 1]))),
        ("max 3/2/0 (AlexNet)", [1, 4, 13, 13], Box::new(|x| PoolShape::window(PoolKind::Max, x, [3, 3], [2, 2], [0, 0]))),
        ("max 2/2", [3, 2, 8, 6], Box::new(|x| PoolShape::window(PoolKind::Max, x, [2, 2], [2, 2], [0, 0]))),
        ("avg 3/2/1", [2, 3, 9, 7], Box::new(|x| PoolShape::window(PoolKind::Avg, x, [3, 3], [2, 2], [1, 1]))),
        ("adaptive 1x1", [2, 5, 7, 7], Box::new(|x| PoolShape::adaptive(x, [1, 1]))),
        ("adaptive 6x6 (AlexNet)", [1, 3, 13, 13], Box::new(|x| PoolShape::adaptive(x, [6, 6]))),
        ("adaptive 6x6 upsampling", [1, 2, 4, 5], Box::new(|x| PoolShape::adaptive(x, [6, 6]))),
    ];
    for (i, (name, xs, make)) in cases.into_iter().enumerate() {
        let s = make(&xs).unwrap();
        check_against_cpu(name, TOL, |d| {
            let x = random_tensor(&xs, i as u64, d);
            let y = pool_forward(&x, &s)?;
            let g = random_tensor(y.shape(), i as u64 + 9, d);
            Ok(vec![pool_backward(&x, &g, &s)?, y])
        });
    }
}

#[test]
fn max_pool_matches_hand_computed_values() {
    use tessera_engine::ops::{pool_backward, pool_forward, PoolKind, PoolShape};
    let cpu = Device::cpu();
    let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4], &cpu).unwrap();
    let s = PoolShape::window(PoolKind::Max, x.shape(), [2, 2], [2, 2], [0, 0]).unwrap();
    assert_eq!(pool_forward(&x, &s).unwrap().to_vec().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    let g = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], &cpu).unwrap();
    let dx = pool_backward(&x, &g, &s).unwrap().to_vec().unwrap();
    assert_eq!((dx[5], dx[7], dx[13], dx[15], dx.iter().sum::<f32>()), (1.0, 2.0, 3.0, 4.0, 10.0));
    let e = PoolShape::window(PoolKind::Max, &[4, 4], [2, 2], [2, 2], [0, 0]).unwrap_err().to_string();
    assert!(e.contains("max_pool2d") && e.contains("[4, 4]"), "{e}");
}

#[test]
fn batch_norm_forward_and_backward_match() {
    use tessera_engine::ops::{batch_norm_backward, batch_norm_forward, batch_stats};
    for (i, xs) in [[4usize, 3, 5, 5], [2, 16, 7, 3], [8, 2, 1, 1]].into_iter().enumerate() {
        for training in [true, false] {
            check_against_cpu("batch_norm2d", TOL, |d| {
                // An offset and scale per tensor, so the statistics are not trivially 0 and 1.
                let x = ops::add_channel(&ops::scale(&random_tensor(&xs, i as u64, d), 3.0)?, &random_tensor(&[xs[1]], 5, d), 1)?;
                let (gamma, beta) = (random_tensor(&[xs[1]], 6, d), random_tensor(&[xs[1]], 7, d));
                let (mean, var) = batch_stats(&x)?;
                let var = if training { var } else { ops::add(&ops::scale(&var, 0.5)?, &ops::relu(&gamma)?)? };
                let y = batch_norm_forward(&x, &mean, &var, &gamma, &beta, 1e-5)?;
                let g = random_tensor(&xs, 8, d);
                let (dx, dgamma, dbeta) = batch_norm_backward(&x, &g, &mean, &var, &gamma, 1e-5, training, true, true)?;
                Ok(vec![mean, var, y, dx.unwrap(), dgamma.unwrap(), dbeta.unwrap()])
            });
        }
    }
}

#[test]
fn dropout_concat_narrow_match() {
    for (i, shape) in shapes(11, 5, 1..=3).into_iter().enumerate() {
        let axis = i % shape.len();
        check_against_cpu("dropout/concat/narrow", TOL, |d| {
            let x = random_tensor(&shape, i as u64, d);
            let mut other = shape.clone();
            other[axis] += 2;
            let y = random_tensor(&other, i as u64 + 1, d);
            let joined = ops::concat(&x, &y, axis)?;
            let back = ops::narrow(&joined, axis, shape[axis], other[axis])?;
            Ok(vec![ops::dropout(&x, 0.5, 7 + i as u32)?, joined, back])
        });
    }
    // The mask keeps about 1 − p of the values and scales them by 1/(1 − p).
    let cpu = Device::cpu();
    let ones = Tensor::from_vec(vec![1.0; 100_000], &[100_000], &cpu).unwrap();
    let kept = ops::dropout(&ones, 0.3, 1).unwrap().to_vec().unwrap();
    let frac = kept.iter().filter(|&&v| v != 0.0).count() as f32 / 1e5;
    assert!((frac - 0.7).abs() < 0.01, "kept {frac}");
    assert!(kept.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert!(ops::dropout(&ones, 1.0, 1).unwrap_err().to_string().contains("dropout"));
}
