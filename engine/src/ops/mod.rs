//! Ops: each file holds one op family's shape rules and its dispatch to the CPU twin and the
//! WGSL kernel.
pub mod gemm;

pub use gemm::{gemm, matmul, GemmOpts};
