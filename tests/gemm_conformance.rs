//! GEMM conformance: every GPU kernel variant on every adapter against the CPU backend
//! (OpenBLAS), for shapes built from M, N, K ∈ {1, 7, 33, 127, 1000}, all four transpose
//! combinations, batched (with and without broadcasting) and not, with and without C.
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::ops::gemm::{gemm_with_kernel, kernel_supported, GemmOpts};
use tessera_engine::{ops, Device, Error, Tensor};
use tessera_shaders::gemm::VARIANTS;
use tessera_tests::{gpu_devices, max_rel_err, random_vec};

const DIMS: [usize; 5] = [1, 7, 33, 127, 1000];
const TOLERANCE: f32 = 1e-4;

/// (m, n, k): each value of DIMS in each role once, the other two drawn at random, keeping
/// lavapipe's work per case small.
fn cases() -> Vec<(usize, usize, usize)> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    for role in 0..3 {
        for &v in &DIMS {
            loop {
                let mut d = [DIMS[rng.gen_range(0..5)], DIMS[rng.gen_range(0..5)], DIMS[rng.gen_range(0..5)]];
                d[role] = v;
                if d.iter().product::<usize>() <= 4_000_000 {
                    out.push((d[0], d[1], d[2]));
                    break;
                }
            }
        }
    }
    out
}

fn stored(rows: usize, cols: usize, trans: bool) -> [usize; 2] {
    if trans {
        [cols, rows]
    } else {
        [rows, cols]
    }
}

struct Case {
    a: (Vec<f32>, Vec<usize>),
    b: (Vec<f32>, Vec<usize>),
    c: Option<(Vec<f32>, Vec<usize>)>,
    opts: GemmOpts,
}

fn make_case(i: usize, (m, n, k): (usize, usize, usize), ta: bool, tb: bool, batch: Option<usize>) -> Case {
    let seed = i as u64 * 10;
    // Batched cases alternate broadcasting B (2-D) and C ([M, N]) over the batch.
    let batch_a = batch;
    let batch_b = batch.filter(|_| i.is_multiple_of(2));
    let with_c = !i.is_multiple_of(3);
    let shape = |bt: Option<usize>, rc: [usize; 2]| -> Vec<usize> { bt.into_iter().chain(rc).collect() };
    let a_shape = shape(batch_a, stored(m, k, ta));
    let b_shape = shape(batch_b, stored(k, n, tb));
    let c_shape = shape(batch.filter(|_| i % 4 != 1), [m, n]);
    let len = |s: &[usize]| s.iter().product::<usize>();
    Case {
        a: (random_vec(len(&a_shape), seed), a_shape),
        b: (random_vec(len(&b_shape), seed + 1), b_shape),
        c: with_c.then(|| (random_vec(len(&c_shape), seed + 2), c_shape)),
        opts: GemmOpts { trans_a: ta, trans_b: tb, alpha: if with_c { 0.75 } else { 1.0 }, beta: if with_c { -0.5 } else { 0.0 } },
    }
}

fn upload(c: &Case, dev: &Device) -> (Tensor, Tensor, Option<Tensor>) {
    let t = |(d, s): &(Vec<f32>, Vec<usize>)| Tensor::from_vec(d.clone(), s, dev).unwrap();
    (t(&c.a), t(&c.b), c.c.as_ref().map(t))
}

#[test]
fn gpu_gemm_matches_cpu_for_all_shapes_transposes_and_batching() {
    let cpu = Device::cpu();
    let gpus = gpu_devices();
    let mut checked = 0;
    for (i, dims) in cases().into_iter().enumerate() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let batch = (i % 2 == 1).then_some(3);
            let case = make_case(i, dims, ta, tb, batch);
            let (a, b, c) = upload(&case, &cpu);
            let want = ops::gemm(&a, &b, c.as_ref(), case.opts).unwrap();
            for gpu in &gpus {
                let (a, b, c) = upload(&case, gpu);
                for variant in VARIANTS.iter().filter(|v| kernel_supported(gpu, v)) {
                    let got = gemm_with_kernel(variant, &a, &b, c.as_ref(), case.opts).unwrap();
                    assert_eq!(got.shape(), want.shape());
                    let err = max_rel_err(&got.to_vec().unwrap(), &want.to_vec().unwrap());
                    assert!(
                        err <= TOLERANCE,
                        "{} on {gpu}: dims {dims:?} trans ({ta},{tb}) batch {batch:?} C {}: max rel err {err:e}",
                        variant.kernel.entry,
                        c.is_some()
                    );
                    checked += 1;
                }
            }
        }
    }
    println!("checked {checked} GPU GEMMs against OpenBLAS");
}

/// f16 storage: every f16 kernel on every adapter (unsupported ones must say so) against the
/// CPU on the same f16 operands, and the f16 values equal the host's rounding of the f32 ones.
#[test]
fn f16_storage_gemm_matches_cpu_and_rounds_like_the_host() {
    use half::f16;
    use tessera_engine::ops::gemm::{gemm_f16, gemm_f16_with_kernel};
    use tessera_engine::HalfTensor;
    use tessera_shaders::gemm::HALF_VARIANTS;
    let cpu = Device::cpu();
    let half = |(d, s): &(Vec<f32>, Vec<usize>), dev: &Device| HalfTensor::from_f16_vec(d.iter().map(|&v| f16::from_f32(v)).collect(), s, dev).unwrap();
    let mut ran = 0;
    for (i, dims) in cases().into_iter().enumerate().step_by(2) {
        let (ta, tb) = (i % 4 == 0, i % 3 == 0);
        let case = make_case(i, dims, ta, tb, (i % 4 == 2).then_some(2));
        let c_cpu = case.c.as_ref().map(|(d, s)| Tensor::from_vec(d.clone(), s, &cpu).unwrap());
        let want = gemm_f16(&half(&case.a, &cpu), &half(&case.b, &cpu), c_cpu.as_ref(), case.opts).unwrap().to_vec().unwrap();
        // The f16 result is the f32 product of the rounded operands: within f16 rounding of f32's.
        let (a32, b32, c32) = upload(&case, &cpu);
        let exact = ops::gemm(&a32, &b32, c32.as_ref(), case.opts).unwrap().to_vec().unwrap();
        assert!(max_rel_err(&want, &exact) < 5e-3, "dims {dims:?}: f16 rounding error too large");
        for gpu in &gpu_devices() {
            let (a, b) = (half(&case.a, gpu), half(&case.b, gpu));
            let c = case.c.as_ref().map(|(d, s)| Tensor::from_vec(d.clone(), s, gpu).unwrap());
            for variant in HALF_VARIANTS {
                match gemm_f16_with_kernel(variant, &a, &b, c.as_ref(), case.opts) {
                    Ok(got) => {
                        let err = max_rel_err(&got.to_vec().unwrap(), &want);
                        assert!(err <= TOLERANCE, "{} on {gpu}: dims {dims:?}: max rel err {err:e}", variant.kernel.shader.file);
                        ran += 1;
                    }
                    Err(Error::Unsupported { detail, .. }) => assert!(!kernel_supported(gpu, variant), "{detail}"),
                    Err(e) => panic!("{} on {gpu}: {e}", variant.kernel.shader.file),
                }
            }
            // On-device rounding (pack2x16float) against the host's round-to-nearest-even.
            let (values, shape) = &case.a;
            let t = Tensor::from_vec(values.clone(), shape, gpu).unwrap();
            if let Ok(packed) = HalfTensor::from_tensor(&t) {
                let host: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
                let got = packed.to_f16_vec().unwrap();
                let off = got.iter().zip(&host).filter(|(g, h)| g != h).count();
                assert!(off * 100 <= host.len(), "{gpu}: {off} of {} values round differently", host.len());
                let back = packed.to_tensor().unwrap().to_vec().unwrap();
                assert!(max_rel_err(&back, values) < 1e-3, "{gpu}: f16 round trip");
            }
        }
    }
    println!("checked {ran} f16-storage GEMMs on GPUs");
}

#[test]
fn cpu_gemm_matches_a_naive_reference() {
    let cpu = Device::cpu();
    let (m, n, k) = (5, 4, 3);
    let a = random_vec(k * m, 1); // stored transposed: [K, M]
    let b = random_vec(n * k, 2); // stored transposed: [N, K]
    let c = random_vec(m * n, 3);
    let mut want = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f32 = (0..k).map(|l| a[l * m + i] * b[j * k + l]).sum();
            want[i * n + j] = 2.0 * dot + 0.5 * c[i * n + j];
        }
    }
    let t = |d: &[f32], s: &[usize]| Tensor::from_vec(d.to_vec(), s, &cpu).unwrap();
    let opts = GemmOpts { trans_a: true, trans_b: true, alpha: 2.0, beta: 0.5 };
    let got = ops::gemm(&t(&a, &[k, m]), &t(&b, &[n, k]), Some(&t(&c, &[m, n])), opts).unwrap();
    assert!(max_rel_err(&got.to_vec().unwrap(), &want) < 1e-6);
}

#[test]
fn bad_input_gives_clear_errors() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices().into_iter().take(1));
    for dev in &devices {
        let a = Tensor::zeros(&[3, 5], dev).unwrap();
        let b = Tensor::zeros(&[6, 7], dev).unwrap();
        let err = ops::matmul(&a, &b).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        assert!(err.to_string().contains("inner dimensions differ"), "{err}");
    }
    let err = Device::parse("gpu:banana").unwrap_err().to_string();
    assert!(err.contains("unknown device `gpu:banana`"), "{err}");
    if let Some(gpu) = gpu_devices().into_iter().next() {
        // A 40000×40000 product needs 6.4 GB, more than any one buffer the adapter allows.
        let a = Tensor::zeros(&[40_000, 1], &gpu).unwrap();
        let b = Tensor::zeros(&[1, 40_000], &gpu).unwrap();
        let err = ops::matmul(&a, &b).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("does not fit in one buffer"), "{err}");
        let cpu_a = Tensor::zeros(&[2, 2], &Device::cpu()).unwrap();
        let err = ops::matmul(&cpu_a, &Tensor::zeros(&[2, 2], &gpu).unwrap()).unwrap_err();
        assert!(matches!(err, Error::DeviceMismatch { .. }), "{err}");
    }
}
