//! The image-folder loader's decoder on arbitrary bytes, with and without resize/crop: an
//! error is fine, a panic or a hang is a bug.
//! The check itself is `tessera_scheduler::untrusted::image_decode`, which the committed corpus
//! (`fuzz/corpus/image_decode/`) also runs through in CI.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tessera_scheduler::untrusted::image_decode(data));
