//! Kernel timing shared by `tessera bench` and the criterion benchmarks: each row times our
//! path and, in the same run, a direct OpenBLAS call on the same problem as the reference.
use crate::cpu::blas;
use crate::device::Device;
use crate::error::Result;
use crate::ops::gemm::{gemm, gemm_with_kernel, GemmOpts, GemmShape};
use crate::tensor::Tensor;
use std::time::{Duration, Instant};
use tessera_shaders::gemm::GemmKernel;

pub mod kernels;

/// One `tessera bench gemm` row.
#[derive(Clone, Debug)]
pub struct GemmBenchRow {
    pub device: String,
    pub kernel: String,
    pub trans: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ms: f64,
    pub gflops: f64,
    pub openblas_ms: f64,
    pub openblas_gflops: f64,
}

/// Runs `f` once to warm up, then repeatedly until `budget` has passed (at least `min_reps`
/// times); returns the median time of one run.
pub fn median_time(budget: Duration, min_reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Duration> {
    f()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < min_reps || start.elapsed() < budget {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Parses `nn`, `nt`, `tn`, `tt` into (trans_a, trans_b).
pub fn parse_trans(s: &str) -> Option<(bool, bool)> {
    match s.to_ascii_lowercase().as_str() {
        "nn" => Some((false, false)),
        "nt" => Some((false, true)),
        "tn" => Some((true, false)),
        "tt" => Some((true, true)),
        _ => None,
    }
}

fn filled(len: usize, seed: u32) -> Vec<f32> {
    // A cheap deterministic pattern in [-1, 1): benchmarks need values, not randomness.
    (0..len as u32).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 8388608.0) - 1.0).collect()
}

/// Times an n×n×n GEMM (`trans` as in [`parse_trans`]) on `device` with `kernel` (GPU only;
/// None = the adapter's default), next to a direct OpenBLAS call.
pub fn bench_gemm(
    device: &Device,
    kernel: Option<&'static GemmKernel>,
    size: usize,
    (trans_a, trans_b): (bool, bool),
    budget: Duration,
) -> Result<GemmBenchRow> {
    let (m, n, k) = (size, size, size);
    let opts = GemmOpts { trans_a, trans_b, ..Default::default() };
    let a_host = filled(m * k, 1);
    let b_host = filled(k * n, 2);
    let a = Tensor::from_vec(a_host.clone(), &[m, k], device)?;
    let b = Tensor::from_vec(b_host.clone(), &[k, n], device)?;
    let flops = GemmShape::new(a.shape(), b.shape(), None, opts)?.flops();

    let run = || -> Result<Tensor> {
        match kernel {
            Some(kernel) => gemm_with_kernel(kernel, &a, &b, None, opts),
            None => gemm(&a, &b, None, opts),
        }
    };
    let ours = median_time(budget, 3, || {
        let out = run()?;
        device.synchronize()?;
        drop(out);
        Ok(())
    })?;

    let mut c_host = vec![0f32; m * n];
    // The reference is OpenBLAS threading itself over as many threads as the CPU backend has.
    let threads = match device {
        Device::Cpu(cpu) => cpu.threads(),
        Device::Gpu(_) => crate::cpu::CpuBackend::global().threads(),
    };
    blas::set_num_threads(threads);
    let reference = median_time(budget, 3, || {
        blas::sgemm(&blas::Gemm::packed(trans_a, trans_b, m, n, k), 1.0, &a_host, &b_host, 0.0, &mut c_host);
        Ok(())
    });
    blas::set_num_threads(1);
    let reference = reference?;

    let kernel_name = match (device, kernel) {
        (Device::Cpu(_), _) => "openblas sgemm".to_string(),
        (Device::Gpu(_), Some(k)) => k.kernel.entry.to_string(),
        (Device::Gpu(gpu), None) => crate::ops::gemm::choose_kernel(gpu, &GemmShape::new(a.shape(), b.shape(), None, opts)?).kernel.entry.to_string(),
    };
    let trans = format!("{}{}", if trans_a { 't' } else { 'n' }, if trans_b { 't' } else { 'n' });
    let secs = |d: Duration| d.as_secs_f64();
    Ok(GemmBenchRow {
        device: device.to_string(),
        kernel: kernel_name,
        trans,
        m,
        n,
        k,
        ms: secs(ours) * 1e3,
        gflops: flops / secs(ours) / 1e9,
        openblas_ms: secs(reference) * 1e3,
        openblas_gflops: flops / secs(reference) / 1e9,
    })
}
