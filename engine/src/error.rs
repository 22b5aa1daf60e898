//! The one error type of the engine: every message names what was wrong and what to do.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("unknown device `{0}`: expected `cpu`, `gpu`, `gpu:N` (an adapter index from `tessera devices`) or `auto`")]
    UnknownDevice(String),

    #[error("no GPU adapter with index {index}: wgpu found {count} adapter(s); run `tessera devices` to list them")]
    NoSuchAdapter { index: usize, count: usize },

    #[error("could not open GPU adapter {index} ({name}): {reason}")]
    DeviceOpen { index: usize, name: String, reason: String },

    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("kernel `{kernel}` would bind {bytes} bytes of one tensor; adapter `{adapter}` binds at most {max} bytes and this op does not split its work there (use a smaller --batch, or the CPU backend)")]
    BindingTooLarge { kernel: &'static str, bytes: u64, max: u64, adapter: String },

    #[error("tensor of {bytes} bytes does not fit in one buffer of adapter `{adapter}` (max {max} bytes)")]
    TooLarge { bytes: u64, max: u64, adapter: String },

    #[error("out of device memory on `{adapter}`: {what} needs {} more, {} are live and the limit is {} (--gpu-memory-limit; a smaller --batch needs less)", mib(*bytes), mib(*live), mib(*limit))]
    DeviceMemory { what: String, bytes: u64, live: u64, limit: u64, adapter: String },

    #[error("{op}: tensors live on different devices ({left} and {right}); move one with `to_device`")]
    DeviceMismatch { op: &'static str, left: String, right: String },

    #[error("{op}: not supported on this device: {detail}")]
    Unsupported { op: &'static str, detail: String },

    #[error(
        "backward through a graph a second time (reached the output of `{op}` again): the first backward freed the tensors it saved; run a new forward pass"
    )]
    BackwardTwice { op: &'static str },
    #[error("synchronised batch norm: {0}")]
    Replicas(String),

    #[error("optimizer state: {0}")]
    OptimizerState(String),

    #[error("GPU error on `{adapter}`: {detail}")]
    Gpu { adapter: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error of `op`.
pub(crate) fn shape_err(op: &'static str, detail: impl Into<String>) -> Error {
    Error::Shape { op, detail: detail.into() }
}

/// Bytes as MiB for messages (`12.5 MiB`).
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

impl Error {
    /// Names the tensor an allocation was for (`shape`) in an out-of-memory error.
    pub fn for_tensor(self, shape: &[usize]) -> Self {
        match self {
            Error::DeviceMemory { bytes, live, limit, adapter, .. } => {
                Error::DeviceMemory { what: format!("a {shape:?} f32 tensor"), bytes, live, limit, adapter }
            }
            other => other,
        }
    }
}
