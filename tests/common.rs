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

pub use tessera_engine::conformance::max_rel_err;

/// Every GPU adapter wgpu finds. Fails when there is none, so a CI machine missing lavapipe
/// cannot pass silently; set TESSERA_SKIP_GPU_TESTS=1 to run CPU-only on purpose.
pub fn gpu_devices() -> Vec<Device> {
    if std::env::var_os("TESSERA_SKIP_GPU_TESTS").is_some() {
        return Vec::new();
    }
    let adapters = list_adapters();
    assert!(!adapters.is_empty(), "no GPU adapter found: install mesa-vulkan-drivers (lavapipe) or set TESSERA_SKIP_GPU_TESTS=1");
    adapters.iter().map(|a| Device::gpu(a.index).expect("opening adapter")).collect()
}

/// The GPU adapters with SHADER_F16, where mixed precision runs. Fails when GPUs are found but
/// none has it (lavapipe does), so the mixed-precision tests cannot pass by testing nothing;
/// empty only under TESSERA_SKIP_GPU_TESTS.
pub fn f16_gpu_devices() -> Vec<Device> {
    let gpus = gpu_devices();
    let f16: Vec<Device> = gpus.iter().filter(|d| matches!(d, Device::Gpu(g) if g.has_shader_f16())).cloned().collect();
    assert!(gpus.is_empty() || !f16.is_empty(), "no GPU adapter with SHADER_F16 (lavapipe has it): the mixed-precision tests would test nothing");
    f16
}

/// A seeded random tensor of `shape` on `dev`.
pub fn random_tensor(shape: &[usize], seed: u64, dev: &Device) -> tessera_engine::Tensor {
    tessera_engine::Tensor::from_vec(random_vec(shape.iter().product(), seed), shape, dev).unwrap()
}

/// A safetensors fixture from tests/fixtures, with its metadata.
pub struct Fixture {
    bytes: Vec<u8>,
    pub file: String,
}

impl Fixture {
    pub fn open(name: &str) -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (generate with scripts/make_golden.py, see its docstring)", path.display()));
        Self { bytes, file: name.to_string() }
    }

    fn view(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes).unwrap_or_else(|e| panic!("{}: {e}", self.file))
    }

    /// f32 values and shape of tensor `name`.
    pub fn get(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let view = self.view();
        let t = view.tensor(name).unwrap_or_else(|e| panic!("{}: tensor {name}: {e}", self.file));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{}: {name} must be F32", self.file);
        let values = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (values, t.shape().to_vec())
    }

    pub fn tensor(&self, name: &str, dev: &Device) -> tessera_engine::Tensor {
        let (values, shape) = self.get(name);
        tessera_engine::Tensor::from_vec(values, &shape, dev).unwrap()
    }

    /// A metadata entry parsed as JSON.
    pub fn meta(&self, key: &str) -> serde_json::Value {
        let (_, meta) = safetensors::SafeTensors::read_metadata(&self.bytes).unwrap();
        let text = meta.metadata().as_ref().and_then(|m| m.get(key)).unwrap_or_else(|| panic!("{}: no metadata {key}", self.file));
        serde_json::from_str(text).unwrap()
    }
}
