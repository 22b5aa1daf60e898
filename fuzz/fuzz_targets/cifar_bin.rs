//! The CIFAR-10 binary parser on arbitrary bytes: records are either all accepted (labels
//! 0..=9, whole records) or the file is rejected, and the set stays consistent.
//! The check itself is `tessera_scheduler::untrusted::cifar_bin`, which the committed corpus
//! (`fuzz/corpus/cifar_bin/`) also runs through in CI.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_scheduler::untrusted::cifar_bin(data));
