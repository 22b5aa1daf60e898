//! Per-adapter autotuning: the first product of a size class times every supported GEMM
//! variant, caches the fastest under the adapter and driver, and the cache file survives;
//! `forget_adapter` (`--retune`) clears it. Runs in its own test binary: it sets the cache path.
use tessera_engine::gpu::tune;
use tessera_engine::{ops, Device};
use tessera_shaders::gemm::VARIANTS;
use tessera_tests::{gpu_devices, max_rel_err, random_tensor};

#[test]
fn first_use_tunes_and_caches_per_adapter() {
    let path = std::env::temp_dir().join(format!("tessera-tune-{}/tune.json", std::process::id()));
    std::env::set_var("TESSERA_TUNE_CACHE", &path);
    std::env::set_var("TESSERA_AUTOTUNE", "1");
    let cpu = Device::cpu();
    let (a, b) = (random_tensor(&[100, 120], 1, &cpu), random_tensor(&[120, 90], 2, &cpu));
    let want = ops::matmul(&a, &b).unwrap().to_vec().unwrap();
    for gpu in gpu_devices() {
        let Device::Gpu(backend) = &gpu else { unreachable!() };
        let key = format!("{}/gemm/m128n128k128", backend.tune_key());
        tune::forget_adapter(&backend.tune_key());
        let got = ops::matmul(&a.to_device(&gpu).unwrap(), &b.to_device(&gpu).unwrap()).unwrap().to_vec().unwrap();
        assert!(max_rel_err(&got, &want) < 1e-4);
        let chosen = tune::lookup(&key).unwrap_or_else(|| panic!("no tuned choice for {key}"));
        assert!(VARIANTS.iter().any(|v| v.kernel.entry == chosen), "{chosen}");
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(file.contains(&key) && file.contains(&chosen), "{file}");
        // Cached: the next product of the class uses it without timing again. Timing would
        // run each supported variant three times; the cached choice launches one GEMM.
        let (lhs, rhs) = (b.to_device(&gpu).unwrap(), random_tensor(&[90, 110], 3, &gpu));
        let before = backend.stats().launches;
        let again = ops::matmul(&lhs, &rhs).unwrap();
        let launches = backend.stats().launches - before;
        assert_eq!(again.shape(), [120, 110]);
        assert_eq!(launches, 1, "{key}: {launches} launches for one cached-choice product (re-timed?)");
        assert!(tune::forget_adapter(&backend.tune_key()) >= 1);
        assert!(tune::lookup(&key).is_none());
    }
}
