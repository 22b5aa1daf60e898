//! Layers with named parameters and buffers (PyTorch-style dotted names such as
//! `0.weight`, `features.3.bias`) and train/eval mode, on top of the autograd.
mod int8;
mod layers;
mod whitening;

pub use int8::{Int8Mode, Int8Slot};
pub use layers::{AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Scale, GELU};
pub use whitening::patch_whitening;

/// The replicas of a data-parallel job, as synchronised batch norm needs them.
pub trait ReplicaSum: Send + Sync {
    /// The element-wise sum of `values` over the replicas (every replica calls it alike).
    fn sum(&self, values: Vec<f32>) -> std::result::Result<Vec<f32>, String>;
    /// This replica's rows of the current global batch over the global batch's.
    fn share(&self) -> f32;
    /// (this replica's index, the number of replicas).
    fn position(&self) -> (usize, usize);
}

static SYNC_BATCH_NORM: std::sync::RwLock<Option<Arc<dyn ReplicaSum>>> = std::sync::RwLock::new(None);

/// Makes every BatchNorm2d in training mode use statistics over all `replicas` (PyTorch's
/// SyncBatchNorm); `None`: each replica's own batch (the default, as in PyTorch DDP).
pub fn set_sync_batch_norm(replicas: Option<Arc<dyn ReplicaSum>>) {
    *SYNC_BATCH_NORM.write().expect("sync batch norm setting poisoned") = replicas;
}

fn sync_batch_norm() -> Option<Arc<dyn ReplicaSum>> {
    SYNC_BATCH_NORM.read().expect("sync batch norm setting poisoned").clone()
}

use crate::autograd::{GradSlot, Var};
use crate::error::Result;
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A trainable tensor. `requires_grad = false` freezes it: ops on it record nothing and the
/// backward pass computes no gradient for it.
pub struct Param {
    value: Mutex<Tensor>,
    grad: GradSlot,
    requires_grad: AtomicBool,
    /// 0/1 per value: pruned weights, zeroed again after every optimizer update.
    mask: Mutex<Option<Tensor>>,
}

impl Param {
    pub fn new(value: Tensor) -> Arc<Self> {
        Arc::new(Self { value: Mutex::new(value), grad: Arc::default(), requires_grad: AtomicBool::new(true), mask: Mutex::new(None) })
    }

    pub fn value(&self) -> Tensor {
        self.value.lock().expect("param poisoned").clone()
    }

    pub fn set_value(&self, value: Tensor) {
        *self.value.lock().expect("param poisoned") = value;
    }

    /// Changes the value in place (the optimizer's update).
    pub fn update<R>(&self, f: impl FnOnce(&mut Tensor) -> R) -> R {
        f(&mut self.value.lock().expect("param poisoned"))
    }

    /// The graph leaf for one forward pass: accumulates into this parameter's gradient, or a
    /// constant when frozen.
    pub fn var(&self) -> Var {
        if self.requires_grad() {
            Var::leaf_with_slot(self.value(), self.grad.clone())
        } else {
            Var::constant(self.value())
        }
    }

    pub fn grad(&self) -> Option<Tensor> {
        self.grad.lock().expect("grad poisoned").clone()
    }

    pub fn zero_grad(&self) {
        *self.grad.lock().expect("grad poisoned") = None;
    }

    /// The identity of this parameter's gradient slot: `Arc::as_ptr` of the slot
    /// [`Var::backward_with`] hands over when the gradient is complete.
    pub fn grad_slot_id(&self) -> usize {
        Arc::as_ptr(&self.grad) as usize
    }

    /// Replaces the gradient (PyTorch's `p.grad = g`: clipping, injected faults in tests).
    pub fn set_grad(&self, grad: Option<Tensor>) {
        *self.grad.lock().expect("grad poisoned") = grad;
    }

    /// Fixes the values where `mask` is 0 at zero: now, and after every optimizer update
    /// (unstructured pruning's fine-tuning). `None` lifts it.
    pub fn set_mask(&self, mask: Option<Tensor>) -> Result<()> {
        if let Some(m) = &mask {
            self.update(|v| -> Result<()> {
                *v = crate::ops::mul(v, m)?;
                Ok(())
            })?;
        }
        *self.mask.lock().expect("mask poisoned") = mask;
        Ok(())
    }

    pub fn mask(&self) -> Option<Tensor> {
        self.mask.lock().expect("mask poisoned").clone()
    }

    pub fn requires_grad(&self) -> bool {
        self.requires_grad.load(Ordering::Relaxed)
    }

    pub fn set_requires_grad(&self, on: bool) {
        self.requires_grad.store(on, Ordering::Relaxed);
        if !on {
            self.zero_grad();
        }
    }
}

/// A non-trainable tensor a layer keeps between steps (BatchNorm's running statistics).
pub struct Buffer(Mutex<Tensor>);

impl Buffer {
    pub fn new(value: Tensor) -> Arc<Self> {
        Arc::new(Self(Mutex::new(value)))
    }

    pub fn value(&self) -> Tensor {
        self.0.lock().expect("buffer poisoned").clone()
    }

    pub fn set_value(&self, value: Tensor) {
        *self.0.lock().expect("buffer poisoned") = value;
    }
}

/// A layer or a container of layers.
pub trait Module: Send + Sync {
    fn forward(&self, x: &Var) -> Result<Var>;

    /// Parameters under their dotted names, in registration order.
    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        Vec::new()
    }

    /// Buffers under their dotted names, in registration order.
    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        Vec::new()
    }

    /// Random-number state (dropout mask seeds) under dotted names: not part of a PyTorch
    /// state dict, but saved with checkpoints so a resumed run draws the same masks.
    fn named_counters(&self) -> Vec<(String, Arc<AtomicU32>)> {
        Vec::new()
    }

    /// The int8 inference state of each conv and linear layer, under its weight's name.
    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        Vec::new()
    }

    /// Train (batch statistics, dropout on) or eval mode.
    fn set_training(&self, _training: bool) {}

    /// Freezes or unfreezes every parameter.
    fn set_requires_grad(&self, on: bool) {
        self.named_params().iter().for_each(|(_, p)| p.set_requires_grad(on));
    }
}

/// Modules applied in order, named `0`, `1`, … like `torch.nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Runs layers `range` only (a slice of the network, e.g. one sub-model).
    pub fn forward_range(&self, range: std::ops::Range<usize>, x: &Var) -> Result<Var> {
        self.layers[range].iter().try_fold(x.clone(), |h, layer| layer.forward(&h))
    }

    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Prefixes child names: `weight` of child 3 becomes `3.weight`.
pub fn prefixed<T>(prefix: &str, items: Vec<(String, T)>) -> Vec<(String, T)> {
    items.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect()
}

impl Module for Sequential {
    fn forward(&self, x: &Var) -> Result<Var> {
        self.layers.iter().try_fold(x.clone(), |h, layer| layer.forward(&h))
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(&i.to_string(), l.named_params())).collect()
    }

    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(&i.to_string(), l.named_buffers())).collect()
    }

    fn named_counters(&self) -> Vec<(String, Arc<AtomicU32>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(&i.to_string(), l.named_counters())).collect()
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| prefixed(&i.to_string(), l.named_int8())).collect()
    }

    fn set_training(&self, training: bool) {
        self.layers.iter().for_each(|l| l.set_training(training));
    }
}
