//! Layer importance, loss correlation: the numbers on hand-made cases, and the files written.
use std::collections::HashMap;
use std::sync::Arc;
use tessera_engine::checkpoint::{save, Checkpoint};
use tessera_engine::{Device, Tensor};
use tessera_scheduler::correlation::{loss_correlation, pearson};
use tessera_scheduler::data::{synthetic, Dataset};
use tessera_scheduler::importance::{linear_importance, network_dot, render};

#[test]
fn importance_ranks_inputs_by_mean_absolute_weight() {
    let dir = std::env::temp_dir().join(format!("tessera-importance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = Device::cpu();
    // Inputs 0 and 2 have mean |W| 2, input 1 has 0.5; conv weights (rank 4) are not Linear.
    let w = Tensor::from_vec(vec![1.0, 0.5, -2.0, 3.0, -0.5, 2.0], &[2, 3], &cpu).unwrap();
    let conv = Tensor::zeros(&[2, 1, 3, 3], &cpu).unwrap();
    let path = dir.join("w.safetensors");
    save(&path, &[("fc.weight".into(), w), ("conv.weight".into(), conv)], &HashMap::new()).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    let layers = linear_importance(&ckpt, &["conv.weight".into(), "fc.weight".into()]);
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0].scores, vec![2.0, 0.5, 2.0]);
    assert_eq!(layers[0].ranking(), vec![0, 2, 1]);
    assert!((layers[0].share_below(0.5) - 1.0 / 3.0).abs() < 1e-6);

    let dot = network_dot("toy", &[("body".into(), 18), ("fc".into(), 6)], &layers, &[1], 2);
    assert!(dot.contains("u0_0 -> l0") && dot.contains("u0_2 -> l0") && dot.contains("1 more") && dot.contains("s0 -> s1"), "{dot}");
    // Colours spread over the layer's range: its strongest inputs red, its weakest grey.
    assert!(dot.contains("u0_0 -> l0 [color=\"#ff0000\"") && dot.contains("r0 -> l0 [color=\"#a0a0a0\""), "{dot}");
    // Three drawn inputs spread over the whole scale: red, halfway, grey.
    let spread = tessera_scheduler::importance::LayerImportance { name: "w".into(), outputs: 1, scores: vec![0.3, 0.2, 0.1] };
    let dot3 = network_dot("toy", &[("fc".into(), 3)], &[spread], &[0], 3);
    assert!(
        dot3.contains("u0_0 -> l0 [color=\"#ff0000\"") && dot3.contains("u0_1 -> l0 [color=\"#cf5050\"") && dot3.contains("u0_2 -> l0 [color=\"#a0a0a0\""),
        "{dot3}"
    );
    let record = layers[0].record(2);
    assert_eq!((record["weakest_input"].as_u64(), record["top"].as_array().map(Vec::len)), (Some(1), Some(2)));
    let dot_path = dir.join("net.dot");
    std::fs::write(&dot_path, dot).unwrap();
    let svg = dir.join("net.svg");
    // .ci/install-deps installs Graphviz: its absence is a failure, not a skip.
    assert!(render(&dot_path, &svg).unwrap(), "Graphviz's `dot` did not run: install graphviz (.ci/install-deps does)");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn pearson_correlation_of_known_series() {
    let a = [1.0, 2.0, 3.0, 4.0];
    assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-6);
    assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-6);
    assert_eq!(pearson(&a, &[5.0; 4]), 0.0);
    assert!(pearson(&a, &[1.0, -1.0, -1.0, 1.0]).abs() < 1e-6);
}

#[test]
fn loss_correlation_has_a_head_per_boundary() {
    let device = Device::cpu();
    let model = tessera_models::build("simple-cnn", 2, &device, 1).unwrap();
    let (train, test): (Dataset, Dataset) = (Arc::new(synthetic(64, 2, 32, 1)), Arc::new(synthetic(40, 2, 32, 2)));
    let c = loss_correlation(&model, &train, &test, &device, 0).unwrap();
    assert_eq!(c.heads, vec!["after conv1", "after conv2", "fc (model head)"]);
    assert!(c.losses.iter().all(|l| l.len() == 40 && l.iter().all(|v| v.is_finite() && *v >= 0.0)));
    for (i, row) in c.pearson.iter().enumerate() {
        assert!((row[i] - 1.0).abs() < 1e-5);
        for (j, v) in row.iter().enumerate() {
            assert!((v - c.pearson[j][i]).abs() < 1e-6 && v.abs() <= 1.0 + 1e-6);
        }
    }
    // The bands are easy: a probe on the first convolution's pooled features learns them.
    assert!(c.accuracy[1] > 0.8, "{:?}", c.accuracy);
}
