//! What each loader of untrusted bytes must guarantee, as checks shared by the fuzz targets
//! (`fuzz/fuzz_targets/`) and the test that replays their committed corpus
//! (`scheduler/tests/fuzz_corpus.rs`): any input may be rejected with an error; none may
//! panic, hang, or be accepted in an inconsistent state. Each check panics only when that
//! guarantee is broken.
use crate::data::{append_cifar_bin, decode_image, ImageSet};
use crate::tasks::{Plan, MAX_CLASSES};
use std::path::Path;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;

/// Safetensors parsing, dtypes and checksum; every accepted tensor fetches at its own shape.
pub fn checkpoint(data: &[u8]) {
    if let Ok(ckpt) = Checkpoint::from_bytes(data, Path::new("fuzz.safetensors")) {
        let cpu = Device::cpu();
        for (name, (values, shape)) in &ckpt.tensors {
            assert_eq!(values.len(), shape.iter().product::<usize>());
            let _ = ckpt.tensor(name, shape, &cpu);
        }
    }
}

/// CIFAR-10 records are all accepted (labels 0..=9, whole records) or the file is rejected,
/// leaving the set untouched.
pub fn cifar_bin(data: &[u8]) {
    let mut set = ImageSet { height: 32, width: 32, ..Default::default() };
    match append_cifar_bin(&mut set, data, Path::new("fuzz.bin")) {
        Ok(()) => assert_eq!(set.pixels.len(), set.labels.len() * 3072),
        Err(_) => assert!(set.labels.is_empty() && set.pixels.is_empty()),
    }
}

/// JPEG/PNG decoding with and without resize/crop.
pub fn image_decode(data: &[u8]) {
    let path = Path::new("fuzz.img");
    let _ = decode_image(data, path, None);
    if let Ok(img) = decode_image(data, path, Some((36, 32))) {
        assert_eq!(img.dimensions(), (32, 32));
    }
}

/// A plan file: an accepted plan has 1 ≤ classes ≤ MAX_CLASSES, a finite positive budget and
/// non-empty tasks covering every class once.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(plan) = Plan::from_json(text) {
        assert!((1..=MAX_CLASSES).contains(&plan.classes));
        assert!(plan.budget_secs.is_finite() && plan.budget_secs > 0.0);
        let mut all: Vec<usize> = plan.tasks.iter().inspect(|t| assert!(!t.is_empty())).flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..plan.classes).collect::<Vec<_>>());
    }
}
