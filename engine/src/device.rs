//! Where tensors live: `cpu`, `gpu[:N]` or `auto`, resolved to a concrete backend.
use crate::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::gpu::{list_adapters, GpuBackend};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A device as a user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// An adapter index as listed by `tessera devices`.
    Gpu(usize),
    /// The first hardware GPU if there is one, else the CPU backend (faster than a software
    /// Vulkan driver such as lavapipe).
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu(0)),
            "auto" => Ok(Self::Auto),
            // One rank per GPU: the node-local rank that OpenMPI, Slurm or MPICH set.
            "gpu:local" => Ok(Self::Gpu(
                ["OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok()).unwrap_or(0),
            )),
            _ => lower.strip_prefix("gpu:").and_then(|n| n.parse().ok()).map(Self::Gpu).ok_or_else(|| Error::UnknownDevice(s.to_string())),
        }
    }
}

/// A concrete backend; cheap to clone. Ops dispatch on it explicitly.
#[derive(Clone)]
pub enum Device {
    Cpu(Arc<CpuBackend>),
    Gpu(Arc<GpuBackend>),
}

impl Device {
    pub fn cpu() -> Self {
        Self::Cpu(CpuBackend::global())
    }

    /// The CPU backend with its own pool of `threads` threads (0: the process-wide default).
    pub fn cpu_with_threads(threads: usize) -> Self {
        if threads == 0 {
            Self::cpu()
        } else {
            Self::Cpu(CpuBackend::new(threads))
        }
    }

    pub fn gpu(index: usize) -> Result<Self> {
        GpuBackend::open(index).map(Self::Gpu)
    }

    /// GPU adapter `index` as a device that binds at most `bytes` of a buffer to one kernel
    /// (see [`GpuBackend::open_with_binding_limit`]).
    pub fn gpu_with_binding_limit(index: usize, bytes: u64) -> Result<Self> {
        GpuBackend::open_with_binding_limit(index, Some(bytes)).map(Self::Gpu)
    }

    pub fn open(spec: DeviceSpec) -> Result<Self> {
        match spec {
            DeviceSpec::Cpu => Ok(Self::cpu()),
            DeviceSpec::Gpu(index) => Self::gpu(index),
            DeviceSpec::Auto => Self::open(Self::auto_choice().0),
        }
    }

    /// What `auto` picks, and why: the first hardware GPU; otherwise the CPU backend, since a
    /// CPU-emulated adapter (lavapipe, llvmpipe, WARP) runs the same work far slower.
    pub fn auto_choice() -> (DeviceSpec, String) {
        let adapters = list_adapters();
        let software = format!("{:?}", wgpu::DeviceType::Cpu);
        match adapters.iter().find(|a| a.device_type != software) {
            Some(a) => (DeviceSpec::Gpu(a.index), format!("gpu:{} `{}` ({}, {}) is a hardware GPU", a.index, a.name, a.backend, a.device_type)),
            None if adapters.is_empty() => (DeviceSpec::Cpu, "no GPU adapter found".into()),
            None => (
                DeviceSpec::Cpu,
                format!(
                    "the only GPU adapters are CPU-emulated ({}); the CPU backend is faster",
                    adapters.iter().map(|a| format!("gpu:{} {}", a.index, a.backend)).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }

    /// Parses and opens a device name such as `gpu:1`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::open(name.parse()?)
    }

    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Self::Cpu(_), Self::Cpu(_)) => true,
            (Self::Gpu(a), Self::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// A GPU's memory as the engine accounts for it (none on the CPU, whose allocations are
    /// the process's resident memory).
    pub fn memory(&self) -> Option<crate::gpu::MemoryStats> {
        match self {
            Self::Cpu(_) => None,
            Self::Gpu(gpu) => Some(gpu.memory()),
        }
    }

    /// Starts a GPU's memory peaks again from what it holds now.
    pub fn reset_peak_memory(&self) {
        if let Self::Gpu(gpu) = self {
            gpu.reset_peak_memory();
        }
    }

    /// Makes a GPU's allocations beyond `limit` bytes fail (`--gpu-memory-limit`); the CPU
    /// has no such limit.
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        if let Self::Gpu(gpu) = self {
            gpu.set_memory_limit(limit);
        }
    }

    /// Waits for all recorded work (a no-op on the CPU).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Self::Cpu(_) => Ok(()),
            Self::Gpu(gpu) => gpu.synchronize(),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu(_) => write!(f, "cpu"),
            Self::Gpu(gpu) => write!(f, "gpu:{} ({})", gpu.summary.index, gpu.name()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("GPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Gpu(0));
        assert_eq!("gpu:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Gpu(3));
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert!(matches!("gpu:local".parse::<DeviceSpec>(), Ok(DeviceSpec::Gpu(_))));
        for bad in ["tpu", "gpu:", "gpu:x", "gpu:-1", ""] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("unknown device") && err.contains("gpu:N"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_adapter_index_is_an_error_not_a_panic() {
        let err = Device::gpu(10_000).unwrap_err().to_string();
        assert!(err.contains("no GPU adapter with index 10000"), "{err}");
    }
}
