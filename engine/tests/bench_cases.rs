//! Every `tessera bench kernels` case runs on the CPU and gives finite outputs, with the
//! FLOP counts the GEMM counter sees (so the GFLOP/s column is honest).
use tessera_engine::bench::kernels::kernel_cases;
use tessera_engine::ops::gemm::count_gemm_flops;
use tessera_engine::Device;

#[test]
fn every_kernel_case_runs_and_counts_its_flops() {
    let cpu = Device::cpu();
    let cases = kernel_cases();
    assert!(cases.len() >= 15);
    for case in &cases {
        let run = case.setup(&cpu).unwrap();
        let (out, flops) = count_gemm_flops(|| run().unwrap());
        assert!(!out.is_empty() && out.iter().all(|t| t.all_finite().unwrap()), "{} {}", case.op, case.shape);
        assert_eq!(flops, case.flops, "{} {}: counted FLOPs", case.op, case.shape);
    }
}
