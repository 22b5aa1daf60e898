//! The robustness report: scikit-learn's classification-report numbers and layout, the input
//! corruptions, and the whole report on a short real run.
use std::sync::Arc;
use tessera_scheduler::data::{synthetic, Corruption};
use tessera_scheduler::robustness::{classification_report, mean_std, robustness_report, RobustnessConfig};
use tessera_scheduler::run_state::load_splits;
use tessera_scheduler::strategy::RunSpec;
use tessera_scheduler::train::{train, TrainConfig};
use tessera_scheduler::trainer::OptimConfig;

#[test]
fn classification_report_matches_scikit_learn() {
    // sklearn.metrics.classification_report([0,0,0,1,1,1], [0,0,1,1,1,1], target_names=["a","b"], digits=4)
    let report = classification_report(&[vec![2.0, 1.0], vec![0.0, 3.0]], &["a".into(), "b".into()]);
    let want = r#"
             precision    recall  f1-score   support

           a    1.0000    0.6667    0.8000         3
           b    0.7500    1.0000    0.8571         3

    accuracy                        0.8333         6
   macro avg    0.8750    0.8333    0.8286         6
weighted avg    0.8750    0.8333    0.8286         6
"#;
    assert_eq!(report, want.trim_start_matches('\n'));
    assert_eq!(mean_std(&[1.0, 3.0]), (2.0, 1.0));
}

#[test]
fn corruptions_grow_with_severity_and_are_deterministic() {
    let set = synthetic(8, 2, 32, 5);
    let diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>() / a.len() as f64;
    for c in Corruption::ALL {
        let (mild, severe) = (c.apply(&set, 1, 0), c.apply(&set, 5, 0));
        assert_eq!(mild.labels, set.labels);
        let (d1, d5) = (diff(&mild.pixels, &set.pixels), diff(&severe.pixels, &set.pixels));
        assert!(d1 > 0.0 && d5 > d1, "{}: severity 1 changes {d1:.2}, severity 5 {d5:.2}", c.name());
        assert_eq!(c.apply(&set, 3, 0).pixels, c.apply(&set, 3, 0).pixels, "{} is seeded", c.name());
    }
}

#[test]
fn report_on_a_short_run() {
    let root = std::env::temp_dir().join(format!("tessera-robustness-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The CIFAR-10 binary layout is [label, 3×32×32 planar pixels]: ImageSet's own layout.
    let write = |name: &str, n: usize, seed: u64| {
        let set = synthetic(n, 10, 32, seed);
        let bytes: Vec<u8> = (0..set.len()).flat_map(|i| std::iter::once(set.labels[i] as u8).chain(set.image(i).iter().copied())).collect();
        std::fs::write(data.join(name), bytes).unwrap();
    };
    (1..=5).for_each(|i| write(&format!("data_batch_{i}.bin"), 40, i));
    write("test_batch.bin", 60, 9);
    let run = root.join("run");
    let cfg = TrainConfig {
        model: "simple-cnn".into(),
        data: data.clone(),
        run: RunSpec { epochs: 2, batch: 20, ..Default::default() },
        optim: OptimConfig::default().with_lr(0.02),
        out: Some(run.clone()),
        ..Default::default()
    };
    train(&cfg, &mut |_| {}).unwrap();

    let (_, test) = load_splits(&data, None).unwrap();
    let out = run.join("robustness");
    std::fs::create_dir_all(&out).unwrap();
    let rc = RobustnessConfig { run: run.clone(), device: "cpu".into(), batch: 30, seed: 0, corruptions: true, noise_scale: 0.5, out: out.clone() };
    let test = Arc::new(tessera_scheduler::data::materialize(test.as_ref()).unwrap());
    let report = robustness_report(&rc, &test).unwrap();
    let text = report.text.clone();
    // The confusion matrix's header names every class whole (`automobile` has 10 letters).
    let header = text.lines().skip_while(|l| !l.starts_with("Mean confusion")).nth(1).unwrap();
    assert!(test.classes.iter().all(|c| header.split_whitespace().any(|w| w == c)), "{header}");
    for section in [
        "epoch   1",
        "epoch   2",
        "mean accuracy",
        "bootstrap 95 % interval",
        "Mean confusion matrix",
        "weighted avg",
        "gaussian_noise",
        "mean corruption accuracy",
        "Sub-model fault tolerance",
        "conv1",
        "fc",
    ] {
        assert!(text.contains(section), "missing `{section}` in\n{text}");
    }
    assert_eq!(std::fs::read_to_string(out.join("results.txt")).unwrap(), text);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json, report.json);
    assert_eq!(json["summary"]["checkpoints"], 2);
    assert_eq!(json["checkpoints"].as_array().unwrap().len(), 2);
    assert_eq!(json["corruptions"].as_array().unwrap().len(), 6);
    assert_eq!(json["submodel_faults"].as_array().unwrap().len(), 3);
    for png in ["learning_curves.png", "corruptions.png"] {
        assert!(std::fs::read(out.join(png)).unwrap().starts_with(b"\x89PNG"), "{png}");
    }
    let e = robustness_report(&RobustnessConfig { run: root.join("nothing"), ..rc }, &test).err().unwrap().to_string();
    assert!(e.contains("nothing"), "{e}");
}
