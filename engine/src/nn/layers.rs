//! The layers, with PyTorch's parameter names, shapes and default initialisation
//! (kaiming-uniform with a = √5, i.e. U(−1/√fan_in, 1/√fan_in), for weights and biases).
use super::{Buffer, Int8Slot, Module, Param};
use crate::autograd::{self as ag, no_grad, Var};
use crate::device::Device;
use crate::error::Result;
use crate::ops::{self, Conv2dOpts};
use crate::tensor::Tensor;
use rand::{rngs::StdRng, Rng};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

fn uniform(rng: &mut StdRng, shape: &[usize], bound: f32, device: &Device) -> Result<Tensor> {
    let values = (0..shape.iter().product()).map(|_| rng.gen_range(-bound..=bound)).collect();
    Tensor::from_vec(values, shape, device)
}

/// `y = x·Wᵀ + b`; weight [out, in], bias [out]. A clone shares the parameters.
#[derive(Clone)]
pub struct Linear {
    pub weight: Arc<Param>,
    pub bias: Option<Arc<Param>>,
    pub int8: Arc<Int8Slot>,
}

impl Linear {
    pub fn new(inputs: usize, outputs: usize, bias: bool, device: &Device, rng: &mut StdRng) -> Result<Self> {
        let bound = 1.0 / (inputs as f32).sqrt();
        let weight = Param::new(uniform(rng, &[outputs, inputs], bound, device)?);
        let bias = if bias { Some(Param::new(uniform(rng, &[outputs], bound, device)?)) } else { None };
        Ok(Self { weight, bias, int8: Int8Slot::new() })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Var) -> Result<Var> {
        let f32 = || ag::linear(x, &self.weight.var(), self.bias.as_ref().map(|b| b.var()).as_ref());
        self.int8.forward(x, f32, ops::int8::linear_int8)
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        vec![("weight".to_string(), self.int8.clone())]
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        let mut out = vec![("weight".to_string(), self.weight.clone())];
        out.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        out
    }
}

/// 2-D convolution; weight [out, in, kh, kw], bias [out].
pub struct Conv2d {
    pub weight: Arc<Param>,
    pub bias: Option<Arc<Param>>,
    pub opts: Conv2dOpts,
    pub int8: Arc<Int8Slot>,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(inputs: usize, outputs: usize, kernel: usize, opts: Conv2dOpts, bias: bool, device: &Device, rng: &mut StdRng) -> Result<Self> {
        let bound = 1.0 / ((inputs * kernel * kernel) as f32).sqrt();
        let weight = Param::new(uniform(rng, &[outputs, inputs, kernel, kernel], bound, device)?);
        let bias = if bias { Some(Param::new(uniform(rng, &[outputs], bound, device)?)) } else { None };
        Ok(Self { weight, bias, opts, int8: Int8Slot::new() })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        let f32 = || ag::conv2d(x, &self.weight.var(), self.bias.as_ref().map(|b| b.var()).as_ref(), self.opts);
        self.int8.forward(x, f32, |x, w| ops::int8::conv2d_int8(x, w, self.opts))
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        vec![("weight".to_string(), self.int8.clone())]
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        let mut out = vec![("weight".to_string(), self.weight.clone())];
        out.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        out
    }
}

/// batch_norm2d with affine weight/bias and running statistics (momentum 0.1, eps 1e-5, the
/// running variance unbiased, as in PyTorch).
pub struct BatchNorm2d {
    pub weight: Arc<Param>,
    pub bias: Arc<Param>,
    pub running_mean: Arc<Buffer>,
    pub running_var: Arc<Buffer>,
    pub num_batches_tracked: Arc<Buffer>,
    pub momentum: f32,
    pub eps: f32,
    training: AtomicBool,
    /// The constant 1, for counting batches on the device.
    one: Tensor,
}

impl BatchNorm2d {
    pub fn new(channels: usize, device: &Device) -> Result<Self> {
        let filled = |v: f32| Tensor::from_vec(vec![v; channels], &[channels], device);
        Ok(Self {
            weight: Param::new(filled(1.0)?),
            bias: Param::new(filled(0.0)?),
            running_mean: Buffer::new(filled(0.0)?),
            running_var: Buffer::new(filled(1.0)?),
            num_batches_tracked: Buffer::new(Tensor::from_vec(vec![0.0], &[], device)?),
            momentum: 0.1,
            eps: 1e-5,
            training: AtomicBool::new(true),
            one: Tensor::from_vec(vec![1.0], &[], device)?,
        })
    }

    pub fn training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// With running statistics updated as (1 − momentum)·running + momentum·batch (PyTorch's
    /// convention) and `eps` added to the variance: airbench's batch norm takes 0.6 and 1e-12.
    pub fn with_momentum_eps(self, momentum: f32, eps: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&momentum) || eps.is_nan() || eps <= 0.0 {
            return Err(crate::error::shape_err("batch_norm2d", format!("momentum must be in [0, 1] and eps positive, got {momentum} and {eps}")));
        }
        Ok(Self { momentum, eps, ..self })
    }

    /// With the scale γ frozen at its value (1): no gradient, no update, as airbench's batch
    /// norms (`weight=False` there; its biases train, at a scaled learning rate — a
    /// `ParamGroup::lr_scale` of their own).
    pub fn with_frozen_weight(self) -> Self {
        self.weight.set_requires_grad(false);
        self
    }
}

/// Synchronised batch norm's statistics: every replica's (count, mean, variance) reach all (a
/// sum of vectors with one slot per replica) and combine as Chan et al.'s parallel variance,
/// Σ nᵣ(vᵣ + (mᵣ − M)²)/N, which stays accurate where E[x²] − M² would cancel.
fn global_stats(r: &dyn super::ReplicaSum, mean: &Tensor, var: &Tensor, count: f32) -> Result<(Tensor, Tensor, f32)> {
    let (m, v) = (mean.to_vec()?, var.to_vec()?);
    let (c, (me, ranks)) = (m.len(), r.position());
    let width = 2 * c + 1;
    let mut slots = vec![0f32; width * ranks];
    slots[me * width] = count;
    slots[me * width + 1..me * width + 1 + c].copy_from_slice(&m);
    slots[me * width + 1 + c..(me + 1) * width].copy_from_slice(&v);
    let all = r.sum(slots).map_err(crate::Error::Replicas)?;
    let each: Vec<(f64, &[f32], &[f32])> = all.chunks(width).map(|s| (s[0] as f64, &s[1..1 + c], &s[1 + c..])).collect();
    let n: f64 = each.iter().map(|e| e.0).sum::<f64>().max(1.0);
    let gm: Vec<f64> = (0..c).map(|j| each.iter().map(|(k, m, _)| k * m[j] as f64).sum::<f64>() / n).collect();
    let gv: Vec<f32> = (0..c).map(|j| (each.iter().map(|(k, m, v)| k * (v[j] as f64 + (m[j] as f64 - gm[j]).powi(2))).sum::<f64>() / n) as f32).collect();
    let gm: Vec<f32> = gm.into_iter().map(|v| v as f32).collect();
    Ok((Tensor::from_vec(gm, &[c], mean.device())?, Tensor::from_vec(gv, &[c], mean.device())?, n as f32))
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        let (gamma, beta) = (self.weight.var(), self.bias.var());
        if !self.training() {
            let (mean, var) = (self.running_mean.value(), self.running_var.value());
            return ag::batch_norm2d(x, &gamma, &beta, &mean, &var, false, self.eps);
        }
        let (mean, var) = ops::batch_stats(x.value())?;
        let count = ops::BnShape::new(x.shape())?.count() as f32;
        let replicas = super::sync_batch_norm();
        let (mean, var, count) = match &replicas {
            None => (mean, var, count),
            Some(r) => global_stats(r.as_ref(), &mean, &var, count)?,
        };
        no_grad(|| -> Result<()> {
            let running = (self.running_mean.value(), self.running_var.value());
            let (new_mean, new_var) = ops::running_stats_update((&running.0, &running.1), (&mean, &var), self.momentum, count)?;
            self.running_mean.set_value(new_mean);
            self.running_var.set_value(new_var);
            // Counted on the device, so a loaded checkpoint's count carries on.
            self.num_batches_tracked.set_value(ops::axpby(1.0, &self.num_batches_tracked.value(), 1.0, &self.one)?);
            Ok(())
        })?;
        match replicas {
            Some(r) => ag::batch_norm2d_synced(x, &gamma, &beta, &mean, &var, self.eps, r),
            None => ag::batch_norm2d(x, &gamma, &beta, &mean, &var, true, self.eps),
        }
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        vec![("weight".into(), self.weight.clone()), ("bias".into(), self.bias.clone())]
    }

    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
            ("num_batches_tracked".into(), self.num_batches_tracked.clone()),
        ]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}

pub struct ReLU;

impl Module for ReLU {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::relu(x)
    }
}

/// Multiplies by a constant (airbench's logit scale).
pub struct Scale(pub f32);

impl Module for Scale {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::scale(x, self.0)
    }
}

/// GELU, PyTorch's `nn.GELU()` (the exact erf form).
pub struct GELU;

impl Module for GELU {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::gelu(x)
    }
}

/// Flattens every axis after the first: [N, …] → [N, Π…].
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Var) -> Result<Var> {
        let n = x.shape().first().copied().unwrap_or(1);
        ag::reshape(x, &[n, x.value().numel() / n.max(1)])
    }
}

pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::max_pool2d(x, self.kernel, self.stride, self.padding)
    }
}

pub struct AvgPool2d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::avg_pool2d(x, self.kernel, self.stride, self.padding)
    }
}

pub struct AdaptiveAvgPool2d(pub [usize; 2]);

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        ag::adaptive_avg_pool2d(x, self.0)
    }
}

/// Dropout with probability `p` in training, identity in eval. Each forward draws the next
/// mask seed from `seed`, so a run is reproducible.
pub struct Dropout {
    pub p: f32,
    seed: Arc<AtomicU32>,
    training: AtomicBool,
}

impl Dropout {
    pub fn new(p: f32, seed: u32) -> Self {
        Self { p, seed: Arc::new(AtomicU32::new(seed)), training: AtomicBool::new(true) }
    }
}

impl Module for Dropout {
    fn named_counters(&self) -> Vec<(String, Arc<AtomicU32>)> {
        vec![("seed".to_string(), self.seed.clone())]
    }

    fn forward(&self, x: &Var) -> Result<Var> {
        if !self.training.load(Ordering::Relaxed) || self.p == 0.0 {
            return Ok(x.clone());
        }
        ag::dropout(x, self.p, self.seed.fetch_add(1, Ordering::Relaxed))
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
