//! The input pipeline: worker threads read, augment and normalise whole batches ahead of the
//! step within a memory budget, so memory is bounded by the budget, not the data set. Worker w
//! builds batches w, w + W, …; the consumer takes them in order, and each image's random
//! choices are seeded by (seed, epoch, position), so the batches are the same whatever the
//! worker count and a resumed run sees exactly the batches it would have.
use super::{DataError, Dataset, Result};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// (x / 255 − mean) / std per channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    pub const CIFAR10: Self = Self { mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] };
    pub const IMAGENET: Self = Self { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
}

/// Training augmentation: a random translation by up to `pad` pixels each way (a crop of the
/// image padded by `pad` on each side, the padding per `border`), and a horizontal flip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub pad: usize,
    pub flip: Flip,
    pub border: Border,
}

impl Augment {
    /// torchvision's RandomCrop(32, padding=4) and RandomHorizontalFlip().
    pub const CIFAR: Self = Self { pad: 4, flip: Flip::Random, border: Border::Zeros };
    /// airbench94's: translation by up to 2 pixels with reflected borders, alternating flips.
    pub const AIRBENCH: Self = Self { pad: 2, flip: Flip::Alternating, border: Border::Reflect };
}

/// How training flips images horizontally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    None,
    /// Each image with probability ½, drawn anew every epoch.
    Random,
    /// airbench's derandomised flip: a random half of the images in the first epoch, then
    /// every image the other way from its previous epoch, so any two consecutive epochs show
    /// each image both ways.
    Alternating,
}

/// What a translated image shows beyond its border.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Zeros before normalisation (torchvision's RandomCrop padding).
    Zeros,
    /// The image mirrored about its edge row or column, the edge not repeated (PyTorch's
    /// `reflect` padding); `pad` must be below the image's size.
    Reflect,
}

impl Augment {
    /// Whether image `image` (its index in the data set) is flipped in `epoch`; `coin` is the
    /// pass's random draw for its position.
    fn flips(&self, image: usize, epoch: u64, seed: u64, coin: bool) -> bool {
        match self.flip {
            Flip::None => false,
            Flip::Random => coin,
            Flip::Alternating => {
                let first = StdRng::seed_from_u64(seed ^ (image as u64).wrapping_mul(0x94d0_49bb_1331_11eb)).gen_bool(0.5);
                first ^ (epoch % 2 == 1)
            }
        }
    }

    /// The source coordinate of padded coordinate `v` along an axis of `size`, or None for a
    /// zero.
    fn source(&self, v: isize, size: usize) -> Option<usize> {
        let last = size as isize - 1;
        match self.border {
            _ if (0..=last).contains(&v) => Some(v as usize),
            Border::Zeros => None,
            Border::Reflect => {
                let r = if v < 0 { -v } else { 2 * last - v };
                (0..=last).contains(&r).then_some(r as usize)
            }
        }
    }
}

/// A batch: pixels as f32 in NCHW order with their shape, and labels.
#[derive(Clone, Debug)]
pub struct Batch {
    pub x: Vec<f32>,
    pub shape: Vec<usize>,
    pub labels: Vec<usize>,
    /// Rows of the global batch this one is a rank's shard of (its own rows when unsharded).
    pub global: usize,
}

/// How one pass over a data set is batched.
#[derive(Clone, Debug)]
pub struct LoaderSpec {
    pub batch: usize,
    pub seed: u64,
    pub epoch: u64,
    pub shuffle: bool,
    pub augment: Option<Augment>,
    pub norm: Normalize,
    /// Reader threads (0: one per core).
    pub workers: usize,
    /// Bytes of batches the loader may hold at once (queued or being built); none: three
    /// batches per worker.
    pub memory_limit: Option<usize>,
    /// Batches of this pass already trained (a run resumed mid-epoch): they are not built.
    pub skip: usize,
    /// (rank, ranks): each batch is this rank's rows `[rank·n/ranks, (rank+1)·n/ranks)` of
    /// the global batch of n rows (data-parallel training); (0, 1): the whole batch.
    pub shard: (usize, usize),
    /// Leave out a last batch smaller than `batch` (PyTorch's `drop_last`).
    pub drop_last: bool,
}

impl LoaderSpec {
    /// A training epoch: shuffled, CIFAR augmentation, CIFAR-10 normalisation.
    pub fn train(batch: usize, seed: u64, epoch: u64) -> Self {
        Self {
            batch,
            seed,
            epoch,
            shuffle: true,
            augment: Some(Augment::CIFAR),
            norm: Normalize::CIFAR10,
            workers: 0,
            memory_limit: None,
            skip: 0,
            shard: (0, 1),
            drop_last: false,
        }
    }

    /// The rows this rank reads in a pass over `len` images.
    pub fn shard_rows(&self, len: usize) -> usize {
        let (rank, ranks, batch) = (self.shard.0, self.shard.1.max(1), self.batch.max(1));
        (0..len.div_ceil(batch)).map(|b| batch.min(len - b * batch)).map(|n| (rank + 1) * n / ranks - rank * n / ranks).sum()
    }

    /// An evaluation pass: in order, no augmentation.
    pub fn eval(batch: usize) -> Self {
        Self { shuffle: false, augment: None, ..Self::train(batch, 0, 0) }
    }

    pub fn with_workers(self, workers: usize) -> Self {
        Self { workers, ..self }
    }
}

/// The loader's memory budget: bytes of batches held (being built, queued), granted to the
/// batches strictly in order — so the batch the consumer waits for is never starved by later
/// ones — and returned when the consumer takes a batch.
#[derive(Debug)]
pub struct LoaderMemory {
    /// (bytes held, the next batch to be granted, closed)
    state: Mutex<(usize, usize, bool)>,
    changed: Condvar,
    limit: usize,
    peak: AtomicUsize,
}

impl LoaderMemory {
    /// A budget of `limit` bytes whose first grant goes to batch `first`.
    fn new(limit: usize, first: usize) -> Self {
        Self { state: Mutex::new((0, first, false)), changed: Condvar::new(), limit, peak: AtomicUsize::new(0) }
    }

    /// Waits until batch `index` is next and its `bytes` fit (a batch always fits an empty
    /// budget); false once the loader is closed.
    fn acquire(&self, index: usize, bytes: usize) -> bool {
        let mut s = self.state.lock().expect("loader budget poisoned");
        loop {
            if s.2 {
                return false;
            }
            if s.1 == index && (s.0 == 0 || s.0 + bytes <= self.limit) {
                break;
            }
            s = self.changed.wait(s).expect("loader budget poisoned");
        }
        s.0 += bytes;
        s.1 += 1;
        self.peak.fetch_max(s.0, Ordering::SeqCst);
        self.changed.notify_all();
        true
    }

    fn release(&self, bytes: usize) {
        self.state.lock().expect("loader budget poisoned").0 -= bytes;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().expect("loader budget poisoned").2 = true;
        self.changed.notify_all();
    }

    /// The most bytes held at once.
    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// One pass over a data set as batches, in order.
pub struct Loader {
    queues: Vec<Receiver<Result<Batch>>>,
    /// The first batch built (`LoaderSpec::skip`), and the next one to hand out.
    first: usize,
    next: usize,
    count: usize,
    memory: Arc<LoaderMemory>,
    workers: Vec<JoinHandle<()>>,
}

/// Bytes one batch of `images` takes while the loader holds it.
fn bytes_of(images: usize, (h, w): (usize, usize)) -> usize {
    images * 3 * h * w * std::mem::size_of::<f32>()
}

impl Loader {
    /// Starts the workers over `set` per `spec`.
    pub fn new(set: &Dataset, spec: &LoaderSpec) -> Result<Self> {
        let batch = spec.batch.max(1);
        let mut order: Vec<usize> = (0..set.len()).collect();
        if spec.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(spec.seed.wrapping_mul(1_000_003).wrapping_add(spec.epoch)));
        }
        if spec.drop_last {
            order.truncate(order.len() / batch * batch);
        }
        let count = order.len().div_ceil(batch);
        // Every rank needs a row of every batch (the last one too), or the ranks' steps differ.
        let ranks = spec.shard.1.max(1);
        let last = order.len() - count.saturating_sub(1) * batch;
        if ranks > 1 && count > 0 && last.min(batch) < ranks {
            return Err(DataError::Layout {
                path: "<loader>".into(),
                detail: format!("{ranks} ranks need at least {ranks} images in every batch; a batch of {batch} over {} images ends with {last}: change --batch or the rank count", order.len()),
            });
        }
        let batch_bytes = bytes_of(batch.min(order.len()).max(1), set.dims());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let first = spec.skip.min(count);
        let workers = if spec.workers == 0 { cores } else { spec.workers }.clamp(1, (count - first).max(1));
        let limit = match spec.memory_limit {
            Some(limit) if limit < batch_bytes => {
                return Err(DataError::Layout {
                    path: "<loader>".into(),
                    detail: format!("a memory limit of {limit} bytes holds no batch of {batch} images ({batch_bytes} bytes); raise it or lower the batch"),
                });
            }
            Some(limit) => limit,
            None => 3 * workers * batch_bytes,
        };
        let memory = Arc::new(LoaderMemory::new(limit, first));
        let order = Arc::new(order);
        let (mut queues, mut handles) = (Vec::new(), Vec::new());
        for w in 0..workers {
            // Unbounded: the memory budget, not the queue, bounds what waits in it.
            let (tx, rx) = channel();
            let (set, order, memory, spec) = (set.clone(), order.clone(), memory.clone(), spec.clone());
            let handle = std::thread::Builder::new()
                .name(format!("tessera-loader-{w}"))
                .spawn(move || {
                    for b in (first + w..count).step_by(workers) {
                        let global = &order[b * batch..((b + 1) * batch).min(order.len())];
                        let (rank, ranks) = spec.shard;
                        let (lo, hi) = (rank * global.len() / ranks.max(1), (rank + 1) * global.len() / ranks.max(1));
                        let idx = &global[lo..hi];
                        let bytes = bytes_of(idx.len(), set.dims());
                        if !memory.acquire(b, bytes) {
                            return; // the loader was dropped
                        }
                        let built = build_batch(&set, idx, b * batch + lo, &spec).map(|batch| Batch { global: global.len(), ..batch });
                        let failed = built.is_err();
                        if failed {
                            memory.release(bytes);
                        }
                        if tx.send(built).is_err() || failed {
                            return; // the consumer is gone, or this pass ends at the error
                        }
                    }
                })
                .map_err(|error| DataError::Io { path: "<loader thread>".into(), error })?;
            queues.push(rx);
            handles.push(handle);
        }
        Ok(Self { queues, first, next: first, count, memory, workers: handles })
    }

    /// Batches in this pass, skipped ones included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The batches skipped at the start (`LoaderSpec::skip`).
    pub fn skipped(&self) -> usize {
        self.first
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The loader's memory accounting (bytes of batches held, and the peak).
    pub fn memory(&self) -> Arc<LoaderMemory> {
        self.memory.clone()
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.count {
            return None;
        }
        let queue = &self.queues[(self.next - self.first) % self.queues.len()];
        self.next += 1;
        let batch = match queue.recv() {
            Ok(b) => b,
            Err(_) => Err(DataError::Layout { path: "<loader>".into(), detail: "a loader thread ended early (it panicked)".into() }),
        };
        if let Ok(b) = &batch {
            self.memory.release(b.x.len() * std::mem::size_of::<f32>());
        }
        if batch.is_err() {
            self.next = self.count; // an error ends the pass
        }
        Some(batch)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.memory.close(); // workers waiting for memory stop
        self.queues.clear(); // workers sending see the queue gone and stop
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Reads, augments and normalises images `idx` (at positions `first`… of the pass).
fn build_batch(set: &Dataset, idx: &[usize], first: usize, spec: &LoaderSpec) -> Result<Batch> {
    let (h, w) = set.dims();
    let len = 3 * h * w;
    let mut pixels = vec![0u8; len];
    let mut x = Vec::with_capacity(idx.len() * len);
    for (k, &i) in idx.iter().enumerate() {
        set.read_into(i, &mut pixels)?;
        let augment = spec.augment.unwrap_or(Augment { pad: 0, flip: Flip::None, border: Border::Zeros });
        let (dy, dx, flip) = match spec.augment {
            Some(a) => {
                let position = (first + k) as u64;
                let rng = &mut StdRng::seed_from_u64(spec.seed ^ spec.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ position.wrapping_mul(0xbf58_476d_1ce4_e5b9));
                let p = a.pad as isize;
                (rng.gen_range(-p..=p), rng.gen_range(-p..=p), a.flips(i, spec.epoch, spec.seed, rng.gen_bool(0.5)))
            }
            None => (0, 0, false),
        };
        for c in 0..3 {
            let (mean, std) = (spec.norm.mean[c], spec.norm.std[c]);
            let plane = &pixels[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let ys = augment.source(y as isize + dy, h);
                for xo in 0..w {
                    let xs = augment.source(if flip { w - 1 - xo } else { xo } as isize + dx, w);
                    let v = match (ys, xs) {
                        (Some(ys), Some(xs)) => plane[ys * w + xs] as f32 / 255.0,
                        _ => 0.0, // zero padding, before normalisation as torchvision's RandomCrop
                    };
                    x.push((v - mean) / std);
                }
            }
        }
    }
    Ok(Batch { x, shape: vec![idx.len(), 3, h, w], labels: idx.iter().map(|&i| set.label(i)).collect(), global: idx.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_flips_show_every_image_both_ways_in_any_two_epochs() {
        let a = Augment::AIRBENCH;
        let first: Vec<bool> = (0..64).map(|i| a.flips(i, 0, 7, false)).collect();
        let flipped = first.iter().filter(|&&f| f).count();
        assert!((16..=48).contains(&flipped), "{flipped} of 64 flipped in the first epoch");
        for epoch in 0..5 {
            for image in 0..64 {
                assert_ne!(a.flips(image, epoch, 7, false), a.flips(image, epoch + 1, 7, true), "image {image}, epochs {epoch} and {}", epoch + 1);
            }
        }
        // Random flips follow the pass's coin; no flips never flip.
        assert!(Augment::CIFAR.flips(3, 1, 7, true) && !Augment::CIFAR.flips(3, 1, 7, false));
        assert!(!Augment { flip: Flip::None, ..Augment::CIFAR }.flips(3, 1, 7, true));
    }

    #[test]
    fn borders_pad_with_zeros_or_the_mirrored_image() {
        let (zeros, reflect) = (Augment::CIFAR, Augment::AIRBENCH);
        // Along an axis of 5: padded coordinates −2..6.
        let got: Vec<Option<usize>> = (-2..7).map(|v| reflect.source(v, 5)).collect();
        assert_eq!(got, [2, 1, 0, 1, 2, 3, 4, 3, 2].map(Some));
        let got: Vec<Option<usize>> = (-2..7).map(|v| zeros.source(v, 5)).collect();
        assert_eq!(got, [None, None, Some(0), Some(1), Some(2), Some(3), Some(4), None, None]);
    }
}
