//! `compare` reports what a strategy buys, not what the machine's drift did: `full` against
//! itself under another name, with a background load that starts halfway through the run,
//! comes out at a normalised time ratio within the drift probe's spread of 1.0, and the report
//! does not call it a saving.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tessera_scheduler::compare::{compare, CompareConfig};
use tessera_scheduler::data::synthetic;
use tessera_scheduler::strategy::{RunSpec, StrategyOptions};
use tessera_scheduler::trainer::OptimConfig;

#[test]
fn full_against_itself_under_a_load_that_starts_halfway_is_no_saving() {
    let (train, test): (tessera_scheduler::data::Dataset, tessera_scheduler::data::Dataset) =
        (Arc::new(synthetic(512, 2, 32, 1)), Arc::new(synthetic(64, 2, 32, 2)));
    let out = std::env::temp_dir().join(format!("tessera-compare-drift-{}", std::process::id()));
    let epochs = 6;
    let cfg = CompareConfig {
        model: "simple-cnn".into(),
        strategies: vec!["full".into(), "full@copy".into()],
        settings: RunSpec { epochs, batch: 64, seed: 3, workers: 1, ..RunSpec::default() },
        optim: OptimConfig::default().with_lr(0.02),
        options: StrategyOptions::default(),
        device: "cpu".into(),
        init: None,
        out: out.clone(),
        repeat: 1,
        seeds: Vec::new(),
        holdout: false,
        granularity: Default::default(),
        world: Default::default(),
        layout: None,
        watch: Default::default(),
    };
    // The load: a busy thread per core, from the first epoch of the second half on.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    let mut seen = 0;
    let rows = compare(&cfg, &train, &test, &mut |_, _| {
        seen += 1;
        if seen == epochs && load.is_empty() {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            load = (0..cores)
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut x = 1u64;
                        while !stop.load(Ordering::Relaxed) {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                    })
                })
                .collect();
        }
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|h| h.join().unwrap());

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let spread = report["probe"]["spread"].as_f64().unwrap();
    // The probe saw the load: the machine's speed moved during the run.
    assert!(spread > 0.2, "the probe did not see the load: spread {spread}");
    let copy = &rows[1];
    assert_eq!(copy.run.strategy, "full@copy");
    let ratio = copy.normalised_ratio.unwrap().mean;
    assert!(ratio.ln().abs() <= (1.0 + spread).ln(), "full@copy at {ratio:.3}× full, beyond the probe's spread {spread:.3}");
    assert!((copy.flops_ratio.unwrap() - 1.0).abs() < 1e-9, "the same work: {:?}", copy.flops_ratio);
    // Taking turns put the load on both alike: even the raw times agree within 1.5× (run one
    // after the other, the copy takes its every epoch under the load: 2.7×). Raw ratios seen
    // on the 2-core machine: 0.87–1.32 (a bound of 1.25 failed once in CI at 1.32).
    let raw = copy.time_ratio.unwrap().mean;
    assert!(raw.ln().abs() < 1.5f64.ln(), "full@copy took {raw:.3}× full's raw time");
    assert!(copy.verdict.starts_with("no difference"), "{}", copy.verdict);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let row = md.lines().find(|l| l.starts_with("| full@copy |")).unwrap();
    assert!(!row.contains("saves"), "{row}");
    eprintln!("probe spread {spread:.3}; full@copy raw {:.3}×, normalised {ratio:.3}×", copy.time_ratio.unwrap().mean);
    let _ = std::fs::remove_dir_all(&out);
}
