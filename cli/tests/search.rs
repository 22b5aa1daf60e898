//! `tessera search`: the whole search — probes, the chosen strategy's training, its test
//! evaluation — ends within its time budget; every candidate is ranked with a prediction, the
//! probes leave the standard compare report, and `--validate` ranks the candidates again by
//! full comparisons (Spearman's ρ).
mod common;

use std::process::Command;
use std::time::Instant;

#[test]
fn the_search_stops_within_its_budget_and_ranks_every_candidate() {
    let scratch = common::scratch("tessera-search-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar_sized(&root.join("data"), 100);
    let budget = 12.0;
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["search", "--model", "simple-cnn", "--data", "data", "--strategies", "full,fc,dynamic", "--batch", "25", "--lr", "0.02", "--workers", "1"])
        .args(["--time-budget", &budget.to_string(), "--out", "search", "--json", "--validate"])
        .current_dir(&root)
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let candidates: Vec<&serde_json::Value> = records.iter().filter(|r| r["record"] == "candidate").collect();
    assert_eq!(candidates.iter().map(|c| c["rank"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3], "{stdout}");
    let result = records.iter().find(|r| r["record"] == "search").expect("a search record");
    assert_eq!(result["chosen"], candidates[0]["strategy"]);
    // The budget is the search's own clock (from its start, data loading included); the
    // --validate comparison comes after it.
    let searched = result["wall_seconds"].as_f64().unwrap();
    assert!(searched <= budget + 2.0 && searched < wall, "the search took {searched:.1} s of a {budget} s budget\n{stderr}");
    assert!(result["test_accuracy"].as_f64().unwrap() > 0.0);
    let rho = result["spearman"].as_f64().expect("--validate gives ρ");
    assert!((-1.0..=1.0).contains(&rho), "{rho}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("search/search.json")).unwrap()).unwrap();
    assert_eq!(doc["candidates"].as_array().unwrap().len(), 3);
    assert!(doc["probe_epochs"].as_u64().unwrap() >= 1 && doc["budget_epochs"].as_u64().unwrap() >= doc["probe_epochs"].as_u64().unwrap());
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("search/report.json")).unwrap()).unwrap();
    assert_eq!(report["strategies"].as_array().unwrap().len(), 3, "the probes' compare report");
    assert!(root.join("search/validation/report.json").is_file());
    let _ = std::fs::remove_dir_all(&root);
}
