//! AlexNet as torchvision defines it (`features.N`, `avgpool`, `classifier.N`), the 32-px
//! `alexnet-cifar`, and the `simple-cnn` used by smoke tests and benchmarks.
use rand::rngs::StdRng;
use std::sync::Arc;
use tessera_engine::autograd::Var;
use tessera_engine::nn::{prefixed, AdaptiveAvgPool2d, Buffer, Conv2d, Dropout, Flatten, Int8Slot, Linear, MaxPool2d, Module, Param, ReLU, Sequential};
use tessera_engine::ops::Conv2dOpts;
use tessera_engine::{Device, Result};

/// `features` → adaptive average pool → flatten → `classifier`.
pub struct AlexNet {
    features: Sequential,
    avgpool: AdaptiveAvgPool2d,
    classifier: Sequential,
}

fn conv(i: usize, o: usize, k: usize, stride: usize, pad: usize, rng: &mut StdRng, dev: &Device) -> Result<Conv2d> {
    Conv2d::new(i, o, k, Conv2dOpts::new(stride, pad), true, dev, rng)
}

fn pool(kernel: usize, stride: usize) -> MaxPool2d {
    MaxPool2d { kernel, stride, padding: 0 }
}

impl AlexNet {
    /// torchvision's AlexNet for 224-px inputs: 61,100,840 parameters with 1000 classes.
    pub fn torchvision(num_classes: usize, dev: &Device, rng: &mut StdRng, seed: u32) -> Result<Self> {
        let features = Self::features((11, 4, 2), (5, 2), (3, 2), dev, rng)?;
        Self::with_classifier(features, [6, 6], 4096, num_classes, dev, rng, seed)
    }

    /// AlexNet for 32-px inputs (`alexnet-cifar`): the same five convolutions and names, but
    /// 3×3 stride-1 first convolution and 2×2 max-pools (32 → 16 → 8 → 4), a 4×4 pool and
    /// 1024-wide hidden layers: features of 256·4·4 = 4096.
    pub fn cifar(num_classes: usize, dev: &Device, rng: &mut StdRng, seed: u32) -> Result<Self> {
        let features = Self::features((3, 1, 1), (3, 1), (2, 2), dev, rng)?;
        Self::with_classifier(features, [4, 4], 1024, num_classes, dev, rng, seed)
    }

    /// The five convolutions (64, 192, 384, 256, 256 channels) with ReLUs and three max-pools;
    /// `first` = (kernel, stride, padding) of conv1, `second` = (kernel, padding) of conv2,
    /// `pooling` = (kernel, stride).
    fn features(first: (usize, usize, usize), second: (usize, usize), pooling: (usize, usize), dev: &Device, rng: &mut StdRng) -> Result<Sequential> {
        let (k, s, p) = first;
        Ok(Sequential::new()
            .with(conv(3, 64, k, s, p, rng, dev)?)
            .with(ReLU)
            .with(pool(pooling.0, pooling.1))
            .with(conv(64, 192, second.0, 1, second.1, rng, dev)?)
            .with(ReLU)
            .with(pool(pooling.0, pooling.1))
            .with(conv(192, 384, 3, 1, 1, rng, dev)?)
            .with(ReLU)
            .with(conv(384, 256, 3, 1, 1, rng, dev)?)
            .with(ReLU)
            .with(conv(256, 256, 3, 1, 1, rng, dev)?)
            .with(ReLU)
            .with(pool(pooling.0, pooling.1)))
    }

    fn with_classifier(features: Sequential, pooled: [usize; 2], hidden: usize, num_classes: usize, dev: &Device, rng: &mut StdRng, seed: u32) -> Result<Self> {
        let flat = 256 * pooled[0] * pooled[1];
        let classifier = Sequential::new()
            .with(Dropout::new(0.5, seed))
            .with(Linear::new(flat, hidden, true, dev, rng)?)
            .with(ReLU)
            .with(Dropout::new(0.5, seed.wrapping_add(1 << 20)))
            .with(Linear::new(hidden, hidden, true, dev, rng)?)
            .with(ReLU)
            .with(Linear::new(hidden, num_classes, true, dev, rng)?);
        Ok(Self { features, avgpool: AdaptiveAvgPool2d(pooled), classifier })
    }
}

impl AlexNet {
    /// Sub-models and stage cuts over the units (conv1 … conv5, fc6, fc7, fc8): the stages
    /// conv1-3, conv4-5, fc6, fc7, fc8, or one sub-model per layer.
    pub fn partition(granularity: crate::Granularity) -> (Vec<crate::SubModel>, Vec<usize>) {
        use crate::SubModel;
        match granularity {
            crate::Granularity::Layer => (
                SubModel::chain(&[
                    ("conv1", &["features.0"]),
                    ("conv2", &["features.3"]),
                    ("conv3", &["features.6"]),
                    ("conv4", &["features.8"]),
                    ("conv5", &["features.10"]),
                    ("fc6", &["classifier.1"]),
                    ("fc7", &["classifier.4"]),
                    ("fc8", &["classifier.6"]),
                ]),
                (0..=8).collect(),
            ),
            _ => (
                SubModel::chain(&[
                    ("conv1-3", &["features.0", "features.3", "features.6"]),
                    ("conv4-5", &["features.8", "features.10"]),
                    ("fc6", &["classifier.1"]),
                    ("fc7", &["classifier.4"]),
                    ("fc8", &["classifier.6"]),
                ]),
                vec![0, 3, 5, 6, 7, 8],
            ),
        }
    }
}

impl crate::Network for AlexNet {
    fn unit_count(&self) -> usize {
        8
    }

    /// Units: conv1 (features 0–2, with ReLU and pool), conv2 (3–5), conv3 (6–7), conv4
    /// (8–9), conv5 (10–12, pool, flatten), fc6 (classifier 0–2), fc7 (3–5), fc8 (6).
    fn forward_unit(&self, unit: usize, x: &Var) -> Result<Var> {
        match unit {
            0 => self.features.forward_range(0..3, x),
            1 => self.features.forward_range(3..6, x),
            2 => self.features.forward_range(6..8, x),
            3 => self.features.forward_range(8..10, x),
            4 => Flatten.forward(&self.avgpool.forward(&self.features.forward_range(10..13, x)?)?),
            5 => self.classifier.forward_range(0..3, x),
            6 => self.classifier.forward_range(3..6, x),
            _ => self.classifier.forward_range(6..7, x),
        }
    }
}

impl Module for AlexNet {
    fn forward(&self, x: &Var) -> Result<Var> {
        use crate::Network;
        (0..self.unit_count()).try_fold(x.clone(), |h, unit| self.forward_unit(unit, &h))
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        let mut out = prefixed("features", self.features.named_params());
        out.extend(prefixed("classifier", self.classifier.named_params()));
        out
    }

    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        Vec::new()
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        let mut out = prefixed("features", self.features.named_int8());
        out.extend(prefixed("classifier", self.classifier.named_int8()));
        out
    }

    fn named_counters(&self) -> Vec<(String, Arc<std::sync::atomic::AtomicU32>)> {
        prefixed("classifier", self.classifier.named_counters())
    }

    fn set_training(&self, training: bool) {
        self.classifier.set_training(training);
    }
}

/// conv 3→32 3×3 pad 1, ReLU, max-pool 2, conv 32→64 3×3 pad 1, ReLU, max-pool 2, flatten,
/// linear 4096→num_classes (for 32-px inputs).
pub fn simple_cnn(num_classes: usize, dev: &Device, rng: &mut StdRng) -> Result<Sequential> {
    Ok(Sequential::new()
        .with(conv(3, 32, 3, 1, 1, rng, dev)?)
        .with(ReLU)
        .with(pool(2, 2))
        .with(conv(32, 64, 3, 1, 1, rng, dev)?)
        .with(ReLU)
        .with(pool(2, 2))
        .with(Flatten)
        .with(Linear::new(64 * 8 * 8, num_classes, true, dev, rng)?))
}
