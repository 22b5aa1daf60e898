//! The CIFAR-10 binary parser on arbitrary bytes: records are either all accepted (labels
//! 0..=9, whole records) or the file is rejected, and the set stays consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_scheduler::data::{append_cifar_bin, ImageSet};

fuzz_target!(|data: &[u8]| {
    let mut set = ImageSet { height: 32, width: 32, ..Default::default() };
    match append_cifar_bin(&mut set, data, Path::new("fuzz.bin")) {
        Ok(()) => assert_eq!(set.pixels.len(), set.labels.len() * 3072),
        Err(_) => assert!(set.labels.is_empty() && set.pixels.is_empty()),
    }
});
