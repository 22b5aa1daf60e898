//! Architectures with torchvision's parameter names and counts, and each model's partition
//! into named sub-models with their dependency graph. Knows nothing of training.
pub mod airbench;
pub mod alexnet;
pub mod channels;
pub mod resnet;

use rand::{rngs::StdRng, SeedableRng};
use std::sync::Arc;
use tessera_engine::nn::{Module, Param, Sequential};
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::{no_grad, Device, Var};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("unknown model `{name}`; known models: {}", MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", "))]
    Unknown { name: String },
    #[error("num_classes must be at least 1, got {0}")]
    NoClasses(usize),
    #[error("{model} has no {granularity} granularity; it has: {known}")]
    Granularity { model: String, granularity: Granularity, known: String },
    #[error(transparent)]
    Engine(#[from] tessera_engine::Error),
}

/// A named set of parameters (given by name prefixes) and the sub-models it takes input from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubModel {
    pub name: String,
    pub prefixes: Vec<String>,
    pub deps: Vec<String>,
}

impl SubModel {
    pub(crate) fn chain(parts: &[(&str, &[&str])]) -> Vec<SubModel> {
        parts
            .iter()
            .enumerate()
            .map(|(i, (name, prefixes))| SubModel {
                name: name.to_string(),
                prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
                deps: if i == 0 { Vec::new() } else { vec![parts[i - 1].0.to_string()] },
            })
            .collect()
    }

    /// Whether parameter `name` belongs to this sub-model.
    pub fn owns(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name == p || name.starts_with(&format!("{p}.")))
    }
}

/// A network as a chain of its finest execution units — a ResNet: stem, each residual block,
/// head; AlexNet: each conv with its ReLU and pooling, each FC layer; a stack: its layers
/// between cuts. Chaining every unit equals `forward`.
pub trait Network: Module {
    fn unit_count(&self) -> usize;
    fn forward_unit(&self, unit: usize, x: &Var) -> Result<Var, tessera_engine::Error>;
}

/// A built model: its network and its sub-models at one granularity.
pub struct Model {
    pub name: &'static str,
    pub net: Box<dyn Network>,
    pub submodels: Vec<SubModel>,
    /// Stage i — sub-model i's place in the chain — runs units cuts[i]..cuts[i + 1]. A
    /// sub-model whose work happens inside another's unit (a block's projection shortcut at
    /// branch granularity) has an empty stage just before that unit's: whatever starts at
    /// its stage runs the unit, so both train.
    pub cuts: Vec<usize>,
    pub granularity: Granularity,
}

/// How finely a model is cut into sub-models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// The architecture's stages (ResNet: stem, layer1…, fc; AlexNet: conv1-3, conv4-5, fc6-8).
    #[default]
    Stage,
    /// Each residual block (ResNets).
    Block,
    /// Each block's residual branch and its projection shortcut apart, joined at the addition
    /// (ResNets): a graph, not a chain.
    Branch,
    /// Each conv and FC layer (AlexNet, simple-cnn).
    Layer,
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stage" => Ok(Self::Stage),
            "block" => Ok(Self::Block),
            "branch" => Ok(Self::Branch),
            "layer" => Ok(Self::Layer),
            other => Err(format!("unknown granularity `{other}`: expected stage, block, branch or layer")),
        }
    }
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

/// One sub-model's cost at a given input: its output shape, parameters and forward FLOPs.
#[derive(Clone, Debug)]
pub struct StageCost {
    pub name: String,
    pub deps: Vec<String>,
    pub output: Vec<usize>,
    pub params: usize,
    pub flops: f64,
}

impl Model {
    /// Runs stage `stage` (sub-model `stage`'s place in the chain) on `x`.
    pub fn forward_stage(&self, stage: usize, x: &Var) -> Result<Var, tessera_engine::Error> {
        (self.cuts[stage]..self.cuts[stage + 1]).try_fold(x.clone(), |h, u| self.net.forward_unit(u, &h))
    }

    /// The image size (pixels) the architecture is built for; none for a model that is not
    /// one of [`MODELS`] (a head built with [`Model::single`]).
    pub fn input_size(&self) -> Option<usize> {
        MODELS.iter().find(|m| m.name == self.name).map(|m| m.input)
    }

    /// The parameters of sub-model `sub`, with their names.
    pub fn params_of(&self, sub: &SubModel) -> Vec<(String, Arc<Param>)> {
        self.net.named_params().into_iter().filter(|(n, _)| sub.owns(n)).collect()
    }

    /// The sub-model graph in Graphviz's DOT language: a node per sub-model (its name and
    /// parameter count), an edge from each dependency to its dependent.
    pub fn graph_dot(&self) -> String {
        let mut dot =
            format!("digraph \"{} ({})\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"DejaVu Sans\"];\n", self.name, self.granularity);
        for (i, sub) in self.submodels.iter().enumerate() {
            let params: usize = self.params_of(sub).iter().map(|(_, p)| p.value().numel()).sum();
            dot += &format!("  s{i} [label=\"{}\\n{params} params\"];\n", sub.name);
        }
        for (i, sub) in self.submodels.iter().enumerate() {
            for dep in &sub.deps {
                if let Some(j) = self.submodels.iter().position(|s| &s.name == dep) {
                    dot += &format!("  s{j} -> s{i};\n");
                }
            }
        }
        dot + "}\n"
    }

    pub fn param_count(&self) -> usize {
        self.net.named_params().iter().map(|(_, p)| p.value().numel()).sum()
    }

    /// Runs one image of `input`×`input` pixels through the sub-models in eval mode and
    /// measures each: output shape, parameter count and forward FLOPs (2 per multiply-add of
    /// every convolution and linear layer).
    pub fn stage_costs(&self, input: usize) -> Result<Vec<StageCost>, ModelError> {
        let device = Device::cpu();
        self.net.set_training(false);
        let mut h = Var::constant(tessera_engine::Tensor::zeros(&[1, 3, input, input], &device)?);
        let mut out = Vec::new();
        for (i, sub) in self.submodels.iter().enumerate() {
            let (next, flops) = no_grad(|| count_gemm_flops(|| self.forward_stage(i, &h)));
            h = next?;
            let params = self.params_of(sub).iter().map(|(_, p)| p.value().numel()).sum();
            out.push(StageCost { name: sub.name.clone(), deps: sub.deps.clone(), output: h.shape().to_vec(), params, flops });
        }
        self.net.set_training(true);
        Ok(out)
    }
}

/// What `tessera models` lists.
pub struct ModelInfo {
    pub name: &'static str,
    pub input: usize,
    pub about: &'static str,
}

pub static MODELS: &[ModelInfo] = &[
    ModelInfo { name: "simple-cnn", input: 32, about: "2 convs + linear, for smoke tests and benchmarks" },
    ModelInfo { name: "alexnet", input: 224, about: "torchvision AlexNet" },
    ModelInfo { name: "alexnet-cifar", input: 32, about: "AlexNet's five convs for 32-px inputs, 1024-wide classifier" },
    ModelInfo { name: "resnet18", input: 224, about: "torchvision ResNet-18" },
    ModelInfo { name: "resnet34", input: 224, about: "torchvision ResNet-34" },
    ModelInfo { name: "resnet50", input: 224, about: "torchvision ResNet-50 (bottleneck)" },
    ModelInfo { name: "resnet18-cifar", input: 32, about: "ResNet-18 with a 3×3 stride-1 stem, no max-pool" },
    ModelInfo { name: "resnet50-cifar", input: 32, about: "ResNet-50 with a 3×3 stride-1 stem, no max-pool" },
    ModelInfo { name: "resnet20-cifar", input: 32, about: "He et al. 2016 CIFAR ResNet-20 (projection shortcuts)" },
    ModelInfo { name: "airbench94", input: 32, about: "Jordan 2024's airbench94 network: whitening conv, three GELU conv groups, scaled head" },
];

/// Builds model `name` with `num_classes` outputs on `device`, cut into its stages; `seed`
/// fixes the initial weights.
pub fn build(name: &str, num_classes: usize, device: &Device, seed: u64) -> Result<Model, ModelError> {
    build_at(name, num_classes, device, seed, Granularity::Stage)
}

/// The granularities model `name` can be cut at.
pub fn granularities(name: &str) -> &'static [Granularity] {
    use Granularity::*;
    if name.starts_with("resnet") {
        &[Stage, Block, Branch]
    } else if name == "airbench94" {
        &[Stage]
    } else {
        &[Stage, Layer]
    }
}

/// [`build`], cut into sub-models at `granularity`.
pub fn build_at(name: &str, num_classes: usize, device: &Device, seed: u64, granularity: Granularity) -> Result<Model, ModelError> {
    if num_classes == 0 {
        return Err(ModelError::NoClasses(num_classes));
    }
    let info = MODELS.iter().find(|m| m.name == name).ok_or_else(|| ModelError::Unknown { name: name.to_string() })?;
    if !granularities(info.name).contains(&granularity) {
        let known = granularities(info.name).iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ");
        return Err(ModelError::Granularity { model: info.name.to_string(), granularity, known });
    }
    let rng = &mut StdRng::seed_from_u64(seed);
    let dropout_seed = seed as u32;
    use resnet::{ResNet, RESNET18, RESNET34, RESNET50};
    let resnet = |net: ResNet| -> (Box<dyn Network>, Vec<SubModel>, Vec<usize>) {
        let (subs, cuts) = net.partition(granularity);
        (Box::new(net), subs, cuts)
    };
    let alexnet = |net: alexnet::AlexNet| -> (Box<dyn Network>, Vec<SubModel>, Vec<usize>) {
        let (subs, cuts) = alexnet::AlexNet::partition(granularity);
        (Box::new(net), subs, cuts)
    };
    let (net, submodels, cuts) = match info.name {
        "simple-cnn" => {
            // Its stages are its layers: conv1, conv2 (with the flatten), fc.
            let subs = SubModel::chain(&[("conv1", &["0"]), ("conv2", &["3"]), ("fc", &["7"])]);
            (Box::new(Staged { seq: alexnet::simple_cnn(num_classes, device, rng)?, cuts: vec![0, 3, 7, 8] }) as Box<dyn Network>, subs, vec![0, 1, 2, 3])
        }
        "alexnet" => alexnet(alexnet::AlexNet::torchvision(num_classes, device, rng, dropout_seed)?),
        "alexnet-cifar" => alexnet(alexnet::AlexNet::cifar(num_classes, device, rng, dropout_seed)?),
        "resnet18" => resnet(ResNet::torchvision(RESNET18, num_classes, true, device, rng)?),
        "resnet34" => resnet(ResNet::torchvision(RESNET34, num_classes, true, device, rng)?),
        "resnet50" => resnet(ResNet::torchvision(RESNET50, num_classes, true, device, rng)?),
        "resnet18-cifar" => resnet(ResNet::torchvision(RESNET18, num_classes, false, device, rng)?),
        "resnet50-cifar" => resnet(ResNet::torchvision(RESNET50, num_classes, false, device, rng)?),
        "resnet20-cifar" => resnet(ResNet::cifar20(num_classes, device, rng)?),
        "airbench94" => {
            let prefixes = |from: usize, to: usize| (from..to).map(|i| i.to_string()).collect::<Vec<_>>();
            let c = airbench::CUTS;
            let names = ["whiten", "block1", "block2", "block3", "head"];
            let owned: Vec<Vec<String>> = (0..5).map(|i| prefixes(c[i], c[i + 1])).collect();
            let parts: Vec<(&str, Vec<&str>)> = names.iter().zip(&owned).map(|(n, p)| (*n, p.iter().map(String::as_str).collect())).collect();
            let parts: Vec<(&str, &[&str])> = parts.iter().map(|(n, p)| (*n, p.as_slice())).collect();
            let subs = SubModel::chain(&parts);
            (Box::new(Staged { seq: airbench::airbench94(num_classes, device, rng)?, cuts: c.to_vec() }) as Box<dyn Network>, subs, (0..=5).collect())
        }
        _ => unreachable!("every MODELS entry is built above"),
    };
    Ok(Model { name: info.name, net, submodels, cuts, granularity })
}

impl Model {
    /// A stack of layers as a one-stage model whose one sub-model (`name`) owns every
    /// parameter: how a small head such as a linear probe trains through the same loop.
    pub fn single(name: &'static str, seq: Sequential) -> Model {
        let prefixes: Vec<String> = (0..seq.len()).map(|i| i.to_string()).collect();
        let sub = SubModel { name: name.to_string(), prefixes, deps: Vec::new() };
        let cuts = vec![0, seq.len()];
        Model { name, net: Box::new(Staged { seq, cuts }), submodels: vec![sub], cuts: vec![0, 1], granularity: Granularity::Stage }
    }
}

/// A Sequential cut into units at `cuts` (unit i = layers cuts[i]..cuts[i + 1]).
struct Staged {
    seq: Sequential,
    cuts: Vec<usize>,
}

impl Module for Staged {
    fn forward(&self, x: &Var) -> Result<Var, tessera_engine::Error> {
        self.seq.forward(x)
    }

    fn named_params(&self) -> Vec<(String, Arc<Param>)> {
        self.seq.named_params()
    }

    fn named_buffers(&self) -> Vec<(String, Arc<tessera_engine::nn::Buffer>)> {
        self.seq.named_buffers()
    }

    fn named_counters(&self) -> Vec<(String, Arc<std::sync::atomic::AtomicU32>)> {
        self.seq.named_counters()
    }

    fn named_int8(&self) -> Vec<(String, Arc<tessera_engine::nn::Int8Slot>)> {
        self.seq.named_int8()
    }

    fn set_training(&self, training: bool) {
        self.seq.set_training(training)
    }
}

impl Network for Staged {
    fn unit_count(&self) -> usize {
        self.cuts.len() - 1
    }

    fn forward_unit(&self, unit: usize, x: &Var) -> Result<Var, tessera_engine::Error> {
        self.seq.forward_range(self.cuts[unit]..self.cuts[unit + 1], x)
    }
}
