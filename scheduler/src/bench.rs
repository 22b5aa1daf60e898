//! Training-step timing for `tessera bench train`: the median over steps after warm-up,
//! split into forward + loss, backward, and the optimizer update.
use crate::train::TrainError;
use std::time::{Duration, Instant};
use tessera_engine::autograd as ag;
use tessera_engine::ops::SgdHyper;
use tessera_engine::optim::{ParamGroup, Sgd};
use tessera_engine::{Device, Tensor, Var};
use tessera_models::build;

#[derive(Clone, Debug)]
pub struct StepTimes {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub step_ms: f64,
    pub images_per_sec: f64,
    /// Peak resident memory above the size before the model was built, if known.
    pub peak_mib: Option<f64>,
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// What to time: `steps` SGD steps (momentum 0.9, weight decay 5e-4) of `model` on random
/// `batch`×3×`input`×`input` images after `warmup` untimed ones.
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub model: String,
    pub num_classes: usize,
    pub input: usize,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
}

/// Times the step of `spec` on `device`.
pub fn bench_train_step(spec: &StepSpec, device: &str) -> Result<StepTimes, TrainError> {
    let StepSpec { model, num_classes, input, batch, warmup, steps } = spec.clone();
    let device = Device::parse(device)?;
    let baseline = crate::memory::current_rss_bytes();
    crate::memory::reset_peak_rss();
    let model = build(&model, num_classes, &device, 0)?;
    let params = model.net.named_params().into_iter().map(|(_, p)| p).collect();
    let hyper = SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false };
    let mut sgd = Sgd::new(vec![ParamGroup::new("all", params)], 0.01, hyper);
    let values: Vec<f32> = (0..batch * 3 * input * input).map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0).collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % num_classes).collect();
    let (mut fwd, mut bwd, mut opt) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..warmup + steps.max(1) {
        let t0 = Instant::now();
        let x = Var::constant(Tensor::from_vec(values.clone(), &[batch, 3, input, input], &device)?);
        let loss = ag::cross_entropy(&model.net.forward(&x)?, &labels)?;
        device.synchronize()?;
        let t1 = Instant::now();
        loss.backward()?;
        device.synchronize()?;
        let t2 = Instant::now();
        sgd.step()?;
        sgd.zero_grad();
        device.synchronize()?;
        let t3 = Instant::now();
        if step >= warmup {
            fwd.push(t1 - t0);
            bwd.push(t2 - t1);
            opt.push(t3 - t2);
        }
    }
    let totals: Vec<Duration> = fwd.iter().zip(&bwd).zip(&opt).map(|((a, b), c)| *a + *b + *c).collect();
    let step_ms = median(totals);
    Ok(StepTimes {
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        optimizer_ms: median(opt),
        step_ms,
        images_per_sec: batch as f64 / (step_ms / 1e3),
        peak_mib: crate::memory::peak_rss_bytes().zip(baseline).map(|(peak, base)| peak.saturating_sub(base) as f64 / (1 << 20) as f64),
    })
}

/// PyTorch's figures for the same step (scripts/bench_torch.py run with `python`), or why not.
pub fn torch_reference(python: &str, spec: &StepSpec, threads: usize) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = include_str!("../../scripts/bench_torch.py");
    let args = [
        ("--model", spec.model.clone()),
        ("--num-classes", spec.num_classes.to_string()),
        ("--input", spec.input.to_string()),
        ("--batch", spec.batch.to_string()),
        ("--threads", threads.to_string()),
        ("--warmup", spec.warmup.to_string()),
        ("--steps", spec.steps.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v]);
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output: {e}"))
}
