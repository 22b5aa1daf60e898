//! Device memory accounting on every adapter: live, cached and peak bytes follow tensors as
//! they come and go; past `set_memory_limit` an allocation frees the pool's cache first and
//! then fails with an error naming the tensor, its size, the live total and the limit — no
//! panic, no driver error — and the device works on afterwards. (One test in its own binary:
//! the limit is the adapter's, for every test sharing the process.)
use tessera_engine::ops::elementwise::add;
use tessera_engine::{Device, Error, Tensor};
use tessera_tests::gpu_devices;

const MIB: u64 = 1 << 20;

#[test]
fn memory_is_accounted_and_the_limit_fails_cleanly() {
    for dev in gpu_devices() {
        dev.synchronize().unwrap();
        let Device::Gpu(gpu) = &dev else { unreachable!("gpu_devices gives GPUs") };
        gpu.trim_pool();
        dev.reset_peak_memory();
        let base = dev.memory().unwrap();
        assert_eq!(base.cached_bytes, 0, "{dev}");
        // Two 4 MiB tensors (1 Mi f32 each) out on loan: live grows by their size classes.
        let a = Tensor::zeros(&[1024, 1024], &dev).unwrap();
        let b = Tensor::zeros(&[1024, 1024], &dev).unwrap();
        let m = dev.memory().unwrap();
        assert_eq!(m.live_bytes - base.live_bytes, 8 * MIB, "{dev}: {m:?}");
        drop(a);
        let m = dev.memory().unwrap();
        assert_eq!((m.live_bytes - base.live_bytes, m.cached_bytes), (4 * MIB, 4 * MIB), "{dev}: {m:?}");
        assert_eq!(m.peak_live_bytes - base.live_bytes, 8 * MIB, "{dev}: {m:?}");
        dev.reset_peak_memory();
        assert_eq!(dev.memory().unwrap().peak_live_bytes - base.live_bytes, 4 * MIB);

        // A limit 6 MiB above what was live before: the cached 4 MiB are freed to make room
        // for a new 2 MiB tensor, then a 16 MiB one fails.
        dev.set_memory_limit(Some(base.live_bytes + 6 * MIB));
        let c = Tensor::zeros(&[512, 1024], &dev).unwrap();
        let m = dev.memory().unwrap();
        assert_eq!((m.cached_bytes, m.live_bytes - base.live_bytes), (0, 6 * MIB), "{dev}: {m:?}");
        let e = Tensor::zeros(&[4096, 1024], &dev).unwrap_err();
        assert!(matches!(e, Error::DeviceMemory { bytes, .. } if bytes == 16 * MIB), "{dev}: {e:?}");
        let said = e.to_string();
        assert!(said.contains("[4096, 1024] f32 tensor") && said.contains("needs 16.0 MiB") && said.contains("--gpu-memory-limit"), "{said}");
        // An op's output is refused the same way, and the device works on afterwards.
        let e = add(&b, &b).map(drop).unwrap_err();
        assert!(matches!(e, Error::DeviceMemory { .. }), "{dev}: {e:?}");
        dev.set_memory_limit(None);
        let sum = add(&b, &b).unwrap().to_vec().unwrap();
        assert!(sum.iter().all(|v| *v == 0.0));
        drop((b, c));
    }
}
