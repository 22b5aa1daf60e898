//! `tessera bench train`: the training step of the one loop ([`Trainer`]) timed piece by piece
//! — forward + loss, backward, the guarded update — median over steps after warm-up, and
//! rounds that alternate PyTorch's reference with each device.
use crate::error::TrainError;
use crate::trainer::{precision_notice, OnNan, OptimConfig, Precision, Trainer};
use std::time::{Duration, Instant};
use tessera_engine::autograd as ag;
use tessera_engine::bench::kernels::ConvCase;
use tessera_engine::gpu::profile::KernelProfile;
use tessera_engine::optim::Constant;
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
    /// On a GPU, the most MiB of device buffers in tensors at once (model, optimizer state,
    /// activations and gradients of a step).
    pub device_peak_mib: Option<f64>,
    /// On a GPU, kernel launches per step, and MiB of the windows they bind plus buffer
    /// copies (an upper bound on the memory a step moves; `GpuStats::bytes_bound`).
    pub launches_per_step: Option<f64>,
    pub bound_mib_per_step: Option<f64>,
    /// On a GPU with [`StepSpec::kernels`], one more step after the timed ones, kernel by
    /// kernel (each launch run alone: `tessera_engine::gpu::profile`).
    pub kernels: Option<KernelProfile>,
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

/// What to time: `steps` steps of `model` on `batch`×3×`input`×`input` images after `warmup`
/// untimed ones, with the default optimizer ([`OptimConfig::default`]: what `tessera train`
/// runs unless told otherwise).
#[derive(Clone, Debug)]
pub struct StepSpec {
    pub model: String,
    pub num_classes: usize,
    pub input: usize,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    pub optim: OptimConfig,
    /// Also profile one step kernel by kernel on GPUs ([`StepTimes::kernels`]).
    pub kernels: bool,
}

/// Times the step of `spec` on `device` in `precision`.
pub fn bench_train_step(spec: &StepSpec, device: &str, precision: Precision) -> Result<StepTimes, TrainError> {
    let StepSpec { model, num_classes, input, batch, warmup, steps, optim, kernels } = spec.clone();
    // The synthetic input batch alone: refuse what cannot sensibly fit in memory.
    let values = batch
        .checked_mul(3 * input * input)
        .filter(|&v| v <= 1 << 28)
        .ok_or_else(|| TrainError::Config(format!("an input batch of {batch}×3×{input}×{input} values exceeds 2^28 (1 GiB); lower --batch or --input")))?;
    let device = Device::parse(device)?;
    device.reset_peak_memory();
    let baseline = crate::memory::current_rss_bytes();
    crate::memory::reset_peak_rss();
    let model = build(&model, num_classes, &device, 0)?;
    let mut t = Trainer::new(model, device.clone(), num_classes, &optim, Box::new(Constant), OnNan::Stop)?;
    if let Some(notice) = t.set_precision(precision)? {
        return Err(TrainError::Config(notice));
    }
    let n = t.submodel_count();
    let values: Vec<f32> = (0..values).map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0).collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % num_classes).collect();
    // The pieces of Trainer::step_from, with a synchronisation between them.
    let mut step = || -> Result<[Duration; 3], TrainError> {
        let t0 = Instant::now();
        let x = Var::constant(Tensor::from_vec(values.clone(), &[batch, 3, input, input], &device)?);
        let logits = t.forward_stages(0..n, &x)?;
        let loss = ag::cross_entropy(&logits, &labels)?;
        device.synchronize()?;
        let t1 = Instant::now();
        t.backward(&loss)?;
        device.synchronize()?;
        let t2 = Instant::now();
        t.finish_step(&loss, &logits, &labels)?;
        device.synchronize()?;
        Ok([t1 - t0, t2 - t1, t2.elapsed()])
    };
    for _ in 0..warmup {
        step()?;
    }
    let gpu = match &device {
        Device::Gpu(gpu) => Some(gpu.clone()),
        Device::Cpu(_) => None,
    };
    let before = gpu.as_ref().map(|g| g.stats());
    let (mut fwd, mut bwd, mut opt) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..steps.max(1) {
        let [f, b, o] = step()?;
        fwd.push(f);
        bwd.push(b);
        opt.push(o);
    }
    let per_step = |v: u64| v as f64 / steps.max(1) as f64;
    let counted = gpu.as_ref().zip(before).map(|(g, before)| {
        let after = g.stats();
        (per_step(after.launches - before.launches), per_step(after.bytes_bound - before.bytes_bound) / (1 << 20) as f64)
    });
    let kernels = match &gpu {
        Some(g) if kernels => {
            g.start_profile()?;
            step()?;
            g.finish_profile()?
        }
        _ => None,
    };
    let totals: Vec<Duration> = fwd.iter().zip(&bwd).zip(&opt).map(|((a, b), c)| *a + *b + *c).collect();
    let step_ms = median(totals);
    Ok(StepTimes {
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        optimizer_ms: median(opt),
        step_ms,
        images_per_sec: batch as f64 / (step_ms / 1e3),
        peak_mib: crate::memory::peak_rss_bytes().zip(baseline).map(|(peak, base)| peak.saturating_sub(base) as f64 / (1 << 20) as f64),
        device_peak_mib: device.memory().map(|m| m.peak_live_bytes as f64 / (1 << 20) as f64),
        launches_per_step: counted.map(|c| c.0),
        bound_mib_per_step: counted.map(|c| c.1),
        kernels,
    })
}

/// PyTorch's figures for the same step, as scripts/bench_torch.py prints them.
#[derive(Clone, Debug)]
pub struct TorchStep {
    pub version: String,
    pub times: StepTimes,
}

/// PyTorch's figures for the same step (scripts/bench_torch.py run with `python`), or why not.
pub fn torch_reference(python: &str, spec: &StepSpec, threads: usize) -> Result<TorchStep, String> {
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
    let v = run_python(python, SCRIPT, args)?;
    let f = |k: &str| v[k].as_f64().ok_or_else(|| format!("no `{k}` in its output"));
    Ok(TorchStep {
        version: v["torch"].as_str().unwrap_or("?").to_string(),
        times: StepTimes {
            forward_ms: f("forward_ms")?,
            backward_ms: f("backward_ms")?,
            optimizer_ms: f("optimizer_ms")?,
            step_ms: f("step_ms")?,
            images_per_sec: f("images_per_sec")?,
            peak_mib: v["peak_mib"].as_f64(),
            device_peak_mib: None,
            launches_per_step: None,
            bound_mib_per_step: None,
            kernels: None,
        },
    })
}

/// Runs a reference script with `python -c` and reads the JSON object it prints; the error is
/// the script's last line of stderr (an ImportError where torch is missing).
pub(crate) fn run_python(python: &str, script: &str, args: impl IntoIterator<Item = String>) -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(python).arg("-c").arg(script).args(args).output().map_err(|e| format!("cannot run `{python}`: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable output: {e}"))
}

/// PyTorch's version and its median milliseconds for each convolution case
/// (scripts/bench_torch_conv.py run with `python`), or why not.
pub fn torch_conv_reference(python: &str, cases: &[ConvCase], threads: usize, seconds: f64) -> Result<(String, Vec<f64>), String> {
    const SCRIPT: &str = include_str!("../../scripts/bench_torch_conv.py");
    let list = serde_json::Value::Array(cases.iter().map(ConvCase::to_json).collect());
    let args = [list.to_string(), "--threads".into(), threads.to_string(), "--seconds".into(), seconds.to_string()];
    let v = run_python(python, SCRIPT, args)?;
    let ms: Option<Vec<f64>> = v["ms"].as_array().map(|a| a.iter().filter_map(|m| m.as_f64()).collect());
    match ms {
        Some(ms) if ms.len() == cases.len() => Ok((v["torch"].as_str().unwrap_or("?").to_string(), ms)),
        _ => Err(format!("expected {} times in its output, got {}", cases.len(), v["ms"])),
    }
}

/// The result of [`bench_train`]: each device's median round, and PyTorch's (or why not).
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// Each device in each precision it runs, as `device` and `precision`.
    pub devices: Vec<(String, Precision, StepTimes)>,
    pub torch: Result<TorchStep, String>,
    /// Why a device was left out of a precision ([`precision_notice`]).
    pub notices: Vec<String>,
}

/// `rounds` rounds, each timing PyTorch (unless `torch_python` is None) and then every device
/// once in each of `precisions` (where it runs that precision); each row is its median round
/// by step time. On a shared machine the speed drifts by 1.5× over minutes, and alternating
/// keeps one slow stretch from landing on one side only. Peak memory is the first round's:
/// later rounds start with memory the process already holds.
pub fn bench_train(
    spec: &StepSpec,
    devices: &[String],
    precisions: &[Precision],
    rounds: usize,
    torch_python: Option<&str>,
    threads: usize,
) -> Result<TrainBench, TrainError> {
    let (mut lanes, mut notices) = (Vec::new(), Vec::new());
    for d in devices {
        for &p in precisions {
            match precision_notice(&Device::parse(d)?, p) {
                Some(why) => notices.push(format!("{d}: {why}; left out")),
                None => lanes.push((d.clone(), p)),
            }
        }
    }
    let (mut references, mut timings) = (Vec::new(), vec![Vec::new(); lanes.len()]);
    for _ in 0..rounds.max(1) {
        references.push(match torch_python {
            Some(python) => torch_reference(python, spec, threads),
            None => Err("not run (--no-torch)".to_string()),
        });
        for ((d, p), times) in lanes.iter().zip(&mut timings) {
            times.push(bench_train_step(spec, d, *p)?);
        }
    }
    let median_round = |mut rounds: Vec<StepTimes>| {
        let first_peak = rounds[0].peak_mib;
        rounds.sort_by(|a, b| a.step_ms.total_cmp(&b.step_ms));
        StepTimes { peak_mib: first_peak, ..rounds[rounds.len() / 2].clone() }
    };
    let measured: Vec<TorchStep> = references.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let torch = match measured.first() {
        Some(first) => Ok(TorchStep { version: first.version.clone(), times: median_round(measured.iter().map(|r| r.times.clone()).collect()) }),
        None => Err(references.into_iter().find_map(|r| r.err()).unwrap_or_default()),
    };
    let devices = lanes.into_iter().zip(timings.into_iter().map(median_round)).map(|((d, p), t)| (d, p, t)).collect();
    Ok(TrainBench { devices, torch, notices })
}

/// One message size of [`bench_allreduce`].
pub struct AllReduceTiming {
    pub bytes: usize,
    pub algorithm: &'static str,
    /// Mean seconds per all-reduce.
    pub seconds: f64,
    /// nccl-tests' bandwidths: bytes / time, and that × 2(n − 1)/n (what each link carries
    /// in a ring, comparable across rank counts).
    pub algbw: f64,
    pub busbw: f64,
}

/// Times the sum over `world`'s ranks of `sizes` bytes of f32, `iters` times each after 3
/// untimed runs (every rank must call it with the same arguments).
pub fn bench_allreduce(world: &crate::distributed::World, sizes: &[usize], iters: usize) -> Result<Vec<AllReduceTiming>, TrainError> {
    let mut rows = Vec::new();
    for &bytes in sizes {
        let values = vec![1f32; (bytes / 4).max(1)];
        for _ in 0..3 {
            world.sum(values.clone())?;
        }
        let mut total = 0.0;
        for _ in 0..iters {
            let v = values.clone();
            let start = Instant::now();
            let sum = world.sum(v)?;
            total += start.elapsed().as_secs_f64();
            if sum[0] != world.size as f32 {
                return Err(TrainError::Distributed(format!("all-reduce of {bytes} bytes summed to {} over {} ranks", sum[0], world.size)));
            }
        }
        let seconds = total / iters.max(1) as f64;
        let n = world.size as f64;
        let algbw = bytes as f64 / seconds.max(1e-12);
        rows.push(AllReduceTiming {
            bytes,
            algorithm: if world.size > 1 { "MPI_Allreduce (sum, f32)" } else { "one rank: no communication" },
            seconds,
            algbw,
            busbw: algbw * 2.0 * (n - 1.0) / n,
        });
    }
    Ok(rows)
}
