//! Layer importance (`tessera importance`): each Linear layer's input units ranked by the mean
//! |W| over the layer's outputs (the seed's criterion: an input whose weights are all small
//! barely moves any output), and a picture of the network — the sub-model chain, with each
//! Linear layer's strongest inputs drawn as edges coloured and sized by importance — as
//! Graphviz DOT, rendered to SVG or PNG by Graphviz's `dot` when it is installed.
use crate::error::TrainError;
use std::fmt::Write as _;
use std::path::Path;
use tessera_engine::checkpoint::Checkpoint;

/// One Linear layer's input units ranked by importance.
#[derive(Clone, Debug)]
pub struct LayerImportance {
    /// The weight tensor's name, e.g. `classifier.4.weight`.
    pub name: String,
    pub outputs: usize,
    /// mean_i |W[i, j]| for every input j, in input order.
    pub scores: Vec<f32>,
}

impl LayerImportance {
    /// Input indices by decreasing importance.
    pub fn ranking(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.scores.len()).collect();
        order.sort_by(|&a, &b| self.scores[b].total_cmp(&self.scores[a]).then(a.cmp(&b)));
        order
    }

    /// The layer's record (an element of importance.json's `layers`, and a `--json` line):
    /// its `top` strongest inputs, its weakest, and the share below 10 % of the strongest.
    pub fn record(&self, top: usize) -> serde_json::Value {
        let ranking = self.ranking();
        let weakest = ranking.last().copied().unwrap_or(0);
        serde_json::json!({
            "layer": self.name,
            "inputs": self.scores.len(),
            "outputs": self.outputs,
            "top": ranking.iter().take(top).map(|&j| serde_json::json!({"input": j, "score": self.scores[j]})).collect::<Vec<_>>(),
            "weakest_input": weakest,
            "weakest_score": self.scores.get(weakest),
            "share_below_10pct": self.share_below(0.1),
        })
    }

    /// The share of inputs whose importance is below `fraction` of the largest.
    pub fn share_below(&self, fraction: f32) -> f32 {
        let max = self.scores.iter().fold(0f32, |m, &s| m.max(s));
        self.scores.iter().filter(|&&s| s < fraction * max).count() as f32 / self.scores.len().max(1) as f32
    }
}

/// The importance of every Linear layer (rank-2 `*.weight` tensor) of a checkpoint, in the
/// model's parameter order.
pub fn linear_importance(ckpt: &Checkpoint, param_order: &[String]) -> Vec<LayerImportance> {
    param_order
        .iter()
        .filter(|n| n.ends_with(".weight"))
        .filter_map(|n| {
            let (values, shape) = ckpt.tensors.get(n)?;
            let [outputs, inputs] = shape[..] else { return None };
            let mut scores = vec![0f32; inputs];
            for row in values.chunks(inputs.max(1)) {
                scores.iter_mut().zip(row).for_each(|(s, w)| *s += w.abs());
            }
            scores.iter_mut().for_each(|s| *s /= outputs.max(1) as f32);
            Some(LayerImportance { name: n.clone(), outputs, scores })
        })
        .collect()
}

/// Colour from grey (0) to red (1), as Graphviz hex.
fn heat(x: f32) -> String {
    let x = x.clamp(0.0, 1.0);
    let (r, g, b) = (160.0 + 95.0 * x, 160.0 * (1.0 - x), 160.0 * (1.0 - x));
    format!("#{:02x}{:02x}{:02x}", r as u8, g as u8, b as u8)
}

/// The network as DOT: sub-models in a chain; each Linear layer's `top` strongest inputs as
/// edges into it, coloured and sized by where their importance lies between the weakest
/// drawn input (grey) and the strongest (red), so the colours spread over the drawn range;
/// each layer's cluster names that range. The rest of the layer's inputs are one node with
/// their mean.
/// `owners[l]` is the index in `submodels` of the sub-model holding layer l.
pub fn network_dot(model: &str, submodels: &[(String, usize)], layers: &[LayerImportance], owners: &[usize], top: usize) -> String {
    let mut dot = String::new();
    let _ = writeln!(dot, "digraph \"{model}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"DejaVu Sans\"];");
    let _ = writeln!(dot, "  label=\"{model}: Linear inputs by mean |W| (edge colour and width: grey → red = the weakest → strongest input drawn)\";");
    for (i, (name, params)) in submodels.iter().enumerate() {
        let _ = writeln!(dot, "  s{i} [label=\"{name}\\n{params} params\"];");
        if i > 0 {
            let _ = writeln!(dot, "  s{} -> s{i};", i - 1);
        }
    }
    for (l, layer) in layers.iter().enumerate() {
        let ranking = layer.ranking();
        // The colour scale spans the drawn inputs' own range: the strongest red, the weakest
        // drawn grey (with a layer's top inputs close together, a scale over all inputs
        // would paint them one red). The other inputs' mean lies below it: grey.
        let drawn: Vec<f32> = ranking.iter().take(top).map(|&j| layer.scores[j]).collect();
        let (min, max) = drawn.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)));
        let scale = |s: f32| if max > min { (s - min) / (max - min) } else { (s >= max) as u8 as f32 };
        let _ = writeln!(
            dot,
            "  subgraph cluster_{l} {{\n    label=\"{} ({} inputs → {} outputs); edges: {min:.4} grey → {max:.4} red\";\n    style=dashed;",
            layer.name,
            layer.scores.len(),
            layer.outputs
        );
        let _ = writeln!(dot, "    l{l} [label=\"{}\", shape=ellipse];", layer.name.trim_end_matches(".weight"));
        for &j in ranking.iter().take(top) {
            let x = scale(layer.scores[j]);
            let _ = writeln!(
                dot,
                "    u{l}_{j} [label=\"in {j}\\n{:.3}\", shape=circle, fontsize=9];\n    u{l}_{j} -> l{l} [color=\"{}\", penwidth={:.2}];",
                layer.scores[j],
                heat(x),
                0.5 + 3.5 * x
            );
        }
        if ranking.len() > top {
            let rest = &ranking[top..];
            let mean = rest.iter().map(|&j| layer.scores[j]).sum::<f32>() / rest.len() as f32;
            let _ = writeln!(
                dot,
                "    r{l} [label=\"{} more\\nmean {:.3}\", shape=note, fontsize=9];\n    r{l} -> l{l} [color=\"{}\", style=dashed];",
                rest.len(),
                mean,
                heat(scale(mean))
            );
        }
        let _ = writeln!(dot, "  }}");
        if let Some(owner) = owners.get(l) {
            let _ = writeln!(dot, "  l{l} -> s{owner} [style=dotted, arrowhead=none, label=\"in\"];");
        }
    }
    let _ = writeln!(dot, "}}");
    dot
}

/// Renders `dot_file` to `out` (format from its extension) with Graphviz; Ok(false) when
/// `dot` is not installed.
pub fn render(dot_file: &Path, out: &Path) -> Result<bool, TrainError> {
    let format = out.extension().and_then(|e| e.to_str()).unwrap_or("svg");
    let status = std::process::Command::new("dot").arg(format!("-T{format}")).arg(dot_file).arg("-o").arg(out).status();
    match status {
        Ok(s) if s.success() => Ok(true),
        Ok(s) => Err(TrainError::Config(format!("dot failed ({s}) rendering {}", dot_file.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(TrainError::Io { path: dot_file.into(), error }),
    }
}
