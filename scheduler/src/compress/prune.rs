//! Magnitude pruning. Unstructured: the smallest |w| of conv and linear weights are zeroed
//! and masked, so fine-tuning keeps them at zero. Structured: whole output channels of the
//! model's removable channel groups go (`Model::channel_groups`), ranked by the L1 norm of
//! their filter scaled by their batch norm's γ/σ (the magnitude of the filter with the norm
//! folded in); the layer and its readers really shrink.
use crate::error::TrainError;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_engine::nn::{Buffer, Param};
use tessera_engine::Tensor;
use tessera_models::channels::ChannelGroup;
use tessera_models::Model;

/// Which weights one pruning fraction applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One threshold over every weight (unstructured) or every channel (structured, each
    /// group's scores divided by the group's mean so layers compare).
    Global,
    /// The fraction of each layer.
    PerLayer,
    /// The fraction of each layer of one sub-model; the rest untouched.
    SubModel(String),
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "global" => Ok(Self::Global),
            "per-layer" => Ok(Self::PerLayer),
            _ => match s.strip_prefix("sub-model:") {
                Some(name) if !name.is_empty() => Ok(Self::SubModel(name.to_string())),
                _ => Err(format!("unknown scope `{s}`: expected global, per-layer or sub-model:NAME")),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => write!(f, "global"),
            Self::PerLayer => write!(f, "per-layer"),
            Self::SubModel(name) => write!(f, "sub-model:{name}"),
        }
    }
}

/// What pruning removed from one layer: values (unstructured) or channels (structured).
#[derive(Clone, Debug)]
pub struct Pruned {
    pub layer: String,
    pub removed: usize,
    pub of: usize,
}

/// Whether `layer` (a parameter prefix) is in `scope`; an unknown sub-model is an error.
fn in_scope<'a>(model: &'a Model, scope: &Scope) -> Result<impl Fn(&str) -> bool + 'a, TrainError> {
    let sub = match scope {
        Scope::SubModel(name) => Some(model.submodels.iter().find(|s| &s.name == name).ok_or_else(|| {
            let known: Vec<&str> = model.submodels.iter().map(|s| s.name.as_str()).collect();
            TrainError::Config(format!("{} has no sub-model `{name}`; its sub-models: {}", model.name, known.join(", ")))
        })?),
        _ => None,
    };
    Ok(move |layer: &str| sub.is_none_or(|s| s.owns(&format!("{layer}.weight"))))
}

/// Indices of the `k` smallest scores (ties broken by position).
fn smallest(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn check_fraction(fraction: f32) -> Result<(), TrainError> {
    if (0.0..1.0).contains(&fraction) {
        Ok(())
    } else {
        Err(TrainError::Config(format!("--prune {fraction}: the fraction pruned must be in [0, 1)")))
    }
}

/// Zeroes and masks `fraction` of the conv and linear weights in `scope` by magnitude.
pub fn prune_unstructured(model: &Model, fraction: f32, scope: &Scope) -> Result<Vec<Pruned>, TrainError> {
    check_fraction(fraction)?;
    let keep = in_scope(model, scope)?;
    let weights: Vec<(String, Arc<Param>, Vec<f32>)> = model
        .net
        .named_params()
        .into_iter()
        .filter(|(n, p)| matches!(p.value().rank(), 2 | 4) && n.strip_suffix(".weight").is_some_and(&keep))
        .map(|(n, p)| {
            let v = p.value().to_vec()?;
            Ok((n, p, v))
        })
        .collect::<Result<_, TrainError>>()?;
    let mut zero: Vec<Vec<bool>> = weights.iter().map(|(_, _, v)| vec![false; v.len()]).collect();
    if *scope == Scope::Global {
        let all: Vec<f32> = weights.iter().flat_map(|(_, _, v)| v.iter().map(|x| x.abs())).collect();
        let starts: Vec<usize> = weights.iter().scan(0, |s, (_, _, v)| Some(std::mem::replace(s, *s + v.len()))).collect();
        for i in smallest(&all, (fraction * all.len() as f32).round() as usize) {
            let t = starts.partition_point(|&s| s <= i) - 1;
            zero[t][i - starts[t]] = true;
        }
    } else {
        for ((_, _, v), z) in weights.iter().zip(&mut zero) {
            let scores: Vec<f32> = v.iter().map(|x| x.abs()).collect();
            for i in smallest(&scores, (fraction * v.len() as f32).round() as usize) {
                z[i] = true;
            }
        }
    }
    let mut out = Vec::new();
    for ((name, p, v), z) in weights.iter().zip(zero) {
        let mask: Vec<f32> = z.iter().map(|&off| if off { 0.0 } else { 1.0 }).collect();
        let removed = z.iter().filter(|&&off| off).count();
        p.set_mask(Some(Tensor::from_vec(mask, p.value().shape(), p.value().device())?))?;
        out.push(Pruned { layer: name.trim_end_matches(".weight").to_string(), removed, of: v.len() });
    }
    Ok(out)
}

/// Removes `fraction` of the output channels of the removable groups in `scope` (at least
/// one channel of each stays).
pub fn prune_channels(model: &Model, fraction: f32, scope: &Scope) -> Result<Vec<Pruned>, TrainError> {
    check_fraction(fraction)?;
    let keep = in_scope(model, scope)?;
    let groups: Vec<ChannelGroup> = model.channel_groups().into_iter().filter(|g| keep(&g.layer)).collect();
    if groups.is_empty() {
        return Err(TrainError::Config(format!("{} has no removable channels in scope {scope}", model.name)));
    }
    let params: HashMap<String, Arc<Param>> = model.net.named_params().into_iter().collect();
    let buffers: HashMap<String, Arc<Buffer>> = model.net.named_buffers().into_iter().collect();
    let param = |name: String| params.get(&name).cloned().ok_or_else(|| TrainError::Config(format!("{}: no parameter `{name}`", model.name)));
    let scores: Vec<Vec<f32>> = groups.iter().map(|g| channel_scores(g, &param, &buffers)).collect::<Result<_, _>>()?;
    let removed: Vec<Vec<usize>> = if *scope == Scope::Global {
        let mut all = Vec::new();
        for (gi, s) in scores.iter().enumerate() {
            let mean = (s.iter().sum::<f32>() / s.len() as f32).max(f32::MIN_POSITIVE);
            all.extend(s.iter().enumerate().map(|(c, v)| (gi, c, v / mean)));
        }
        all.sort_by(|a, b| a.2.total_cmp(&b.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        let target = (fraction * all.len() as f32).round() as usize;
        let mut out = vec![Vec::new(); groups.len()];
        for (gi, c, _) in all {
            if out.iter().map(Vec::len).sum::<usize>() == target {
                break;
            }
            if out[gi].len() + 1 < scores[gi].len() {
                out[gi].push(c);
            }
        }
        out
    } else {
        scores.iter().map(|s| smallest(s, ((fraction * s.len() as f32).round() as usize).min(s.len() - 1))).collect()
    };
    let mut out = Vec::new();
    for ((g, s), gone) in groups.iter().zip(&scores).zip(removed) {
        let kept: Vec<usize> = (0..s.len()).filter(|c| !gone.contains(c)).collect();
        shrink(g, &kept, &param, &buffers)?;
        out.push(Pruned { layer: g.layer.clone(), removed: s.len() - kept.len(), of: s.len() });
    }
    Ok(out)
}

/// Each output channel's L1 filter norm, times |γ|/√(σ² + ε) of the norm after it.
fn channel_scores(
    g: &ChannelGroup,
    param: &dyn Fn(String) -> Result<Arc<Param>, TrainError>,
    buffers: &HashMap<String, Arc<Buffer>>,
) -> Result<Vec<f32>, TrainError> {
    let w = param(format!("{}.weight", g.layer))?.value();
    let values = w.to_vec()?;
    let per = values.len() / w.shape()[0];
    let mut scores: Vec<f32> = values.chunks(per).map(|r| r.iter().map(|x| x.abs()).sum()).collect();
    if let Some(norm) = &g.norm {
        let gamma = param(format!("{norm}.weight"))?.value().to_vec()?;
        let var = buffers.get(&format!("{norm}.running_var")).map(|b| b.value().to_vec()).transpose()?.unwrap_or_else(|| vec![1.0; gamma.len()]);
        for ((s, g), v) in scores.iter_mut().zip(gamma).zip(var) {
            *s *= g.abs() / (v + 1e-5).sqrt();
        }
    }
    Ok(scores)
}

/// Keeps channels `kept` of axis `axis`, viewing `values` as [outer, dim, inner].
fn keep_along(values: &[f32], (outer, dim, inner): (usize, usize, usize), kept: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(outer * kept.len() * inner);
    for o in 0..outer {
        for &c in kept {
            out.extend_from_slice(&values[(o * dim + c) * inner..][..inner]);
        }
    }
    out
}

/// Narrows the group's producer (weight rows, bias), its norm (γ, β, running statistics) and
/// its consumers' input channels to `kept`.
fn shrink(
    g: &ChannelGroup,
    kept: &[usize],
    param: &dyn Fn(String) -> Result<Arc<Param>, TrainError>,
    buffers: &HashMap<String, Arc<Buffer>>,
) -> Result<(), TrainError> {
    let narrowed = |t: &Tensor, axis_view: (usize, usize, usize), new_shape: Vec<usize>| -> Result<Tensor, TrainError> {
        Ok(Tensor::from_vec(keep_along(&t.to_vec()?, axis_view, kept), &new_shape, t.device())?)
    };
    // Output axis 0: [O, rest…] → [k, rest…].
    let rows = |t: &Tensor| -> Result<Tensor, TrainError> {
        let mut shape = t.shape().to_vec();
        let (dim, inner) = (shape[0], t.numel() / shape[0].max(1));
        shape[0] = kept.len();
        narrowed(t, (1, dim, inner), shape)
    };
    let mut outputs = vec![format!("{}.weight", g.layer), format!("{}.bias", g.layer)];
    if let Some(norm) = &g.norm {
        outputs.extend([format!("{norm}.weight"), format!("{norm}.bias")]);
        for stat in ["running_mean", "running_var"] {
            if let Some(b) = buffers.get(&format!("{norm}.{stat}")) {
                b.set_value(rows(&b.value())?);
            }
        }
    }
    let channels = param(format!("{}.weight", g.layer))?.value().shape()[0];
    for name in outputs {
        if let Ok(p) = param(name) {
            p.set_value(rows(&p.value())?);
        }
    }
    for consumer in &g.consumers {
        let p = param(format!("{consumer}.weight"))?;
        let w = p.value();
        let mut shape = w.shape().to_vec();
        // A conv reads channel c at [·, c, ·, ·]; a linear layer after a flatten reads it as
        // `inputs / channels` consecutive columns.
        let inner = if shape.len() == 4 { shape[2] * shape[3] } else { shape[1] / channels };
        let view = (shape[0], channels, inner);
        shape[1] = if shape.len() == 4 { kept.len() } else { kept.len() * inner };
        p.set_value(narrowed(&w, view, shape)?);
    }
    Ok(())
}
