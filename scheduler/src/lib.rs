//! Data sets and training runs (the sub-model strategies and reports come next).
pub mod bench;
pub mod data;
pub mod interop;
pub mod train;
