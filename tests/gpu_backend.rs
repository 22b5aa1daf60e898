//! The wgpu backend's contracts: launches are batched into one submission until the host
//! reads, freed buffers are reused, and a kernel the driver rejects is an error, not a panic.
//! One test function: the backend's counters are process-wide, so these checks run in order.
use tessera_engine::gpu::GpuBackend;
use tessera_engine::{ops, Device, Error, Tensor};
use tessera_shaders::{Kernel, Shader};
use tessera_tests::{gpu_devices, random_vec};

static BROKEN: Shader =
    Shader { name: "broken_for_test", file: "broken_for_test.wgsl", source: "@compute @workgroup_size(1)\nfn main() {\n  let x: f32 = 1u;\n}\n", shared: &[] };
static BROKEN_KERNEL: Kernel = Kernel { shader: &BROKEN, entry: "main", workgroup: [1, 1, 1] };

fn gpu_of(dev: &Device) -> &GpuBackend {
    match dev {
        Device::Gpu(gpu) => gpu,
        Device::Cpu(_) => unreachable!(),
    }
}

#[test]
fn gpu_backend_contracts() {
    batching_pooling_and_kernel_errors();
    tensors_round_trip_between_devices();
}

fn batching_pooling_and_kernel_errors() {
    for dev in gpu_devices() {
        let gpu = gpu_of(&dev);
        let a = Tensor::from_vec(random_vec(64 * 64, 1), &[64, 64], &dev).unwrap();
        dev.synchronize().unwrap();

        // Ten dependent launches, then one read: one submission.
        let before = gpu.stats();
        let mut x = a.clone();
        for _ in 0..10 {
            x = ops::matmul(&x, &a).unwrap();
        }
        let mid = gpu.stats();
        assert_eq!(mid.launches - before.launches, 10, "{dev}");
        assert_eq!(mid.submissions, before.submissions, "{dev}: nothing submitted before the read");
        let x_values = x.to_vec().unwrap();
        let after = gpu.stats();
        assert_eq!(after.submissions - mid.submissions, 1, "{dev}: one submission for ten launches and the read");
        assert_eq!(after.host_reads - mid.host_reads, 1);

        // Every buffer of the chain is free again; the same ten products allocate no new ones.
        drop(x);
        let created = gpu.stats().buffers_created;
        let mut y = a.clone();
        for _ in 0..10 {
            y = ops::matmul(&y, &a).unwrap();
        }
        assert_eq!(y.to_vec().unwrap(), x_values, "{dev}: reused buffers gave other results");
        assert_eq!(gpu.stats().buffers_created, created, "{dev}: the pool should serve every buffer");

        // A kernel the driver rejects: an error naming the file and entry point.
        let err = gpu.launch(&BROKEN_KERNEL, &[], &[], [1, 1, 1]).unwrap_err();
        assert!(matches!(err, Error::Gpu { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("did not compile") && msg.contains("broken_for_test.wgsl:3"), "{msg}");
        // …and the device still works afterwards.
        assert_eq!(ops::matmul(&a, &a).unwrap().to_vec().unwrap().len(), 64 * 64);
    }
}

fn tensors_round_trip_between_devices() {
    let cpu = Device::cpu();
    let data = random_vec(1000, 5);
    let t = Tensor::from_vec(data.clone(), &[10, 100], &cpu).unwrap();
    for dev in gpu_devices() {
        let on_gpu = t.to_device(&dev).unwrap();
        assert_eq!(on_gpu.shape(), &[10, 100]);
        assert_eq!(on_gpu.to_vec().unwrap(), data);
        assert_eq!(on_gpu.to_device(&cpu).unwrap().to_vec().unwrap(), data);
    }
    let err = Tensor::from_vec(vec![1.0; 5], &[2, 3], &cpu).unwrap_err().to_string();
    assert!(err.contains("5 values do not fill shape [2, 3]"), "{err}");
}
