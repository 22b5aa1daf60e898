//! An f32 tensor: a shape and contiguous row-major (NCHW) storage on one device.
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::GpuBuffer;
use std::sync::Arc;

/// Tensor storage. Immutable once made; ops return new tensors.
#[derive(Clone)]
pub enum Storage {
    Cpu(Arc<Vec<f32>>),
    Gpu(Arc<GpuBuffer>),
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
    device: Device,
}

impl Tensor {
    /// Uploads `data` with `shape` to `device`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if data.len() != numel {
            return Err(shape_err("from_vec", format!("{} values do not fill shape {shape:?} ({numel})", data.len())));
        }
        let storage = match device {
            Device::Cpu(_) => Storage::Cpu(Arc::new(data)),
            Device::Gpu(gpu) => Storage::Gpu(Arc::new(gpu.upload(&data).map_err(|e| e.for_tensor(shape))?)),
        };
        Ok(Self { shape: shape.to_vec(), storage, device: device.clone() })
    }

    pub fn zeros(shape: &[usize], device: &Device) -> Result<Self> {
        Self::from_vec(vec![0.0; shape.iter().product()], shape, device)
    }

    /// Wraps storage an op produced; `storage` must hold `shape.product()` values.
    pub(crate) fn from_storage(storage: Storage, shape: Vec<usize>, device: Device) -> Self {
        Self { shape, storage, device }
    }

    /// A GPU tensor of `shape` whose contents the caller's kernel will write.
    pub(crate) fn uninit_gpu(shape: Vec<usize>, gpu: &Arc<crate::gpu::GpuBackend>) -> Result<Self> {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        let buffer = gpu.alloc(bytes).map_err(|e| e.for_tensor(&shape))?;
        Ok(Self::from_storage(Storage::Gpu(Arc::new(buffer)), shape, Device::Gpu(gpu.clone())))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The host values for writing in place; copied first if another tensor shares them.
    /// CPU tensors only (callers have matched on the device).
    pub(crate) fn cpu_values_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(data) => Arc::make_mut(data).as_mut_slice(),
            Storage::Gpu(_) => unreachable!("device checked before dispatch"),
        }
    }

    /// Whether every value is finite (no NaN or ±inf); CPU tensors are checked in place.
    pub fn all_finite(&self) -> Result<bool> {
        Ok(match &self.storage {
            Storage::Cpu(data) => data.iter().all(|v| v.is_finite()),
            Storage::Gpu(_) => self.to_vec()?.iter().all(|v| v.is_finite()),
        })
    }

    /// Copies the values to the host (waits for pending GPU work).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &self.storage {
            Storage::Cpu(data) => Ok(data.as_ref().clone()),
            Storage::Gpu(buffer) => match &self.device {
                Device::Gpu(gpu) => gpu.download(buffer),
                Device::Cpu(_) => unreachable!("GPU storage always carries a GPU device"),
            },
        }
    }

    /// Copies several tensors' values to the host: on a GPU one round trip for all of them
    /// (one submission, one wait) instead of one per tensor.
    pub fn to_vecs(tensors: &[Tensor]) -> Result<Vec<Vec<f32>>> {
        let gpu = tensors.iter().find_map(|t| match &t.device {
            Device::Gpu(gpu) => Some(gpu.clone()),
            Device::Cpu(_) => None,
        });
        let Some(gpu) = gpu else { return tensors.iter().map(Tensor::to_vec).collect() };
        let on_gpu: Vec<&GpuBuffer> = tensors
            .iter()
            .filter_map(|t| match &t.storage {
                Storage::Gpu(b) if t.device.same(&Device::Gpu(gpu.clone())) => Some(b.as_ref()),
                _ => None,
            })
            .collect();
        let mut fetched = gpu.download_many(&on_gpu)?.into_iter();
        tensors
            .iter()
            .map(|t| match &t.storage {
                Storage::Gpu(_) if t.device.same(&Device::Gpu(gpu.clone())) => Ok(fetched.next().unwrap_or_default()),
                _ => t.to_vec(),
            })
            .collect()
    }

    /// The same values on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if self.device.same(device) {
            return Ok(self.clone());
        }
        Self::from_vec(self.to_vec()?, &self.shape, device)
    }

    /// The same storage seen with another shape of equal size.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(shape_err("reshape", format!("cannot view {:?} as {shape:?}", self.shape)));
        }
        Ok(Self { shape: shape.to_vec(), ..self.clone() })
    }

    /// Errors unless `self` and `other` live on the same device.
    pub(crate) fn check_same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device.same(&other.device) {
            Ok(())
        } else {
            Err(Error::DeviceMismatch { op, left: self.device.to_string(), right: other.device.to_string() })
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?} on {})", self.shape, self.device)
    }
}
