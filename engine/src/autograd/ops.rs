//! Differentiable ops: each wraps forward kernels from `crate::ops` and states its backward
//! rule next to it. Every rule computes only the gradients its inputs need.
use super::{autocast_on, Var};
use crate::error::{shape_err, Result};
use crate::ops::{self as k, GemmOpts, Labels};
use crate::tensor_f16::MixedTensor;
use std::sync::Arc;

/// a + b (same shapes).
pub fn add(a: &Var, b: &Var) -> Result<Var> {
    let value = k::add(a.value(), b.value())?;
    Ok(Var::from_op("add", value, &[a, b], Box::new(|g, needs| Ok(vec![needs[0].then(|| g.clone()), needs[1].then(|| g.clone())]))))
}

/// alpha·a.
pub fn scale(a: &Var, alpha: f32) -> Result<Var> {
    let value = k::scale(a.value(), alpha)?;
    Ok(Var::from_op("scale", value, &[a], Box::new(move |g, _| Ok(vec![Some(k::scale(g, alpha)?)]))))
}

/// a·b elementwise: da = g·b, db = g·a.
pub fn mul(a: &Var, b: &Var) -> Result<Var> {
    let value = k::mul(a.value(), b.value())?;
    let (av, bv) = (a.saved()?, b.saved()?);
    Ok(Var::from_op(
        "mul",
        value,
        &[a, b],
        Box::new(move |g, needs| {
            Ok(vec![if needs[0] { Some(k::mul(g, &bv.tensor()?)?) } else { None }, if needs[1] { Some(k::mul(g, &av.tensor()?)?) } else { None }])
        }),
    ))
}

/// max(x, 0): dx = g·[x > 0] = g·[y > 0]. Saving the output rather than the input lets the
/// input (a batch norm's output, say) be freed after the forward, as PyTorch's in-place ReLU does.
pub fn relu(x: &Var) -> Result<Var> {
    let value = k::relu(x.value())?;
    Var::from_op_saving_output("relu", value, &[x], |out| {
        let y = out.saved()?;
        Ok(Box::new(move |g, _| Ok(vec![Some(k::relu_backward(&y.tensor()?, g)?)])))
    })
}

/// GELU(x) = x·Φ(x) (PyTorch's `F.gelu`, approximate='none'): dx = g·(Φ(x) + x·φ(x)).
pub fn gelu(x: &Var) -> Result<Var> {
    let value = k::gelu(x.value())?;
    let xv = x.saved()?;
    Ok(Var::from_op("gelu", value, &[x], Box::new(move |g, _| Ok(vec![Some(k::gelu_backward(&xv.tensor()?, g)?)]))))
}

/// A product's operand: under autocast (`half`) the value as saved (an activation's one f16
/// copy) or, for a parameter, its f16 rounding for this step; otherwise the f32 value.
fn operand(v: &Var, half: bool) -> Result<MixedTensor> {
    match v.saved()? {
        MixedTensor::F32(t) => MixedTensor::new(t, half),
        saved => Ok(saved),
    }
}

/// A·B for 2-D A [M, K] and B [K, N]: dA = g·Bᵀ, dB = Aᵀ·g.
pub fn matmul(a: &Var, b: &Var) -> Result<Var> {
    if a.shape().len() != 2 || b.shape().len() != 2 {
        return Err(shape_err("matmul", format!("differentiable matmul takes 2-D operands, got {:?} and {:?}", a.shape(), b.shape())));
    }
    // Under autocast each operand is rounded to f16 once: the forward multiplies the copies
    // the backward keeps.
    let half = autocast_on(a.value().device());
    let (av, bv) = (operand(a, half)?, operand(b, half)?);
    let value = k::gemm_mixed(&av, &bv, GemmOpts::default())?;
    Ok(Var::from_op(
        "matmul",
        value,
        &[a, b],
        Box::new(move |g, needs| {
            let g = MixedTensor::new(g.clone(), half)?;
            let nt = GemmOpts { trans_b: true, ..Default::default() };
            let tn = GemmOpts { trans_a: true, ..Default::default() };
            Ok(vec![if needs[0] { Some(k::gemm_mixed(&g, &bv, nt)?) } else { None }, if needs[1] { Some(k::gemm_mixed(&av, &g, tn)?) } else { None }])
        }),
    ))
}

/// x·Wᵀ + b, PyTorch's `F.linear`: x [N, in], W [out, in], b [out].
/// dx = g·W, dW = gᵀ·x, db = Σ_n g.
pub fn linear(x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] {
        return Err(shape_err("linear", format!("input {xs:?} and weight {ws:?} do not match: need [N, in] and [out, in]")));
    }
    let half = autocast_on(x.value().device());
    let (xv, wv) = (operand(x, half)?, operand(w, half)?);
    let value = k::gemm_mixed(&xv, &wv, GemmOpts { trans_b: true, ..Default::default() })?;
    let product = Var::from_op(
        "linear",
        value,
        &[x, w],
        Box::new(move |g, needs| {
            let g = MixedTensor::new(g.clone(), half)?;
            Ok(vec![
                if needs[0] { Some(k::gemm_mixed(&g, &wv, GemmOpts::default())?) } else { None },
                if needs[1] { Some(k::gemm_mixed(&g, &xv, GemmOpts { trans_a: true, ..Default::default() })?) } else { None },
            ])
        }),
    );
    match b {
        Some(b) => add_channel(&product, b, 1),
        None => Ok(product),
    }
}

/// x + b along `axis` (a bias): dx = g, db = Σ of g over every other axis.
pub fn add_channel(x: &Var, b: &Var, axis: usize) -> Result<Var> {
    let value = k::add_channel(x.value(), b.value(), axis)?;
    Ok(Var::from_op(
        "add_channel",
        value,
        &[x, b],
        Box::new(move |g, needs| Ok(vec![needs[0].then(|| g.clone()), if needs[1] { Some(k::sum_except(g, axis)?) } else { None }])),
    ))
}

fn reduction(name: &'static str, x: &Var, axes: &[usize], keepdim: bool, mean: bool) -> Result<Var> {
    let value = if mean { k::mean(x.value(), axes, keepdim)? } else { k::sum(x.value(), axes, keepdim)? };
    let shape = x.shape().to_vec();
    let axes = axes.to_vec();
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let alpha = if mean { 1.0 / count.max(1) as f32 } else { 1.0 };
    Ok(Var::from_op(name, value, &[x], Box::new(move |g, _| Ok(vec![Some(k::expand(g, &shape, &axes, alpha)?)]))))
}

/// Σ over `axes`: dx = g repeated over those axes.
pub fn sum(x: &Var, axes: &[usize], keepdim: bool) -> Result<Var> {
    reduction("sum", x, axes, keepdim, false)
}

/// Mean over `axes`: dx = g / count repeated over those axes.
pub fn mean(x: &Var, axes: &[usize], keepdim: bool) -> Result<Var> {
    reduction("mean", x, axes, keepdim, true)
}

/// The same values seen with another shape (flatten, view): dx = g seen with x's shape.
pub fn reshape(x: &Var, shape: &[usize]) -> Result<Var> {
    let value = x.value().reshape(shape)?;
    let original = x.shape().to_vec();
    Ok(Var::from_op("reshape", value, &[x], Box::new(move |g, _| Ok(vec![Some(g.reshape(&original)?)]))))
}

/// softmax over the last axis: dx = y·(g − Σ g·y).
pub fn softmax(x: &Var) -> Result<Var> {
    let value = k::softmax(x.value())?;
    let y = value.clone();
    Ok(Var::from_op("softmax", value, &[x], Box::new(move |g, _| Ok(vec![Some(k::softmax_backward(&y, g)?)]))))
}

/// log-softmax over the last axis: dx = g − exp(y)·Σ g.
pub fn log_softmax(x: &Var) -> Result<Var> {
    let value = k::log_softmax(x.value())?;
    let y = value.clone();
    Ok(Var::from_op("log_softmax", value, &[x], Box::new(move |g, _| Ok(vec![Some(k::log_softmax_backward(&y, g)?)]))))
}

/// Mean cross-entropy of `logits` [batch, classes] against integer `labels`, fused and
/// numerically stable (PyTorch's `F.cross_entropy`): dlogits = (softmax − onehot)·g / batch.
pub fn cross_entropy(logits: &Var, labels: &[usize]) -> Result<Var> {
    cross_entropy_smoothed(logits, labels, 0.0)
}

/// [`cross_entropy`] with label smoothing ε (PyTorch's `label_smoothing`): the target is
/// (1 − ε)·onehot + ε/classes, and dlogits = (softmax − target)·g / batch.
pub fn cross_entropy_smoothed(logits: &Var, labels: &[usize], smoothing: f32) -> Result<Var> {
    let labels = Arc::new(Labels::new(logits.value(), labels)?.smoothed(smoothing)?);
    let per_sample = k::cross_entropy_per_sample(logits.value(), &labels)?;
    let value = k::mean(&per_sample, &[0], false)?;
    let x = logits.value().clone();
    Ok(Var::from_op("cross_entropy", value, &[logits], Box::new(move |g, _| Ok(vec![Some(k::cross_entropy_backward(&x, &labels, g)?)]))))
}

/// conv2d (PyTorch's `F.conv2d`): x [N, C, H, W], weight [O, C, kh, kw], bias [O].
/// dx = col2im(Wᵀ·g), dW = g·colsᵀ, db = Σ_{N,H,W} g — each computed only when needed.
pub fn conv2d(x: &Var, weight: &Var, bias: Option<&Var>, opts: k::Conv2dOpts) -> Result<Var> {
    let opts = k::Conv2dOpts { half: opts.half || autocast_on(x.value().device()), ..opts };
    // The bias is added as the output is stored (conv2d_bias.wgsl on GPUs).
    let value = k::conv2d(x.value(), weight.value(), bias.map(|b| b.value()), opts)?;
    let (xv, wv) = (x.saved()?, weight.value().clone());
    let inputs: Vec<&Var> = [x, weight].into_iter().chain(bias).collect();
    let with_bias = bias.is_some();
    Ok(Var::from_op(
        "conv2d",
        value,
        &inputs,
        Box::new(move |g, needs| {
            let (dx, dw) = k::conv2d_backward(&xv.tensor()?, &wv, g, opts, needs[0], needs[1])?;
            let db = match needs.get(2) {
                Some(true) => Some(k::conv2d::conv2d_bias_backward(g)?),
                _ => None,
            };
            Ok([dx, dw].into_iter().chain(with_bias.then_some(db)).collect())
        }),
    ))
}

fn pool(name: &'static str, x: &Var, shape: k::PoolShape) -> Result<Var> {
    let value = k::pool_forward(x.value(), &shape)?;
    let xv = x.saved()?;
    Ok(Var::from_op(name, value, &[x], Box::new(move |g, _| Ok(vec![Some(k::pool_backward(&xv.tensor()?, g, &shape)?)]))))
}

/// max_pool2d (PyTorch's `F.max_pool2d`, ceil_mode false): the gradient goes to each
/// window's first maximum, kept from the forward as its offset (not the input: a quarter of
/// the values at 2×2, and exact under autocast, where the input would be kept in f16).
pub fn max_pool2d(x: &Var, kernel: usize, stride: usize, padding: usize) -> Result<Var> {
    let shape = k::PoolShape::window(k::PoolKind::Max, x.shape(), [kernel; 2], [stride; 2], [padding; 2])?;
    let (value, argmax) = k::max_pool_forward(x.value(), &shape)?;
    Ok(Var::from_op("max_pool2d", value, &[x], Box::new(move |g, _| Ok(vec![Some(k::max_pool_backward(&argmax, g, &shape)?)]))))
}

/// avg_pool2d (PyTorch's `F.avg_pool2d`, count_include_pad true).
pub fn avg_pool2d(x: &Var, kernel: usize, stride: usize, padding: usize) -> Result<Var> {
    pool("avg_pool2d", x, k::PoolShape::window(k::PoolKind::Avg, x.shape(), [kernel; 2], [stride; 2], [padding; 2])?)
}

/// adaptive_avg_pool2d to `out` = [Ho, Wo] (PyTorch's window bounds).
pub fn adaptive_avg_pool2d(x: &Var, out: [usize; 2]) -> Result<Var> {
    pool("adaptive_avg_pool2d", x, k::PoolShape::adaptive(x.shape(), out)?)
}

/// batch_norm2d with the given per-channel statistics: the batch's (`training`: they depend
/// on x, and the backward accounts for it) or the running ones (eval: constants).
/// Use [`crate::ops::batch_stats`] for the batch statistics; `nn::BatchNorm2d` wires both.
pub fn batch_norm2d(x: &Var, gamma: &Var, beta: &Var, mean: &crate::Tensor, var: &crate::Tensor, training: bool, eps: f32) -> Result<Var> {
    batch_norm_op(x, [gamma, beta], [mean, var], eps, training, None)
}

/// batch_norm2d in training with statistics over every replica of a data-parallel job (`mean`,
/// `var`: the global ones). The backward sums [Σg | Σg·x̂] over the replicas, each weighted by
/// its share of the global batch, for dx; dγ and dβ stay this replica's (the gradient
/// reduction sums them with the same weights).
pub fn batch_norm2d_synced(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    mean: &crate::Tensor,
    var: &crate::Tensor,
    eps: f32,
    replicas: Arc<dyn crate::nn::ReplicaSum>,
) -> Result<Var> {
    batch_norm_op(x, [gamma, beta], [mean, var], eps, true, Some(replicas))
}

fn batch_norm_op(
    x: &Var,
    [gamma, beta]: [&Var; 2],
    [mean, var]: [&crate::Tensor; 2],
    eps: f32,
    training: bool,
    replicas: Option<Arc<dyn crate::nn::ReplicaSum>>,
) -> Result<Var> {
    let value = k::batch_norm_forward(x.value(), mean, var, gamma.value(), beta.value(), eps)?;
    let (xs, gv, mv, vv) = (x.saved()?, gamma.value().clone(), mean.clone(), var.clone());
    Ok(Var::from_op(
        "batch_norm2d",
        value,
        &[x, gamma, beta],
        Box::new(move |g, needs| {
            let need = (needs[0], needs[1] || needs[2]);
            let xv = xs.tensor()?;
            let (dx, dgamma, dbeta) = match &replicas {
                None => k::batch_norm_backward(&xv, g, &mv, &vv, &gv, eps, training, need.0, need.1)?,
                Some(r) => {
                    let local = crate::ops::batchnorm::grad_sums(&xv, g, &mv, &vv, eps, None)?;
                    let share = r.share();
                    let total = r.sum(local.to_vec()?.into_iter().map(|v| v * share).collect()).map_err(crate::Error::Replicas)?;
                    let total = crate::Tensor::from_vec(total, local.shape(), local.device())?;
                    k::batch_norm_backward_from_sums(&xv, g, [&mv, &vv, &gv], eps, true, need, &total, &local)?
                }
            };
            Ok(vec![dx, dgamma, dbeta])
        }),
    ))
}

/// Dropout (PyTorch's `F.dropout` in training): the mask is a function of (index, seed), so
/// the backward recomputes it: dx = dropout(g) with the same seed.
pub fn dropout(x: &Var, p: f32, seed: u32) -> Result<Var> {
    let value = k::dropout(x.value(), p, seed)?;
    Ok(Var::from_op("dropout", value, &[x], Box::new(move |g, _| Ok(vec![Some(k::dropout(g, p, seed)?)]))))
}

/// Concatenation along `axis`: each input's gradient is its slice of g.
pub fn concat(a: &Var, b: &Var, axis: usize) -> Result<Var> {
    let value = k::concat(a.value(), b.value(), axis)?;
    let (la, lb) = (a.shape()[axis], b.shape()[axis]);
    Ok(Var::from_op(
        "concat",
        value,
        &[a, b],
        Box::new(move |g, needs| {
            Ok(vec![if needs[0] { Some(k::narrow(g, axis, 0, la)?) } else { None }, if needs[1] { Some(k::narrow(g, axis, la, lb)?) } else { None }])
        }),
    ))
}
