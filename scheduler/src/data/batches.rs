//! Batches of an [`ImageSet`]: a seeded shuffle per epoch, optional training augmentation
//! (random crop with zero padding, horizontal flip) and per-channel normalisation.
use super::ImageSet;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use rayon::prelude::*;

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

/// Training augmentation: a random crop of the image padded by `pad` zeros on each side, and
/// a horizontal flip with probability ½.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub pad: usize,
    pub flip: bool,
}

impl Augment {
    pub const CIFAR: Self = Self { pad: 4, flip: true };
}

/// One epoch of batches. Deterministic given (seed, epoch).
pub struct Batches<'a> {
    set: &'a ImageSet,
    order: Vec<usize>,
    batch: usize,
    next: usize,
    augment: Option<Augment>,
    norm: Normalize,
    rng: StdRng,
}

/// A batch: pixels [B, 3, H, W] as f32 in NCHW order, and labels.
pub struct Batch {
    pub x: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
}

impl<'a> Batches<'a> {
    pub fn new(set: &'a ImageSet, batch: usize, seed: u64, epoch: u64, shuffle: bool, augment: Option<Augment>, norm: Normalize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch));
        let mut order: Vec<usize> = (0..set.len()).collect();
        if shuffle {
            order.shuffle(&mut rng);
        }
        Self { set, order, batch: batch.max(1), next: 0, augment, norm, rng }
    }

    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.batch)
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let idx = self.order.get(self.next..(self.next + self.batch).min(self.order.len()))?.to_vec();
        if idx.is_empty() {
            return None;
        }
        self.next += idx.len();
        let (h, w) = (self.set.height, self.set.width);
        // Draw every random choice up front, in order, so the batch is deterministic.
        let moves: Vec<(isize, isize, bool)> = idx
            .iter()
            .map(|_| match self.augment {
                Some(a) => {
                    let p = a.pad as isize;
                    (self.rng.gen_range(-p..=p), self.rng.gen_range(-p..=p), a.flip && self.rng.gen_bool(0.5))
                }
                None => (0, 0, false),
            })
            .collect();
        let norm = self.norm;
        let mut x = vec![0f32; idx.len() * 3 * h * w];
        x.par_chunks_mut(3 * h * w).zip(idx.par_iter().zip(&moves)).for_each(|(dst, (&i, &(dy, dx, flip)))| {
            let src = self.set.image(i);
            for c in 0..3 {
                let (mean, std) = (norm.mean[c], norm.std[c]);
                for y in 0..h {
                    for xo in 0..w {
                        let xs = if flip { w - 1 - xo } else { xo } as isize + dx;
                        let ys = y as isize + dy;
                        let v = if ys >= 0 && (ys as usize) < h && xs >= 0 && (xs as usize) < w {
                            src[(c * h + ys as usize) * w + xs as usize] as f32 / 255.0
                        } else {
                            0.0 // zero padding, before normalisation as torchvision's RandomCrop
                        };
                        dst[(c * h + y) * w + xo] = (v - mean) / std;
                    }
                }
            }
        });
        let labels = idx.iter().map(|&i| self.set.labels[i]).collect();
        Some(Batch { x, shape: [idx.len(), 3, h, w], labels })
    }
}
