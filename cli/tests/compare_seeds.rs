//! `tessera compare --seeds`: every strategy once per seed, each lane in a process of its own
//! started with its repeat's seed; the records and the report give accuracy over seeds.
mod common;

use std::process::Command;

#[test]
fn compare_over_seeds_reports_each_strategy_over_the_seeds() {
    let scratch = common::scratch("tessera-compare-seeds-cli-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 20);
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["compare", "--model", "simple-cnn", "--data", "data", "--strategies", "full,random", "--seeds", "1,2", "--epochs", "1"])
        .args(["--batch", "25", "--lr", "0.02", "--workers", "1", "--out", "cmp", "--json"])
        .current_dir(&root)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{stdout}");
    for r in &records {
        assert!(r["test_accuracy_std"].is_number() && r["seed_ci95"].is_array(), "{r}");
    }
    assert!(records[1]["accuracy_vs_full"].is_number() && records[1]["beyond_seed_spread"].is_boolean(), "{}", records[1]);
    // Two repeats, one per seed: the runs of seeds 1 and 2 started from other weights.
    let runs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("cmp/runs.json")).unwrap()).unwrap();
    let loss = |k: usize| runs[k]["runs"][0]["epochs"][0]["train_loss"].as_f64().unwrap();
    assert_ne!(loss(0), loss(1));
    assert!(std::fs::read_to_string(root.join("cmp/report.md")).unwrap().contains("seeds [1, 2], one repeat each"));
    let both = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["compare", "--model", "simple-cnn", "--data", "data", "--seeds", "1,2", "--repeat", "2"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2), "--seeds and --repeat together are refused");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn compare_holdout_scores_on_a_tenth_of_the_training_set_with_options_per_lane() {
    let scratch = common::scratch("tessera-compare-holdout-cli-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 20);
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "compare",
            "--model",
            "simple-cnn",
            "--data",
            "data",
            "--strategies",
            "full,dynamic:threshold=0.05,dynamic:threshold=0.2:window=5",
            "--holdout",
            "--epochs",
            "1",
        ])
        .args(["--batch", "25", "--lr", "0.02", "--workers", "1", "--out", "cmp"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("cmp/report.json")).unwrap()).unwrap();
    // 100 training images (5 files of 20): 90 train, every 10th is held out; the 200 test
    // images play no part.
    assert_eq!((report["holdout"].as_bool(), report["train_images"].as_u64(), report["test_images"].as_u64()), (Some(true), Some(90), Some(10)));
    assert!(std::fs::read_to_string(root.join("cmp/report.md")).unwrap().contains("the test set is not used"));
    // Each lane with options of its own, named by them.
    let names: Vec<&str> = report["strategies"].as_array().unwrap().iter().map(|s| s["strategy"].as_str().unwrap()).collect();
    assert_eq!(names, ["full", "dynamic (grad-norm) [threshold=0.05]", "dynamic (grad-norm) [threshold=0.2, window=5]"]);
    let _ = std::fs::remove_dir_all(&root);
}
