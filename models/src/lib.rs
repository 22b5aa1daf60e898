//! Architectures with torchvision's parameter names and counts, and each model's partition
//! into named sub-models with their dependency graph. Knows nothing of training.
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
    fn chain(parts: &[(&str, &[&str])]) -> Vec<SubModel> {
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

/// A network that also runs one sub-model at a time: stage i is sub-model i of
/// [`Model::submodels`], and chaining every stage equals `forward`.
pub trait Network: Module {
    fn forward_stage(&self, stage: usize, x: &Var) -> Result<Var, tessera_engine::Error>;
}

/// A built model: its network and its sub-models.
pub struct Model {
    pub name: &'static str,
    pub net: Box<dyn Network>,
    pub submodels: Vec<SubModel>,
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
    /// The parameters of sub-model `sub`, with their names.
    pub fn params_of(&self, sub: &SubModel) -> Vec<(String, Arc<Param>)> {
        self.net.named_params().into_iter().filter(|(n, _)| sub.owns(n)).collect()
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
            let (next, flops) = no_grad(|| count_gemm_flops(|| self.net.forward_stage(i, &h)));
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
];

/// Builds model `name` with `num_classes` outputs on `device`; `seed` fixes the initial weights.
pub fn build(name: &str, num_classes: usize, device: &Device, seed: u64) -> Result<Model, ModelError> {
    if num_classes == 0 {
        return Err(ModelError::NoClasses(num_classes));
    }
    let rng = &mut StdRng::seed_from_u64(seed);
    let dropout_seed = seed as u32;
    let info = MODELS.iter().find(|m| m.name == name).ok_or_else(|| ModelError::Unknown { name: name.to_string() })?;
    let resnet_parts = |stages: usize| -> Vec<SubModel> {
        let names: Vec<String> = (1..=stages).map(|i| format!("layer{i}")).collect();
        let mut parts: Vec<(&str, Vec<&str>)> = vec![("stem", vec!["conv1", "bn1"])];
        parts.extend(names.iter().map(|n| (n.as_str(), vec![n.as_str()])));
        parts.push(("fc", vec!["fc"]));
        let borrowed: Vec<(&str, &[&str])> = parts.iter().map(|(n, p)| (*n, p.as_slice())).collect();
        SubModel::chain(&borrowed)
    };
    let alexnet_parts = || {
        SubModel::chain(&[
            ("conv1-3", &["features.0", "features.3", "features.6"]),
            ("conv4-5", &["features.8", "features.10"]),
            ("fc6", &["classifier.1"]),
            ("fc7", &["classifier.4"]),
            ("fc8", &["classifier.6"]),
        ])
    };
    use resnet::{ResNet, RESNET18, RESNET34, RESNET50};
    let (net, submodels): (Box<dyn Network>, Vec<SubModel>) = match info.name {
        "simple-cnn" => (
            Box::new(Staged { seq: alexnet::simple_cnn(num_classes, device, rng)?, cuts: vec![0, 3, 6, 8] }),
            SubModel::chain(&[("conv1", &["0"]), ("conv2", &["3"]), ("fc", &["7"])]),
        ),
        "alexnet" => (Box::new(alexnet::AlexNet::torchvision(num_classes, device, rng, dropout_seed)?), alexnet_parts()),
        "alexnet-cifar" => (Box::new(alexnet::AlexNet::cifar(num_classes, device, rng, dropout_seed)?), alexnet_parts()),
        "resnet18" => (Box::new(ResNet::torchvision(RESNET18, num_classes, true, device, rng)?), resnet_parts(4)),
        "resnet34" => (Box::new(ResNet::torchvision(RESNET34, num_classes, true, device, rng)?), resnet_parts(4)),
        "resnet50" => (Box::new(ResNet::torchvision(RESNET50, num_classes, true, device, rng)?), resnet_parts(4)),
        "resnet18-cifar" => (Box::new(ResNet::torchvision(RESNET18, num_classes, false, device, rng)?), resnet_parts(4)),
        "resnet50-cifar" => (Box::new(ResNet::torchvision(RESNET50, num_classes, false, device, rng)?), resnet_parts(4)),
        "resnet20-cifar" => (Box::new(ResNet::cifar20(num_classes, device, rng)?), resnet_parts(3)),
        _ => unreachable!("every MODELS entry is built above"),
    };
    Ok(Model { name: info.name, net, submodels })
}

impl Model {
    /// A stack of layers as a one-stage model whose one sub-model (`name`) owns every
    /// parameter: how a small head such as a linear probe trains through the same loop.
    pub fn single(name: &'static str, seq: Sequential) -> Model {
        let prefixes: Vec<String> = (0..seq.len()).map(|i| i.to_string()).collect();
        let sub = SubModel { name: name.to_string(), prefixes, deps: Vec::new() };
        let cuts = vec![0, seq.len()];
        Model { name, net: Box::new(Staged { seq, cuts }), submodels: vec![sub] }
    }
}

/// A Sequential cut into stages at `cuts` (stage i = layers cuts[i]..cuts[i + 1]).
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
    fn forward_stage(&self, stage: usize, x: &Var) -> Result<Var, tessera_engine::Error> {
        self.seq.forward_range(self.cuts[stage]..self.cuts[stage + 1], x)
    }
}
