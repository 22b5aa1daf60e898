//! `tessera importance` and `tessera correlation`: what a trained checkpoint's layers do.
use crate::flags::{real32, whole};
use crate::table::{note, print_record};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;
use tessera_scheduler::correlation::loss_correlation;
use tessera_scheduler::eval::model_from_checkpoint;
use tessera_scheduler::importance::{linear_importance, network_dot, render};
use tessera_scheduler::json::shortest_floats;
use tessera_scheduler::plot::heatmap;
use tessera_scheduler::run_state::load_splits;
use tessera_scheduler::settings;

#[derive(Args)]
pub struct ImportanceArgs {
    /// A training checkpoint (`RUN/epoch-NNN.safetensors`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Inputs listed (and drawn) per layer.
    #[arg(long, default_value_t = 10, value_parser = whole(settings::TOP))]
    top: usize,
    /// Folder for importance.json, importance.dot, importance.svg and importance.png.
    #[arg(long, default_value = "runs/importance")]
    out: PathBuf,
    /// Print each layer's ranking as a JSON line (`layer` records, as in importance.json).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CorrelationArgs {
    /// A training checkpoint (`RUN/epoch-NNN.safetensors`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data folder: `train/` and `test/` image folders, or the CIFAR-10 binary release.
    #[arg(long)]
    data: PathBuf,
    /// Use only the first N images of each class (train and test).
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder for correlation.json and correlation.png.
    #[arg(long, default_value = "runs/correlation")]
    out: PathBuf,
    /// Print each head as a JSON line (`head` records, as in correlation.json).
    #[arg(long)]
    json: bool,
}

pub fn importance(a: ImportanceArgs) -> Result<()> {
    // The output folder before the work: a bad --out fails at once, not after it.
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let model = model_from_checkpoint(&a.checkpoint, &ckpt, &Device::cpu())?;
    let order: Vec<String> = model.net.named_params().into_iter().map(|(n, _)| n).collect();
    let layers = linear_importance(&ckpt, &order);
    if layers.is_empty() {
        anyhow::bail!("{}: model `{}` has no Linear layer", a.checkpoint.display(), model.name);
    }
    let records: Vec<_> = layers.iter().map(|l| l.record(a.top)).collect();
    let doc = serde_json::json!({"checkpoint": a.checkpoint.display().to_string(), "model": model.name, "layers": records});
    let json_path = a.out.join("importance.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&shortest_floats(doc))?).with_context(|| format!("writing {}", json_path.display()))?;
    for layer in layers.iter().filter(|_| !a.json) {
        let ranking = layer.ranking();
        println!("{} ({} inputs → {} outputs): inputs by mean |W| over outputs", layer.name, layer.scores.len(), layer.outputs);
        for (rank, &j) in ranking.iter().take(a.top).enumerate() {
            println!("  {:>3}. input {j:>5}  {:.5}", rank + 1, layer.scores[j]);
        }
        let last = ranking[ranking.len() - 1];
        println!("  weakest: input {last} {:.5}; {:.1} % of inputs below 10 % of the strongest", layer.scores[last], layer.share_below(0.1) * 100.0);
    }
    let subs: Vec<(String, usize)> =
        model.submodels.iter().map(|s| (s.name.clone(), model.params_of(s).iter().map(|(_, p)| p.value().numel()).sum())).collect();
    let dot_path = a.out.join("importance.dot");
    let owners: Vec<usize> = layers.iter().map(|l| model.submodels.iter().position(|s| s.owns(&l.name)).unwrap_or(0)).collect();
    std::fs::write(&dot_path, network_dot(model.name, &subs, &layers, &owners, a.top)).with_context(|| format!("writing {}", dot_path.display()))?;
    let mut rendered = Vec::new();
    for ext in ["svg", "png"] {
        let path = a.out.join(format!("importance.{ext}"));
        if render(&dot_path, &path)? {
            rendered.push(path.display().to_string());
        }
    }
    if a.json {
        records.iter().for_each(|r| print_record("layer", r));
    }
    if rendered.is_empty() {
        note(a.json, &format!("wrote {} and {} (install Graphviz to render it: apt-get install graphviz)", json_path.display(), dot_path.display()));
    } else {
        note(a.json, &format!("wrote {}, {} and {}", json_path.display(), dot_path.display(), rendered.join(", ")));
    }
    Ok(())
}

pub fn correlation(a: CorrelationArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let device = Device::parse(&a.device)?;
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let model = model_from_checkpoint(&a.checkpoint, &ckpt, &device)?;
    let (train, test) = load_splits(&a.data, a.limit_per_class).with_context(|| format!("loading {}", a.data.display()))?;
    let c = loss_correlation(&model, &train, &test, &device, a.seed).context("measuring per-sample losses")?;
    let mean_loss = |h: usize| c.losses[h].iter().sum::<f32>() / test.len().max(1) as f32;
    let records: Vec<_> = (0..c.heads.len())
        .map(|h| serde_json::json!({"head": c.heads[h], "accuracy": c.accuracy[h], "mean_loss": mean_loss(h), "pearson": c.pearson[h]}))
        .collect();
    let doc = serde_json::json!({"checkpoint": a.checkpoint.display().to_string(), "train_images": train.len(), "test_images": test.len(), "heads": &records});
    let json_path = a.out.join("correlation.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&shortest_floats(doc))?).with_context(|| format!("writing {}", json_path.display()))?;
    if a.json {
        records.iter().for_each(|r| print_record("head", r));
    } else {
        println!(
            "per-sample test losses of {} heads on {} images (probes: linear on pooled features, trained on {} images)",
            c.heads.len(),
            test.len(),
            train.len()
        );
        for (h, name) in c.heads.iter().enumerate() {
            println!("  {name:<28} accuracy {:.2} %, mean loss {:.4}", c.accuracy[h] * 100.0, mean_loss(h));
        }
        println!("Pearson correlation of per-sample losses:");
        for (h, row) in c.heads.iter().zip(&c.pearson) {
            println!("  {h:<28} {}", row.iter().map(|v| format!("{v:>6.3}")).collect::<Vec<_>>().join(" "));
        }
    }
    let png = a.out.join("correlation.png");
    heatmap(&png, "Pearson correlation of per-sample test losses", &c.heads, &c.pearson)?;
    note(a.json, &format!("wrote {} and {}", json_path.display(), png.display()));
    Ok(())
}

#[derive(Args)]
pub struct RobustnessArgs {
    /// A run folder of `tessera train` (epoch-NNN.safetensors, metrics.jsonl).
    #[arg(long)]
    run: PathBuf,
    /// Data folder: `train/` and `test/` image folders, or the CIFAR-10 binary release.
    #[arg(long)]
    data: PathBuf,
    /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per batch.
    #[arg(long, default_value_t = 256, value_parser = whole(settings::BATCH))]
    batch: usize,
    /// Use only the first N test images of each class.
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// Skip the input-corruption table (6 corruptions × 5 severities of test-set passes).
    #[arg(long)]
    no_corruptions: bool,
    /// Sub-model noise, relative to each tensor's RMS.
    #[arg(long, default_value_t = 0.5, value_parser = real32(settings::NOISE_SCALE))]
    noise_scale: f32,
    /// Seed of the initial weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where results.txt, results.json and the PNGs go [default: RUN/robustness].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the results as JSON lines (`summary`, `checkpoint`, `corruption` and
    /// `submodel_fault` records, as in results.json).
    #[arg(long)]
    json: bool,
}

pub fn robustness(a: RobustnessArgs) -> Result<()> {
    use tessera_scheduler::robustness::{robustness_report, RobustnessConfig, RECORDS};
    let (_, test) = load_splits(&a.data, a.limit_per_class).with_context(|| format!("loading {}", a.data.display()))?;
    let out = a.out.clone().unwrap_or_else(|| a.run.join("robustness"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let cfg = RobustnessConfig {
        run: a.run.clone(),
        device: a.device,
        batch: a.batch,
        seed: a.seed,
        corruptions: !a.no_corruptions,
        noise_scale: a.noise_scale,
        out: out.clone(),
    };
    // Corruptions rewrite pixels: the test set in memory.
    let test = std::sync::Arc::new(tessera_scheduler::data::materialize(test.as_ref()).with_context(|| format!("reading {}", a.data.display()))?);
    let report = robustness_report(&cfg, &test).with_context(|| format!("robustness of {}", a.run.display()))?;
    if a.json {
        for (record, key) in RECORDS {
            match &report.json[key] {
                serde_json::Value::Array(items) => items.iter().for_each(|r| print_record(record, r)),
                one => print_record(record, one),
            }
        }
    } else {
        print!("{}", report.text);
    }
    note(a.json, &format!("wrote {}/results.txt, results.json, learning_curves.png{}", out.display(), if a.no_corruptions { "" } else { ", corruptions.png" }));
    Ok(())
}
