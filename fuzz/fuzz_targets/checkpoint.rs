//! The checkpoint loader on arbitrary bytes (safetensors header, dtypes, checksum), and
//! fetching every tensor it accepted into a tensor of its own shape.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tessera_engine::checkpoint::Checkpoint;
use tessera_engine::Device;

fuzz_target!(|data: &[u8]| {
    if let Ok(ckpt) = Checkpoint::from_bytes(data, Path::new("fuzz.safetensors")) {
        let cpu = Device::cpu();
        for (name, (values, shape)) in &ckpt.tensors {
            assert_eq!(values.len(), shape.iter().product::<usize>());
            let _ = ckpt.tensor(name, shape, &cpu);
        }
    }
});
