//! A task plan and a strategy sweep as Slurm job arrays on a one-node cluster on this host:
//! `plan/compare --emit slurm` write the sbatch script, Slurm runs an array task per plan task
//! (per strategy), each data-parallel over 2 ranks, `tessera merge` combines them into the
//! merged classifier (the standard report) and names a task whose result is missing. The test starts
//! munged, slurmctld and slurmd itself (`scripts/slurm-local.sh`, as root; `.ci/install-deps`
//! installs slurm-wlm and munge) and stops them.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Cluster {
    state: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(state: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh");
        let o = Command::new("bash").arg(&script).arg("start").arg(state).output().expect("bash");
        assert!(
            o.status.success(),
            "the local Slurm cluster did not start (install slurm-wlm and munge; run as root):\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        Self { state: state.into(), conf: state.join("slurm.conf") }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh");
        let _ = Command::new("bash").arg(script).arg("stop").arg(&self.state).status();
    }
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}\n{}", String::from_utf8_lossy(&o.stderr), String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sbatch --wait SCRIPT` on `cluster` (mpirun in the job may run as root: the test does).
fn sbatch(root: &Path, cluster: &Cluster, script: &str) -> Output {
    Command::new("sbatch")
        .args(["--wait", script])
        .current_dir(root)
        .env("SLURM_CONF", &cluster.conf)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("sbatch (install slurm-wlm)")
}

#[test]
fn a_plan_and_a_sweep_run_as_job_arrays_and_merge() {
    let scratch = common::scratch("tessera-slurm-");
    let root = scratch.path().to_path_buf();
    common::write_coloured_cifar(&root.join("data"));
    let cluster = Cluster::start(&root.join("cluster"));
    let tessera = env!("CARGO_BIN_EXE_tessera");
    let run = |args: &[&str]| Command::new(tessera).args(args).current_dir(&root).env("SLURM_CONF", &cluster.conf).output().unwrap();

    // Each plan task data-parallel over 2 ranks (mpirun in the array task's allocation).
    let plan = ["plan", "--classes", "10", "--tasks", "2", "--time-budget", "2", "--ranks", "2", "--emit", "slurm", "job"];
    ok(run(&[&plan[..], &["--", "--data", "data", "--batch", "32"]].concat()), "plan --emit");
    let script = std::fs::read_to_string(root.join("job/tasks.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1") && script.contains("mpirun -np \"$SLURM_NTASKS\""), "{script}");
    assert!(script.contains("run-task --index \"${ITEMS[$SLURM_ARRAY_TASK_ID]}\""), "{script}");
    ok(sbatch(&root, &cluster, "job/tasks.sbatch"), "sbatch --wait");
    let log = std::fs::read_to_string(root.join("job/logs/task-0.out")).unwrap();
    assert_eq!(log.matches("steps (").count(), 1, "rank 0 alone reports the task: {log}");
    for t in 0..2 {
        assert!(root.join(format!("job/tasks/task-{t}.safetensors")).is_file(), "array task {t} left no checkpoint");
    }

    let lines = ok(run(&["merge", "job", "--json"]), "merge");
    let merged: serde_json::Value = lines.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|r| r["record"] == "merged").unwrap();
    // The colour-coded classes are easy: far above the 10 % of chance.
    assert!(merged["accuracy"].as_f64().unwrap() > 0.5, "{merged}");

    // A task whose result is missing is named, with the end of its log.
    std::fs::remove_file(root.join("job/tasks/task-1.safetensors")).unwrap();
    let o = run(&["merge", "job"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("1 of 2 tasks did not finish") && stderr.contains("task 1: no checkpoint") && stderr.contains("task-1.out"),
        "{stderr}"
    );

    // A 2-strategy sweep, each array task data-parallel over 2 ranks (mpirun in the allocation).
    let sweep = ["compare", "--model", "simple-cnn", "--data", "data", "--limit-per-class", "6", "--strategies", "full,fc", "--epochs", "2", "--batch", "20"];
    ok(run(&[&sweep[..], &["--lr", "0.02", "--ranks", "2", "--emit", "slurm", "sweep"]].concat()), "compare --emit");
    ok(sbatch(&root, &cluster, "sweep/tasks.sbatch"), "sbatch --wait (sweep)");
    let lines = ok(run(&["merge", "sweep", "--json"]), "merge (sweep)");
    let rows: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().map(|r| r["strategy"].as_str().unwrap()).collect::<Vec<_>>(), ["full", "fc (dfs)"], "{rows:?}");
    // Each ran over 2 ranks: gradients crossed them; fc sends only its head's.
    let bytes: Vec<u64> = rows.iter().map(|r| r["allreduce_bytes"].as_u64().unwrap()).collect();
    assert!(bytes[0] > bytes[1] && bytes[1] > 0, "{bytes:?}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("sweep/report.json")).unwrap()).unwrap();
    assert_eq!(report["strategies"].as_array().unwrap().len(), 2);
    std::fs::remove_file(root.join("sweep/strategies/1/runs.json")).unwrap();
    let stderr = String::from_utf8_lossy(&run(&["merge", "sweep"]).stderr).into_owned();
    assert!(stderr.contains("1 of 2 strategies did not finish") && stderr.contains("strategy `fc`"), "{stderr}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&root);
}
