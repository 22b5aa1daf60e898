//! The image-folder loader's decoder on arbitrary bytes, with and without resize/crop: an
//! error is fine, a panic or a hang is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_scheduler::data::decode_image;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.img");
    let _ = decode_image(data, path, None);
    let _ = decode_image(data, path, Some((36, 32)));
});
