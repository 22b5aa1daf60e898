//! The conformance suite behind `tessera check` and tests/ops_conformance.rs: every op, forward
//! and backward, on representative shapes, run on each device and compared with the CPU
//! backend, tensors bigger than one binding included (`big`). Kernel features an adapter lacks
//! are reported as unsupported, not as failures.
mod big;
pub use big::BIG_BINDING_LIMIT;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::gemm::{gemm_f16_with_kernel, gemm_with_kernel, GemmOpts};
use crate::ops::{self, AdamWHyper, Conv2dOpts, Labels, PoolKind, PoolShape, SgdHyper};
use crate::tensor::Tensor;
use crate::tensor_f16::HalfTensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_shaders::gemm::{Storage, HALF_VARIANTS, VARIANTS};

/// Default tolerance: max relative error (norm-wise, see [`max_rel_err`]) against the CPU.
pub const TOLERANCE: f32 = 1e-4;

type Run = Box<dyn Fn(&Device) -> Result<Vec<Tensor>> + Send + Sync>;

/// One op on one input shape.
pub struct Case {
    /// The matrix row: op and direction, e.g. `conv2d backward`.
    pub op: String,
    /// The inputs, for messages.
    pub shape: String,
    pub tol: f32,
    run: Run,
}

/// How an op fared on one device, over all its cases.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass { max_err: f32 },
    Fail { max_err: f32, shape: String, detail: String },
    Unsupported(String),
}

/// One cell of the op × device matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    pub op: String,
    pub device: String,
    pub cases: usize,
    pub verdict: Verdict,
}

/// The matrix: rows in suite order, one column per checked device.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub ops: Vec<String>,
    pub devices: Vec<String>,
    pub cells: Vec<Cell>,
}

/// Max relative error of `got` against `want`: max|got − want| / max|want|. Normalising by the
/// reference's largest magnitude (the norm-wise error of BLAS testing) keeps outputs that
/// cancel to ≈0 from reporting huge errors that only reflect summation order. An all-zero
/// reference compares absolutely against a scale of 1e-6; a non-finite value is infinitely wrong.
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

/// Uniform values in [-1, 1) from a fixed seed, as a tensor on `dev`.
pub fn random_tensor(shape: &[usize], seed: u64, dev: &Device) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::from_vec((0..shape.iter().product::<usize>()).map(|_| rng.gen_range(-1.0..1.0)).collect(), shape, dev)
}

impl Case {
    /// A case of `op` on inputs described by `shape`: `run` builds its inputs on the given
    /// device and returns the outputs to compare.
    pub fn new(op: &str, shape: String, tol: f32, run: impl Fn(&Device) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Case {
        Case { op: op.to_string(), shape, tol, run: Box::new(run) }
    }
}

fn case(op: &str, shape: String, run: impl Fn(&Device) -> Result<Vec<Tensor>> + Send + Sync + 'static) -> Case {
    Case::new(op, shape, TOLERANCE, run)
}

/// Small random shapes of the given ranks (the same on every run).
fn shapes(seed: u64, count: usize, rank: std::ops::RangeInclusive<usize>) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count).map(|_| (0..rng.gen_range(rank.clone())).map(|_| rng.gen_range(1..9)).collect()).collect()
}

/// Every case, grouped by op in report order.
pub fn suite() -> Vec<Case> {
    let mut cases = Vec::new();
    gemm_cases(&mut cases);
    elementwise_cases(&mut cases);
    reduction_cases(&mut cases);
    softmax_cases(&mut cases);
    conv_cases(&mut cases);
    pool_cases(&mut cases);
    batch_norm_cases(&mut cases);
    sgd_cases(&mut cases);
    adamw_cases(&mut cases);
    guard_cases(&mut cases);
    big::big_cases(&mut cases);
    cases
}

fn gemm_cases(cases: &mut Vec<Case>) {
    // (m, n, k, trans_a, trans_b, batch, with C): thin, square, odd, transposed, batched.
    let dims = [
        (1, 7, 33, false, false, None, false),
        (33, 127, 7, true, false, None, true),
        (64, 64, 64, false, true, Some(3), false),
        (127, 33, 100, true, true, None, true),
    ];
    let operands = move |&(m, n, k, ta, tb, batch, with_c): &(usize, usize, usize, bool, bool, Option<usize>, bool), seed: u64, dev: &Device| {
        let lead = |r: usize, c: usize| batch.into_iter().chain([r, c]).collect::<Vec<_>>();
        let a = random_tensor(&if ta { lead(k, m) } else { lead(m, k) }, seed, dev)?;
        let b = random_tensor(&if tb { lead(n, k) } else { lead(k, n) }, seed + 1, dev)?;
        let c = if with_c { Some(random_tensor(&[m, n], seed + 2, dev)?) } else { None };
        let opts = GemmOpts { trans_a: ta, trans_b: tb, alpha: 0.75, beta: if with_c { -0.5 } else { 0.0 } };
        Ok::<_, Error>((a, b, c, opts))
    };
    for (i, d) in dims.into_iter().enumerate() {
        let shape = format!("m={} n={} k={} trans=({},{}) batch={:?} C={}", d.0, d.1, d.2, d.3, d.4, d.5, d.6);
        cases.push(case("gemm", shape.clone(), move |dev| {
            let (a, b, c, o) = operands(&d, i as u64, dev)?;
            Ok(vec![ops::gemm(&a, &b, c.as_ref(), o)?])
        }));
        for v in VARIANTS {
            cases.push(case(&format!("gemm {}", v.kernel.entry), shape.clone(), move |dev| {
                let (a, b, c, o) = operands(&d, i as u64, dev)?;
                Ok(vec![gemm_with_kernel(v, &a, &b, c.as_ref(), o)?])
            }));
        }
        for v in HALF_VARIANTS {
            // Both sides convert f32 → f16 on their own device: the pack kernel's rounding is
            // part of what is checked (within the tolerance of one f16 rounding).
            cases.push(Case {
                tol: 2e-3,
                ..case(&format!("gemm_f16 {} {}", if v.storage == Storage::F16 { "native" } else { "packed" }, v.kernel.entry), shape.clone(), move |dev| {
                    let (a, b, c, o) = operands(&d, i as u64, dev)?;
                    Ok(vec![gemm_f16_with_kernel(v, &HalfTensor::from_tensor(&a)?, &HalfTensor::from_tensor(&b)?, c.as_ref(), o)?])
                })
            });
        }
    }
    for (i, shape) in shapes(21, 3, 1..=3).into_iter().enumerate() {
        cases.push(Case {
            tol: 1e-3,
            ..case("f16 round trip", format!("{shape:?}"), move |dev| Ok(vec![HalfTensor::from_tensor(&random_tensor(&shape, i as u64, dev)?)?.to_tensor()?]))
        });
    }
}

/// Two random tensors of `shape`.
fn pair(shape: &[usize], seed: u64, d: &Device) -> Result<(Tensor, Tensor)> {
    Ok((random_tensor(shape, seed, d)?, random_tensor(shape, seed + 1, d)?))
}

fn elementwise_cases(cases: &mut Vec<Case>) {
    for (i, shape) in shapes(1, 4, 1..=4).into_iter().enumerate() {
        let (s, name) = (i as u64 * 3, format!("{shape:?}"));
        let sh = shape.clone();
        cases.push(case("axpby / scale", name.clone(), move |d| {
            let (x, y) = pair(&sh, s, d)?;
            Ok(vec![ops::axpby(0.5, &x, -2.0, &y)?, ops::scale(&x, 3.0)?])
        }));
        let sh = shape.clone();
        cases.push(case("mul", name.clone(), move |d| {
            let (x, y) = pair(&sh, s, d)?;
            Ok(vec![ops::mul(&x, &y)?])
        }));
        let sh = shape.clone();
        cases.push(case("relu", name.clone(), move |d| Ok(vec![ops::relu(&pair(&sh, s, d)?.0)?])));
        let sh = shape.clone();
        cases.push(case("relu backward", name.clone(), move |d| {
            let (x, g) = pair(&sh, s, d)?;
            Ok(vec![ops::relu_backward(&x, &g)?])
        }));
        let sh = shape.clone();
        // Inputs spread over ±4: GELU's curved part and both tails.
        cases.push(case("gelu and backward", name.clone(), move |d| {
            let (x, g) = pair(&sh, s, d)?;
            let x = ops::scale(&x, 4.0)?;
            Ok(vec![ops::gelu(&x)?, ops::gelu_backward(&x, &g)?])
        }));
        let axis = i % shape.len();
        cases.push(case("add_channel", format!("{name} axis {axis}"), move |d| {
            let x = random_tensor(&shape, s, d)?;
            Ok(vec![ops::add_channel(&x, &random_tensor(&[shape[axis]], s + 2, d)?, axis)?])
        }));
    }
    for (i, shape) in shapes(11, 4, 1..=3).into_iter().enumerate() {
        let axis = i % shape.len();
        let mut other = shape.clone();
        other[axis] += 2;
        let name = format!("{shape:?} + {other:?} axis {axis}");
        let x_shape = shape.clone();
        cases.push(case("dropout", format!("{shape:?}"), move |d| Ok(vec![ops::dropout(&random_tensor(&x_shape, i as u64, d)?, 0.5, 7 + i as u32)?])));
        cases.push(case("concat / narrow", name, move |d| {
            let joined = ops::concat(&random_tensor(&shape, i as u64, d)?, &random_tensor(&other, i as u64 + 1, d)?, axis)?;
            let back = ops::narrow(&joined, axis, shape[axis], other[axis])?;
            Ok(vec![joined, back])
        }));
    }
}

fn reduction_cases(cases: &mut Vec<Case>) {
    let mut rng = StdRng::seed_from_u64(2);
    let mut shapes_axes: Vec<(Vec<usize>, Vec<usize>)> = shapes(3, 6, 1..=4)
        .into_iter()
        .map(|s| {
            let axes = (0..s.len()).filter(|_| rng.gen_bool(0.5)).collect();
            (s, axes)
        })
        .collect();
    // A large reduction, to catch accumulation-order differences, and one longer than a
    // looped launch covers on a software adapter (sliced launches).
    shapes_axes.push((vec![64, 4096], vec![1]));
    shapes_axes.push((vec![2, 40_000], vec![1]));
    for (i, (shape, axes)) in shapes_axes.into_iter().enumerate() {
        let keepdim = i % 2 == 0;
        let name = format!("{shape:?} over {axes:?}");
        let (s2, a2) = (shape.clone(), axes.clone());
        cases.push(case("sum / mean", name.clone(), move |d| {
            let x = random_tensor(&s2, i as u64, d)?;
            Ok(vec![ops::sum(&x, &a2, keepdim)?, ops::mean(&x, &a2, keepdim)?])
        }));
        // Each GPU variant pinned (the CPU ignores the pin).
        for (variant, label) in [(ops::ReductionVariant::Looped, "looped"), (ops::ReductionVariant::PerWorkgroup, "per workgroup")] {
            let (s2, a2) = (shape.clone(), axes.clone());
            cases.push(case(&format!("sum / mean ({label})"), name.clone(), move |d| {
                Ok(ops::reduce::sum_and_mean_with(&random_tensor(&s2, i as u64, d)?, &a2, keepdim, variant)?.to_vec())
            }));
        }
        cases.push(case("sum backward (expand)", name, move |d| {
            let g = random_tensor(&ops::reduce::reduced_shape(&shape, &axes, keepdim), i as u64, d)?;
            Ok(vec![ops::expand(&g, &shape, &axes, 0.5)?])
        }));
    }
    // Bias gradients: Σ over every axis but one (GPUs: products with ones).
    for (i, (shape, axis)) in [(vec![4, 6, 5, 7], 1), (vec![32, 16, 32, 32], 1), (vec![8, 10], 1), (vec![3, 5], 0), (vec![6], 0)].into_iter().enumerate() {
        cases.push(case("sum_except (bias gradient)", format!("{shape:?} all but axis {axis}"), move |d| {
            Ok(vec![ops::sum_except(&random_tensor(&shape, 90 + i as u64, d)?, axis)?])
        }));
    }
}

fn softmax_cases(cases: &mut Vec<Case>) {
    for (i, (rows, cols)) in [(1usize, 1usize), (3, 10), (17, 7), (130, 33), (5, 1000)].into_iter().enumerate() {
        let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + i) % cols).collect();
        // Scaled logits exercise the max-subtraction.
        let inputs =
            move |d: &Device| Ok::<_, Error>((ops::scale(&random_tensor(&[rows, cols], i as u64, d)?, 20.0)?, random_tensor(&[rows, cols], i as u64 + 1, d)?));
        let name = format!("[{rows}, {cols}]");
        cases.push(case("softmax / log_softmax", name.clone(), move |d| {
            let x = inputs(d)?.0;
            Ok(vec![ops::softmax(&x)?, ops::log_softmax(&x)?])
        }));
        cases.push(case("softmax / log_softmax backward", name.clone(), move |d| {
            let (x, g) = inputs(d)?;
            Ok(vec![ops::softmax_backward(&ops::softmax(&x)?, &g)?, ops::log_softmax_backward(&ops::log_softmax(&x)?, &g)?])
        }));
        let l2 = labels.clone();
        cases.push(case("cross_entropy", name.clone(), move |d| {
            let x = inputs(d)?.0;
            Ok(vec![ops::cross_entropy_per_sample(&x, &Labels::new(&x, &l2)?)?])
        }));
        let l2 = labels.clone();
        cases.push(case("cross_entropy backward", name.clone(), move |d| {
            let x = inputs(d)?.0;
            let scale = Tensor::from_vec(vec![0.7], &[], d)?;
            Ok(vec![ops::cross_entropy_backward(&x, &Labels::new(&x, &l2)?, &scale)?])
        }));
        cases.push(case("cross_entropy label smoothing 0.2 and backward", name, move |d| {
            let x = inputs(d)?.0;
            let (labels, scale) = (Labels::new(&x, &labels)?.smoothed(0.2)?, Tensor::from_vec(vec![0.7], &[], d)?);
            Ok(vec![ops::cross_entropy_per_sample(&x, &labels)?, ops::cross_entropy_backward(&x, &labels, &scale)?])
        }));
    }
}

/// Convolution shapes: AlexNet's and ResNet's layer types at small sizes.
pub fn conv_shapes() -> Vec<(Conv2dOpts, [usize; 4], [usize; 4])> {
    vec![
        (Conv2dOpts::new(4, 2), [2, 3, 35, 35], [4, 3, 11, 11]), // AlexNet conv1: 11×11 stride 4 pad 2
        (Conv2dOpts::new(1, 2), [2, 4, 9, 9], [5, 4, 5, 5]),     // AlexNet 5×5 pad 2
        (Conv2dOpts::new(2, 3), [1, 3, 20, 18], [4, 3, 7, 7]),   // ResNet stem 7×7 stride 2 pad 3
        (Conv2dOpts::new(1, 1), [3, 5, 8, 8], [6, 5, 3, 3]),     // 3×3 pad 1
        (Conv2dOpts::new(2, 0), [2, 6, 9, 9], [8, 6, 1, 1]),     // 1×1 stride 2 (downsample)
        (Conv2dOpts::new(1, 0), [5, 6, 4, 4], [7, 6, 1, 1]),     // pointwise, odd batch
        (Conv2dOpts::new(1, 1), [5, 3, 6, 5], [4, 3, 3, 3]),
        (Conv2dOpts::new(1, 2), [2, 2, 1, 3], [3, 2, 5, 5]), // padding wider than the input
        (Conv2dOpts::new(1, 1), [7, 3, 8, 8], [4, 3, 3, 3]), // CPU: groups of 4 images + a partial one
        (Conv2dOpts::new(1, 1), [3, 4, 1, 1], [5, 4, 3, 3]), // ResNet layer4 at 32 px: only the centre tap reads the input
        (Conv2dOpts::new(2, 1), [2, 4, 2, 2], [3, 4, 3, 3]), // stride 2 onto a 1×1 plane: 4 of 9 taps read the input
        (Conv2dOpts { stride: [2, 1], padding: [1, 2], dilation: [2, 3], half: false }, [1, 2, 11, 13], [3, 2, 3, 3]),
    ]
}

fn conv_cases(cases: &mut Vec<Case>) {
    for (i, (o, xs, ws)) in conv_shapes().into_iter().enumerate() {
        let name = format!("x {xs:?} w {ws:?} stride {:?} pad {:?} dil {:?}", o.stride, o.padding, o.dilation);
        let inputs = move |d: &Device| Ok::<_, Error>((random_tensor(&xs, i as u64, d)?, random_tensor(&ws, i as u64 + 50, d)?));
        cases.push(case("conv2d", name.clone(), move |d| {
            let (x, w) = inputs(d)?;
            Ok(vec![ops::conv2d(&x, &w, Some(&random_tensor(&[ws[0]], i as u64 + 60, d)?), o)?])
        }));
        // Each GPU im2col kernel pinned (the CPU ignores the pin).
        for kernel in crate::ops::conv2d::IM2COL_VARIANTS {
            cases.push(case(&format!("conv2d {}", kernel.entry), name.clone(), move |d| {
                let (x, w) = inputs(d)?;
                Ok(vec![crate::ops::conv2d::conv2d_with_im2col(&x, &w, None, o, Some(kernel))?])
            }));
        }
        cases.push(case("conv2d backward", name.clone(), move |d| {
            let (x, w) = inputs(d)?;
            let g = random_tensor(&ops::ConvShape::new(&xs, &ws, o)?.out_shape(), i as u64 + 70, d)?;
            let (dx, dw) = ops::conv2d_backward(&x, &w, &g, o, true, true)?;
            let db = ops::conv2d::conv2d_bias_backward(&g)?;
            Ok([dx, dw].into_iter().flatten().chain([db]).collect())
        }));
        // Mixed precision: f16 patches (conv2d_f16.wgsl) and f16 GEMMs with f32 accumulation,
        // forward and backward, against the CPU's f32 (the CPU ignores `half`): within f16
        // rounding of the operands.
        let half = Conv2dOpts { half: true, ..o };
        cases.push(Case {
            tol: 5e-3,
            ..case("conv2d mixed precision (f16 patches, f16 GEMM)", name, move |d| {
                let (x, w) = inputs(d)?;
                let g = random_tensor(&ops::ConvShape::new(&xs, &ws, o)?.out_shape(), i as u64 + 80, d)?;
                let (dx, dw) = ops::conv2d_backward(&x, &w, &g, half, true, true)?;
                Ok([Some(ops::conv2d(&x, &w, None, half)?), dx, dw].into_iter().flatten().collect())
            })
        });
    }
}

fn pool_cases(cases: &mut Vec<Case>) {
    type MakeShape = fn(&[usize]) -> Result<PoolShape>;
    let list: [(&str, &str, [usize; 4], MakeShape); 7] = [
        ("max_pool2d", "3/2/1 (ResNet stem)", [2, 3, 11, 10], |x| PoolShape::window(PoolKind::Max, x, [3, 3], [2, 2], [1, 1])),
        ("max_pool2d", "3/2/0 (AlexNet)", [1, 4, 13, 13], |x| PoolShape::window(PoolKind::Max, x, [3, 3], [2, 2], [0, 0])),
        ("max_pool2d", "2/2", [3, 2, 8, 6], |x| PoolShape::window(PoolKind::Max, x, [2, 2], [2, 2], [0, 0])),
        ("avg_pool2d", "3/2/1", [2, 3, 9, 7], |x| PoolShape::window(PoolKind::Avg, x, [3, 3], [2, 2], [1, 1])),
        ("adaptive_avg_pool2d", "1×1", [2, 5, 7, 7], |x| PoolShape::adaptive(x, [1, 1])),
        ("adaptive_avg_pool2d", "6×6 (AlexNet)", [1, 3, 13, 13], |x| PoolShape::adaptive(x, [6, 6])),
        ("adaptive_avg_pool2d", "6×6 upsampling", [1, 2, 4, 5], |x| PoolShape::adaptive(x, [6, 6])),
    ];
    for (i, (op, what, xs, make)) in list.into_iter().enumerate() {
        let name = format!("{what} x {xs:?}");
        cases.push(case(op, name.clone(), move |d| Ok(vec![ops::pool_forward(&random_tensor(&xs, i as u64, d)?, &make(&xs)?)?])));
        cases.push(case(&format!("{op} backward"), name, move |d| {
            let s = make(&xs)?;
            let g = random_tensor(&s.out_shape(), i as u64 + 9, d)?;
            Ok(vec![ops::pool_backward(&random_tensor(&xs, i as u64, d)?, &g, &s)?])
        }));
    }
    // After a ReLU many windows are all zeros: every backend sends the gradient to the same
    // (first) of the tied maxima.
    let xs = [2usize, 3, 9, 8];
    cases.push(case("max_pool2d backward", format!("3/2/1 over ReLU output (tied maxima) x {xs:?}"), move |d| {
        let s = PoolShape::window(PoolKind::Max, &xs, [3, 3], [2, 2], [1, 1])?;
        let x = ops::relu(&random_tensor(&xs, 40, d)?)?;
        Ok(vec![ops::pool_forward(&x, &s)?, ops::pool_backward(&x, &random_tensor(&s.out_shape(), 41, d)?, &s)?])
    }));
    // The offsets training keeps (exact: the same window's same first maximum everywhere),
    // and the backward routed by them.
    cases.push(Case {
        tol: 0.0,
        ..case("max_pool2d argmax and backward", format!("3/2/1 over ReLU output, 5/1/2 x {xs:?}"), move |d| {
            let x = ops::relu(&random_tensor(&xs, 40, d)?)?;
            let mut out = Vec::new();
            for s in [PoolShape::window(PoolKind::Max, &xs, [3, 3], [2, 2], [1, 1])?, PoolShape::window(PoolKind::Max, &xs, [5, 5], [1, 1], [2, 2])?] {
                let (y, argmax) = ops::max_pool_forward(&x, &s)?;
                let g = random_tensor(&s.out_shape(), 42, d)?;
                out.extend([ops::max_pool_backward(&argmax, &g, &s)?, y, argmax]);
            }
            Ok(out)
        })
    });
}

fn batch_norm_cases(cases: &mut Vec<Case>) {
    use crate::ops::batchnorm::{batch_stats_with, grad_sums};
    use crate::ops::ReductionVariant;
    use crate::ops::{batch_norm_backward, batch_norm_forward, batch_stats};
    // Planes of fewer than 64 values take the CPU's image walk, [2, 3, 9, 8] its plane walk;
    // [2, 1, 130, 130] has more values per channel than one launch of the looped GPU variant
    // covers on a software adapter (sliced launches).
    for (i, xs) in [[4usize, 3, 5, 5], [2, 16, 7, 3], [8, 2, 1, 1], [2, 3, 9, 8], [2, 1, 130, 130]].into_iter().enumerate() {
        // An offset and scale per tensor, so the statistics are not trivially 0 and 1.
        let inputs = move |d: &Device| -> Result<[Tensor; 4]> {
            let x = ops::add_channel(&ops::scale(&random_tensor(&xs, i as u64, d)?, 3.0)?, &random_tensor(&[xs[1]], 5, d)?, 1)?;
            Ok([x, random_tensor(&[xs[1]], 6, d)?, random_tensor(&[xs[1]], 7, d)?, random_tensor(&xs, 8, d)?])
        };
        let name = format!("{xs:?}");
        cases.push(case("batch_norm2d", name.clone(), move |d| {
            let [x, gamma, beta, _] = inputs(d)?;
            let (mean, var) = batch_stats(&x)?;
            let y = batch_norm_forward(&x, &mean, &var, &gamma, &beta, 1e-5)?;
            Ok(vec![mean, var, y])
        }));
        cases.push(case("batch_norm2d running statistics", name.clone(), move |d| {
            let [x, running_mean, running_var, _] = inputs(d)?;
            let (mean, var) = batch_stats(&x)?;
            let count = (xs[0] * xs[2] * xs[3]) as f32;
            let (new_mean, new_var) = ops::running_stats_update((&running_mean, &ops::relu(&running_var)?), (&mean, &var), 0.1, count)?;
            Ok(vec![new_mean, new_var])
        }));
        // Each GPU variant of the per-channel reductions, pinned (the CPU ignores the pin).
        for (variant, label) in [(ReductionVariant::Looped, "looped"), (ReductionVariant::PerWorkgroup, "per workgroup")] {
            cases.push(case(&format!("batch_norm2d sums ({label})"), name.clone(), move |d| {
                let [x, _, _, g] = inputs(d)?;
                let (mean, var) = batch_stats_with(&x, Some(variant))?;
                let sums = grad_sums(&x, &g, &mean, &var, 1e-5, Some(variant))?;
                Ok(vec![mean, var, sums])
            }));
        }
        for training in [true, false] {
            let op = if training { "batch_norm2d backward (train)" } else { "batch_norm2d backward (eval)" };
            cases.push(case(op, name.clone(), move |d| {
                let [x, gamma, _, g] = inputs(d)?;
                let (mean, var) = batch_stats(&x)?;
                let var = if training { var } else { ops::add(&ops::scale(&var, 0.5)?, &ops::relu(&gamma)?)? };
                let (dx, dgamma, dbeta) = batch_norm_backward(&x, &g, &mean, &var, &gamma, 1e-5, training, true, true)?;
                Ok([dx, dgamma, dbeta].into_iter().flatten().collect())
            }));
        }
    }
}

fn sgd_cases(cases: &mut Vec<Case>) {
    let hypers = [
        SgdHyper { momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false },
        SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false },
        SgdHyper { momentum: 0.9, dampening: 0.1, weight_decay: 1e-4, nesterov: true },
    ];
    for (i, h) in hypers.into_iter().enumerate() {
        cases.push(case("sgd_step", format!("{h:?}"), move |d| {
            let (p, g, b) = (random_tensor(&[37, 11], i as u64, d)?, random_tensor(&[37, 11], i as u64 + 1, d)?, random_tensor(&[37, 11], i as u64 + 2, d)?);
            let with_buf = (h.momentum != 0.0).then_some(&b);
            let (p2, b2) = ops::sgd_step(&p, &g, with_buf, 0.1, h)?;
            Ok([Some(p2), b2].into_iter().flatten().collect())
        }));
    }
}

fn adamw_cases(cases: &mut Vec<Case>) {
    let hypers = [AdamWHyper::default(), AdamWHyper { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.1 }];
    for (i, h) in hypers.into_iter().enumerate() {
        cases.push(case("adamw_step", format!("{h:?}, 3 steps"), move |d| {
            let mut p = random_tensor(&[37, 11], i as u64, d)?;
            let mut state = ops::AdamWState::zeros(&p)?;
            for step in 0..3 {
                let g = random_tensor(&[37, 11], 10 + step, d)?;
                ops::adamw_step_in_place(&mut p, &g, &mut state, 1e-2, h, None)?;
            }
            Ok(vec![p, state.exp_avg, state.exp_avg_sq, state.step])
        }));
    }
    // A flagged step changes nothing: the guard's state vector holds the flag in value 0.
    cases.push(case("adamw_step", "flagged by the guard".into(), |d| {
        let mut p = random_tensor(&[37, 11], 5, d)?;
        let mut state = ops::AdamWState::zeros(&p)?;
        let mut guard = ops::StepGuard::new(d, false)?;
        guard.open()?;
        guard.check(&Tensor::from_vec(vec![f32::NAN], &[1], d)?)?;
        ops::adamw_step_in_place(&mut p, &random_tensor(&[37, 11], 6, d)?, &mut state, 1e-2, AdamWHyper::default(), Some(guard.state()))?;
        Ok(vec![p, state.exp_avg, state.step])
    }));
    // Dynamic loss scaling: both updates divide the gradient by the guard's scale (2¹⁶ here).
    cases.push(case("sgd_step / adamw_step", "gradients unscaled by the guard's loss scale".into(), |d| {
        let scaling = ops::LossScaling::default();
        let guard = ops::StepGuard::with_scaling(d, false, Some(scaling))?;
        let g = ops::scale(&random_tensor(&[37, 11], 7, d)?, scaling.initial)?;
        let (mut p, mut q) = (random_tensor(&[37, 11], 8, d)?, random_tensor(&[37, 11], 9, d)?);
        let (mut buf, mut state) = (None, ops::AdamWState::zeros(&q)?);
        for _ in 0..2 {
            let h = SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true };
            ops::sgd_step_in_place(&mut p, &g, &mut buf, 0.1, h, Some(guard.state()))?;
            ops::adamw_step_in_place(&mut q, &g, &mut state, 1e-2, AdamWHyper::default(), Some(guard.state()))?;
        }
        Ok(vec![p, q, state.exp_avg_sq])
    }));
}

/// The step guard: flags from NaN and infinity, loss and correct-prediction sums, counts.
fn guard_cases(cases: &mut Vec<Case>) {
    for (i, (rows, classes)) in [(5usize, 3usize), (300, 10), (7, 1000)].into_iter().enumerate() {
        cases.push(case("step_guard", format!("logits [{rows}, {classes}], 3 steps, one flagged"), move |d| {
            let mut guard = ops::StepGuard::new(d, false)?;
            let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + i) % classes).collect();
            for step in 1..=3 {
                guard.open()?;
                let logits = random_tensor(&[rows, classes], step as u64 + 20 * i as u64, d)?;
                let mut grad = random_tensor(&[rows * classes], step as u64 + 50, d)?;
                if step == 2 {
                    let mut v = grad.to_vec()?;
                    v[rows * classes / 2] = if i == 1 { f32::INFINITY } else { f32::NAN };
                    grad = Tensor::from_vec(v, &[rows * classes], d)?;
                }
                guard.check(&grad)?;
                let loss = ops::mean(&random_tensor(&[4], step as u64, d)?, &[0], false)?;
                guard.add_metrics(&loss, &logits, &Labels::new(&logits, &labels)?)?;
                guard.close(step)?;
            }
            Ok(vec![guard.state().clone()])
        }));
    }
    // Dynamic loss scaling: an overflowing gradient skips its step and halves the scale (a
    // non-finite loss still counts as flagged), and 3 clean steps in a row double it.
    cases.push(case("step_guard", "dynamic loss scaling, 9 steps: overflows, a NaN loss, growth".into(), |d| {
        let mut guard = ops::StepGuard::with_scaling(d, false, Some(ops::LossScaling { initial: 1024.0, growth_interval: 3 }))?;
        let labels = [0usize, 1];
        for step in 1..=9 {
            guard.open()?;
            let loss = Tensor::from_vec(vec![if step == 6 { f32::NAN } else { 0.5 }], &[1], d)?;
            guard.check(&loss)?;
            let overflow = [2, 3, 6].contains(&step);
            guard.check_gradient(&Tensor::from_vec(vec![1.0, if overflow { f32::INFINITY } else { 2.0 }, 3.0], &[3], d)?)?;
            let logits = random_tensor(&[2, 4], step as u64, d)?;
            guard.add_metrics(&loss, &logits, &Labels::new(&logits, &labels)?)?;
            guard.close(step)?;
        }
        Ok([Some(guard.state().clone()), guard.loss_scale()?].into_iter().flatten().collect())
    }));
}

/// Runs one case on `dev` against the CPU's outputs `want`: Ok(max error) or why not.
fn run_case(c: &Case, dev: &Device, want: &[Vec<f32>]) -> std::result::Result<f32, Verdict> {
    let got = match (c.run)(dev) {
        Ok(got) => got,
        Err(e @ (Error::Unsupported { .. } | Error::TooLarge { .. })) => return Err(Verdict::Unsupported(e.to_string())),
        Err(e) => return Err(Verdict::Fail { max_err: f32::INFINITY, shape: c.shape.clone(), detail: e.to_string() }),
    };
    if got.len() != want.len() {
        return Err(Verdict::Fail { max_err: f32::INFINITY, shape: c.shape.clone(), detail: format!("{} outputs; the CPU gave {}", got.len(), want.len()) });
    }
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let values = g.to_vec().map_err(|e| Verdict::Fail { max_err: f32::INFINITY, shape: c.shape.clone(), detail: e.to_string() })?;
        if values.len() != w.len() {
            return Err(Verdict::Fail {
                max_err: f32::INFINITY,
                shape: c.shape.clone(),
                detail: format!("output {i} has {} values; the CPU's {}", values.len(), w.len()),
            });
        }
        let err = max_rel_err(&values, w);
        if err > c.tol {
            return Err(Verdict::Fail { max_err: err, shape: c.shape.clone(), detail: format!("output {i}: max rel err {err:.2e} > {:.0e}", c.tol) });
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

/// Runs `cases` on each of `devices` against the CPU backend and collects the matrix.
/// `progress` hears each finished cell.
pub fn check(cases: &[Case], devices: &[Device], mut progress: impl FnMut(&Cell)) -> Report {
    let cpu = Device::cpu();
    let mut report = Report { devices: devices.iter().map(|d| d.to_string()).collect(), ..Default::default() };
    // Rows in order of each op's first case; an op's cases need not be adjacent in the suite.
    for c in cases {
        if !report.ops.contains(&c.op) {
            report.ops.push(c.op.clone());
        }
    }
    for op in report.ops.clone() {
        let group: Vec<&Case> = cases.iter().filter(|c| c.op == op).collect();
        let reference: Vec<std::result::Result<Vec<Vec<f32>>, String>> =
            group.iter().map(|c| (c.run)(&cpu).and_then(|outs| outs.iter().map(Tensor::to_vec).collect()).map_err(|e| format!("CPU reference: {e}"))).collect();
        for dev in devices {
            let mut verdict = Verdict::Pass { max_err: 0.0 };
            for (c, want) in group.iter().zip(&reference) {
                let outcome = match want {
                    Ok(want) => run_case(c, dev, want),
                    Err(e) => Err(Verdict::Fail { max_err: f32::INFINITY, shape: c.shape.clone(), detail: e.clone() }),
                };
                verdict = match (verdict, outcome) {
                    (Verdict::Pass { max_err }, Ok(err)) => Verdict::Pass { max_err: max_err.max(err) },
                    (fail @ Verdict::Fail { .. }, _) => fail,
                    (_, Err(fail @ Verdict::Fail { .. })) => fail,
                    (unsupported @ Verdict::Unsupported(_), _) => unsupported,
                    (_, Err(unsupported)) => unsupported,
                };
            }
            let cell = Cell { op: op.clone(), device: dev.to_string(), cases: group.len(), verdict };
            progress(&cell);
            report.cells.push(cell);
        }
    }
    report
}

impl Report {
    /// True when no cell failed (unsupported cells are not failures).
    pub fn passed(&self) -> bool {
        !self.cells.iter().any(|c| matches!(c.verdict, Verdict::Fail { .. }))
    }

    pub fn cell(&self, op: &str, device: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.op == op && c.device == device)
    }

    /// The failing cells, one line each: op, device, shape, why.
    pub fn failures(&self) -> Vec<String> {
        self.cells
            .iter()
            .filter_map(|c| match &c.verdict {
                Verdict::Fail { shape, detail, .. } => Some(format!("{} on {} ({shape}): {detail}", c.op, c.device)),
                _ => None,
            })
            .collect()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass { max_err } => write!(f, "pass {max_err:.1e}"),
            Verdict::Fail { max_err, .. } if max_err.is_finite() => write!(f, "FAIL {max_err:.1e}"),
            Verdict::Fail { .. } => write!(f, "FAIL error"),
            Verdict::Unsupported(_) => write!(f, "unsupported"),
        }
    }
}
