//! The checkpoint loader on arbitrary bytes (safetensors header, dtypes, checksum), and
//! fetching every tensor it accepted into a tensor of its own shape.
//! The check itself is `tessera_scheduler::untrusted::checkpoint`, which the committed corpus
//! (`fuzz/corpus/checkpoint/`) also runs through in CI.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_scheduler::untrusted::checkpoint(data));
