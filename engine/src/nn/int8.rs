//! A conv or linear layer's int8 inference state: off (the f32 path), calibrating (the f32
//! path, recording the largest input magnitude seen), or on (the int8 kernels of
//! `ops::int8`; inference only: the output records no gradient).
use crate::autograd::Var;
use crate::error::Result;
use crate::ops::int8::Int8Weights;
use crate::tensor::Tensor;
use std::sync::{Arc, Mutex};

pub enum Int8Mode {
    Off,
    Calibrating { max_abs: f32 },
    On(Arc<Int8Weights>),
}

pub struct Int8Slot(Mutex<Int8Mode>);

impl Int8Slot {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Int8Mode::Off)))
    }

    fn mode(&self) -> std::sync::MutexGuard<'_, Int8Mode> {
        self.0.lock().expect("int8 slot poisoned")
    }

    /// Starts recording input magnitudes (forward passes stay f32).
    pub fn calibrate(&self) {
        *self.mode() = Int8Mode::Calibrating { max_abs: 0.0 };
    }

    /// The largest input magnitude recorded since [`Int8Slot::calibrate`].
    pub fn observed(&self) -> Option<f32> {
        match *self.mode() {
            Int8Mode::Calibrating { max_abs } => Some(max_abs),
            _ => None,
        }
    }

    /// Runs the layer in int8 with `weights`, or in f32 again with `None`.
    pub fn set(&self, weights: Option<Arc<Int8Weights>>) {
        *self.mode() = weights.map_or(Int8Mode::Off, Int8Mode::On);
    }

    pub fn weights(&self) -> Option<Arc<Int8Weights>> {
        match &*self.mode() {
            Int8Mode::On(w) => Some(w.clone()),
            _ => None,
        }
    }

    /// The layer's forward: `int8` on the input's value when on, else `f32` (recording the
    /// input's magnitude when calibrating).
    pub(crate) fn forward(&self, x: &Var, f32: impl FnOnce() -> Result<Var>, int8: impl FnOnce(&Tensor, &Int8Weights) -> Result<Tensor>) -> Result<Var> {
        if let Some(w) = self.weights() {
            return Ok(Var::constant(int8(x.value(), &w)?));
        }
        if self.observed().is_some() {
            let seen = x.value().to_vec()?.iter().fold(0f32, |m, v| m.max(v.abs()));
            if let Int8Mode::Calibrating { max_abs } = &mut *self.mode() {
                *max_abs = max_abs.max(seen);
            }
        }
        f32()
    }
}
