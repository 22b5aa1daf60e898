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
    /// Each block's name (`layerN.B`), conv count and whether it has a projection shortcut.
    blocks: Vec<(String, usize, bool)>,
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
        let mut infos = Vec::new();
        for (stage, (&count, &width)) in blocks.iter().zip(widths).enumerate() {
            let mut seq = Sequential::new();
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let block = match depth {
                    Depth::Basic(_) => Block::basic(inputs, width, stride, rng, dev)?,
                    Depth::Bottleneck(_) => Block::bottleneck(inputs, width, stride, rng, dev)?,
                };
                inputs = width * expansion;
                infos.push((format!("layer{}.{b}", stage + 1), block.convs.len(), block.downsample.is_some()));
                seq = seq.with(block);
            }
            layers.push(seq);
        }
        let fc = Linear::new(inputs, num_classes, true, dev, rng)?;
        Ok(Self { conv1, bn1, maxpool, layers, fc, blocks: infos })
    }

    /// Names of the stages: `layer1`, `layer2`, ….
    pub fn stage_names(&self) -> Vec<String> {
        (1..=self.layers.len()).map(|i| format!("layer{i}")).collect()
    }
}

impl ResNet {
    /// Sub-models and stage cuts over the units (stem, each block, head) at `granularity`:
    /// stem, `layerN` and fc; or each block `layerN.B`; or each block's residual branch
    /// `layerN.B.body` and projection shortcut `layerN.B.shortcut` apart. At branch
    /// granularity the graph is not a chain: what a block reads is the sum of the previous
    /// block's branch and shortcut (or, through an identity shortcut, whatever fed that block).
    pub fn partition(&self, granularity: crate::Granularity) -> (Vec<crate::SubModel>, Vec<usize>) {
        use crate::{Granularity, SubModel};
        let blocks = &self.blocks;
        let head = blocks.len() + 1;
        let sub = |name: &str, prefixes: Vec<String>, deps: Vec<String>| SubModel { name: name.into(), prefixes, deps };
        match granularity {
            Granularity::Stage => {
                let mut subs = vec![sub("stem", vec!["conv1".into(), "bn1".into()], vec![])];
                let mut cuts = vec![0, 1];
                for (s, layer) in self.layers.iter().enumerate() {
                    let name = format!("layer{}", s + 1);
                    subs.push(sub(&name, vec![name.clone()], vec![subs.last().expect("stem").name.clone()]));
                    cuts.push(cuts.last().expect("a cut") + layer.len());
                }
                subs.push(sub("fc", vec!["fc".into()], vec![subs.last().expect("a stage").name.clone()]));
                cuts.push(head + 1);
                (subs, cuts)
            }
            Granularity::Block => {
                let mut subs = vec![sub("stem", vec!["conv1".into(), "bn1".into()], vec![])];
                for (name, _, _) in blocks {
                    subs.push(sub(name, vec![name.clone()], vec![subs.last().expect("stem").name.clone()]));
                }
                subs.push(sub("fc", vec!["fc".into()], vec![subs.last().expect("a block").name.clone()]));
                (subs, (0..=head + 1).collect())
            }
            _ => {
                let mut subs = vec![sub("stem", vec!["conv1".into(), "bn1".into()], vec![])];
                let mut cuts = vec![0];
                // The sub-models whose outputs add up to the current block's input.
                let mut producers = vec!["stem".to_string()];
                for (unit, (name, convs, projection)) in blocks.iter().enumerate() {
                    let mut outputs = Vec::new();
                    if *projection {
                        // An empty stage right before the block's unit: from here the block runs.
                        cuts.push(unit + 1);
                        let shortcut = format!("{name}.shortcut");
                        subs.push(sub(&shortcut, vec![format!("{name}.downsample")], producers.clone()));
                        outputs.push(shortcut);
                    }
                    cuts.push(unit + 1);
                    let body: Vec<String> = (1..=*convs).flat_map(|i| [format!("{name}.conv{i}"), format!("{name}.bn{i}")]).collect();
                    subs.push(sub(&format!("{name}.body"), body, producers.clone()));
                    outputs.insert(0, format!("{name}.body"));
                    if !projection {
                        outputs.extend(producers);
                    }
                    producers = outputs;
                }
                cuts.push(head);
                subs.push(sub("fc", vec!["fc".into()], producers));
                cuts.push(head + 1);
                (subs, cuts)
            }
        }
    }
}

impl crate::Network for ResNet {
    fn unit_count(&self) -> usize {
        self.layers.iter().map(|l| l.len()).sum::<usize>() + 2
    }

    /// Units: stem (with the max-pool), each residual block in order, fc (with the global
    /// average pool).
    fn forward_unit(&self, unit: usize, x: &Var) -> Result<Var> {
        if unit == 0 {
            let h = ag::relu(&self.bn1.forward(&self.conv1.forward(x)?)?)?;
            return match &self.maxpool {
                Some(pool) => pool.forward(&h),
                None => Ok(h),
            };
        }
        let mut index = unit - 1;
        for layer in &self.layers {
            if index < layer.len() {
                return layer.forward_range(index..index + 1, x);
            }
            index -= layer.len();
        }
        let pooled = AdaptiveAvgPool2d([1, 1]).forward(x)?;
        let n = pooled.shape()[0];
        self.fc.forward(&ag::reshape(&pooled, &[n, pooled.value().numel() / n])?)
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Var) -> Result<Var> {
        use crate::Network;
        (0..self.unit_count()).try_fold(x.clone(), |h, unit| self.forward_unit(unit, &h))
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
