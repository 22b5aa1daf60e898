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
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// Times `steps` SGD steps (momentum 0.9, weight decay 5e-4) of `model` on random
/// `batch`×3×`input`×`input` images after `warmup` untimed ones.
pub fn bench_train_step(
    model: &str,
    num_classes: usize,
    input: usize,
    batch: usize,
    device: &str,
    warmup: usize,
    steps: usize,
) -> Result<StepTimes, TrainError> {
    let device = Device::parse(device)?;
    let model = build(model, num_classes, &device, 0)?;
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
    })
}
