//! Criterion benchmarks of GEMM on the CPU backend (against a direct OpenBLAS call in the same
//! group) and on every GPU adapter with each kernel variant. Throughput is in FLOPs
//! ("elements" in criterion's report = floating-point operations).
//!
//! `cargo bench -p tessera-benches --bench gemm` (set TESSERA_SKIP_GPU_TESTS=1 for CPU only).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tessera_engine::cpu::blas;
use tessera_engine::gpu::list_adapters;
use tessera_engine::ops::gemm::{gemm_with_kernel, kernel_supported, GemmOpts};
use tessera_engine::{ops, Device, Tensor};
use tessera_shaders::gemm::VARIANTS;

fn values(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919) % 2003) as f32 / 1001.0 - 1.0).collect()
}

fn cpu(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_cpu");
    group.sample_size(10);
    let dev = Device::cpu();
    for n in [256usize, 512, 1024] {
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        let (a_host, b_host) = (values(n * n), values(n * n));
        let a = Tensor::from_vec(a_host.clone(), &[n, n], &dev).unwrap();
        let b = Tensor::from_vec(b_host.clone(), &[n, n], &dev).unwrap();
        group.bench_with_input(BenchmarkId::new("tessera", n), &n, |bench, _| bench.iter(|| ops::matmul(&a, &b).unwrap()));
        let mut out = vec![0f32; n * n];
        // The reference: OpenBLAS threading itself (the backend keeps it single-threaded).
        blas::set_num_threads(tessera_engine::cpu::CpuBackend::global().threads());
        group.bench_with_input(BenchmarkId::new("openblas_direct", n), &n, |bench, _| {
            bench.iter(|| blas::sgemm(&blas::Gemm::packed(false, false, n, n, n), 1.0, &a_host, &b_host, 0.0, &mut out))
        });
        blas::set_num_threads(1);
    }
    group.finish();
}

fn gpu(c: &mut Criterion) {
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_some() {
        return;
    }
    for adapter in list_adapters() {
        let dev = Device::gpu(adapter.index).unwrap();
        let mut group = c.benchmark_group(format!("gemm_gpu{}_{}", adapter.index, adapter.backend));
        group.sample_size(10);
        // Software adapters (lavapipe) run ~20× slower than OpenBLAS: keep their sizes small.
        let sizes: &[usize] = if adapter.device_type == "Cpu" { &[128, 256] } else { &[256, 1024, 2048] };
        for &n in sizes {
            group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
            let a = Tensor::from_vec(values(n * n), &[n, n], &dev).unwrap();
            let b = Tensor::from_vec(values(n * n), &[n, n], &dev).unwrap();
            for variant in VARIANTS.iter().filter(|v| kernel_supported(&dev, v)) {
                group.bench_with_input(BenchmarkId::new(variant.kernel.entry, n), &n, |bench, _| {
                    bench.iter(|| {
                        let out = gemm_with_kernel(variant, &a, &b, None, GemmOpts::default()).unwrap();
                        dev.synchronize().unwrap();
                        out
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
