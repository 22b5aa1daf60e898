//! `tessera train` on a GPU adapter reads back only at progress refreshes and a constant few
//! times per epoch (evaluation, checkpoint), whatever the number of parameter tensors. Alone in
//! its test binary: the adapters' read and submission counters are per process.
mod common;

use tessera_scheduler::strategy::RunSpec;
use tessera_scheduler::train::{train, TrainConfig};
use tessera_scheduler::trainer::OptimConfig;

#[test]
fn a_gpu_epoch_reads_back_only_at_refreshes_and_a_constant_per_epoch() {
    let root = std::env::temp_dir().join(format!("tessera-gpu-reads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    common::write_image_folders(&root, 8);
    for device in tessera_tests::gpu_devices() {
        let tessera_engine::Device::Gpu(gpu) = device else { continue };
        let adapter = gpu.summary.clone();
        let mut seen = Vec::new();
        // simple-cnn has 6 parameter tensors, resnet20-cifar 65: the reads must not follow them.
        for model in ["simple-cnn", "resnet20-cifar"] {
            let params = tessera_models::build(model, 2, &tessera_engine::Device::cpu(), 0).unwrap().net.named_params().len();
            let cfg = TrainConfig {
                model: model.into(),
                data: root.clone(),
                run: RunSpec { epochs: 1, batch: 4, ..Default::default() },
                optim: OptimConfig::default().with_lr(0.02),
                device: format!("gpu:{}", adapter.index),
                out: Some(root.join(format!("run-{model}-{}", adapter.index))),
                ..Default::default()
            };
            let before = gpu.stats();
            let mut refreshes = 0;
            let records = train(&cfg, &mut |_| refreshes += 1).unwrap();
            let after = gpu.stats();
            let (reads, submissions, launches) =
                (after.host_reads - before.host_reads, after.submissions - before.submissions, after.launches - before.launches);
            assert!(records[0].train_loss.is_finite());
            // Per epoch: the guard at refreshes and at the end (the last progress call), one
            // read of the evaluation's sums, one for the whole checkpoint.
            let extra = reads as i64 - refreshes as i64;
            println!("{model} on gpu:{} ({params} parameter tensors): {reads} reads for {refreshes} progress calls, {submissions} submissions for {launches} launches over 4 steps", adapter.index);
            assert!(extra <= 2, "{model}: {reads} reads for {refreshes} progress calls");
            // Work leaves in full batches of launches, except where the host reads.
            assert!(submissions <= launches / 256 + reads + 1, "{model}: {submissions} submissions for {launches} launches, {reads} reads");
            seen.push(extra);
        }
        assert_eq!(seen[0], seen[1], "the reads beyond refreshes do not depend on the parameter count");
    }
    // Kept when an assertion fails, for a look at the runs; removed after a pass.
    let _ = std::fs::remove_dir_all(&root);
}
