//! Loss correlation between sub-models (`tessera correlation`): a head at every sub-model
//! boundary — a linear probe (global average pool + linear, softmax regression trained on the
//! frozen network's features) at each inner boundary, the model's own classifier at the end —
//! gives a per-sample test loss, and the Pearson correlation of those losses across samples
//! says whether two sub-models fail on the same images.
use crate::data::{Batch, Dataset, Loader, LoaderSpec};
use crate::error::TrainError;
use crate::trainer::{OnNan, OptimConfig, Trainer};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
use tessera_engine::nn::{Linear, Module, Sequential};
use tessera_engine::ops::{self, Labels, SgdHyper};
use tessera_engine::optim::{Constant, Rule};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::Model;

/// Per-sample test losses of each head, and their correlation.
#[derive(Clone, Debug)]
pub struct LossCorrelation {
    /// Head names: `after <sub-model>` (probes) …, then `<last sub-model> (model head)`.
    pub heads: Vec<String>,
    /// losses[h][i]: head h's cross-entropy on test sample i.
    pub losses: Vec<Vec<f32>>,
    pub accuracy: Vec<f32>,
    pub pearson: Vec<Vec<f32>>,
}

/// Pearson correlation of two equally long series (0 when either is constant).
pub fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean = |x: &[f32]| x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        (sab / (saa * sbb).sqrt()) as f32
    }
}

/// Pooled features of every inner boundary ([N, width] each), their widths, and the logits.
struct Features {
    pooled: Vec<Vec<f32>>,
    widths: Vec<usize>,
    logits: Vec<f32>,
}

/// Every inner boundary's pooled features [N, C] (and the final logits) for `set`, eval mode.
fn features(model: &Model, set: &Dataset, device: &Device) -> Result<Features, TrainError> {
    let n = model.submodels.len();
    model.net.set_training(false);
    let (mut feats, mut widths, mut logits) = (vec![Vec::new(); n - 1], vec![0; n - 1], Vec::new());
    for b in Loader::new(set, &LoaderSpec::eval(256))? {
        let b = b?;
        no_grad(|| -> Result<(), TrainError> {
            let mut h = Var::constant(Tensor::from_vec(b.x, &b.shape, device)?);
            for stage in 0..n {
                h = model.forward_stage(stage, &h)?;
                if stage + 1 == n {
                    logits.extend(h.value().to_vec()?);
                } else {
                    let pooled = if h.shape().len() == 4 { ops::mean(h.value(), &[2, 3], false)? } else { h.value().clone() };
                    widths[stage] = pooled.shape()[1];
                    feats[stage].extend(pooled.to_vec()?);
                }
            }
            Ok(())
        })?;
    }
    model.net.set_training(true);
    Ok(Features { pooled: feats, widths, logits })
}

/// Softmax regression on fixed features: 10 epochs of SGD (rate 0.05, momentum 0.9, no weight
/// decay, constant rate), batch 128, through the one training loop.
fn train_probe(x: &[f32], width: usize, labels: &[usize], classes: usize, device: &Device, seed: u64) -> Result<Linear, TrainError> {
    let rng = &mut StdRng::seed_from_u64(seed);
    let probe = Linear::new(width, classes, true, device, rng)?;
    let model = Model::single("probe", Sequential::new().with(probe.clone()));
    let optim = OptimConfig { rule: Rule::Sgd(SgdHyper { weight_decay: 0.0, ..SgdHyper::default() }), lr: 0.05, warmup_steps: 0 };
    let mut t = Trainer::new(model, device.clone(), classes, &optim, Box::new(Constant), OnNan::Stop)?;
    // Standardised inputs (by the caller) let one learning rate suit every boundary.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    for epoch in 1..=10 {
        order.shuffle(rng);
        let chunks: Vec<&[usize]> = order.chunks(128).collect();
        let batches = chunks.iter().map(|chunk| {
            let xb: Vec<f32> = chunk.iter().flat_map(|&i| x[i * width..(i + 1) * width].iter().copied()).collect();
            Ok(Batch { x: xb, shape: vec![chunk.len(), width], labels: chunk.iter().map(|&i| labels[i]).collect(), global: chunk.len() })
        });
        t.run_epoch(epoch, 0, batches, chunks.len(), &mut |t, x, labels| t.step_from(0, x, labels), &mut |_| {})?;
    }
    Ok(probe)
}

/// Per-feature mean and standard deviation of `x` ([N, width]).
fn moments(x: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (x.len() / width.max(1)).max(1) as f32;
    let mut mean = vec![0f32; width];
    x.chunks(width).for_each(|r| mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n));
    let mut var = vec![0f32; width];
    x.chunks(width).for_each(|r| var.iter_mut().zip(r).zip(&mean).for_each(|((s, v), m)| *s += (v - m) * (v - m) / n));
    (mean, var.into_iter().map(|v| v.sqrt().max(1e-6)).collect())
}

fn standardise(x: &mut [f32], width: usize, (mean, std): &(Vec<f32>, Vec<f32>)) {
    x.chunks_mut(width).for_each(|r| r.iter_mut().zip(mean.iter().zip(std)).for_each(|(v, (m, s))| *v = (*v - m) / s));
}

/// Per-sample cross-entropy and accuracy of logits [N, classes].
fn losses_of(logits: Vec<f32>, labels: &[usize], classes: usize, device: &Device) -> Result<(Vec<f32>, f32), TrainError> {
    let t = Tensor::from_vec(logits, &[labels.len(), classes], device)?;
    let losses = ops::cross_entropy_per_sample(&t, &Labels::new(&t, labels)?)?.to_vec()?;
    let values = t.to_vec()?;
    let hits = labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| values[i * classes..(i + 1) * classes].iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j) == Some(l))
        .count();
    Ok((losses, hits as f32 / labels.len().max(1) as f32))
}

/// Trains the probes on `train` and measures every head on `test`.
pub fn loss_correlation(model: &Model, train: &Dataset, test: &Dataset, device: &Device, seed: u64) -> Result<LossCorrelation, TrainError> {
    let classes = train.classes().len();
    let train_labels: Vec<usize> = (0..train.len()).map(|i| train.label(i)).collect();
    let test_labels: Vec<usize> = (0..test.len()).map(|i| test.label(i)).collect();
    let Features { pooled: train_feats, widths, .. } = features(model, train, device)?;
    let Features { pooled: test_feats, logits: test_logits, .. } = features(model, test, device)?;
    let (mut heads, mut losses, mut accuracy) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (mut xtr, mut xte)) in train_feats.into_iter().zip(test_feats).enumerate() {
        let width = widths[i];
        let m = moments(&xtr, width);
        standardise(&mut xtr, width, &m);
        standardise(&mut xte, width, &m);
        let probe = train_probe(&xtr, width, &train_labels, classes, device, seed + i as u64)?;
        let logits = no_grad(|| probe.forward(&Var::constant(Tensor::from_vec(xte, &[test.len(), width], device)?)))?;
        let (l, acc) = losses_of(logits.value().to_vec()?, &test_labels, classes, device)?;
        heads.push(format!("after {}", model.submodels[i].name));
        losses.push(l);
        accuracy.push(acc);
    }
    let (l, acc) = losses_of(test_logits, &test_labels, classes, device)?;
    heads.push(format!("{} (model head)", model.submodels.last().map_or("head", |s| s.name.as_str())));
    losses.push(l);
    accuracy.push(acc);
    let pearson = losses.iter().map(|a| losses.iter().map(|b| pearson(a, b)).collect()).collect();
    Ok(LossCorrelation { heads, losses, accuracy, pearson })
}
