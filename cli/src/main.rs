//! The `tessera` command line: parses, wires and prints; the work lives in the library crates.
mod analysis;
mod check;
mod compare;
mod compress;
mod flags;
mod jobs;
mod runs;
mod search;
mod table;
mod tasks;
mod watch;

use crate::flags::{model_name, real32, real64, whole};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::time::Duration;
use table::{note, Table};
use tessera_engine::bench::{bench_gemm, parse_trans};
use tessera_engine::cpu::CpuBackend;
use tessera_engine::gpu::list_adapters;
use tessera_engine::ops::gemm::kernel_supported;
use tessera_engine::Device;
use tessera_scheduler::settings;
use tessera_scheduler::strategy::RunSpec;
use tessera_scheduler::trainer::{OptimConfig, OptimizerKind, Precision};
use tessera_shaders::gemm::{by_name, VARIANTS};

#[derive(Parser)]
#[command(name = "tessera", version, about = "Tessera: a portable GPU training engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter wgpu finds and the CPU backend.
    Devices {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Kernel benchmarks.
    #[command(subcommand)]
    Bench(Bench),
    /// Conformance of every op, forward and backward, on every adapter against the CPU
    /// backend (op × adapter matrix; non-zero exit on a failure); `--shaders`: naga's
    /// validation and translation of every kernel to SPIR-V, MSL, HLSL and GLSL ES.
    Check(check::CheckArgs),
    /// Train one model under several sub-model scheduling strategies (same weights, same data
    /// order) and write the standard run report: report.md, report.json, report.svg.
    Compare(compare::CompareArgs),
    /// Rank each Linear layer's input units by mean |W| over outputs; draw the network (DOT,
    /// rendered to SVG/PNG with Graphviz) with edges coloured by importance.
    Importance(analysis::ImportanceArgs),
    /// Per-sample test losses of a head at every sub-model boundary (linear probes, then the
    /// model's classifier) and their Pearson correlation matrix, printed and as a heatmap.
    Correlation(analysis::CorrelationArgs),
    /// Evaluate every checkpoint of a run: accuracy per checkpoint, mean ± std, mean confusion
    /// matrix, classification report, bootstrap interval, learning curves; accuracy under input
    /// corruptions; sub-model fault tolerance. Writes results.txt and results.json.
    Robustness(analysis::RobustnessArgs),
    /// Split K classes into N tasks with a wall-time budget each (writes plan.json).
    Plan(tasks::PlanArgs),
    /// Train one model per task of a plan as parallel processes bounded by the cores, each
    /// stopping when its budget is spent, then merge them into one classifier and evaluate it.
    RunPlan(tasks::RunPlanArgs),
    /// Combine the finished array tasks of a `plan --emit slurm` folder into the merged
    /// classifier, or a `compare --emit slurm` folder into the standard report, naming any
    /// task that failed or is missing.
    Merge(tasks::MergeArgs),
    /// One task of a plan (what run-plan starts per task).
    #[command(hide = true)]
    RunTask(tasks::RunTaskArgs),
    /// One strategy of a comparison (what compare starts per strategy).
    #[command(hide = true)]
    CompareLane(compare::LaneArgs),
    /// List the models (name, input size, parameters with 10 classes); `models show M` prints
    /// one model's sub-model graph with parameters and FLOPs.
    Models {
        #[command(subcommand)]
        show: Option<ModelsCmd>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train a model on an image-folder data set (`DIR/train`, `DIR/test`).
    Train(TrainArgs),
    /// Probe every candidate strategy, predict each one's accuracy at the time budget from its
    /// learning curve, and train the best for the rest of the budget.
    Search(search::SearchArgs),
    /// Prune (weights or whole channels), fine-tune, quantise (int8 or f16) a checkpoint, and
    /// report size, FLOPs, latency and accuracy before and after.
    Compress(compress::CompressArgs),
    /// The run registry: `runs list`, `runs show RUN`, `runs diff RUN_A RUN_B`, `runs tag RUN TAG`.
    #[command(subcommand)]
    Runs(runs::RunsCmd),
    /// One forward (and, given labels `y`, backward) pass on tensor `x`: the interop check
    /// against PyTorch. Writes `logits` (and `loss`, `grad.<name>`) to --out.
    Forward {
        /// The model (`tessera models` lists them).
        #[arg(long, value_parser = model_name())]
        model: String,
        /// Classes of the final layer [default: read off the weights' last layer].
        #[arg(long, value_parser = whole(settings::NUM_CLASSES))]
        num_classes: Option<usize>,
        /// A state dict (safetensors) with torchvision's names.
        #[arg(long)]
        weights: std::path::PathBuf,
        /// safetensors holding `x` (and optionally integer labels `y`).
        #[arg(long)]
        input: std::path::PathBuf,
        /// Where the output is written (a file, or a folder created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Batch statistics in BatchNorm, dropout on.
        #[arg(long)]
        train_mode: bool,
        /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Write a training checkpoint's state dict (no optimizer state) for PyTorch.
    Export {
        /// A training checkpoint (`RUN/epoch-NNN.safetensors`).
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// Where the output is written (a file, or a folder created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: tessera_engine::checkpoint::FloatFormat,
    },
    /// Accuracy and confusion matrix of a training checkpoint on `DIR/test`.
    Eval {
        /// A training checkpoint (`RUN/epoch-NNN.safetensors`).
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// Data folder: `train/` and `test/` image folders, or the CIFAR-10 binary release.
        #[arg(long)]
        data: std::path::PathBuf,
        /// Use only the first N test images of each class.
        #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
        limit_per_class: Option<usize>,
        /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Images per batch.
        #[arg(long, default_value_t = 256, value_parser = whole(settings::BATCH))]
        batch: usize,
        /// Test-time augmentation: none, mirror (logits averaged with the mirror images'), or
        /// mirror-translate (also over one-pixel translations, as airbench's level 2).
        #[arg(long, default_value = "none")]
        tta: tessera_scheduler::eval::Tta,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Settings come from flags, else from the --config TOML file (same names, `wd` as
/// `weight_decay` too), else the defaults shown.
#[derive(Args, serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TrainArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long)]
    #[serde(skip)]
    config: Option<std::path::PathBuf>,
    /// [default: resnet20-cifar]
    #[arg(long, value_parser = model_name())]
    model: Option<String>,
    /// Train with a whole published method: its model, optimizer, schedule, augmentation and
    /// test-time evaluation (`airbench94`: CIFAR-10 to 94 %, batch 1024, 9.9 epochs). It sets
    /// the model and optimizer; --epochs (whole epochs in place of its own) and --batch
    /// apply.
    #[arg(long)]
    recipe: Option<String>,
    /// Folder holding `train/` and `test/` image folders (one subfolder per class).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// [default: 1]
    #[arg(long, value_parser = whole(settings::EPOCHS))]
    epochs: Option<usize>,
    /// [default: 128]
    #[arg(long, value_parser = whole(settings::BATCH))]
    batch: Option<usize>,
    /// sgd or adamw [default: sgd]
    #[arg(long)]
    optimizer: Option<String>,
    /// [default: 0.1]
    #[arg(long, value_parser = real32(settings::LR))]
    lr: Option<f32>,
    /// SGD's momentum [default: 0.9]
    #[arg(long, value_parser = real32(settings::MOMENTUM))]
    momentum: Option<f32>,
    /// Nesterov momentum for SGD (`--nesterov`, or `nesterov = true` in a config) [default: off]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    nesterov: Option<bool>,
    /// Weight decay [default: 5e-4 with SGD, 0.01 with AdamW]
    #[arg(long, value_parser = real32(settings::WEIGHT_DECAY))]
    #[serde(alias = "weight_decay")]
    wd: Option<f32>,
    /// Linear warm-up of the learning rate over this many steps, before the cosine [default: 0]
    #[arg(long, value_parser = whole(settings::WARMUP_STEPS))]
    warmup_steps: Option<usize>,
    /// Threads reading and augmenting batches ahead of the step [default: one per core]
    #[arg(long, value_parser = whole(settings::WORKERS))]
    workers: Option<usize>,
    /// Bytes of batches the loader may hold at once [default: two per worker]
    #[arg(long, value_parser = whole(settings::LOADER_MEMORY))]
    loader_memory: Option<usize>,
    /// [default: cpu]
    #[arg(long)]
    device: Option<String>,
    /// [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Use only the first N images of each class (quick runs).
    #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
    limit_per_class: Option<usize>,
    /// Run folder for per-epoch checkpoints and metrics.jsonl [default: runs/<model>-<UTC time>].
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    #[serde(default)]
    resume: bool,
    /// Replace the run already in --out (its checkpoints and metrics.jsonl).
    #[arg(long)]
    #[serde(default)]
    overwrite: bool,
    /// With --on-nan skip: let an epoch whose every batch was skipped pass (else an error).
    #[arg(long)]
    #[serde(default)]
    allow_empty_epochs: bool,
    /// A non-finite loss or gradient: `stop` with an error naming the step and where it first
    /// appeared, or `skip` the batch and count it [default: stop].
    #[arg(long)]
    on_nan: Option<String>,
    /// Print the per-epoch rows as JSON lines.
    #[arg(long)]
    #[serde(default)]
    json: bool,
    /// A second folder (another disk, shared storage) that receives a verified copy of every
    /// checkpoint; --resume continues from the newest checkpoint that verifies in either.
    #[arg(long)]
    backup_dir: Option<std::path::PathBuf>,
    /// Under mpirun/srun: BatchNorm statistics over every rank's rows (PyTorch's
    /// SyncBatchNorm), not each rank's own.
    #[arg(long)]
    #[serde(default)]
    sync_bn: bool,
    /// Serve live metrics in Prometheus's text format at http://ADDR/metrics while training.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Write TensorBoard event files (scalars) into DIR.
    #[arg(long, value_name = "DIR")]
    tensorboard: Option<std::path::PathBuf>,
    /// Stop (exit status 3) when the training loss rises past FACTOR × its running minimum.
    #[arg(long, value_name = "FACTOR", value_parser = real32(settings::ALERT_EXIT))]
    alert_exit: Option<f32>,
    /// The run registry this run registers in [default: registry.sqlite beside --out].
    #[arg(long, value_name = "FILE")]
    registry: Option<std::path::PathBuf>,
    /// On a GPU, fail an allocation past this many bytes with an error naming the tensor
    /// [default: the device-local memory the driver reports, where it reports any].
    #[arg(long, value_name = "BYTES", value_parser = whole(settings::GPU_MEMORY_LIMIT))]
    gpu_memory_limit: Option<usize>,
    /// f32, or mixed: f16 activations and f16 products with f32 accumulation, f32 weights and
    /// optimizer state, dynamic loss scaling (GPUs with SHADER_F16; elsewhere f32, with a
    /// notice) [default: f32]
    #[arg(long)]
    precision: Option<String>,
}

impl TrainArgs {
    /// Flags over the --config file over the defaults.
    /// The run's config, whether to print JSON, and the registry file given (if any).
    fn resolve(self) -> Result<(tessera_scheduler::train::TrainConfig, bool, Option<std::path::PathBuf>)> {
        let file: TrainArgs = match &self.config {
            None => TrainArgs::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let mut file: TrainArgs = toml::from_str(&text).with_context(|| format!("{}: not a valid training config", path.display()))?;
                // A config file's relative paths mean the file's folder, wherever it is run from.
                let base = path.parent().unwrap_or(std::path::Path::new(""));
                file.data = file.data.map(|p| base.join(p));
                file.out = file.out.map(|p| base.join(p));
                file.backup_dir = file.backup_dir.map(|p| base.join(p));
                file.tensorboard = file.tensorboard.map(|p| base.join(p));
                file.registry = file.registry.map(|p| base.join(p));
                file
            }
        };
        let d = tessera_scheduler::train::TrainConfig::default();
        let data = self.data.or(file.data).context("no data folder: pass --data DIR or set `data` in the config")?;
        let optimizer_given = self.optimizer.is_some() || file.optimizer.is_some();
        let kind: OptimizerKind = match self.optimizer.or(file.optimizer) {
            Some(s) => s.parse().map_err(anyhow::Error::msg)?,
            None => OptimizerKind::default(),
        };
        let recipe = match self.recipe.or(file.recipe) {
            Some(name) => {
                let set = [
                    ("--optimizer", optimizer_given),
                    ("--lr", self.lr.or(file.lr).is_some()),
                    ("--momentum", self.momentum.or(file.momentum).is_some()),
                    ("--wd", self.wd.or(file.wd).is_some()),
                    ("--nesterov", self.nesterov.or(file.nesterov).is_some()),
                    ("--warmup-steps", self.warmup_steps.or(file.warmup_steps).is_some()),
                ];
                if let Some((flag, _)) = set.iter().find(|(_, given)| *given) {
                    bail!("--recipe {name} sets the optimizer itself; drop {flag}");
                }
                let recipe: tessera_scheduler::recipe::Recipe = name.parse().map_err(anyhow::Error::msg)?;
                Some(match self.epochs.or(file.epochs) {
                    Some(epochs) => recipe.with_epochs(epochs as f32),
                    None => recipe,
                })
            }
            None => None,
        };
        let lr = self.lr.or(file.lr).unwrap_or(d.optim.lr);
        let optim =
            OptimConfig::from_flags(kind, lr, self.momentum.or(file.momentum), self.wd.or(file.wd), self.warmup_steps.or(file.warmup_steps).unwrap_or(0))?
                .with_nesterov(self.nesterov.or(file.nesterov).unwrap_or(false))?;
        let (batch, epochs) = recipe.map_or((d.run.batch, d.run.epochs), |r| r.batch_and_epochs());
        let run = RunSpec {
            epochs: self.epochs.or(file.epochs).unwrap_or(epochs),
            batch: self.batch.or(file.batch).unwrap_or(batch),
            seed: self.seed.or(file.seed).unwrap_or(d.run.seed),
            workers: self.workers.or(file.workers).unwrap_or(d.run.workers),
            memory_limit: self.loader_memory.or(file.loader_memory),
            ..RunSpec::default()
        };
        let model = self.model.or(file.model).or(recipe.map(|r| r.model().to_string())).unwrap_or(d.model);
        let resume = self.resume || file.resume;
        // Without --out a run gets a fresh folder of its own (a resume needs to be told which).
        let out = match (self.out.or(file.out), resume) {
            (Some(out), _) => Some(out),
            (None, true) => bail!("--resume needs --out (the run folder to continue)"),
            (None, false) => Some(std::path::PathBuf::from("runs").join(format!("{model}-{}", utc_stamp()))),
        };
        let cfg = tessera_scheduler::train::TrainConfig {
            model,
            data,
            run,
            optim,
            recipe,
            device: self.device.or(file.device).unwrap_or(d.device),
            limit_per_class: self.limit_per_class.or(file.limit_per_class),
            out,
            resume,
            overwrite: self.overwrite || file.overwrite,
            allow_empty_epochs: self.allow_empty_epochs || file.allow_empty_epochs,
            stop: None,
            world: Default::default(),
            sync_bn: self.sync_bn || file.sync_bn,
            backup_dir: self.backup_dir.or(file.backup_dir),
            gpu_memory_limit: self.gpu_memory_limit.or(file.gpu_memory_limit),
            watch: tessera_scheduler::monitor::WatchSpec {
                metrics_addr: self.metrics_addr.or(file.metrics_addr),
                tensorboard: self.tensorboard.or(file.tensorboard),
                alert_exit: self.alert_exit.or(file.alert_exit),
            },
            on_nan: match self.on_nan.or(file.on_nan) {
                Some(s) => s.parse().map_err(anyhow::Error::msg)?,
                None => d.on_nan,
            },
            precision: match self.precision.or(file.precision) {
                Some(s) => s.parse().map_err(anyhow::Error::msg)?,
                None => d.precision,
            },
        };
        Ok((cfg, self.json || file.json, self.registry.or(file.registry)))
    }
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Names a run's newest checkpoint that verifies as model NAME, version VERSION (default:
    /// the next) in the run registry.
    Promote {
        /// The run (id or name, as `tessera runs list` shows).
        run: String,
        /// NAME or NAME:VERSION.
        #[arg(long = "as", value_name = "NAME[:VERSION]")]
        name: String,
        #[command(flatten)]
        at: runs::RegistryArgs,
    },
    /// Every version of model NAME: its run, checkpoint, CRC and whether it still verifies.
    Versions {
        name: String,
        #[command(flatten)]
        at: runs::RegistryArgs,
    },
    /// The sub-models of one model: dependencies, output shape, parameters, forward FLOPs.
    Show {
        /// The model (`tessera models` lists them).
        #[arg(value_parser = model_name())]
        model: String,
        /// Input size in pixels (default: the model's own).
        #[arg(long, value_parser = whole(settings::INPUT))]
        input: Option<usize>,
        /// Classes of the final layer (as `tessera models` counts parameters).
        #[arg(long, default_value_t = 10, value_parser = whole(settings::NUM_CLASSES))]
        num_classes: usize,
        /// How finely to cut it: stage, block or branch (ResNets), stage or layer (AlexNet).
        #[arg(long, default_value = "stage")]
        granularity: tessera_models::Granularity,
        /// Also draw the sub-model graph: FILE.dot as DOT text, FILE.png or .svg through Graphviz.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// All-reduce (sum) time and bandwidth per message size over the ranks of an MPI job
    /// (`mpirun -np N tessera bench allreduce`), as nccl-tests reports them.
    Allreduce {
        /// Message sizes in bytes.
        #[arg(long, default_value = "4096,65536,1048576,16777216,67108864", value_delimiter = ',', value_parser = whole(settings::ALLREDUCE_BYTES))]
        sizes: Vec<usize>,
        /// Timed all-reduces per size (after 3 untimed).
        #[arg(long, default_value_t = 20, value_parser = whole(settings::ITERS))]
        iters: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// GEMM throughput against a direct OpenBLAS call measured in the same run.
    Gemm(GemmArgs),
    /// conv2d (forward, backward data, backward weight), the fc6 GEMM, max pooling, batch
    /// norm and cross-entropy at ResNet-50/AlexNet shapes (224 px, batch 8): time, GFLOP/s,
    /// GB/s, and on the CPU the share of OpenBLAS's 2048³ sgemm rate measured in the same run.
    Kernels {
        /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
        #[arg(long, default_value = "cpu", value_delimiter = ',')]
        device: Vec<String>,
        #[command(flatten)]
        torch: TorchReference,
        /// Time budget per kernel, in seconds (at least 3 timed runs).
        #[arg(long, default_value_t = 1.0, value_parser = real64(settings::SECONDS))]
        seconds: f64,
        /// Forget the GPU adapters' tuned kernel choices first, so this run times the variants again.
        #[arg(long)]
        retune: bool,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Median forward time of one batch through a model file (eval mode; int8 files run
    /// their int8 kernels), per device.
    Forward {
        /// A model file: a training checkpoint, `compress`'s output, or an exported state dict.
        #[arg(long)]
        checkpoint: std::path::PathBuf,
        /// Images per batch.
        #[arg(long, default_value_t = 128, value_parser = whole(settings::BATCH))]
        batch: usize,
        /// Timed passes (the median is reported), after one untimed.
        #[arg(long, default_value_t = 5, value_parser = whole(settings::ROUNDS))]
        rounds: usize,
        /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`, comma-separated.
        #[arg(long, default_value = "cpu", value_delimiter = ',')]
        device: Vec<String>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A recipe trained end to end, several runs: each run's wall time, final accuracy and
    /// time to the target accuracy, mean ± std, with the recipe's PyTorch reference
    /// (scripts/airbench94_torch.py) on the same cores, alternating run by run.
    TimeToAccuracy {
        /// The recipe (`airbench94`).
        #[arg(long, default_value = "airbench94")]
        recipe: String,
        /// CIFAR-10 as image folders (`train/`, `test/`) or its binary release.
        #[arg(long, default_value = "../shared/data/cifar10")]
        data: std::path::PathBuf,
        /// The test accuracy to reach, as a fraction.
        #[arg(long, default_value_t = 0.94, value_parser = real32(settings::TARGET))]
        target: f32,
        /// Runs of each engine.
        #[arg(long, default_value_t = 3, value_parser = whole(settings::ROUNDS))]
        runs: usize,
        /// The first run's seed (run i uses seed + i).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `cpu`, `gpu` (= `gpu:0`) or `gpu:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Whole epochs in place of the recipe's own (quick runs).
        #[arg(long, value_parser = whole(settings::EPOCHS))]
        epochs: Option<usize>,
        /// Use only the first N images of each class (quick runs).
        #[arg(long, value_parser = whole(settings::LIMIT_PER_CLASS))]
        limit_per_class: Option<usize>,
        /// Also evaluate after every epoch (untimed), so a run can meet the target early.
        #[arg(long)]
        eval_each_epoch: bool,
        #[command(flatten)]
        torch: TorchReference,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Median training-step time (forward + loss, backward, SGD update) after warm-up.
    Train {
        /// The model (`tessera models` lists them).
        #[arg(long, value_parser = model_name())]
        model: String,
        /// Classes of the final layer.
        #[arg(long, default_value_t = 10, value_parser = whole(settings::NUM_CLASSES))]
        num_classes: usize,
        /// Input size in pixels.
        #[arg(long, default_value_t = 32, value_parser = whole(settings::INPUT))]
        input: usize,
        /// Images per batch.
        #[arg(long, default_value_t = 32, value_parser = whole(settings::BATCH))]
        batch: usize,
        /// `cpu`, `gpu` (= `gpu:0`), `gpu:N` or `auto`.
        #[arg(long, default_value = "cpu", value_delimiter = ',')]
        device: Vec<String>,
        /// f32 and/or mixed (`f32,mixed`: both, a row each; mixed runs on GPUs with SHADER_F16).
        #[arg(long, default_value = "f32", value_delimiter = ',')]
        precision: Vec<String>,
        /// Untimed steps before the timed ones.
        #[arg(long, default_value_t = 2, value_parser = whole(settings::WARMUP))]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = whole(settings::STEPS))]
        steps: usize,
        #[command(flatten)]
        torch: TorchReference,
        /// On GPUs, also break one more step down by kernel: launches, milliseconds and MiB
        /// bound per kernel (each launch run alone, so the sum exceeds the batched step).
        #[arg(long)]
        kernels: bool,
        /// Alternate the PyTorch reference and each device this many times and report each
        /// row's median round: on a shared machine the speed drifts over minutes.
        #[arg(long, default_value_t = 1, value_parser = whole(settings::ROUNDS))]
        rounds: usize,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where a benchmark's PyTorch reference runs (scripts/bench_torch*.py,
/// scripts/airbench94_torch.py), beside Tessera on the same cores.
#[derive(Args)]
struct TorchReference {
    /// The Python that runs the PyTorch reference; skipped with a note when it cannot import
    /// torch.
    #[arg(long, default_value = "python3")]
    torch_python: String,
    /// Do not run the PyTorch reference.
    #[arg(long)]
    no_torch: bool,
}

impl TorchReference {
    fn python(&self) -> Option<&str> {
        (!self.no_torch).then_some(self.torch_python.as_str())
    }
}

#[derive(Args)]
struct GemmArgs {
    /// `cpu`, `gpu`, `gpu:N` or `auto`; repeat or separate with commas for several.
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    device: Vec<String>,
    /// Square sizes M = N = K.
    #[arg(long, default_value = "256,512,1024,2048", value_delimiter = ',', value_parser = whole(settings::GEMM_SIZE))]
    sizes: Vec<usize>,
    /// Transpose combinations: nn, nt, tn, tt.
    #[arg(long, default_value = "nn", value_delimiter = ',')]
    trans: Vec<String>,
    /// GPU kernel variant: `default` (chosen per adapter), `all`, or an entry point name.
    #[arg(long, default_value = "default")]
    kernel: String,
    /// Seconds spent timing each row (after one warm-up run).
    #[arg(long, default_value_t = 1.0, value_parser = real64(settings::SECONDS))]
    seconds: f64,
    /// CPU threads (OpenBLAS and rayon); 0 = one per core.
    #[arg(long, default_value_t = 0, value_parser = whole(settings::THREADS))]
    threads: usize,
    /// Forget the GPU adapters' tuned kernel choices first, so this run times the variants again.
    #[arg(long)]
    retune: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Forgets the tuned kernel choices of the GPU devices named in `devices`.
fn retune(devices: &[String]) -> Result<()> {
    for d in devices {
        if let Device::Gpu(gpu) = Device::parse(d)? {
            let n = tessera_engine::gpu::tune::forget_adapter(&gpu.tune_key());
            eprintln!("{d}: forgot {n} tuned choices ({})", tessera_engine::gpu::tune::cache_path().display());
        }
    }
    Ok(())
}

/// Large blocks (≥ 32 MiB) are reused by size; see `LargeBlockCache`.
#[global_allocator]
static ALLOC: tessera_engine::cpu::alloc::LargeBlockCache = tessera_engine::cpu::alloc::LargeBlockCache;

/// Keeps freed memory in the process (glibc): training allocates and frees the same
/// activation buffers every step, and returning them to the kernel made every step pay page
/// faults and kernel zeroing for them again. Blocks of 32 MiB and more are mapped by glibc and
/// kept by `LargeBlockCache` (in glibc's heap they left holes that smaller tensors split, and
/// the next step's copy went on top: +130 MiB for AlexNet). One arena: a second thread's
/// arena held another 64 MiB heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    const M_ARENA_MAX: std::ffi::c_int = -8;
    // SAFETY: plain glibc tuning calls, made before any other thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, tessera_engine::cpu::alloc::LARGE_BLOCK as std::ffi::c_int);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
        mallopt(M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Errors print as one chain of causes, without a backtrace: they are for users.
fn main() -> std::process::ExitCode {
    keep_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match watch::is_alert_exit(&e) {
                true => std::process::ExitCode::from(watch::ALERT_EXIT_STATUS),
                false => std::process::ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devices { json } => devices(json),
        Command::Check(args) => check::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Plan(args) => tasks::plan(args),
        Command::Importance(args) => analysis::importance(args),
        Command::Robustness(args) => analysis::robustness(args),
        Command::Correlation(args) => analysis::correlation(args),
        Command::RunPlan(args) => tasks::run_plan(args),
        Command::Merge(args) => tasks::merge(args),
        Command::RunTask(args) => tasks::run_task(args),
        Command::CompareLane(args) => compare::lane(args),
        Command::Bench(Bench::Gemm(args)) => bench_gemm_cmd(args),
        Command::Bench(Bench::Forward { checkpoint, batch, rounds, device, json }) => compress::bench_forward(&checkpoint, batch, rounds, &device, json),
        Command::Bench(Bench::Allreduce { sizes, iters, json }) => bench_allreduce_cmd(&sizes, iters, json),
        Command::Bench(Bench::Kernels { device, torch, seconds, retune: again, json }) => {
            if again {
                retune(&device)?;
            }
            bench_kernels_cmd(&device, torch.python(), seconds, json)
        }
        Command::Bench(Bench::TimeToAccuracy { recipe, data, target, runs, seed, device, epochs, limit_per_class, eval_each_epoch, torch, json }) => {
            let recipe: tessera_scheduler::recipe::Recipe = recipe.parse().map_err(anyhow::Error::msg)?;
            let spec = tessera_scheduler::time_to_accuracy::TimeToAccuracySpec {
                recipe: epochs.map_or(recipe, |e| recipe.with_epochs(e as f32)),
                data,
                target,
                runs,
                first_seed: seed,
                device,
                limit_per_class,
                evaluate_each_epoch: eval_each_epoch,
                workers: 0,
            };
            bench_time_to_accuracy(&spec, torch.python(), json)
        }
        Command::Bench(Bench::Train { model, num_classes, input, batch, device, precision, warmup, steps, torch, kernels, rounds, json }) => {
            use tessera_scheduler::bench::{bench_train, StepSpec};
            let spec = StepSpec { model: model.clone(), num_classes, input, batch, warmup, steps, optim: OptimConfig::default(), kernels };
            let threads = CpuBackend::global().threads();
            let python = torch.python();
            let precisions = precision.iter().map(|p| p.parse()).collect::<Result<Vec<Precision>, String>>().map_err(anyhow::Error::msg)?;
            let result = bench_train(&spec, &device, &precisions, rounds, python, threads).with_context(|| format!("timing {model}"))?;
            for notice in &result.notices {
                eprintln!("{notice}");
            }
            let mut table = Table::new(
                "train_step",
                &[
                    "model",
                    "device",
                    "precision",
                    "input",
                    "batch",
                    "forward_ms",
                    "backward_ms",
                    "optimizer_ms",
                    "step_ms",
                    "images_per_sec",
                    "peak_MiB",
                    "device_peak_MiB",
                    "launches_per_step",
                    "bound_MiB_per_step",
                    "vs_pytorch",
                ],
            );
            let torch_ms = result.torch.as_ref().ok().map(|r| r.times.step_ms);
            let mut row = |name: String, precision: Precision, t: &tessera_scheduler::bench::StepTimes, ratio: Option<f64>| {
                table.push(vec![
                    json!(model),
                    json!(name),
                    json!(precision.to_string()),
                    json!(input),
                    json!(batch),
                    json!(t.forward_ms),
                    json!(t.backward_ms),
                    json!(t.optimizer_ms),
                    json!(t.step_ms),
                    json!(t.images_per_sec),
                    json!(t.peak_mib),
                    json!(t.device_peak_mib),
                    json!(t.launches_per_step),
                    json!(t.bound_mib_per_step),
                    json!(ratio),
                ])
            };
            for (d, p, t) in &result.devices {
                row(d.clone(), *p, t, torch_ms.map(|r| t.step_ms / r));
            }
            match &result.torch {
                Ok(r) => row(format!("pytorch {} cpu ({threads} threads)", r.version), Precision::F32, &r.times, Some(1.0)),
                Err(why) => eprintln!("PyTorch reference: {why}"),
            }
            table.print(json);
            for (d, p, t) in &result.devices {
                if let Some(profile) = &t.kernels {
                    note(json, &format!("\n{model} on {d} ({p}), one step kernel by kernel (each launch run alone):"));
                    kernel_table(&model, d, *p, profile).print(json);
                }
            }
            Ok(())
        }
        Command::Models { show: None, json } => models(json),
        Command::Models { show: Some(ModelsCmd::Show { model, input, num_classes, granularity, out, json }), .. } => {
            models_show(&model, input, num_classes, granularity, out.as_deref(), json)
        }
        Command::Models { show: Some(ModelsCmd::Promote { run, name, at }), .. } => runs::promote(&run, &name, &at),
        Command::Models { show: Some(ModelsCmd::Versions { name, at }), .. } => runs::versions(&name, &at),
        Command::Runs(cmd) => runs::runs(cmd),
        Command::Search(args) => search::run(args),
        Command::Compress(args) => compress::run(args),
        Command::Train(args) => train_cmd(args),
        Command::Eval { checkpoint, data, limit_per_class, device, batch, tta, json } => {
            eval_cmd(&checkpoint, &data, limit_per_class, (&device, batch, tta), json)
        }
        Command::Export { checkpoint, out, dtype } => {
            create_parent(&out)?;
            let n = tessera_scheduler::interop::export_weights(&checkpoint, &out, dtype).with_context(|| format!("exporting {}", checkpoint.display()))?;
            println!("wrote {} ({n} tensors)", out.display());
            Ok(())
        }
        Command::Forward { model, num_classes, weights, input, out, train_mode, device } => {
            create_parent(&out)?;
            let r = tessera_scheduler::interop::forward(&model, num_classes, &weights, &input, &out, train_mode, &device)
                .with_context(|| format!("forward pass of {model}"))?;
            println!(
                "wrote {}: logits {:?}{}{}",
                out.display(),
                r.logits_shape,
                r.loss.map(|l| format!(", loss {l}")).unwrap_or_default(),
                if r.gradients > 0 { format!(", {} gradients", r.gradients) } else { String::new() }
            );
            Ok(())
        }
    }
}

/// One step's [`KernelProfile`] as a table: kernels by time, then their total.
fn kernel_table(model: &str, device: &str, precision: Precision, profile: &tessera_engine::gpu::profile::KernelProfile) -> Table {
    let mut table = Table::new("kernel_profile", &["model", "device", "precision", "kernel", "launches", "ms", "share", "MiB_bound"]);
    let total = profile.total();
    let rows = profile.by_time().into_iter().chain([("total", total)]);
    for (kernel, t) in rows {
        table.push(vec![
            json!(model),
            json!(device),
            json!(precision.to_string()),
            json!(kernel),
            json!(t.launches),
            json!(t.seconds * 1e3),
            json!(format!("{:.1} %", 100.0 * t.seconds / total.seconds.max(1e-12))),
            json!(t.bytes_bound as f64 / (1 << 20) as f64),
        ]);
    }
    table
}

fn eval_cmd(
    checkpoint: &std::path::Path,
    data: &std::path::Path,
    limit_per_class: Option<usize>,
    (device, batch, tta): (&str, usize, tessera_scheduler::eval::Tta),
    json: bool,
) -> Result<()> {
    let r = tessera_scheduler::eval::evaluate_checkpoint(checkpoint, data, device, batch, limit_per_class, tta)
        .with_context(|| format!("evaluating {}", checkpoint.display()))?;
    let mut summary = Table::new("evaluation", &["checkpoint", "images", "loss", "accuracy"]);
    let images: usize = r.confusion.iter().flatten().sum();
    summary.push(vec![json!(checkpoint.display().to_string()), json!(images), json!(r.loss), json!(r.accuracy)]);
    summary.print(json);
    // Rows: true class; columns: predicted class.
    let columns: Vec<&str> = std::iter::once("true \\ predicted").chain(r.classes.iter().map(String::as_str)).collect();
    let mut matrix = Table::new("confusion_row", &columns);
    for (name, row) in r.classes.iter().zip(&r.confusion) {
        matrix.push(std::iter::once(json!(name)).chain(row.iter().map(|v| json!(v))).collect());
    }
    if !json {
        println!();
    }
    matrix.print(json);
    Ok(())
}

fn models(json: bool) -> Result<()> {
    let mut table = Table::new("model", &["model", "input_px", "params_10_classes", "sub_models", "about"]);
    for info in tessera_models::MODELS {
        let model = tessera_models::build(info.name, 10, &Device::cpu(), 0)?;
        let subs: Vec<&str> = model.submodels.iter().map(|s| s.name.as_str()).collect();
        table.push(vec![json!(info.name), json!(info.input), json!(model.param_count()), json!(subs.join(" → ")), json!(info.about)]);
    }
    table.print(json);
    Ok(())
}

fn models_show(
    name: &str,
    input: Option<usize>,
    num_classes: usize,
    granularity: tessera_models::Granularity,
    out: Option<&std::path::Path>,
    json: bool,
) -> Result<()> {
    let model = tessera_models::build_at(name, num_classes, &Device::cpu(), 0, granularity)?;
    if let Some(out) = out {
        create_parent(out)?;
        let dot = model.graph_dot();
        let dot_file = if out.extension().is_some_and(|e| e == "dot") { out.to_path_buf() } else { out.with_extension("dot") };
        std::fs::write(&dot_file, dot).with_context(|| format!("writing {}", dot_file.display()))?;
        if dot_file != out && !tessera_scheduler::importance::render(&dot_file, out)? {
            eprintln!("Graphviz's `dot` is not installed: wrote {} only", dot_file.display());
        }
    }
    let input = input.or(model.input_size()).unwrap_or(224);
    let costs = model.stage_costs(input).with_context(|| format!("{name} at {input}×{input} px"))?;
    let mut table = Table::new("submodel", &["sub_model", "depends_on", "output", "params", "MFLOPs"]);
    for c in &costs {
        table.push(vec![json!(c.name), json!(c.deps.join(",")), json!(format!("{:?}", c.output)), json!(c.params), json!(c.flops / 1e6)]);
    }
    let (params, flops): (usize, f64) = costs.iter().fold((0, 0.0), |(p, f), c| (p + c.params, f + c.flops));
    table.push(vec![json!("total"), json!(""), json!(""), json!(params), json!(flops / 1e6)]);
    if !json {
        println!("{name} at {granularity} granularity, {num_classes} classes, one {input}×{input} image (FLOPs = 2 × multiply-adds of convolutions and linear layers; a projection shortcut's FLOPs count in its block's body, whose unit runs it)");
    }
    table.print(json);
    Ok(())
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    use tessera_scheduler::run_state::{latest_checkpoint, verified_resume_point};
    use tessera_scheduler::train::train;
    let (mut cfg, json, registry) = a.resolve()?;
    if cfg.device.trim().eq_ignore_ascii_case("auto") {
        let (spec, why) = Device::auto_choice();
        eprintln!("device auto → {spec:?}: {why}");
    }
    if let Some(notice) = tessera_scheduler::trainer::precision_notice(&Device::parse(&cfg.device)?, cfg.precision) {
        eprintln!("{notice}");
    }
    let out = cfg.out.clone().context("a run folder")?;
    // Under mpirun or srun each process is a rank of one data-parallel run; rank 0 speaks.
    cfg.world = std::sync::Arc::new(tessera_scheduler::distributed::World::from_env()?);
    let root = cfg.world.is_root();
    if root && cfg.world.size > 1 {
        eprintln!("data-parallel over {} ranks: each takes its share of every batch of {}", cfg.world.size, cfg.run.batch);
    }
    if cfg.resume {
        // The newest checkpoint that verifies, in the run folder or its backup; say which,
        // and which newer ones failed their check.
        let dirs: Vec<&std::path::Path> = std::iter::once(out.as_path()).chain(cfg.backup_dir.as_deref()).collect();
        let found = verified_resume_point(&dirs)?;
        if let Some((_, failed)) = &found {
            for (path, why) in failed.iter().filter(|_| root) {
                eprintln!("skipping {}: {why}", path.display());
            }
        }
        match found.map(|(point, _)| point) {
            Some((epoch, 0, _)) if epoch >= cfg.run.epochs => {
                eprintln!("{} is finished: epoch {epoch} of {} (raise --epochs to train on)", out.display(), cfg.run.epochs);
                return Ok(());
            }
            _ if !root => {}
            Some((epoch, 0, path)) => eprintln!("resuming from {} (epoch {epoch} of {})", path.display(), cfg.run.epochs),
            Some((epoch, batches, path)) => {
                eprintln!("resuming from {} (epoch {} of {}, after its batch {batches})", path.display(), epoch + 1, cfg.run.epochs)
            }
            None => {}
        }
    }
    // Ctrl-C or SIGTERM (what schedulers send) ends the run after the current step with a
    // checkpoint to resume from; a second one ends it at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;
    cfg.stop = Some(stop);
    if root {
        eprintln!("run folder: {} (checkpoints, metrics.jsonl)", out.display());
    }
    let bar = if root { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}").expect("valid template").progress_chars("=> "),
    );
    // Rank 0 registers the run, and at its end, however it ends, what it left.
    let registration = match root {
        true => Some(runs::Registration::begin(registry.as_deref(), train_run(&cfg, &out), &cfg.data)?),
        false => None,
    };
    let reports = train(&cfg, &mut |s| {
        bar.set_length(s.steps_per_epoch as u64);
        bar.set_prefix(format!("{}/{}", s.epoch, cfg.run.epochs));
        bar.set_position(s.step as u64);
        bar.set_message(format!("loss {:.4} acc {:.3} {:.0} img/s", s.loss, s.accuracy, s.images_per_sec));
    });
    bar.finish_and_clear();
    if let Some(r) = registration {
        if let Err(e) = register_train_outcome(r, &cfg, &out, runs::status_of(&reports)) {
            eprintln!("registry: {e:#}");
        }
    }
    if !root {
        return reports.map(drop).context("training (a rank other than 0)");
    }
    if let Err(e @ tessera_scheduler::TrainError::Interrupted { .. }) = &reports {
        // The epochs finished so far, as metrics.jsonl holds them, before the way to resume.
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        print_epochs(&text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>(), json);
        eprintln!("{e}: rerun the same command with --resume --out {}", out.display());
        std::process::exit(130);
    }
    let reports = reports.map_err(|e| {
        // Say which checkpoint survives, if any: only one that exists.
        let kept = match latest_checkpoint(&out) {
            Ok(Some((_, path))) => format!("the last checkpoint, {}, is untouched", path.display()),
            _ => "no checkpoint was written".to_string(),
        };
        anyhow::Error::new(e).context(format!("training {} on {} ({kept})", cfg.model, cfg.data.display()))
    })?;
    print_epochs(&reports.iter().map(|r| r.record()).collect::<Vec<_>>(), json);
    Ok(())
}

/// A `train` run as the registry keeps it: its settings as the config.
fn train_run(cfg: &tessera_scheduler::train::TrainConfig, out: &std::path::Path) -> tessera_registry::NewRun {
    let config = json!({
        "model": cfg.model, "recipe": cfg.recipe.map(|r| r.name()), "data": cfg.data, "epochs": cfg.run.epochs, "batch": cfg.run.batch, "seed": cfg.run.seed,
        "workers": cfg.run.workers, "loader_memory": cfg.run.memory_limit, "lr": cfg.optim.lr,
        "warmup_steps": cfg.optim.warmup_steps, "device": cfg.device, "limit_per_class": cfg.limit_per_class, "on_nan": format!("{:?}", cfg.on_nan).to_lowercase(),
        "precision": cfg.precision.to_string(), "backup_dir": cfg.backup_dir, "sync_bn": cfg.sync_bn, "ranks": cfg.world.size, "resume": cfg.resume, "alert_exit": cfg.watch.alert_exit,
    });
    let config = runs::run_config(config, Some(cfg.optim.rule));
    let name = tessera_scheduler::train::run_name(cfg);
    tessera_registry::NewRun {
        name,
        command: "train".into(),
        config,
        strategy: "full".into(),
        device: cfg.device.clone(),
        out: out.into(),
        ..Default::default()
    }
}

/// Registers what a `train` run left: every epoch of `metrics.jsonl`,
/// its checkpoints and their backup copies, and how it ended.
fn register_train_outcome(mut r: runs::Registration, cfg: &tessera_scheduler::train::TrainConfig, out: &std::path::Path, status: &str) -> Result<()> {
    use tessera_scheduler::run_state::epoch_checkpoints;
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    let epochs: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let id = r.id;
    for e in &epochs {
        r.registry().record_epoch(id, "full", e["epoch"].as_i64().unwrap_or(0), e)?;
    }
    for (dir, copy) in std::iter::once((out, "primary")).chain(cfg.backup_dir.as_deref().map(|b| (b, "backup"))) {
        for (epoch, path) in epoch_checkpoints(dir).unwrap_or_default() {
            r.checkpoint(&path, copy, Some(epoch as i64));
        }
    }
    r.finish(status)
}

/// `train`'s epochs: `epoch` records (metrics.jsonl's lines) or a table of their main fields.
fn print_epochs(records: &[serde_json::Value], json: bool) {
    if json {
        records.iter().for_each(|r| table::print_record("epoch", r));
        return;
    }
    let columns = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "seconds", "eval_seconds", "images_per_sec", "skipped_batches"];
    let mut table = Table::new("epoch", &columns);
    for r in records {
        table.push(columns.iter().map(|c| r[*c].clone()).collect());
    }
    table.print(false);
}

/// `bench allreduce`: rank 0 prints; every rank takes part.
fn bench_allreduce_cmd(sizes: &[usize], iters: usize, json: bool) -> Result<()> {
    let world = tessera_scheduler::distributed::World::from_env()?;
    let rows = tessera_scheduler::bench::bench_allreduce(&world, sizes, iters)?;
    if !world.is_root() {
        return Ok(());
    }
    let mut table = Table::new("allreduce", &["ranks", "bytes", "floats", "algorithm", "time_us", "algbw_GB/s", "busbw_GB/s"]);
    for r in rows {
        table.push(vec![
            json!(world.size),
            json!(r.bytes),
            json!(r.bytes / 4),
            json!(r.algorithm),
            json!(r.seconds * 1e6),
            json!(r.algbw / 1e9),
            json!(r.busbw / 1e9),
        ]);
    }
    table.print(json);
    Ok(())
}

/// Creates the folder an output file goes into, before the work that produces it.
pub(crate) fn create_parent(file: &std::path::Path) -> Result<()> {
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display())),
        None => Ok(()),
    }
}

/// The current UTC time as `YYYYmmdd-HHMMSS` (run folder names sort by time).
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

fn devices(json: bool) -> Result<()> {
    let mut table = Table::new(
        "device",
        &[
            "device",
            "name",
            "backend",
            "type",
            "driver",
            "memory_MiB",
            "max_buffer_MiB",
            "max_storage_binding_MiB",
            "max_workgroup_invocations",
            "workgroup_storage_KiB",
            "f16",
        ],
    );
    for a in list_adapters() {
        table.push(vec![
            json!(format!("gpu:{}", a.index)),
            json!(a.name),
            json!(a.backend),
            json!(a.device_type),
            json!(a.driver),
            json!(a.memory_bytes.map(|b| b >> 20)),
            json!(a.max_buffer_size >> 20),
            json!(a.max_storage_binding >> 20),
            json!(a.max_workgroup_invocations),
            json!(a.max_workgroup_storage >> 10),
            json!(a.shader_f16),
        ]);
    }
    let cpu = CpuBackend::global();
    table.push(vec![
        json!("cpu"),
        json!(format!("{} threads", cpu.threads())),
        json!("OpenBLAS"),
        json!("Cpu"),
        json!(tessera_engine::cpu::blas::config()),
        json!(null),
        json!(null),
        json!(null),
        json!(null),
        json!(null),
        json!(false),
    ]);
    table.print(json);
    Ok(())
}

fn bench_kernels_cmd(devices: &[String], python: Option<&str>, seconds: f64, json: bool) -> Result<()> {
    use tessera_engine::bench::kernels::{bench_kernel, kernel_cases};
    let budget = Duration::from_secs_f64(seconds);
    let cases = kernel_cases();
    let parsed = devices.iter().map(|d| Device::parse(d).map(|device| (d, device))).collect::<Result<Vec<_>, _>>()?;
    // PyTorch's conv2d at the convolution rows' shapes, first, on the same cores.
    let convs: Vec<_> = cases.iter().filter_map(|c| c.conv).collect();
    let torch = python.map(|py| tessera_scheduler::bench::torch_conv_reference(py, &convs, CpuBackend::global().threads(), seconds));
    let torch_ms = match &torch {
        Some(Ok((version, ms))) => {
            eprintln!("PyTorch {version} conv2d on the CPU ({} threads) beside each convolution row", CpuBackend::global().threads());
            ms.clone()
        }
        Some(Err(e)) => {
            eprintln!("no PyTorch reference: {e}");
            Vec::new()
        }
        None => Vec::new(),
    };
    // The CPU's practical peak: OpenBLAS on a large square product, in this run.
    let peak = bench_gemm(&Device::cpu(), None, 2048, (false, false), budget)?.openblas_gflops;
    let columns = ["device", "op", "shape", "ms", "GFLOP/s", "pct_of_sgemm_peak", "GB/s", "pytorch_cpu_ms", "vs_pytorch"];
    let mut table = Table::new("kernel", &columns);
    for (d, device) in parsed {
        let mut conv_index = 0;
        for case in &cases {
            let torch_ms = case.conv.and_then(|_| torch_ms.get(conv_index).copied());
            conv_index += case.conv.is_some() as usize;
            let row = match bench_kernel(case, &device, budget) {
                Ok(row) => row,
                Err(e) => {
                    eprintln!("{} on {d}: {e}", case.op);
                    continue;
                }
            };
            let pct = match (&device, row.gflops) {
                (Device::Cpu(_), Some(g)) => json!(100.0 * g / peak),
                _ => json!(null),
            };
            let ratio = torch_ms.map(|t| row.ms / t);
            table.push(vec![
                json!(d),
                json!(row.op),
                json!(row.shape),
                json!(row.ms),
                json!(row.gflops),
                pct,
                json!(row.gbytes_per_s),
                json!(torch_ms),
                json!(ratio),
            ]);
            if json {
                table.print_last();
            }
        }
    }
    if !json {
        table.print(false);
        println!("CPU peak reference: OpenBLAS sgemm 2048³ = {peak:.1} GFLOP/s");
    }
    Ok(())
}

/// `bench time-to-accuracy`: a row per run as it ends, then each engine's mean ± std and
/// Tessera's time against PyTorch's.
fn bench_time_to_accuracy(spec: &tessera_scheduler::time_to_accuracy::TimeToAccuracySpec, python: Option<&str>, json: bool) -> Result<()> {
    use tessera_scheduler::time_to_accuracy::{mean_std, time_to_accuracy};
    let threads = CpuBackend::global().threads();
    let columns = ["engine", "run", "seed", "train_s", "eval_s", "seconds", "accuracy", "target", "time_to_target_s"];
    let row = |r: &tessera_scheduler::time_to_accuracy::RunTime| {
        vec![
            json!(r.engine),
            json!(r.run),
            json!(r.seed),
            json!(r.train_seconds),
            json!(r.eval_seconds),
            json!(r.seconds),
            json!(r.accuracy),
            json!(spec.target),
            json!(r.time_to_target),
        ]
    };
    eprintln!(
        "{} × {} runs on {} ({threads} threads){}",
        spec.recipe.name(),
        spec.runs,
        spec.device,
        if python.is_some() { ", each followed by PyTorch's" } else { "" }
    );
    let (runs, torch_failure) = time_to_accuracy(spec, python, threads, &mut |r| {
        let mut one = Table::new("time_to_accuracy_run", &columns);
        one.push(row(r));
        if json {
            one.print(true);
        } else {
            eprintln!("run {} {}: {:.1} s, accuracy {:.4}", r.run, r.engine, r.seconds, r.accuracy);
        }
    })?;
    if let Some(why) = &torch_failure {
        eprintln!("PyTorch reference: {why}");
    }
    if !json {
        let mut table = Table::new("time_to_accuracy_run", &columns);
        runs.iter().for_each(|r| table.push(row(r)));
        table.print(false);
    }
    let mut engines: Vec<&str> = runs.iter().map(|r| r.engine.as_str()).collect();
    engines.sort();
    engines.dedup();
    let mut summary =
        Table::new("time_to_accuracy", &["engine", "runs", "seconds_mean", "seconds_std", "accuracy_mean", "accuracy_std", "reached_target", "vs_pytorch"]);
    let seconds_of = |engine: &str| -> Vec<f64> { runs.iter().filter(|r| r.engine == engine).map(|r| r.seconds).collect() };
    let torch_mean = engines.iter().find(|e| e.starts_with("pytorch")).map(|e| mean_std(&seconds_of(e)).0);
    for engine in engines {
        let mine: Vec<_> = runs.iter().filter(|r| r.engine == engine).collect();
        let (s_mean, s_std) = mean_std(&seconds_of(engine));
        let (a_mean, a_std) = mean_std(&mine.iter().map(|r| r.accuracy as f64).collect::<Vec<_>>());
        let reached = mine.iter().filter(|r| r.time_to_target.is_some()).count();
        summary.push(vec![
            json!(engine),
            json!(mine.len()),
            json!(s_mean),
            json!(s_std),
            json!(a_mean),
            json!(a_std),
            json!(reached),
            json!(torch_mean.map(|t| s_mean / t)),
        ]);
    }
    summary.print(json);
    Ok(())
}

fn bench_gemm_cmd(args: GemmArgs) -> Result<()> {
    if args.retune {
        retune(&args.device)?;
    }
    let trans: Vec<(bool, bool)> =
        args.trans.iter().map(|t| parse_trans(t).with_context(|| format!("--trans: `{t}` is not one of nn, nt, tn, tt"))).collect::<Result<_>>()?;
    let kernels: Vec<Option<&'static tessera_shaders::gemm::GemmKernel>> = match args.kernel.as_str() {
        "default" => vec![None],
        "all" => VARIANTS.iter().map(Some).collect(),
        name => match by_name(name) {
            Some(k) => vec![Some(k)],
            None => {
                let names: Vec<_> = VARIANTS.iter().map(|v| v.kernel.entry).collect();
                bail!("--kernel: unknown GEMM kernel `{name}`; choose default, all, or one of {names:?}")
            }
        },
    };
    let mut table = Table::new("gemm", &["device", "kernel", "trans", "size", "ms", "GFLOP/s", "openblas_ms", "openblas_GFLOP/s", "ratio_vs_openblas"]);
    for name in &args.device {
        let device = match Device::parse(name)? {
            Device::Cpu(_) => Device::cpu_with_threads(args.threads),
            gpu => gpu,
        };
        let kernels: Vec<_> = match device {
            Device::Cpu(_) => vec![None],
            // `all` skips variants the adapter cannot run; a named one reports why it cannot.
            Device::Gpu(_) if args.kernel == "all" => kernels.iter().copied().filter(|k| k.is_none_or(|k| kernel_supported(&device, k))).collect(),
            Device::Gpu(_) => kernels.clone(),
        };
        for &size in &args.sizes {
            for &t in &trans {
                for &kernel in &kernels {
                    let row = bench_gemm(&device, kernel, size, t, Duration::from_secs_f64(args.seconds))
                        .with_context(|| format!("benchmarking {size}³ GEMM on {device}"))?;
                    table.push(vec![
                        json!(row.device),
                        json!(row.kernel),
                        json!(row.trans),
                        json!(size),
                        json!(row.ms),
                        json!(row.gflops),
                        json!(row.openblas_ms),
                        json!(row.openblas_gflops),
                        json!(row.gflops / row.openblas_gflops),
                    ]);
                    if args.json {
                        // Stream JSON rows as they finish; the text table is printed at the end.
                        table.print_last();
                    }
                }
            }
        }
    }
    if !args.json {
        table.print(false);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The README's list of config keys is `train`'s flags (but `--config`), as TOML names.
    #[test]
    fn the_readme_lists_every_config_key() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let list = readme.split("file takes these keys").nth(1).and_then(|rest| rest.split("\n\n").next()).expect("the README's config key list");
        let cli = super::Cli::command();
        let train = cli.find_subcommand("train").unwrap();
        let keys: Vec<String> = train.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").map(|l| l.replace('-', "_")).collect();
        assert!(keys.len() > 15, "{keys:?}");
        for key in keys {
            assert!(list.contains(&format!("`{key}`")), "README's config keys lack `{key}`");
        }
    }
}
