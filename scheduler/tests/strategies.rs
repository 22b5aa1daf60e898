//! Each strategy's mechanism on simple-cnn (conv1 → conv2 → fc) and a small synthetic set:
//! which sub-models' parameters changed and which did not, epoch by epoch, and that frozen
//! parts ran no backward work (GEMM FLOPs of the backward pass, counted exactly).
use std::collections::HashMap;
use std::sync::Arc;
use tessera_engine::nn::Param;
use tessera_engine::Device;
use tessera_scheduler::data::{synthetic, Dataset};
use tessera_scheduler::strategy::{self, dynamic::Criterion, dynamic::Dynamic, EpochRecord, RunSpec, StrategyOptions, StrategyRun};
use tessera_scheduler::trainer::OptimConfig;

const CLASSES: usize = 2;
const IMAGES: usize = 64;
const BATCH: usize = 16;
/// The fc layer's weight gradient alone: 2 FLOPs per multiply-add of [classes, batch]·[batch, 4096].
const FC_DW_PER_IMAGE: f64 = 2.0 * (CLASSES * 4096) as f64;

fn data() -> (Dataset, Dataset) {
    (Arc::new(synthetic(IMAGES, CLASSES, 32, 1)), Arc::new(synthetic(32, CLASSES, 32, 2)))
}

fn settings(epochs: usize) -> RunSpec {
    RunSpec { epochs, batch: BATCH, seed: 3, ..RunSpec::default() }
}

/// SGD at 0.05 (momentum 0.9, weight decay 5e-4).
fn optim() -> OptimConfig {
    OptimConfig::default().with_lr(0.05)
}

/// Each sub-model's name and parameter handles (they stay valid while the model trains).
type Handles = Vec<(String, Vec<Arc<Param>>)>;

/// A fresh simple-cnn and its handles.
fn model_and_handles() -> (tessera_models::Model, Handles) {
    let model = tessera_models::build("simple-cnn", CLASSES, &Device::cpu(), 7).unwrap();
    let handles = model.submodels.iter().map(|s| (s.name.clone(), model.params_of(s).into_iter().map(|(_, p)| p).collect())).collect();
    (model, handles)
}

fn values(handles: &Handles) -> HashMap<String, Vec<f32>> {
    handles.iter().map(|(n, ps)| (n.clone(), ps.iter().flat_map(|p| p.value().to_vec().unwrap()).collect())).collect()
}

/// Runs `name` and returns the run and, per epoch, the set of sub-models whose weights changed.
fn train(name: &str, options: &StrategyOptions, epochs: usize) -> (StrategyRun, Vec<Vec<String>>) {
    train_strategy(strategy::by_name(name, options).unwrap().as_mut(), epochs)
}

/// [`train`] with a strategy the caller keeps (to read its state afterwards).
fn train_strategy(s: &mut dyn strategy::Strategy, epochs: usize) -> (StrategyRun, Vec<Vec<String>>) {
    let (train, test) = data();
    let (model, handles) = model_and_handles();
    let mut before = values(&handles);
    let mut changed = Vec::new();
    let run = strategy::run(s, model, Device::cpu(), &train, &test, &settings(epochs), &optim(), &mut |_: &EpochRecord| {
        let now = values(&handles);
        let mut moved: Vec<String> = now.iter().filter(|(n, v)| before[*n] != **v).map(|(n, _)| n.clone()).collect();
        moved.sort();
        changed.push(moved);
        before = now;
    })
    .unwrap();
    (run, changed)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn full_trains_everything_with_the_full_backward() {
    let (run, changed) = train("full", &StrategyOptions::default(), 2);
    assert_eq!(changed, vec![names(&["conv1", "conv2", "fc"]); 2]);
    assert!(run.epochs.iter().all(|e| e.stage == "all" && e.trainable_params == run.epochs[0].trainable_params));
    assert!(run.epochs[0].backward_flops > 100.0 * FC_DW_PER_IMAGE * IMAGES as f64);
}

#[test]
fn fc_trains_only_the_head_on_cached_features() {
    let (run, changed) = train("fc", &StrategyOptions::default(), 2);
    // simple-cnn has one FC sub-model: a stage for it, then the fine-tuning of all FC ones.
    assert_eq!(changed, vec![names(&["fc"]); 2]);
    assert_eq!(run.epochs.iter().map(|e| e.stage.as_str()).collect::<Vec<_>>(), ["fc", "fc"]);
    for e in &run.epochs {
        // No convolution ran backward: only fc's weight gradient (its input is a constant).
        assert_eq!(e.backward_flops, FC_DW_PER_IMAGE * IMAGES as f64, "epoch {}", e.epoch);
    }
    // The backbone ran forward once (the cache), not every epoch.
    assert!(run.epochs[0].forward_flops > 10.0 * run.epochs[1].forward_flops);
}

#[test]
fn local_fc_trains_one_sub_model_and_its_neighbours_per_stage() {
    let alone = StrategyOptions { neighbors: 0, ..Default::default() };
    let (run, changed) = train("local-fc", &alone, 3);
    // Every sub-model gets one stage, alone.
    assert!(changed.iter().all(|c| c.len() == 1), "{changed:?}");
    let mut visited: Vec<String> = changed.iter().flatten().cloned().collect();
    visited.sort();
    assert_eq!(visited, names(&["conv1", "conv2", "fc"]));
    // The order is the RMS gradient per sub-model on the first batch, largest first, computed
    // here independently; the stages visit the sub-models in that order.
    let want = importance_order();
    let noted: Vec<String> =
        run.notes[0].strip_prefix("importance order (RMS gradient): ").unwrap().split(", ").map(|e| e.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(noted, want, "{}", run.notes[0]);
    assert_eq!(changed, want.iter().map(|n| vec![n.clone()]).collect::<Vec<_>>());
    let (_, changed) = run_neighbours();
    // conv2 with one hop trains conv1 and fc too; conv1 or fc bring only conv2.
    for c in changed {
        assert!(c.len() >= 2 && (c.contains(&"conv2".to_string())), "{c:?}");
    }
}

/// Sub-models by RMS gradient (‖∇‖₂ / √parameters) on the run's first batch, largest first.
fn importance_order() -> Vec<String> {
    use tessera_engine::{autograd as ag, Tensor, Var};
    use tessera_scheduler::data::{Loader, LoaderSpec};
    let (train, _) = data();
    let (model, handles) = model_and_handles();
    let b = Loader::new(&train, &LoaderSpec::train(BATCH, 3, 0)).unwrap().next().unwrap().unwrap();
    let logits = model.net.forward(&Var::constant(Tensor::from_vec(b.x, &b.shape, &Device::cpu()).unwrap())).unwrap();
    ag::cross_entropy(&logits, &b.labels).unwrap().backward().unwrap();
    let mut rms: Vec<(String, f64)> = handles
        .iter()
        .map(|(name, params)| {
            let (mut sq, mut n) = (0f64, 0usize);
            for p in params {
                let g = p.grad().unwrap().to_vec().unwrap();
                sq += g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
                n += g.len();
            }
            (name.clone(), sq.sqrt() / (n as f64).sqrt())
        })
        .collect();
    rms.sort_by(|a, b| b.1.total_cmp(&a.1));
    rms.into_iter().map(|(n, _)| n).collect()
}

fn run_neighbours() -> (StrategyRun, Vec<Vec<String>>) {
    train("local-fc", &StrategyOptions { neighbors: 1, ..Default::default() }, 3)
}

#[test]
fn dynamic_freezes_front_to_back_and_drops_their_backward_work() {
    // A threshold no change can miss: each window end freezes the next sub-model.
    let eager = StrategyOptions { criterion: Criterion::GradNorm, threshold: 1e9, window: 2, ..Default::default() };
    let (run, changed) = train("dynamic", &eager, 3);
    // 4 steps per epoch: conv1 freezes at step 4 (2nd window end), conv2 at step 6; fc never.
    assert_eq!(changed[0], names(&["conv1", "conv2", "fc"]));
    assert_eq!(changed[1], names(&["conv2", "fc"]));
    assert_eq!(changed[2], names(&["fc"]));
    assert_eq!(run.epochs[2].stage, "frozen: conv1,conv2");
    assert_eq!(run.epochs[2].backward_flops, FC_DW_PER_IMAGE * IMAGES as f64, "only fc's weight gradient is left");
    assert!(run.notes.len() == 2 && run.notes[0].starts_with("conv1 froze at step 4"), "{:?}", run.notes);

    let never = StrategyOptions { threshold: 0.0, window: 2, ..eager.clone() };
    let (run, changed) = train("dynamic", &never, 2);
    assert!(run.notes.is_empty() && changed.iter().all(|c| c.len() == 3));

    // A threshold between measured window changes freezes conv1 exactly at the window whose
    // change falls below it. Unfrozen, conv1's changes are c₁, c₂, …; at the smallest, cⱼ, a
    // threshold between cⱼ and every earlier change freezes it at that window, and one just
    // under cⱼ never does.
    let mut watch = Dynamic::new(Criterion::GradNorm, 0.0, 2);
    train_strategy(&mut watch, 3);
    let conv1: Vec<(usize, f32)> = watch.window_changes().iter().filter(|(_, n, _)| n == "conv1").map(|&(s, _, c)| (s, c)).collect();
    assert!(conv1.len() >= 4, "{conv1:?}");
    let j = (0..conv1.len()).min_by(|&a, &b| conv1[a].1.total_cmp(&conv1[b].1)).unwrap();
    let above = conv1[..j].iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
    let between = if above.is_finite() { (conv1[j].1 + above) / 2.0 } else { conv1[j].1 * 1.01 };
    let mut at = Dynamic::new(Criterion::GradNorm, between, 2);
    let (run, _) = train_strategy(&mut at, 3);
    assert!(
        run.notes.first().is_some_and(|n| n.starts_with(&format!("conv1 froze at step {} ", conv1[j].0))),
        "threshold {between} on {conv1:?}: {:?}",
        run.notes
    );
    let mut under = Dynamic::new(Criterion::GradNorm, conv1[j].1 * 0.99, 2);
    let (run, _) = train_strategy(&mut under, 3);
    assert!(!run.notes.iter().any(|n| n.starts_with("conv1 froze")), "threshold just under every change {conv1:?}: {:?}", run.notes);

    let by_activation = StrategyOptions { criterion: Criterion::ActivationVariance, ..eager.clone() };
    let (run, _) = train("dynamic", &by_activation, 2);
    assert!(run.notes[0].starts_with("conv1 froze"), "{:?}", run.notes);

    // FreezeOut: conv1 anneals to zero first and is frozen by the SGD.
    let freezeout = StrategyOptions { criterion: Criterion::FreezeOut, ..Default::default() };
    let (run, changed) = train("dynamic", &freezeout, 4);
    assert_eq!(changed[3], names(&["fc"]), "{changed:?}");
    assert!(run.epochs[3].stage.starts_with("frozen: conv1"), "{}", run.epochs[3].stage);
}

#[test]
fn balanced_adapts_the_head_weights() {
    let (run, changed) = train("balanced", &StrategyOptions { gamma: 0.05, ..Default::default() }, 2);
    assert_eq!(changed, vec![names(&["conv1", "conv2", "fc"]); 2]);
    let weights: Vec<f32> = run.notes[0].split(": ").nth(1).unwrap().split(", ").map(|w| w.parse().unwrap()).collect();
    assert_eq!(weights.len(), 3, "two auxiliary heads and the final one");
    assert!((weights.iter().sum::<f32>() - 3.0).abs() < 1e-3, "{weights:?}");
    assert!(weights.iter().any(|w| (w - 1.0).abs() > 1e-3), "the weights moved: {weights:?}");
}

#[test]
fn coupled_alternates_front_and_back() {
    let (run, changed) = train("coupled", &StrategyOptions { split: Some(1), ..Default::default() }, 3);
    assert_eq!(changed, vec![names(&["conv2", "fc"]), names(&["conv1"]), names(&["conv2", "fc"])]);
    assert_eq!(run.epochs[1].stage, "front: conv1");
    // Training the front needs no weight gradient of the back, only its input gradients.
    assert!(run.epochs[1].backward_flops < run.epochs[0].backward_flops * 2.0);
}

#[test]
fn random_trains_a_fresh_seeded_subset_each_period_and_frozen_parts_run_no_backward() {
    use tessera_scheduler::strategy::random::Random;
    // A third of simple-cnn's 3 sub-models: one trains per epoch, drawn from the run's seed.
    let one = StrategyOptions { fraction: 0.34, ..Default::default() };
    let (run, changed) = train("random", &one, 6);
    let subs = ["conv1", "conv2", "fc"];
    let drawn: Vec<Vec<String>> = (1..=6).map(|e| Random::subset(3, e, 3, 0.34).iter().map(|&i| subs[i].to_string()).collect()).collect();
    assert_eq!(changed, drawn, "each epoch exactly its drawn sub-model trains");
    assert!(drawn.windows(2).any(|w| w[0] != w[1]), "six draws, all the same: {drawn:?}");
    assert!(drawn.iter().any(|d| d == &["fc"]), "seed 3 draws fc alone at least once: {drawn:?}");
    assert_eq!(run.epochs.iter().map(|e| e.stage.clone()).collect::<Vec<_>>(), drawn.iter().map(|d| d.join("+")).collect::<Vec<_>>());
    for (e, d) in run.epochs.iter().zip(&drawn) {
        if d == &["fc"] {
            // Only fc's weight gradient: the frozen convolutions ran no backward kernel.
            assert_eq!(e.backward_flops, FC_DW_PER_IMAGE * IMAGES as f64, "epoch {}", e.epoch);
        }
    }
    // Same seed, same draws; another seed, other draws (over 20 draws of 3 subsets).
    let draws = |seed| (0..20).map(|d| Random::subset(seed, d, 3, 0.34)).collect::<Vec<_>>();
    assert_eq!(draws(3), draws(3));
    assert_ne!(draws(3), draws(4));
    // Every 2 steps (4 steps per epoch): the epoch's label starts from the draw of its first
    // period, and a run changes several subsets within one epoch.
    let periodic = StrategyOptions { fraction: 0.34, period: Some(2), ..Default::default() };
    let (run, changed) = train("random", &periodic, 2);
    assert!(run.epochs[0].stage.starts_with("every 2 steps, from "), "{}", run.epochs[0].stage);
    let within: Vec<Vec<usize>> = (0..2).map(|d| Random::subset(3, d, 3, 0.34)).collect();
    let expected: std::collections::BTreeSet<&str> = within.iter().flatten().map(|&i| subs[i]).collect();
    let moved: std::collections::BTreeSet<&str> = changed[0].iter().map(String::as_str).collect();
    assert_eq!(moved, expected, "epoch 1 trains the subsets of its two periods");
}

/// A 2-epoch comparison of simple-cnn with `strategies` into `out`.
fn compare_config(strategies: &[&str], out: &std::path::Path) -> tessera_scheduler::compare::CompareConfig {
    tessera_scheduler::compare::CompareConfig {
        model: "simple-cnn".into(),
        strategies: names(strategies),
        settings: settings(2),
        optim: optim(),
        options: StrategyOptions::default(),
        device: "cpu".into(),
        init: None,
        out: out.to_path_buf(),
        repeat: 1,
        seeds: Vec::new(),
        holdout: false,
        granularity: Default::default(),
        world: Default::default(),
        layout: None,
        watch: Default::default(),
    }
}

#[test]
fn compare_over_seeds_runs_each_seed_and_reports_the_spread() {
    use tessera_scheduler::compare::{compare, CompareConfig};
    let (train, test) = data();
    let out = std::env::temp_dir().join(format!("tessera-compare-seeds-{}", std::process::id()));
    let cfg = CompareConfig {
        options: StrategyOptions { fraction: 0.34, ..Default::default() },
        repeat: 3,
        seeds: vec![11, 12, 13],
        ..compare_config(&["full", "random"], &out)
    };
    let rows = compare(&cfg, &train, &test, &mut |_, _| {}).unwrap();
    // Repeat k is seed k's run: full alone from seed 12 gives the same losses as repeat 1.
    let runs: Vec<tessera_scheduler::compare::Interleaved> = serde_json::from_str(&std::fs::read_to_string(out.join("runs.json")).unwrap()).unwrap();
    let seeded = RunSpec { seed: 12, ..settings(2) };
    let model = tessera_models::build("simple-cnn", CLASSES, &Device::cpu(), 12).unwrap();
    let alone = strategy::run(strategy::by_name("full", &cfg.options).unwrap().as_mut(), model, Device::cpu(), &train, &test, &seeded, &cfg.optim, &mut |_| {})
        .unwrap();
    let losses = |run: &StrategyRun| run.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&runs[1].runs[0]), losses(&alone));
    assert_ne!(losses(&runs[0].runs[0]), losses(&runs[1].runs[0]), "seeds 11 and 12 ran alike");
    // The accuracy over seeds: mean ± std of the three runs, an interval inside their range.
    for (i, row) in rows.iter().enumerate() {
        let values: Vec<f64> = runs.iter().map(|r| r.runs[i].test_accuracy as f64).collect();
        assert_eq!(row.accuracy.n, 3);
        assert!((row.accuracy.mean - values.iter().sum::<f64>() / 3.0).abs() < 1e-9);
        let seeds = row.seeds.expect("a comparison over seeds");
        let (lo, hi) = (values.iter().copied().fold(1.0, f64::min), values.iter().copied().fold(0.0, f64::max));
        assert!(lo - 1e-9 <= seeds.ci95.0 && seeds.ci95.0 <= seeds.ci95.1 && seeds.ci95.1 <= hi + 1e-9, "{seeds:?} outside {values:?}");
    }
    let random = rows[1].seeds.unwrap();
    let d = random.vs_full.expect("random against full");
    assert!((d - (rows[1].accuracy.mean - rows[0].accuracy.mean)).abs() < 1e-9);
    assert_eq!(random.beyond_spread, Some(d.abs() > rows[1].accuracy.std.max(rows[0].accuracy.std)));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("seeds [11, 12, 13]") && md.contains("mean ± std over seeds") && md.contains("the seed spread"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["seeds"], serde_json::json!([11, 12, 13]));
    assert!(json["strategies"][1]["beyond_seed_spread"].is_boolean());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn compare_writes_the_report() {
    use tessera_scheduler::compare::compare;
    let (train, test) = data();
    let out = std::env::temp_dir().join(format!("tessera-compare-{}", std::process::id()));
    let cfg = compare_config(&["full", "fc"], &out);
    let rows = compare(&cfg, &train, &test, &mut |_, _| {}).unwrap();
    // Taking turns changes nothing but the order: fc alone gets the same losses and hits.
    let model = tessera_models::build("simple-cnn", CLASSES, &Device::cpu(), cfg.settings.seed).unwrap();
    let mut fc = strategy::by_name("fc", &StrategyOptions::default()).unwrap();
    let alone = strategy::run(fc.as_mut(), model, Device::cpu(), &train, &test, &cfg.settings, &cfg.optim, &mut |_| {}).unwrap();
    let losses = |run: &StrategyRun| run.epochs.iter().map(|e| (e.train_loss, e.test_accuracy)).collect::<Vec<_>>();
    assert_eq!(losses(&rows[1].run), losses(&alone));
    assert_eq!(rows[1].run.sample_correct, alone.sample_correct);
    assert!((rows[0].backward_share - 1.0).abs() < 1e-9, "full is the reference: {}", rows[0].backward_share);
    assert!(rows[1].backward_share < 0.01);
    let (lo, hi) = rows[0].ci95;
    assert!(lo <= rows[0].run.test_accuracy && rows[0].run.test_accuracy <= hi);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| full |") && md.contains("| fc (dfs) |") && md.contains("bootstrap 95 % CI"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["strategies"].as_array().unwrap().len(), 2);
    // The curves start at the initial weights' measured accuracy, not an assumed chance level.
    let model = tessera_models::build("simple-cnn", CLASSES, &Device::cpu(), cfg.settings.seed).unwrap();
    let (_, initial) = tessera_scheduler::eval::evaluate(&model, &test, &cfg.settings.eval_loader(), &Device::cpu()).unwrap();
    assert_eq!(json["initial_test_accuracy"].as_f64().map(|v| v as f32), Some(initial));
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.contains("<svg"));
    let e = strategy::by_name("nope", &StrategyOptions::default()).err().unwrap().to_string();
    assert!(e.contains("unknown strategy `nope`") && e.contains("local-fc"), "{e}");
}
