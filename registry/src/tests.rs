use super::*;
use std::collections::HashMap;
use tessera_engine::{Device, Tensor};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-registry-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn new_run(name: &str, lr: f64) -> NewRun {
    NewRun {
        name: name.into(),
        command: "train".into(),
        config: serde_json::json!({"model": "simple-cnn", "lr": lr, "epochs": 2}),
        code_version: "abc123".into(),
        data: None,
        strategy: "full".into(),
        device: "cpu".into(),
        out: PathBuf::from("runs").join(name),
    }
}

/// A Tessera checkpoint (with its CRC) of one tensor holding `value`.
fn write_checkpoint(path: &Path, value: f32) {
    let t = Tensor::from_vec(vec![value; 4], &[2, 2], &Device::cpu()).unwrap();
    tessera_engine::checkpoint::save(path, &[("w".to_string(), t)], &HashMap::new()).unwrap();
}

#[test]
fn a_run_round_trips_with_its_epochs_results_checkpoints_and_tags() {
    let dir = scratch("roundtrip");
    let mut reg = Registry::open(&dir.join("registry.sqlite")).unwrap();
    let id = reg.begin_run(&new_run("a", 0.1)).unwrap();
    reg.record_epoch(id, "full", 1, &serde_json::json!({"epoch": 1, "test_accuracy": 0.5})).unwrap();
    reg.record_epoch(id, "full", 2, &serde_json::json!({"epoch": 2, "test_accuracy": 0.6})).unwrap();
    reg.record_result(id, "full", &serde_json::json!({"test_accuracy": 0.6})).unwrap();
    write_checkpoint(&dir.join("epoch-001.safetensors"), 1.0);
    let c = reg.record_checkpoint(id, &dir.join("epoch-001.safetensors"), "primary", Some(1)).unwrap();
    assert_eq!(c.crc32.len(), 8);
    reg.finish_run(id, "ok").unwrap();
    reg.tag(&id.to_string(), "baseline").unwrap();
    reg.tag("a", "baseline").unwrap();
    let d = reg.run("a").unwrap();
    assert_eq!((d.run.id, d.run.status.as_str(), d.run.tags.clone()), (id, "ok", vec!["baseline".to_string()]));
    assert_eq!(d.epochs.len(), 2);
    assert_eq!(d.checkpoints, vec![c]);
    assert_eq!(d.config["lr"], 0.1);
    assert!(matches!(reg.run("nope"), Err(RegistryError::NoRun { .. })));
    assert!(d.run.finished.is_some());
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = scratch("concurrent");
    let path = dir.join("registry.sqlite");
    Registry::open(&path).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut reg = Registry::open(&path).unwrap();
                for r in 0..25 {
                    let id = reg.begin_run(&new_run(&format!("w{w}-r{r}"), 0.1)).unwrap();
                    for e in 1..=4 {
                        reg.record_epoch(id, "full", e, &serde_json::json!({"epoch": e})).unwrap();
                    }
                    reg.finish_run(id, "ok").unwrap();
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let reg = Registry::open(&path).unwrap();
    let runs = reg.runs().unwrap();
    assert_eq!(runs.len(), 100);
    assert!(runs.iter().all(|r| r.status == "ok"));
    let epochs: i64 = reg.conn.query_row("SELECT COUNT(*) FROM epochs", [], |r| r.get(0)).unwrap();
    assert_eq!(epochs, 400);
    let mode: String = reg.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn promotion_points_at_the_newest_checkpoint_that_verifies() {
    let dir = scratch("promote");
    let mut reg = Registry::open(&dir.join("registry.sqlite")).unwrap();
    let id = reg.begin_run(&new_run("p", 0.1)).unwrap();
    for e in 1..=2 {
        let path = dir.join(format!("epoch-00{e}.safetensors"));
        write_checkpoint(&path, e as f32);
        reg.record_checkpoint(id, &path, "primary", Some(e)).unwrap();
    }
    let v1 = reg.promote("p", "cifar", None).unwrap();
    assert_eq!((v1.version, v1.checkpoint.ends_with("epoch-002.safetensors")), (1, true));
    // The newest checkpoint damaged: the next version points at the one before it.
    let newest = dir.join("epoch-002.safetensors");
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let v2 = reg.promote(&id.to_string(), "cifar", None).unwrap();
    assert_eq!((v2.version, v2.checkpoint.ends_with("epoch-001.safetensors")), (2, true));
    let e = reg.promote("p", "cifar", Some(2)).unwrap_err().to_string();
    assert!(e.contains("cifar:2 exists already"), "{e}");
    let v7 = reg.promote("p", "cifar", Some(7)).unwrap();
    assert_eq!(reg.versions("cifar").unwrap().iter().map(|m| m.version).collect::<Vec<_>>(), vec![1, 2, 7]);
    assert_eq!(v7.run, id);
    // A run whose every checkpoint fails its check promotes nothing, and says why.
    std::fs::remove_file(dir.join("epoch-001.safetensors")).unwrap();
    let e = reg.promote("p", "cifar", None).unwrap_err().to_string();
    assert!(e.contains("no checkpoint that verifies") && e.contains("epoch-001.safetensors"), "{e}");
}

#[test]
fn diff_shows_config_and_metric_differences_only() {
    let dir = scratch("diff");
    let mut reg = Registry::open(&dir.join("registry.sqlite")).unwrap();
    let (a, b) = (reg.begin_run(&new_run("a", 0.1)).unwrap(), reg.begin_run(&new_run("b", 0.05)).unwrap());
    for (id, acc) in [(a, 0.5), (b, 0.7)] {
        reg.record_epoch(id, "full", 1, &serde_json::json!({"test_accuracy": 0.3, "epoch": 1})).unwrap();
        reg.record_epoch(id, "full", 2, &serde_json::json!({"test_accuracy": acc, "epoch": 2})).unwrap();
        reg.record_result(id, "full", &serde_json::json!({"test_accuracy": acc, "verdict": "baseline"})).unwrap();
    }
    let d = diff(&reg.run("a").unwrap(), &reg.run("b").unwrap());
    let keys: Vec<(&str, &str)> = d.iter().map(|x| (x.section.as_str(), x.key.as_str())).collect();
    assert_eq!(keys, vec![("config", "lr"), ("result", "full.test_accuracy"), ("last_epoch", "full.test_accuracy")]);
    assert_eq!((d[0].a.clone(), d[0].b.clone()), (Some(serde_json::json!(0.1)), Some(serde_json::json!(0.05))));
}

#[test]
fn a_fingerprint_changes_with_a_file_and_not_with_the_walk_order() {
    let dir = scratch("fingerprint");
    std::fs::create_dir_all(dir.join("train/cat")).unwrap();
    std::fs::write(dir.join("train/cat/1.jpg"), b"abc").unwrap();
    std::fs::write(dir.join("train/cat/2.jpg"), b"abcd").unwrap();
    let f = data_fingerprint(&dir).unwrap();
    assert_eq!((f.files, f.hash.len()), (2, 64));
    assert_eq!(data_fingerprint(&dir).unwrap(), f);
    std::fs::write(dir.join("train/cat/2.jpg"), b"abcde").unwrap();
    assert_ne!(data_fingerprint(&dir).unwrap().hash, f.hash);
    let e = data_fingerprint(&dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
}
