//! Per-op conformance: the suite of `tessera check` (tessera_engine::conformance: every op,
//! forward and backward, GPU against CPU, max relative error ≤ 1e-4 norm-wise) on every
//! adapter, plus CPU references the suite cannot give: direct convolution, hand-computed
//! pooling, dropout statistics, and the errors bad input gets.
use tessera_engine::conformance::{self, Verdict};
use tessera_engine::ops::{self, ConvShape, Labels};
use tessera_engine::{Device, Error, Tensor};
use tessera_tests::{gpu_devices, random_tensor};

#[test]
fn the_conformance_suite_passes_on_every_adapter() {
    let gpus = gpu_devices();
    let report = conformance::check(&conformance::suite(), &gpus, |_| {});
    assert!(report.passed(), "failures:\n{}", report.failures().join("\n"));
    // Every op runs everywhere except kernels that need a feature the adapter lacks.
    for cell in &report.cells {
        if let Verdict::Unsupported(why) = &cell.verdict {
            let by_design = cell.op.contains("gemm_sg32x8") || cell.op.starts_with("gemm_f16 native");
            assert!(by_design, "{} unsupported on {}: {why}", cell.op, cell.device);
        }
    }
    let ops = report.ops.len();
    assert!(ops >= 30, "{ops} ops in the suite");
}

#[test]
fn an_op_beyond_the_adapters_binding_limit_runs_in_windows() {
    let gpus = gpu_devices();
    let Some(gpu) = gpus.first() else { return };
    let Device::Gpu(backend) = gpu else { unreachable!() };
    // A few thousand values more than the largest window one kernel may bind (128 MiB on
    // lavapipe), where this case used to be reported unsupported.
    let n = (backend.max_binding_bytes() / 4) as usize + 5000;
    let big = conformance::Case::new("relu", format!("[{n}]"), 0.0, move |d| {
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        Ok(vec![ops::relu(&Tensor::from_vec(x, &[n], d)?)?])
    });
    let report = conformance::check(&[big], std::slice::from_ref(gpu), |_| {});
    assert!(report.passed(), "{:?}", report.cells[0].verdict);
    assert!(matches!(report.cells[0].verdict, Verdict::Pass { .. }), "{:?}", report.cells[0].verdict);
}

/// Every op family has rows for tensors several times the binding limit (run under a
/// lowered limit on GPUs, `conformance::BIG_BINDING_LIMIT`); the suite test above runs them
/// on every adapter.
#[test]
fn every_op_family_has_rows_beyond_a_binding() {
    let rows: Vec<String> = conformance::suite().iter().filter(|c| c.op.ends_with("(beyond a binding)")).map(|c| c.op.clone()).collect();
    for family in [
        "gemm",
        "gemm_f16",
        "f16 round trip",
        "concat",
        "axpby",
        "add_channel",
        "dropout",
        "sum / mean",
        "expand",
        "narrow",
        "softmax",
        "cross_entropy",
        "max_pool2d",
        "avg_pool2d",
        "adaptive_avg_pool2d",
        "conv2d",
        "conv2d of one image",
        "conv2d of one image, mixed precision",
        "batch_norm2d",
        "sgd_step",
        "adamw_step",
        "step_guard",
    ] {
        assert!(rows.iter().any(|r| r.contains(family)), "no row beyond a binding for {family}: {rows:?}");
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
                                    acc += x[((n * s.c + c) * s.h + y as usize) * s.w + xx as usize] * w[((oc * s.c + c) * s.kh + i) * s.kw + j];
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

#[test]
fn conv2d_matches_direct_convolution_on_cpu() {
    let cpu = Device::cpu();
    for (i, (o, xs, ws)) in conformance::conv_shapes().into_iter().enumerate() {
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
fn dropout_keeps_one_minus_p_and_rescales() {
    // The mask keeps about 1 − p of the values and scales them by 1/(1 − p).
    let cpu = Device::cpu();
    let ones = Tensor::from_vec(vec![1.0; 100_000], &[100_000], &cpu).unwrap();
    let kept = ops::dropout(&ones, 0.3, 1).unwrap().to_vec().unwrap();
    let frac = kept.iter().filter(|&&v| v != 0.0).count() as f32 / 1e5;
    assert!((frac - 0.7).abs() < 0.01, "kept {frac}");
    assert!(kept.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert!(ops::dropout(&ones, 1.0, 1).unwrap_err().to_string().contains("dropout"));
}
