//! A GPU training step never waits for the host. Alone in its test binary: the adapters'
//! launch and read counters are per process, and another test on the same adapter would
//! move them.
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::nn::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use tessera_engine::ops::{Conv2dOpts, SgdHyper};
use tessera_engine::optim::{Optimizer, ParamGroup};
use tessera_engine::{Device, Tensor, Var};
use tessera_tests::gpu_devices;

/// A training step on a GPU (forward with batch norm, loss, backward, SGD with momentum and
/// weight decay) never waits for the host: no reads back, and work goes out only when a
/// batch of launches fills (gpu::MAX_LAUNCHES_PER_BATCH = 256) or at the final synchronize.
#[test]
fn a_gpu_training_step_reads_nothing_back_and_submits_only_full_batches() {
    let mut rng = StdRng::seed_from_u64(4);
    let x: Vec<f32> = (0..16 * 3 * 8 * 8).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y: Vec<usize> = (0..16).map(|i| i % 4).collect();
    for dev in gpu_devices() {
        let Device::Gpu(gpu) = &dev else { unreachable!() };
        let mut rng = StdRng::seed_from_u64(5);
        let same = Conv2dOpts::new(1, 1);
        let model = Sequential::new()
            .with(Conv2d::new(3, 8, 3, same, false, &dev, &mut rng).unwrap())
            .with(BatchNorm2d::new(8, &dev).unwrap())
            .with(ReLU)
            .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .with(Flatten)
            .with(Linear::new(128, 4, true, &dev, &mut rng).unwrap());
        let params = model.named_params().into_iter().map(|(_, p)| p).collect();
        let hyper = SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: false };
        let mut sgd = Optimizer::new(vec![ParamGroup::new("all", params)], 0.05, hyper);
        let input = Var::constant(Tensor::from_vec(x.clone(), &[16, 3, 8, 8], &dev).unwrap());
        let mut step = || {
            let loss = ag::cross_entropy(&model.forward(&input).unwrap(), &y).unwrap();
            loss.backward().unwrap();
            sgd.step().unwrap();
            sgd.zero_grad();
        };
        step(); // the first step compiles pipelines and fills the buffer pool
        dev.synchronize().unwrap();
        let before = gpu.stats();
        step();
        dev.synchronize().unwrap();
        let after = gpu.stats();
        let launches = after.launches - before.launches;
        assert!(launches > 20, "{dev}: {launches} launches in a step");
        assert_eq!(after.host_reads, before.host_reads, "{dev}: a training step read back from the GPU");
        let submissions = after.submissions - before.submissions;
        assert!(submissions <= launches / 256 + 1, "{dev}: {submissions} submissions for {launches} launches");
        println!("{dev}: {launches} launches, {submissions} submissions per step");
    }
}
