//! Strategies on a branching sub-model graph (resnet20-cifar at branch granularity, where a
//! block's residual branch and its projection shortcut are sub-models of their own): fc's
//! depth- and breadth-first orders differ and equal the hand-derived sequences, and local-fc
//! with k = 1 trains exactly a sub-model and its graph neighbours, shortcut included.
use std::collections::BTreeSet;
use std::sync::Arc;
use tessera_engine::Device;
use tessera_models::{build_at, Granularity, Model};
use tessera_scheduler::data::{synthetic, Dataset};
use tessera_scheduler::strategy::fc::{graph_order, Order};
use tessera_scheduler::strategy::local_fc::neighbourhood;
use tessera_scheduler::strategy::{self, RunSpec, StrategyOptions};
use tessera_scheduler::trainer::OptimConfig;

fn branchy() -> Model {
    build_at("resnet20-cifar", 2, &Device::cpu(), 7, Granularity::Branch).unwrap()
}

fn index(model: &Model, name: &str) -> usize {
    model.submodels.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no sub-model {name}"))
}

fn names(model: &Model, order: &[usize]) -> Vec<String> {
    order.iter().map(|&i| model.submodels[i].name.clone()).collect()
}

#[test]
fn dfs_and_bfs_differ_on_a_branching_graph_as_derived_by_hand() {
    let model = branchy();
    // Stage 2: layer2.0's shortcut and branch both read layer1's output; layer2.1 reads their
    // sum; layer2.2 reads layer2.1's branch plus (identity) layer2.0's sum.
    let nodes: Vec<usize> = ["layer2.0.shortcut", "layer2.0.body", "layer2.1.body", "layer2.2.body"].iter().map(|n| index(&model, n)).collect();
    // Depth-first from the first root: the shortcut, down to layer2.2, then the other root.
    assert_eq!(names(&model, &graph_order(&model, &nodes, Order::Dfs)), ["layer2.0.shortcut", "layer2.1.body", "layer2.2.body", "layer2.0.body"]);
    // Breadth-first: both roots, then their dependents.
    assert_eq!(names(&model, &graph_order(&model, &nodes, Order::Bfs)), ["layer2.0.shortcut", "layer2.0.body", "layer2.1.body", "layer2.2.body"]);
    // Over the whole graph the two orders differ too, and each visits every sub-model once.
    let all: Vec<usize> = (0..model.submodels.len()).collect();
    let (dfs, bfs) = (graph_order(&model, &all, Order::Dfs), graph_order(&model, &all, Order::Bfs));
    assert_ne!(dfs, bfs);
    assert_eq!(dfs.iter().copied().collect::<BTreeSet<_>>(), all.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(bfs.len(), all.len());
    // Along a chain (stage granularity) they agree: what made --order moot before.
    let chain = build_at("resnet20-cifar", 2, &Device::cpu(), 7, Granularity::Stage).unwrap();
    let all: Vec<usize> = (0..chain.submodels.len()).collect();
    assert_eq!(graph_order(&chain, &all, Order::Dfs), graph_order(&chain, &all, Order::Bfs));
}

#[test]
fn local_fc_with_one_hop_trains_a_sub_model_and_its_graph_neighbours() {
    let model = branchy();
    let centre = index(&model, "layer2.1.body");
    let expected = ["layer2.0.body", "layer2.0.shortcut", "layer2.1.body", "layer2.2.body", "layer3.0.shortcut", "layer3.0.body"];
    let got: BTreeSet<String> = names(&model, &neighbourhood(&model, centre, 1)).into_iter().collect();
    assert_eq!(got, expected.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());

    // Trained for real: the first stage's centre is the most important sub-model; exactly it
    // and its neighbours change, the shortcut among them when the centre reads it.
    let train: Dataset = Arc::new(synthetic(32, 2, 32, 1));
    let test: Dataset = Arc::new(synthetic(16, 2, 32, 2));
    let handles: Vec<(String, Vec<Arc<tessera_engine::nn::Param>>)> =
        model.submodels.iter().map(|s| (s.name.clone(), model.params_of(s).into_iter().map(|(_, p)| p).collect())).collect();
    let snapshot = |h: &[(String, Vec<Arc<tessera_engine::nn::Param>>)]| -> Vec<Vec<f32>> {
        h.iter().map(|(_, ps)| ps.iter().flat_map(|p| p.value().to_vec().unwrap()).collect()).collect()
    };
    let before = snapshot(&handles);
    let neighbourhoods: Vec<Vec<usize>> = (0..model.submodels.len()).map(|c| neighbourhood(&model, c, 1)).collect();
    let sub_names: Vec<String> = model.submodels.iter().map(|s| s.name.clone()).collect();
    let mut changed = Vec::new();
    let mut s = strategy::by_name("local-fc", &StrategyOptions { neighbors: 1, ..Default::default() }).unwrap();
    let spec = RunSpec { epochs: 13, batch: 16, seed: 3, ..RunSpec::default() };
    let run = strategy::run(s.as_mut(), model, Device::cpu(), &train, &test, &spec, &OptimConfig::default().with_lr(0.05), &mut |_| {
        if changed.is_empty() {
            let now = snapshot(&handles);
            changed = (0..handles.len()).filter(|&i| now[i] != before[i]).collect::<Vec<_>>();
        }
    })
    .unwrap();
    let centre_name = run.epochs[0].stage.split(" (+").next().unwrap().to_string();
    let centre = sub_names.iter().position(|n| *n == centre_name).unwrap();
    assert_eq!(changed, neighbourhoods[centre], "stage {} trained {:?}", run.epochs[0].stage, changed.iter().map(|&i| &sub_names[i]).collect::<Vec<_>>());
    // Some stage centres on a sub-model that reads a projection shortcut: it trains too.
    let reads_shortcut = run.epochs.iter().any(|e| {
        let c = sub_names.iter().position(|n| *n == e.stage.split(" (+").next().unwrap()).unwrap();
        neighbourhoods[c].iter().any(|&i| sub_names[i].ends_with(".shortcut"))
    });
    assert!(reads_shortcut, "no stage's neighbourhood held a shortcut: {:?}", run.epochs.iter().map(|e| &e.stage).collect::<Vec<_>>());
}
