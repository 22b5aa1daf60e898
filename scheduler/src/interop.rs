//! The interop check against PyTorch: one forward (and, given labels, backward) pass of a model
//! with a state dict saved from PyTorch, writing logits, loss and gradients to safetensors.
use crate::error::TrainError;
use crate::run_state::load_weights;
use std::collections::HashMap;
use std::path::Path;
use tessera_engine::autograd as ag;
use tessera_engine::checkpoint::{self, Checkpoint};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::build;

/// What `tessera forward` computed.
pub struct ForwardReport {
    pub logits_shape: Vec<usize>,
    pub loss: Option<f32>,
    pub gradients: usize,
}

/// Runs `model` (weights from `weights`, a state dict with torchvision's names) on tensor `x`
/// of `input`; writes `logits` to `out`, and with integer labels `y` in `input` also the mean
/// cross-entropy `loss` and every parameter's gradient as `grad.<name>`.
/// `num_classes` None: read off the weights' final layer.
pub fn forward(
    model: &str,
    num_classes: Option<usize>,
    weights: &Path,
    input: &Path,
    out: &Path,
    train_mode: bool,
    device: &str,
) -> Result<ForwardReport, TrainError> {
    let device = Device::parse(device)?;
    let state = Checkpoint::load(weights)?;
    let num_classes = match num_classes {
        Some(n) => n,
        None => crate::eval::head_classes(model, weights, &state)?,
    };
    let model = build(model, num_classes, &device, 0)?;
    load_weights(&model, &state, &device)?;
    let inputs = Checkpoint::load(input)?;
    let (xs, shape) = inputs
        .tensors
        .get("x")
        .ok_or_else(|| TrainError::Checkpoint(checkpoint::CheckpointError::Tensor { path: input.into(), name: "x".into(), detail: "missing".into() }))?;
    let x = Var::constant(Tensor::from_vec(xs.clone(), shape, &device)?);
    model.net.set_training(train_mode);
    let mut tensors = Vec::new();
    let mut loss_value = None;
    match inputs.tensors.get("y") {
        None => {
            let logits = no_grad(|| model.net.forward(&x))?;
            tensors.push(("logits".to_string(), logits.value().clone()));
        }
        Some((labels, _)) => {
            let labels: Vec<usize> = labels.iter().map(|&v| v as usize).collect();
            let logits = model.net.forward(&x)?;
            let loss = ag::cross_entropy(&logits, &labels)?;
            loss.backward()?;
            loss_value = Some(loss.value().to_vec()?[0]);
            tensors.push(("logits".to_string(), logits.value().clone()));
            tensors.push(("loss".to_string(), loss.value().clone()));
            for (name, p) in model.net.named_params() {
                if let Some(g) = p.grad() {
                    tensors.push((format!("grad.{name}"), g));
                }
            }
        }
    }
    let report = ForwardReport {
        logits_shape: tensors[0].1.shape().to_vec(),
        loss: loss_value,
        gradients: tensors.iter().filter(|(n, _)| n.starts_with("grad.")).count(),
    };
    checkpoint::save(out, &tensors, &HashMap::from([("train_mode".to_string(), train_mode.to_string())]))?;
    Ok(report)
}

/// Writes the state dict of a training checkpoint (weights and buffers, torchvision's names,
/// `num_batches_tracked` as I64; no optimizer state) to `out`: a file PyTorch loads with
/// `model.load_state_dict(safetensors.torch.load_file(out))`, in f32, f16 or bf16. Returns
/// the tensor count.
pub fn export_weights(checkpoint_path: &Path, out: &Path, format: checkpoint::FloatFormat) -> Result<usize, TrainError> {
    let ckpt = Checkpoint::load(checkpoint_path)?;
    let device = Device::cpu();
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = ckpt.tensors.keys().filter(|n| !n.starts_with("optimizer.")).collect();
    names.sort();
    for name in names {
        let (values, shape) = &ckpt.tensors[name];
        tensors.push((name.clone(), Tensor::from_vec(values.clone(), shape, &device)?));
    }
    let meta: HashMap<String, String> = ckpt.metadata.iter().filter(|(k, _)| *k == "model" || *k == "epoch").map(|(k, v)| (k.clone(), v.clone())).collect();
    checkpoint::save_as(out, &tensors, &meta, format)?;
    Ok(tensors.len())
}
