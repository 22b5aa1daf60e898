//! The hot kernels at the shapes ResNet-50 and AlexNet use (224 px, batch 8), for `tessera
//! bench kernels` and the criterion benchmarks: conv2d forward and both backward passes, the
//! classifier GEMM, pooling, batch norm and softmax/cross-entropy, forward and backward.
use super::{filled, median_time};
use crate::device::Device;
use crate::error::Result;
use crate::ops::{self, Conv2dOpts, ConvShape, Labels, PoolKind, PoolShape};
use crate::tensor::Tensor;
use std::time::Duration;

/// One timed run of a kernel on inputs already on the device.
type Run = Box<dyn Fn() -> Result<Vec<Tensor>>>;
/// Uploads a case's inputs to a device and returns its run.
type Setup = Box<dyn Fn(&Device) -> Result<Run>>;

/// One kernel at one shape: `setup` uploads its inputs to a device and returns the timed run.
pub struct KernelCase {
    pub op: &'static str,
    pub shape: String,
    /// FLOPs of one run (GEMM work: 2 per multiply-add), 0 for memory-bound ops.
    pub flops: f64,
    /// Bytes one run must read and write at least.
    pub bytes: f64,
    /// For a convolution, the case as PyTorch's reference times it.
    pub conv: Option<ConvCase>,
    setup: Setup,
}

/// One convolution pass at one shape, as `scripts/bench_torch_conv.py` reads it.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    /// `forward`, `data` (the input gradient) or `weight` (the weight gradient).
    pub pass: &'static str,
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub stride: usize,
    pub padding: usize,
}

impl ConvCase {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "pass": self.pass, "x": self.x, "w": self.w, "stride": self.stride, "padding": self.padding })
    }
}

impl KernelCase {
    pub fn setup(&self, device: &Device) -> Result<Run> {
        (self.setup)(device)
    }
}

fn tensor(shape: &[usize], seed: u32, d: &Device) -> Result<Tensor> {
    Tensor::from_vec(filled(shape.iter().product(), seed), shape, d)
}

fn conv_cases(name: &str, x: [usize; 4], w: [usize; 4], opts: Conv2dOpts, out: &mut Vec<KernelCase>) {
    let s = ConvShape::new(&x, &w, opts).expect("valid benchmark shape");
    let shape = format!("{name}: x {x:?} w {w:?} stride {} pad {}", opts.stride[0], opts.padding[0]);
    let numel = |v: &[usize]| v.iter().product::<usize>() as f64 * 4.0;
    let bytes = numel(&x) + numel(&w) + numel(&s.out_shape());
    let conv = |pass| Some(ConvCase { pass, x, w, stride: opts.stride[0], padding: opts.padding[0] });
    out.push(KernelCase {
        op: "conv2d forward",
        shape: shape.clone(),
        flops: s.forward_flops(),
        bytes,
        conv: conv("forward"),
        setup: Box::new(move |d| {
            let (xt, wt) = (tensor(&x, 1, d)?, tensor(&w, 2, d)?);
            Ok(Box::new(move || Ok(vec![ops::conv2d(&xt, &wt, None, opts)?])))
        }),
    });
    for (op, pass, need_input, need_weight) in [("conv2d backward data", "data", true, false), ("conv2d backward weight", "weight", false, true)] {
        out.push(KernelCase {
            op,
            shape: shape.clone(),
            flops: s.forward_flops(),
            bytes,
            conv: conv(pass),
            setup: Box::new(move |d| {
                let (xt, wt, gt) = (tensor(&x, 1, d)?, tensor(&w, 2, d)?, tensor(&s.out_shape(), 3, d)?);
                Ok(Box::new(move || {
                    let (dx, dw) = ops::conv2d_backward(&xt, &wt, &gt, opts, need_input, need_weight)?;
                    Ok(dx.into_iter().chain(dw).collect())
                }))
            }),
        });
    }
}

/// The benchmark set.
pub fn kernel_cases() -> Vec<KernelCase> {
    let mut out = Vec::new();
    conv_cases("ResNet-50 stem 7×7/2", [8, 3, 224, 224], [64, 3, 7, 7], Conv2dOpts::new(2, 3), &mut out);
    conv_cases("ResNet-50 layer1 3×3", [8, 64, 56, 56], [64, 64, 3, 3], Conv2dOpts::new(1, 1), &mut out);
    conv_cases("ResNet-50 layer1 1×1", [8, 256, 56, 56], [64, 256, 1, 1], Conv2dOpts::new(1, 0), &mut out);
    conv_cases("ResNet-50 layer4 3×3", [8, 512, 7, 7], [512, 512, 3, 3], Conv2dOpts::new(1, 1), &mut out);
    conv_cases("AlexNet conv1 11×11/4", [8, 3, 224, 224], [64, 3, 11, 11], Conv2dOpts::new(4, 2), &mut out);
    conv_cases("AlexNet conv3 3×3", [8, 192, 13, 13], [384, 192, 3, 3], Conv2dOpts::new(1, 1), &mut out);
    let (b, k, n) = (8usize, 9216usize, 4096usize);
    out.push(KernelCase {
        op: "linear (GEMM, Bᵀ)",
        shape: format!("AlexNet fc6: x [{b}, {k}] · Wᵀ [{n}, {k}]"),
        flops: 2.0 * (b * k * n) as f64,
        bytes: 4.0 * (b * k + k * n + b * n) as f64,
        conv: None,
        setup: Box::new(move |d| {
            let (x, w) = (tensor(&[b, k], 4, d)?, tensor(&[n, k], 5, d)?);
            let o = ops::GemmOpts { trans_b: true, ..Default::default() };
            Ok(Box::new(move || Ok(vec![ops::gemm(&x, &w, None, o)?])))
        }),
    });
    let px = [8usize, 64, 112, 112];
    let pool = PoolShape::window(PoolKind::Max, &px, [3, 3], [2, 2], [1, 1]).expect("valid pool");
    let act = px.iter().product::<usize>() as f64 * 4.0;
    let pooled = pool.out_shape().iter().product::<usize>() as f64 * 4.0;
    out.push(KernelCase {
        op: "max_pool2d forward",
        shape: format!("ResNet-50 stem pool 3/2/1: x {px:?}"),
        flops: 0.0,
        bytes: act + pooled,
        conv: None,
        setup: Box::new(move |d| {
            let x = tensor(&px, 6, d)?;
            Ok(Box::new(move || Ok(vec![ops::pool_forward(&x, &pool)?])))
        }),
    });
    out.push(KernelCase {
        op: "max_pool2d backward",
        shape: format!("ResNet-50 stem pool 3/2/1: x {px:?}"),
        flops: 0.0,
        bytes: 2.0 * act + pooled,
        conv: None,
        setup: Box::new(move |d| {
            let (x, g) = (tensor(&px, 6, d)?, tensor(&pool.out_shape(), 7, d)?);
            Ok(Box::new(move || Ok(vec![ops::pool_backward(&x, &g, &pool)?])))
        }),
    });
    let c = px[1];
    out.push(KernelCase {
        op: "batch_norm2d forward (train)",
        shape: format!("ResNet-50 bn1: x {px:?}"),
        flops: 0.0,
        bytes: 3.0 * act,
        conv: None,
        setup: Box::new(move |d| {
            let (x, gamma, beta) = (tensor(&px, 8, d)?, tensor(&[c], 9, d)?, tensor(&[c], 10, d)?);
            Ok(Box::new(move || {
                let (mean, var) = ops::batch_stats(&x)?;
                Ok(vec![ops::batch_norm_forward(&x, &mean, &var, &gamma, &beta, 1e-5)?])
            }))
        }),
    });
    out.push(KernelCase {
        op: "batch_norm2d backward (train)",
        shape: format!("ResNet-50 bn1: x {px:?}"),
        flops: 0.0,
        bytes: 4.0 * act,
        conv: None,
        setup: Box::new(move |d| {
            let (x, g, gamma) = (tensor(&px, 8, d)?, tensor(&px, 11, d)?, tensor(&[c], 9, d)?);
            let (mean, var) = ops::batch_stats(&x)?;
            Ok(Box::new(move || {
                let (dx, dgamma, dbeta) = ops::batch_norm_backward(&x, &g, &mean, &var, &gamma, 1e-5, true, true, true)?;
                Ok([dx, dgamma, dbeta].into_iter().flatten().collect())
            }))
        }),
    });
    let (rows, classes) = (256usize, 1000usize);
    let labels: Vec<usize> = (0..rows).map(|i| (i * 7) % classes).collect();
    let logits_bytes = (rows * classes) as f64 * 4.0;
    let l2 = labels.clone();
    out.push(KernelCase {
        op: "cross_entropy forward",
        shape: format!("logits [{rows}, {classes}]"),
        flops: 0.0,
        bytes: logits_bytes,
        conv: None,
        setup: Box::new(move |d| {
            let x = tensor(&[rows, classes], 12, d)?;
            let labels = Labels::new(&x, &l2)?;
            Ok(Box::new(move || Ok(vec![ops::cross_entropy_per_sample(&x, &labels)?])))
        }),
    });
    out.push(KernelCase {
        op: "cross_entropy backward",
        shape: format!("logits [{rows}, {classes}]"),
        flops: 0.0,
        bytes: 2.0 * logits_bytes,
        conv: None,
        setup: Box::new(move |d| {
            let x = tensor(&[rows, classes], 12, d)?;
            let labels = Labels::new(&x, &labels)?;
            let scale = Tensor::from_vec(vec![1.0 / rows as f32], &[], d)?;
            Ok(Box::new(move || Ok(vec![ops::cross_entropy_backward(&x, &labels, &scale)?])))
        }),
    });
    out
}

/// One `tessera bench kernels` row.
#[derive(Clone, Debug)]
pub struct KernelRow {
    pub device: String,
    pub op: &'static str,
    pub shape: String,
    pub ms: f64,
    /// None for memory-bound ops.
    pub gflops: Option<f64>,
    pub gbytes_per_s: f64,
}

/// Times `case` on `device`: the median run after warm-up, the device synchronised each run.
pub fn bench_kernel(case: &KernelCase, device: &Device, budget: Duration) -> Result<KernelRow> {
    let run = case.setup(device)?;
    let t = median_time(budget, 3, || {
        let out = run()?;
        device.synchronize()?;
        drop(out);
        Ok(())
    })?
    .as_secs_f64();
    Ok(KernelRow {
        device: device.to_string(),
        op: case.op,
        shape: case.shape.clone(),
        ms: t * 1e3,
        gflops: (case.flops > 0.0).then(|| case.flops / t / 1e9),
        gbytes_per_s: case.bytes / t / 1e9,
    })
}
