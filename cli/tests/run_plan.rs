//! `tessera plan` + `tessera run-plan` end to end: two tasks on the cores as two processes,
//! each stopping at its budget; the merged 10-way classifier beats chance by a wide margin.
mod common;

use common::write_coloured_cifar;
use std::process::Command;
use std::time::Instant;

#[test]
fn two_tasks_train_in_parallel_within_budget_and_merge_above_chance() {
    let scratch = common::scratch("tessera-run-plan-");
    let root = scratch.path().to_path_buf();
    write_coloured_cifar(&root.join("data"));
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let plan = root.join("plan.json");
    let budget = 4.0;
    let out =
        Command::new(tessera).args(["plan", "--classes", "10", "--tasks", "2", "--time-budget", &budget.to_string(), "--out"]).arg(&plan).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let start = Instant::now();
    let out = Command::new(tessera)
        .args(["run-plan", "--batch", "32", "--plan"])
        .arg(&plan)
        .arg("--data")
        .arg(root.join("data"))
        .arg("--out")
        .arg(root.join("run"))
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // Both tasks ran at once: the whole run takes one budget plus start-up and evaluation.
    assert!(wall < budget + 8.0, "run-plan took {wall:.1} s for a {budget} s budget:\n{stdout}");
    let tasks: Vec<&str> = stdout.lines().filter(|l| l.starts_with("task ") && l.contains(" steps ")).collect();
    assert_eq!(tasks.len(), 2, "one report line per task:\n{stdout}");
    let mut intervals = Vec::new();
    for line in tasks {
        let secs: f64 = line.split(" in ").nth(1).unwrap().split(" s ").next().unwrap().parse().unwrap();
        assert!(secs <= budget + 1.0, "a task overran its budget: {line}");
        let span = line.split("trained over [").nth(1).unwrap().split(']').next().unwrap();
        let (from, until) = span.split_once(", ").unwrap();
        intervals.push((from.parse::<f64>().unwrap(), until.parse::<f64>().unwrap()));
    }
    // In parallel: the two training intervals overlap (one after the other, they would not).
    let (latest_start, earliest_end) = (intervals[0].0.max(intervals[1].0), intervals[0].1.min(intervals[1].1));
    assert!(latest_start < earliest_end, "the tasks trained one after the other: {intervals:?}");
    println!("{stdout}");
    let merged = stdout.lines().find(|l| l.starts_with("merged 10-way")).expect("a merged result");
    let accuracy: f32 = merged.split("accuracy ").nth(1).unwrap().split(" %").next().unwrap().parse().unwrap();
    assert!(accuracy >= 90.0, "chance is 10 %, and each task model sees its colours: {merged}");
    assert!(root.join("run/task-0.safetensors").is_file() && root.join("run/task-1.safetensors").is_file());

    // A plan for another class count fails before any task starts.
    let five = root.join("five.json");
    assert!(Command::new(tessera).args(["plan", "--classes", "5", "--tasks", "2", "--time-budget", "1", "--out"]).arg(&five).status().unwrap().success());
    let start = Instant::now();
    let out = Command::new(tessera)
        .args(["run-plan", "--plan"])
        .arg(&five)
        .arg("--data")
        .arg(root.join("data"))
        .arg("--out")
        .arg(root.join("five"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("splits 5 classes") && stderr.contains("has 10"), "{stderr}");
    assert!(start.elapsed().as_secs_f64() < 1.0 && !root.join("five").exists(), "no task ran");
    assert!(stdout.contains("always \"other\": 50.00 %"), "{stdout}");

    let bad = Command::new(tessera).args(["plan", "--classes", "3", "--tasks", "5", "--time-budget", "1"]).output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("cannot split 3 classes into 5 tasks"));
}
