//! Helpers shared by the integration tests: seeded random tensors, the error metric, and the
//! GPU adapters to test.
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::gpu::list_adapters;
use tessera_engine::Device;

/// Uniform values in [-1, 1) from a fixed seed.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Max relative error of `got` against `want`: max|got − want| / max|want|. Normalising by the
/// reference's largest magnitude (the norm-wise error used for BLAS testing) keeps outputs that
/// cancel to ≈0 from reporting huge relative errors that only reflect summation order.
pub fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
    let diff = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    if got.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    diff / scale
}

/// Every GPU adapter wgpu finds. Fails when there is none, so a CI machine missing lavapipe
/// cannot pass silently; set TESSERA_SKIP_GPU_TESTS=1 to run CPU-only on purpose.
pub fn gpu_devices() -> Vec<Device> {
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_some() {
        return Vec::new();
    }
    let adapters = list_adapters();
    assert!(
        !adapters.is_empty(),
        "no GPU adapter found: install mesa-vulkan-drivers (lavapipe) or set TESSERA_SKIP_GPU_TESTS=1"
    );
    adapters.iter().map(|a| Device::gpu(a.index).expect("opening adapter")).collect()
}
