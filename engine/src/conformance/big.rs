//! Rows of the suite for tensors bigger than one storage binding. On a GPU each case reopens
//! the adapter with its binding limit lowered to [`BIG_BINDING_LIMIT`], so shapes of a few
//! hundred KB are several times the limit and every op family runs its split path (windows
//! of values, rows, planes or images; GEMM blocks) — the path that takes AlexNet's 151 MB fc6
//! weight through lavapipe's 128 MiB limit. On the CPU the same shapes are the reference.
use super::{random_tensor, Case, TOLERANCE};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::ops::{self, AdamWHyper, Conv2dOpts, GemmOpts, Labels, PoolKind, PoolShape, SgdHyper};
use crate::tensor::Tensor;
use crate::tensor_f16::HalfTensor;

/// The binding limit the big rows run under on GPUs: 64 KiB (16 384 f32 values).
pub const BIG_BINDING_LIMIT: u64 = 64 << 10;

/// The device a big case runs on: a GPU's adapter with the lowered binding limit.
fn lowered(d: &Device) -> Result<Device> {
    match d {
        Device::Cpu(_) => Ok(d.clone()),
        Device::Gpu(gpu) => Device::gpu_with_binding_limit(gpu.summary.index, BIG_BINDING_LIMIT),
    }
}

/// A random tensor at least three times the lowered limit (an error otherwise, so a case
/// cannot silently stop testing anything).
fn big(shape: &[usize], seed: u64, d: &Device) -> Result<Tensor> {
    let t = random_tensor(shape, seed, d)?;
    if 4 * t.numel() as u64 <= 3 * BIG_BINDING_LIMIT {
        return Err(shape_err("big tensor case", format!("{shape:?} is not several times the {BIG_BINDING_LIMIT}-byte limit")));
    }
    Ok(t)
}

/// A case of `op` run on the lowered device.
fn big_case(op: &str, shape: &str, tol: f32, run: impl Fn(&Device) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Case {
    Case::new(&format!("{op} (beyond a binding)"), format!("{shape}, {} KiB binding limit", BIG_BINDING_LIMIT >> 10), tol, move |d| run(&lowered(d)?))
}

pub(super) fn big_cases(cases: &mut Vec<Case>) {
    gemm(cases);
    elementwise(cases);
    reductions(cases);
    softmax(cases);
    conv_and_pool(cases);
    batch_norm(cases);
    optimizers(cases);
}

fn gemm(cases: &mut Vec<Case>) {
    let nn = GemmOpts::default();
    let nt = GemmOpts { trans_b: true, ..nn };
    let tn = GemmOpts { trans_a: true, ..nn };
    // A linear layer's forward with a big weight (x·Wᵀ), its weight gradient (gᵀ·x: a big
    // result), its input gradient (g·W: big B read in K slices), a big A with C, and a big
    // batched product with C.
    type Product = ([usize; 3], [usize; 3], GemmOpts, Option<[usize; 3]>);
    let products: [Product; 5] = [
        ([0, 5, 300], [0, 250, 300], nt, None),
        ([0, 6, 250], [0, 6, 300], tn, None),
        ([0, 5, 250], [0, 250, 300], nn, None),
        ([0, 300, 200], [0, 200, 9], GemmOpts { alpha: 0.5, beta: -1.0, ..nn }, Some([0, 300, 9])),
        ([3, 120, 150], [3, 150, 130], GemmOpts { alpha: 0.5, beta: 2.0, ..nn }, Some([3, 120, 130])),
    ];
    for (i, (a, b, o, c)) in products.into_iter().enumerate() {
        let dims = |s: [usize; 3]| if s[0] == 0 { s[1..].to_vec() } else { s.to_vec() };
        let shape = format!("A {:?} B {:?} trans=({},{}) C {:?}", dims(a), dims(b), o.trans_a, o.trans_b, c.map(dims));
        let what = shape.clone();
        cases.push(big_case("gemm", &shape, TOLERANCE, move |d| {
            let (at, bt) = (random_tensor(&dims(a), 10 + i as u64, d)?, random_tensor(&dims(b), 20 + i as u64, d)?);
            let ct = c.map(|c| random_tensor(&dims(c), 30 + i as u64, d)).transpose()?;
            let out = ops::gemm(&at, &bt, ct.as_ref(), o)?;
            if [at.numel(), bt.numel(), out.numel()].iter().all(|&n| 4 * n as u64 <= 2 * BIG_BINDING_LIMIT) {
                return Err(shape_err("gemm", format!("case {what} has nothing big")));
            }
            Ok(vec![out])
        }));
    }
    // The f16-storage products of mixed precision, with operands in f16 windows (native f16
    // where the adapter has SHADER_F16, packed words elsewhere).
    for (i, (a, b, o, _)) in products.into_iter().enumerate().filter(|(_, p)| p.3.is_none()) {
        let shape = format!("A {:?} B {:?} trans=({},{}) in f16", &a[1..], &b[1..], o.trans_a, o.trans_b);
        cases.push(big_case("gemm_f16", &shape, TOLERANCE, move |d| {
            let half = |s: [usize; 3], seed| HalfTensor::from_tensor(&random_tensor(&s[1..], seed, d)?);
            let (at, bt) = (half(a, 10 + i as u64)?, half(b, 20 + i as u64)?);
            Ok(vec![ops::gemm::gemm_f16(&at, &bt, None, o)?])
        }));
    }
}

fn elementwise(cases: &mut Vec<Case>) {
    let shape = [7, 10_001];
    let name = format!("{shape:?}");
    cases.push(big_case("axpby / mul / relu", &name, 1e-6, move |d| {
        let (x, y) = (big(&shape, 1, d)?, big(&shape, 2, d)?);
        Ok(vec![ops::axpby(0.5, &x, -2.0, &y)?, ops::mul(&x, &y)?, ops::relu(&x)?, ops::relu_backward(&x, &y)?])
    }));
    cases.push(big_case("add_channel", &format!("{name} axes 0 and 1"), 1e-6, move |d| {
        let x = big(&shape, 1, d)?;
        Ok(vec![ops::add_channel(&x, &random_tensor(&[shape[1]], 3, d)?, 1)?, ops::add_channel(&x, &random_tensor(&[shape[0]], 4, d)?, 0)?])
    }));
    // An odd count: the last f16 word holds one value.
    cases.push(big_case("f16 round trip", &name, 0.0, move |d| Ok(vec![HalfTensor::from_tensor(&big(&shape, 1, d)?)?.to_tensor()?])));
    cases.push(big_case("dropout", &name, 1e-6, move |d| Ok(vec![ops::dropout(&big(&shape, 1, d)?, 0.3, 77)?])));
    // Along axis 1 each output row (17 001 values) is itself longer than the binding.
    cases.push(big_case("concat", &format!("{name} with [7, 7000] along axis 1, with itself along axis 0"), 0.0, move |d| {
        let x = big(&shape, 1, d)?;
        Ok(vec![ops::concat(&x, &random_tensor(&[7, 7000], 5, d)?, 1)?, ops::concat(&x, &x, 0)?])
    }));
}

fn reductions(cases: &mut Vec<Case>) {
    let shape = [300, 257];
    let name = format!("{shape:?}");
    cases.push(big_case("sum / mean", &format!("{name} over [0], [1], [0, 1]"), TOLERANCE, move |d| {
        let x = big(&shape, 1, d)?;
        let mut out = Vec::new();
        for axes in [&[0][..], &[1], &[0, 1]] {
            out.push(ops::sum(&x, axes, false)?);
            out.push(ops::mean(&x, axes, true)?);
        }
        Ok(out)
    }));
    cases.push(big_case("sum_except (bias gradient)", &format!("{name} all but axis 1, [8, 5, 40, 40] all but axis 1"), TOLERANCE, move |d| {
        Ok(vec![ops::sum_except(&big(&shape, 1, d)?, 1)?, ops::sum_except(&big(&[8, 5, 40, 40], 2, d)?, 1)?])
    }));
    cases.push(big_case("sum backward (expand)", &format!("[257] to {name}"), 0.0, move |d| {
        Ok(vec![ops::expand(&random_tensor(&[257], 2, d)?, &shape, &[0], 0.5)?])
    }));
    cases.push(big_case("narrow", &format!("{name} along axes 0 and 1"), 0.0, move |d| {
        let x = big(&shape, 1, d)?;
        Ok(vec![ops::narrow(&x, 1, 7, 200)?, ops::narrow(&x, 0, 3, 290)?])
    }));
}

fn softmax(cases: &mut Vec<Case>) {
    let shape = [700, 100];
    let labels: Vec<usize> = (0..700).map(|i| (i * 37) % 100).collect();
    cases.push(big_case("softmax / log_softmax and backward", &format!("{shape:?}"), 1e-5, move |d| {
        let (x, g) = (big(&shape, 1, d)?, big(&shape, 2, d)?);
        let (y, ly) = (ops::softmax(&x)?, ops::log_softmax(&x)?);
        Ok(vec![ops::softmax_backward(&y, &g)?, ops::log_softmax_backward(&ly, &g)?, y, ly])
    }));
    cases.push(big_case("cross_entropy and backward", &format!("logits {shape:?}"), 1e-5, move |d| {
        let x = big(&shape, 1, d)?;
        let labels = Labels::new(&x, &labels)?;
        let g = Tensor::from_vec(vec![0.5], &[1], d)?;
        Ok(vec![ops::cross_entropy_per_sample(&x, &labels)?, ops::cross_entropy_backward(&x, &labels, &g)?])
    }));
}

fn conv_and_pool(cases: &mut Vec<Case>) {
    let xs = [4, 10, 40, 40];
    let pools = [
        ("max_pool2d", PoolKind::Max, [3, 3], [2, 2], [1, 1]),
        ("avg_pool2d", PoolKind::Avg, [2, 2], [2, 2], [0, 0]),
        ("adaptive_avg_pool2d", PoolKind::AdaptiveAvg, [6, 6], [1, 1], [0, 0]),
    ];
    for (op, kind, kernel, stride, pad) in pools {
        cases.push(big_case(&format!("{op} and backward"), &format!("x {xs:?}"), 1e-5, move |d| {
            let x = big(&xs, 1, d)?;
            let s = if kind == PoolKind::AdaptiveAvg { PoolShape::adaptive(&xs, kernel)? } else { PoolShape::window(kind, &xs, kernel, stride, pad)? };
            let g = random_tensor(&s.out_shape(), 2, d)?;
            Ok(vec![ops::pool_forward(&x, &s)?, ops::pool_backward(&x, &g, &s)?])
        }));
    }
    let (cx, cw, opts) = ([32, 4, 20, 20], [8, 4, 3, 3], Conv2dOpts::new(1, 1));
    cases.push(big_case("conv2d and backward", &format!("x {cx:?} w {cw:?} stride 1 pad 1"), TOLERANCE, move |d| {
        let (x, w, b) = (big(&cx, 1, d)?, random_tensor(&cw, 2, d)?, random_tensor(&[cw[0]], 3, d)?);
        let y = ops::conv2d(&x, &w, Some(&b), opts)?;
        let g = random_tensor(y.shape(), 4, d)?;
        let (dx, dw) = ops::conv2d_backward(&x, &w, &g, opts, true, true)?;
        Ok(vec![y, dx.expect("asked for"), dw.expect("asked for")])
    }));
    // One image whose patch matrix (and, in the last two, input) is several times the limit:
    // it runs in bands of rows, with padding, stride and dilation shifting each band's rows,
    // and (1×1, stride 2) input rows no output reaches; in f32 and in mixed precision.
    let images: [([usize; 4], [usize; 4], Conv2dOpts); 3] = [
        ([1, 3, 60, 70], [5, 3, 3, 3], Conv2dOpts::new(1, 1)),
        ([1, 4, 90, 90], [6, 4, 3, 3], Conv2dOpts { dilation: [2, 2], ..Conv2dOpts::new(2, 2) }),
        ([1, 4, 151, 150], [6, 4, 1, 1], Conv2dOpts::new(2, 0)),
    ];
    for (i, (xs, ws, opts)) in images.into_iter().enumerate() {
        for half in [false, true] {
            let (op, tol) = if half { ("conv2d of one image, mixed precision", 5e-3) } else { ("conv2d of one image", TOLERANCE) };
            let o = Conv2dOpts { half, ..opts };
            let what = format!("x {xs:?} w {ws:?} stride {} pad {} dilation {}", o.stride[0], o.padding[0], o.dilation[0]);
            cases.push(big_case(op, &what, tol, move |d| {
                let s = ops::ConvShape::new(&xs, &ws, o)?;
                if 4 * (s.patch_len() * s.positions()).max(xs.iter().product()) as u64 <= 3 * BIG_BINDING_LIMIT {
                    return Err(shape_err("conv2d", format!("one image of {xs:?} is not several times the limit")));
                }
                let (x, w, b) = (random_tensor(&xs, 5 + i as u64, d)?, random_tensor(&ws, 6, d)?, random_tensor(&[ws[0]], 7, d)?);
                let g = random_tensor(&s.out_shape(), 8, d)?;
                let (dx, dw) = ops::conv2d_backward(&x, &w, &g, o, true, true)?;
                Ok([Some(ops::conv2d(&x, &w, Some(&b), o)?), dx, dw].into_iter().flatten().collect())
            }));
        }
    }

    // Post-training int8 inference: a batch in passes of images, and one image in bands.
    for (xs, ws) in [([8, 4, 40, 40], [8, 4, 3, 3]), ([1, 4, 130, 130], [8, 4, 3, 3])] {
        let opts = Conv2dOpts::new(1, 1);
        cases.push(big_case("int8 conv2d", &format!("x {xs:?} w {ws:?} stride 1 pad 1"), 1e-5, move |d| {
            let (x, w, b) = (big(&xs, 1, d)?, random_tensor(&ws, 2, d)?, random_tensor(&[ws[0]], 3, d)?);
            let weights = ops::int8::Int8Weights::quantize(&w, Some(&b), ops::int8::scale_for(1.0))?;
            Ok(vec![ops::int8::conv2d_int8(&x, &weights, opts)?])
        }));
    }
}

fn batch_norm(cases: &mut Vec<Case>) {
    let xs = [8, 5, 40, 40];
    cases.push(big_case("batch_norm2d stats, forward, backward", &format!("x {xs:?}"), 1e-3, move |d| {
        let (x, g) = (big(&xs, 1, d)?, big(&xs, 2, d)?);
        let (gamma, beta) = (random_tensor(&[5], 3, d)?, random_tensor(&[5], 4, d)?);
        let (mean, var) = ops::batch_stats(&x)?;
        let y = ops::batch_norm_forward(&x, &mean, &var, &gamma, &beta, 1e-5)?;
        let mut out = vec![y];
        for training in [true, false] {
            let (dx, dgamma, dbeta) = ops::batch_norm_backward(&x, &g, &mean, &var, &gamma, 1e-5, training, true, true)?;
            out.extend([dx, dgamma, dbeta].into_iter().flatten());
        }
        out.extend([mean, var]);
        Ok(out)
    }));
}

fn optimizers(cases: &mut Vec<Case>) {
    let shape = [300, 257];
    let name = format!("{shape:?}, 2 steps");
    cases.push(big_case("sgd_step", &name, 1e-5, move |d| {
        let (mut p, g, mut buf) = (big(&shape, 1, d)?, big(&shape, 2, d)?, None);
        let h = SgdHyper { momentum: 0.9, weight_decay: 1e-3, ..Default::default() };
        for _ in 0..2 {
            ops::sgd_step_in_place(&mut p, &g, &mut buf, 0.1, h, None)?;
        }
        Ok([Some(p), buf].into_iter().flatten().collect())
    }));
    cases.push(big_case("adamw_step", &name, 1e-5, move |d| {
        let (mut p, g) = (big(&shape, 1, d)?, big(&shape, 2, d)?);
        let mut state = ops::AdamWState::zeros(&p)?;
        for _ in 0..2 {
            ops::adamw_step_in_place(&mut p, &g, &mut state, 0.01, AdamWHyper::default(), None)?;
        }
        Ok(vec![p, state.exp_avg, state.exp_avg_sq, state.step])
    }));
    cases.push(big_case("step_guard", &format!("{shape:?}, a NaN in the last window"), 0.0, move |d| {
        let mut guard = ops::StepGuard::new(d, false)?;
        guard.open()?;
        let mut v = big(&shape, 1, d)?.to_vec()?;
        guard.check(&Tensor::from_vec(v.clone(), &shape, d)?)?;
        *v.last_mut().expect("values") = f32::NAN;
        guard.check(&Tensor::from_vec(v, &shape, d)?)?;
        guard.close(1)?;
        Ok(vec![guard.state().clone()])
    }));
}
