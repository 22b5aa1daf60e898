//! Gradient buckets: the trainable parameters in backward order (last layer first), grouped
//! up to [`BUCKET_BYTES`]; a bucket's sum over the ranks starts the moment its last gradient
//! is complete, and [`GradReducer::finish`] writes the sums back as the gradients. Frozen
//! parameters are in no bucket: they cost no communication.
use super::{Pending, World};
use crate::error::TrainError;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_engine::autograd::GradSlot;
use tessera_engine::nn::Param;
use tessera_engine::{Device, Tensor};

/// PyTorch DDP's default bucket size.
pub const BUCKET_BYTES: usize = 25 << 20;

pub struct GradReducer {
    world: Arc<World>,
    /// The trainable parameters the buckets were made for (their slot ids, in order).
    signature: Vec<usize>,
    params: Vec<Arc<Param>>,
    /// Parameter indices per bucket, and each slot's (bucket, place).
    buckets: Vec<Vec<usize>>,
    slot_of: HashMap<usize, usize>,
    ready: Vec<usize>,
    pending: Vec<Option<Pending>>,
    /// Bytes sent to the all-reduce so far, and the time spent waiting for sums after the
    /// backward pass (what communication did not hide).
    pub bytes: u64,
    pub exposed: Duration,
}

impl GradReducer {
    pub fn new(world: Arc<World>) -> Self {
        Self {
            world,
            signature: Vec::new(),
            params: Vec::new(),
            buckets: Vec::new(),
            slot_of: HashMap::new(),
            ready: Vec::new(),
            pending: Vec::new(),
            bytes: 0,
            exposed: Duration::ZERO,
        }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Before a backward pass: `trainable` in parameter order (each rank's gradient weighs its
    /// share of the global batch, [`World::share`], in the sum). Buckets are remade when what
    /// trains changed.
    pub fn begin(&mut self, trainable: Vec<Arc<Param>>) {
        let signature: Vec<usize> = trainable.iter().map(|p| p.grad_slot_id()).collect();
        if signature != self.signature {
            self.buckets.clear();
            let (mut bucket, mut bytes) = (Vec::new(), 0);
            for i in (0..trainable.len()).rev() {
                let size = trainable[i].value().numel() * 4;
                if !bucket.is_empty() && bytes + size > BUCKET_BYTES {
                    self.buckets.push(std::mem::take(&mut bucket));
                    bytes = 0;
                }
                bucket.push(i);
                bytes += size;
            }
            if !bucket.is_empty() {
                self.buckets.push(bucket);
            }
            let ids = &signature;
            self.slot_of = self.buckets.iter().enumerate().flat_map(|(b, ps)| ps.iter().map(move |&i| (ids[i], b))).collect();
            self.signature = signature;
            self.params = trainable;
        }
        self.ready = vec![0; self.buckets.len()];
        self.pending = (0..self.buckets.len()).map(|_| None).collect();
    }

    /// A gradient is complete (called by the backward pass): starts its bucket's sum once the
    /// bucket is whole.
    pub fn gradient_done(&mut self, slot: &GradSlot) -> Result<(), TrainError> {
        let Some(&b) = self.slot_of.get(&(Arc::as_ptr(slot) as usize)) else { return Ok(()) };
        self.ready[b] += 1;
        if self.ready[b] == self.buckets[b].len() {
            self.start(b)?;
        }
        Ok(())
    }

    fn start(&mut self, b: usize) -> Result<(), TrainError> {
        let mut flat = Vec::new();
        for &i in &self.buckets[b] {
            let p = &self.params[i];
            match p.grad() {
                Some(g) => {
                    let share = self.world.share();
                    flat.extend(g.to_vec()?.into_iter().map(|v| v * share))
                }
                // No gradient reached it this step (unused in the graph): it adds zero.
                None => flat.extend(std::iter::repeat_n(0.0, p.value().numel())),
            }
        }
        self.bytes += flat.len() as u64 * 4;
        self.pending[b] = Some(self.world.start_sum(flat));
        Ok(())
    }

    /// After the backward pass: starts the buckets still waiting (in bucket order, the same
    /// on every rank), then sets every trainable parameter's gradient to the sum over ranks.
    pub fn finish(&mut self, device: &Device) -> Result<(), TrainError> {
        for b in 0..self.buckets.len() {
            if self.pending[b].is_none() {
                self.start(b)?;
            }
        }
        let waited = Instant::now();
        for b in 0..self.buckets.len() {
            let sum = self.pending[b].take().expect("started above").wait()?;
            let mut at = 0;
            for &i in &self.buckets[b] {
                let p = &self.params[i];
                let shape = p.value().shape().to_vec();
                let n: usize = shape.iter().product();
                p.set_grad(Some(Tensor::from_vec(sum[at..at + n].to_vec(), &shape, device)?));
                at += n;
            }
        }
        self.exposed += waited.elapsed();
        Ok(())
    }
}
