//! Tessera's engine: f32 tensors on a CPU (rayon + OpenBLAS) or wgpu backend, and their ops.
//!
//! ```no_run
//! use tessera_engine::{ops, Device, Tensor};
//! let dev = Device::parse("auto")?;
//! let a = Tensor::from_vec(vec![1.0; 6], &[2, 3], &dev)?;
//! let b = Tensor::from_vec(vec![1.0; 12], &[3, 4], &dev)?;
//! assert_eq!(ops::matmul(&a, &b)?.to_vec()?, vec![3.0; 8]);
//! # Ok::<(), tessera_engine::Error>(())
//! ```
pub mod autograd;
pub mod bench;
pub mod checkpoint;
pub mod conformance;
pub mod cpu;
pub mod device;
pub mod error;
pub mod gpu;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod tensor;
pub mod tensor_f16;

pub use autograd::{no_grad, Var};
pub use device::{Device, DeviceSpec};
pub use error::{Error, Result};
pub use tensor::Tensor;
pub use tensor_f16::HalfTensor;
