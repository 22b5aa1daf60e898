//! A tensor stored in IEEE half precision (f16): half the memory of f32, for the operands of
//! the f16-storage GEMM (`ops::gemm::gemm_f16`) — weights kept in f16 for inference. Values
//! convert with round-to-nearest-even on the CPU; on the GPU, the kernels of
//! shaders/wgsl/half.wgsl (WGSL's pack2x16float) convert on the device.
use crate::device::Device;
use crate::error::{Error, Result};
use crate::gpu::{GpuBackend, GpuBuffer};
use crate::ops::{cpu_data, cpu_tensor, gpu_buffer, grid_1d, to_u32};
use crate::tensor::Tensor;
use half::f16;
use std::sync::Arc;
use tessera_shaders::half as k;

#[derive(Clone)]
pub(crate) enum HalfStorage {
    Cpu(Arc<Vec<f16>>),
    /// ⌈n/2⌉ u32 words, element i in half i & 1 of word i >> 1 (little-endian f16 pairs).
    Gpu(Arc<GpuBuffer>),
}

#[derive(Clone)]
pub struct HalfTensor {
    shape: Vec<usize>,
    storage: HalfStorage,
    device: Device,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HalfParams {
    n: u32,
    _pad: [u32; 3],
}

/// The pack/unpack builtins every GPU f16 route needs, or why they are missing.
pub(crate) fn require_f16_pack(gpu: &GpuBackend, op: &'static str) -> Result<()> {
    if gpu.has_f16_pack() {
        Ok(())
    } else {
        Err(Error::Unsupported { op, detail: format!("adapter `{}` lacks pack2x16float (downlevel SHADER_F16_IN_F32)", gpu.name()) })
    }
}

/// f32 → f16 words (`pack`) or back, `n` values from `src` into a new buffer: one half.wgsl
/// launch per window of values both sides of which fit one binding (one launch unless the
/// tensor exceeds it). A window holds an even number of values starting on twice the binding
/// alignment, so its f16 words start aligned too.
fn convert(gpu: &Arc<GpuBackend>, pack: bool, src: &GpuBuffer, n: usize) -> Result<GpuBuffer> {
    require_f16_pack(gpu, "f16 conversion")?;
    let words = n.div_ceil(2);
    let out = gpu.alloc(4 * if pack { words } else { n } as u64)?;
    let step = 2 * gpu.binding_alignment_values();
    let chunk = (gpu.max_binding_values() / step).max(1) * step;
    let kernel = if pack { &k::PACK_F16 } else { &k::UNPACK_F16 };
    for first in (0..n).step_by(chunk) {
        let len = chunk.min(n - first);
        let params = HalfParams { n: to_u32("f16 conversion", len)?, _pad: [0; 3] };
        let (f32_of, f16_of) = if pack { (src, &out) } else { (&out, src) };
        let (values, halves) = (f32_of.values(first, len), f16_of.values(first / 2, len.div_ceil(2)));
        let windows = if pack { [values, halves] } else { [halves, values] };
        let invocations = if pack { len.div_ceil(2) } else { len };
        let groups = grid_1d(gpu, "f16 conversion", invocations, kernel.workgroup[0] as usize)?;
        gpu.launch_windows(kernel, bytemuck::bytes_of(&params), &windows, groups)?;
    }
    Ok(out)
}

impl HalfTensor {
    /// A GPU tensor of `shape` held in `buffer` (⌈n/2⌉ words that a kernel wrote).
    pub(crate) fn from_gpu_buffer(buffer: GpuBuffer, shape: Vec<usize>, gpu: &Arc<GpuBackend>) -> Self {
        Self { shape, storage: HalfStorage::Gpu(Arc::new(buffer)), device: Device::Gpu(gpu.clone()) }
    }

    /// `t`'s values rounded to f16, on `t`'s device.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let storage = match t.device() {
            Device::Cpu(_) => HalfStorage::Cpu(Arc::new(cpu_data(t).iter().map(|&v| f16::from_f32(v)).collect())),
            Device::Gpu(gpu) => HalfStorage::Gpu(Arc::new(convert(gpu, true, &gpu_buffer(t), t.numel())?)),
        };
        Ok(Self { shape: t.shape().to_vec(), storage, device: t.device().clone() })
    }

    /// Uploads f16 `values` with `shape` to `device` as they are (no rounding step).
    pub fn from_f16_vec(values: Vec<f16>, shape: &[usize], device: &Device) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if values.len() != numel {
            return Err(crate::error::shape_err("from_f16_vec", format!("{} values do not fill shape {shape:?} ({numel})", values.len())));
        }
        let storage = match device {
            Device::Cpu(_) => HalfStorage::Cpu(Arc::new(values)),
            Device::Gpu(gpu) => {
                // Whole u32 words: an odd count pads with one zero half.
                let mut bits: Vec<u16> = values.iter().map(|h| h.to_bits()).collect();
                bits.resize(numel.div_ceil(2) * 2, 0);
                HalfStorage::Gpu(Arc::new(gpu.upload_bytes(bytemuck::cast_slice(&bits))?))
            }
        };
        Ok(Self { shape: shape.to_vec(), storage, device: device.clone() })
    }

    /// The values widened back to an f32 tensor on the same device.
    pub fn to_tensor(&self) -> Result<Tensor> {
        match (&self.storage, &self.device) {
            (HalfStorage::Cpu(values), _) => Ok(cpu_tensor(values.iter().map(|v| v.to_f32()).collect(), &self.shape, &self.device)),
            (HalfStorage::Gpu(buffer), Device::Gpu(gpu)) => {
                let out = convert(gpu, false, buffer, self.numel())?;
                Ok(Tensor::from_storage(crate::tensor::Storage::Gpu(Arc::new(out)), self.shape.clone(), self.device.clone()))
            }
            (HalfStorage::Gpu(_), Device::Cpu(_)) => unreachable!("GPU storage always carries a GPU device"),
        }
    }

    /// The f16 values on the host (waits for pending GPU work).
    pub fn to_f16_vec(&self) -> Result<Vec<f16>> {
        match (&self.storage, &self.device) {
            (HalfStorage::Cpu(values), _) => Ok(values.as_ref().clone()),
            (HalfStorage::Gpu(buffer), Device::Gpu(gpu)) => {
                let words = gpu.download(buffer)?;
                let halves: &[u16] = bytemuck::cast_slice(&words);
                Ok(halves[..self.numel()].iter().map(|&h| f16::from_bits(h)).collect())
            }
            (HalfStorage::Gpu(_), Device::Cpu(_)) => unreachable!("GPU storage always carries a GPU device"),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes the values occupy on their device (2 per value, rounded up to whole words on GPUs).
    pub fn storage_bytes(&self) -> usize {
        match self.storage {
            HalfStorage::Cpu(_) => 2 * self.numel(),
            HalfStorage::Gpu(_) => 4 * self.numel().div_ceil(2),
        }
    }

    pub(crate) fn storage(&self) -> &HalfStorage {
        &self.storage
    }
}

impl std::fmt::Debug for HalfTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HalfTensor({:?} on {})", self.shape, self.device)
    }
}

/// A tensor held in f32, or in f16 for mixed precision: what a backward rule saves under
/// `autograd::autocast` and what `ops::gemm_mixed` multiplies.
#[derive(Clone)]
pub enum MixedTensor {
    F32(Tensor),
    F16(HalfTensor),
}

impl MixedTensor {
    /// `t`, rounded to f16 when `half`.
    pub fn new(t: Tensor, half: bool) -> Result<Self> {
        Ok(if half { Self::F16(HalfTensor::from_tensor(&t)?) } else { Self::F32(t) })
    }

    /// The values as f32 (an f16 copy is widened: one conversion kernel).
    pub fn tensor(&self) -> Result<Tensor> {
        match self {
            Self::F32(t) => Ok(t.clone()),
            Self::F16(h) => h.to_tensor(),
        }
    }

    /// The values as f16 (an f32 tensor is rounded: one conversion kernel).
    pub fn half(&self) -> Result<HalfTensor> {
        match self {
            Self::F32(t) => HalfTensor::from_tensor(t),
            Self::F16(h) => Ok(h.clone()),
        }
    }

    /// Whether the values are held in f16.
    pub fn is_half(&self) -> bool {
        matches!(self, Self::F16(_))
    }
}
