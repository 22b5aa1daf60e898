//! ResNets as torchvision defines them (He et al. 2016): BasicBlock (resnet18/34) and
//! Bottleneck (resnet50, stride on the 3×3 conv as in torchvision ≥ 0.4), with the ImageNet
//! stem (7×7/2 conv, 3×3/2 max-pool) or the 32-px stem (3×3/1 conv, no max-pool); and the
//! CIFAR ResNet-20 of the paper's §4.2 (3 stages of 3 BasicBlocks, 16/32/64 channels, 1×1
//! projection shortcuts where the shape changes).
use rand::rngs::StdRng;
use std::sync::Arc;
use tessera_engine::autograd::{self as ag, Var};
use tessera_engine::nn::{prefixed, AdaptiveAvgPool2d, BatchNorm2d, Buffer, Conv2d, Int8Slot, Linear, MaxPool2d, Module, Param, Sequential};
use tessera_engine::ops::Conv2dOpts;
use tessera_engine::{Device, Result};

fn conv(i: usize, o: usize, k: usize, stride: usize, rng: &mut StdRng, dev: &Device) -> Result<Conv2d> {
    Conv2d::new(i, o, k, Conv2dOpts::new(stride, k / 2), false, dev, rng)
}

/// A residual block: `relu(body(x) + shortcut(x))`, the body's convs and norms named as
/// torchvision names them (`conv1`, `bn1`, …), the projection shortcut `downsample.0/1`.
pub struct Block {
    convs: Vec<Conv2d>,
    norms: Vec<BatchNorm2d>,
    downsample: Option<Sequential>,
}

impl Block {
    /// BasicBlock: 3×3 (stride) → 3×3, expansion 1.
    pub fn basic(inputs: usize, width: usize, stride: usize, rng: &mut StdRng, dev: &Device) -> Result<Self> {
        let convs = vec![conv(inputs, width, 3, stride, rng, dev)?, conv(width, width, 3, 1, rng, dev)?];
        let norms = vec![BatchNorm2d::new(width, dev)?, BatchNorm2d::new(width, dev)?];
        let downsample = Self::projection(inputs, width, stride, rng, dev)?;
        Ok(Self { convs, norms, downsample })
    }

    /// Bottleneck: 1×1 → 3×3 (stride) → 1×1 to 4·width.
    pub fn bottleneck(inputs: usize, width: usize, stride: usize, rng: &mut StdRng, dev: &Device) -> Result<Self> {
        let out = width * 4;
        let convs = vec![conv(inputs, width, 1, 1, rng, dev)?, conv(width, width, 3, stride, rng, dev)?, conv(width, out, 1, 1, rng, dev)?];
        let norms = vec![BatchNorm2d::new(width, dev)?, BatchNorm2d::new(width, dev)?, BatchNorm2d::new(out, dev)?];
        let downsample = Self::projection(inputs, out, stride, rng, dev)?;
        Ok(Self { convs, norms, downsample })
    }

    fn projection(inputs: usize, out: usize, stride: usize, rng: &mut StdRng, dev: &Device) -> Result<Option<Sequential>> {
        if stride == 1 && inputs == out {
            return Ok(None);
        }
        Ok(Some(Sequential::new().with(conv(inputs, out, 1, stride, rng, dev)?).with(BatchNorm2d::new(out, dev)?)))
    }
}

impl Module for Block {
    fn forward(&self, x: &Var) -> Result<Var> {
        let mut h = x.clone();
        for (i, (c, n)) in self.convs.iter().zip(&self.norms).enumerate() {
            h = n.forward(&c.forward(&h)?)?;
            if i + 1 < self.convs.len() {
                h = ag::relu(&h)?;
            }
        }
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        ag::relu(&ag::add(&h, &shortcut)?)
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        let mut out = Vec::new();
        for (i, (c, n)) in self.convs.iter().zip(&self.norms).enumerate() {
            out.extend(prefixed(&format!("conv{}", i + 1), c.named_params()));
            out.extend(prefixed(&format!("bn{}", i + 1), n.named_params()));
        }
        if let Some(d) = &self.downsample {
            out.extend(prefixed("downsample", d.named_params()));
        }
        out
    }

    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        let mut out: Vec<_> = self.norms.iter().enumerate().flat_map(|(i, n)| prefixed(&format!("bn{}", i + 1), n.named_buffers())).collect();
        if let Some(d) = &self.downsample {
            out.extend(prefixed("downsample", d.named_buffers()));
        }
        out
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        let mut out: Vec<_> = self.convs.iter().enumerate().flat_map(|(i, c)| prefixed(&format!("conv{}", i + 1), c.named_int8())).collect();
        if let Some(d) = &self.downsample {
            out.extend(prefixed("downsample", d.named_int8()));
        }
        out
    }

    fn set_training(&self, training: bool) {
        self.norms.iter().for_each(|n| n.set_training(training));
        if let Some(d) = &self.downsample {
            d.set_training(training);
        }
    }
}

/// Which residual block and how many per stage.
#[derive(Clone, Copy, Debug)]
pub enum Depth {
    Basic(&'static [usize]),
    Bottleneck(&'static [usize]),
}

pub const RESNET18: Depth = Depth::Basic(&[2, 2, 2, 2]);
pub const RESNET34: Depth = Depth::Basic(&[3, 4, 6, 3]);
pub const RESNET50: Depth = Depth::Bottleneck(&[3, 4, 6, 3]);
pub const RESNET20: Depth = Depth::Basic(&[3, 3, 3]);

/// A ResNet: `conv1`, `bn1`, (`maxpool`), `layer1`…`layerN`, `avgpool`, `fc`.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    maxpool: Option<MaxPool2d>,
    layers: Vec<Sequential>,
    fc: Linear,
}

impl ResNet {
    /// torchvision's ResNet (`imagenet_stem`: 7×7/2 conv + max-pool; else 3×3/1 conv, no
    /// pool, for 32-px inputs), widths 64·2^i.
    pub fn torchvision(depth: Depth, num_classes: usize, imagenet_stem: bool, dev: &Device, rng: &mut StdRng) -> Result<Self> {
        let conv1 = if imagenet_stem { conv(3, 64, 7, 2, rng, dev)? } else { conv(3, 64, 3, 1, rng, dev)? };
        let maxpool = imagenet_stem.then_some(MaxPool2d { kernel: 3, stride: 2, padding: 1 });
        Self::build(depth, conv1, BatchNorm2d::new(64, dev)?, maxpool, &[64, 128, 256, 512], num_classes, dev, rng)
    }

    /// He et al.'s CIFAR ResNet-20: 3×3 conv to 16 channels, stages of 16/32/64.
    pub fn cifar20(num_classes: usize, dev: &Device, rng: &mut StdRng) -> Result<Self> {
        let conv1 = conv(3, 16, 3, 1, rng, dev)?;
        Self::build(RESNET20, conv1, BatchNorm2d::new(16, dev)?, None, &[16, 32, 64], num_classes, dev, rng)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        depth: Depth,
        conv1: Conv2d,
        bn1: BatchNorm2d,
        maxpool: Option<MaxPool2d>,
        widths: &[usize],
        num_classes: usize,
        dev: &Device,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let (blocks, expansion) = match depth {
            Depth::Basic(b) => (b, 1),
            Depth::Bottleneck(b) => (b, 4),
        };
        let mut inputs = widths[0];
        let mut layers = Vec::new();
        for (stage, (&count, &width)) in blocks.iter().zip(widths).enumerate() {
            let mut seq = Sequential::new();
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let block = match depth {
                    Depth::Basic(_) => Block::basic(inputs, width, stride, rng, dev)?,
                    Depth::Bottleneck(_) => Block::bottleneck(inputs, width, stride, rng, dev)?,
                };
                inputs = width * expansion;
                seq = seq.with(block);
            }
            layers.push(seq);
        }
        let fc = Linear::new(inputs, num_classes, true, dev, rng)?;
        Ok(Self { conv1, bn1, maxpool, layers, fc })
    }

    /// Names of the stages: `layer1`, `layer2`, ….
    pub fn stage_names(&self) -> Vec<String> {
        (1..=self.layers.len()).map(|i| format!("layer{i}")).collect()
    }
}

impl crate::Network for ResNet {
    /// Stages: stem, layer1…layerN, fc (with the global average pool).
    fn forward_stage(&self, stage: usize, x: &Var) -> Result<Var> {
        if stage == 0 {
            let h = ag::relu(&self.bn1.forward(&self.conv1.forward(x)?)?)?;
            return match &self.maxpool {
                Some(pool) => pool.forward(&h),
                None => Ok(h),
            };
        }
        if let Some(layer) = self.layers.get(stage - 1) {
            return layer.forward(x);
        }
        let pooled = AdaptiveAvgPool2d([1, 1]).forward(x)?;
        let n = pooled.shape()[0];
        self.fc.forward(&ag::reshape(&pooled, &[n, pooled.value().numel() / n])?)
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Var) -> Result<Var> {
        use crate::Network;
        (0..self.layers.len() + 2).try_fold(x.clone(), |h, stage| self.forward_stage(stage, &h))
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        let mut out = prefixed("conv1", self.conv1.named_params());
        out.extend(prefixed("bn1", self.bn1.named_params()));
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(prefixed(&format!("layer{}", i + 1), l.named_params()));
        }
        out.extend(prefixed("fc", self.fc.named_params()));
        out
    }

    fn named_buffers(&self) -> Vec<(String, Arc<Buffer>)> {
        let mut out = prefixed("bn1", self.bn1.named_buffers());
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(prefixed(&format!("layer{}", i + 1), l.named_buffers()));
        }
        out
    }

    fn named_int8(&self) -> Vec<(String, Arc<Int8Slot>)> {
        let mut out = prefixed("conv1", self.conv1.named_int8());
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(prefixed(&format!("layer{}", i + 1), l.named_int8()));
        }
        out.extend(prefixed("fc", self.fc.named_int8()));
        out
    }

    fn set_training(&self, training: bool) {
        self.bn1.set_training(training);
        self.layers.iter().for_each(|l| l.set_training(training));
    }
}
