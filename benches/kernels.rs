//! Criterion benchmarks of the hot kernels at ResNet-50/AlexNet shapes (224 px, batch 8):
//! conv2d forward and both backward passes, the fc6 GEMM, max pooling, batch norm and
//! cross-entropy, on the CPU backend and every GPU adapter. The cases are
//! `tessera_engine::bench::kernels::kernel_cases`, the same as `tessera bench kernels`.
//! Throughput: FLOPs for GEMM work, bytes for memory-bound ops.
//!
//! `cargo bench -p tessera-benches --bench kernels` (TESSERA_SKIP_GPU_TESTS=1 for CPU only).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tessera_engine::bench::kernels::kernel_cases;
use tessera_engine::gpu::list_adapters;
use tessera_engine::Device;

fn devices() -> Vec<Device> {
    let mut out = vec![Device::cpu()];
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_none() {
        out.extend(list_adapters().iter().filter_map(|a| Device::gpu(a.index).ok()));
    }
    out
}

fn kernels(c: &mut Criterion) {
    for case in kernel_cases() {
        let mut group = c.benchmark_group(case.op);
        group.sample_size(10).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
        group.throughput(if case.flops > 0.0 { Throughput::Elements(case.flops as u64) } else { Throughput::Bytes(case.bytes as u64) });
        for device in devices() {
            let Ok(run) = case.setup(&device) else { continue };
            group.bench_with_input(BenchmarkId::new(device.to_string(), &case.shape), &(), |b, _| {
                b.iter(|| {
                    let out = run().expect("kernel run");
                    device.synchronize().expect("synchronize");
                    out
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
