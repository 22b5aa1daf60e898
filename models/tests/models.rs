//! Architectures: torchvision's parameter counts and names, sub-model partitions, forward shapes.
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::{build, build_at, granularities, Granularity, ModelError, MODELS};

fn count(name: &str, classes: usize) -> usize {
    build(name, classes, &Device::cpu(), 0).unwrap().param_count()
}

#[test]
fn parameter_counts_equal_torchvision() {
    assert_eq!(count("resnet50", 1000), 25_557_032);
    assert_eq!(count("alexnet", 1000), 61_100_840);
    assert_eq!(count("resnet18", 1000), 11_689_512);
    assert_eq!(count("resnet34", 1000), 21_797_672);
    // He et al.'s "0.27 M" ResNet-20 with 1×1 projection shortcuts (option B): 272,474, the
    // figure reference PyTorch CIFAR ResNet-20 implementations with option B report.
    assert_eq!(count("resnet20-cifar", 10), 272_474);
}

#[test]
fn names_follow_torchvision() {
    let cpu = Device::cpu();
    let r50 = build("resnet50", 10, &cpu, 0).unwrap();
    let names: Vec<String> = r50.net.named_params().into_iter().map(|(n, _)| n).collect();
    for expected in ["conv1.weight", "bn1.weight", "layer3.2.conv2.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.bias", "fc.weight", "fc.bias"] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    let buffers: Vec<String> = r50.net.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert!(buffers.iter().any(|n| n == "layer1.0.downsample.1.running_mean"));
    assert!(buffers.iter().any(|n| n == "bn1.num_batches_tracked"));
    let alex = build("alexnet-cifar", 10, &cpu, 0).unwrap();
    let names: Vec<String> = alex.net.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.first().map(String::as_str), Some("features.0.weight"));
    assert_eq!(names.last().map(String::as_str), Some("classifier.6.bias"));
}

#[test]
fn every_parameter_belongs_to_exactly_one_sub_model() {
    for info in MODELS.iter().filter(|m| m.input == 32) {
        let model = build(info.name, 10, &Device::cpu(), 0).unwrap();
        for (name, _) in model.net.named_params() {
            let owners: Vec<&str> = model.submodels.iter().filter(|s| s.owns(&name)).map(|s| s.name.as_str()).collect();
            assert_eq!(owners.len(), 1, "{}: {name} owned by {owners:?}", info.name);
        }
        // A chain: each sub-model depends on the one before it.
        for pair in model.submodels.windows(2) {
            assert_eq!(pair[1].deps, vec![pair[0].name.clone()]);
        }
    }
}

#[test]
fn cifar_models_map_32px_images_to_logits() {
    let cpu = Device::cpu();
    let x = Var::constant(Tensor::zeros(&[2, 3, 32, 32], &cpu).unwrap());
    for info in MODELS.iter().filter(|m| m.input == 32) {
        let model = build(info.name, 10, &cpu, 0).unwrap();
        model.net.set_training(false);
        let y = no_grad(|| model.net.forward(&x)).unwrap();
        assert_eq!(y.shape(), &[2, 10], "{}", info.name);
    }
}

#[test]
fn unknown_models_are_clear_errors() {
    let err = build("resnet51", 10, &Device::cpu(), 0).err().unwrap();
    assert!(matches!(err, ModelError::Unknown { .. }));
    let msg = err.to_string();
    assert!(msg.contains("unknown model `resnet51`") && msg.contains("resnet20-cifar"), "{msg}");
    assert!(build("alexnet", 0, &Device::cpu(), 0).err().unwrap().to_string().contains("num_classes"));
}

#[test]
fn sub_model_costs_add_up_to_the_known_totals() {
    let cpu = Device::cpu();
    let r50 = build("resnet50", 1000, &cpu, 0).unwrap();
    let costs = r50.stage_costs(224).unwrap();
    let macs: f64 = costs.iter().map(|c| c.flops / 2.0).sum();
    // torchvision resnet50: 4.09 G multiply-adds at 224 px (convolutions and fc).
    assert!((4.05e9..4.15e9).contains(&macs), "resnet50 MACs {macs:e}");
    assert_eq!(costs.iter().map(|c| c.params).sum::<usize>(), 25_557_032);
    assert_eq!(costs[4].output, vec![1, 2048, 7, 7], "layer4 output");
    let alex = build("alexnet", 1000, &cpu, 0).unwrap();
    let macs: f64 = alex.stage_costs(224).unwrap().iter().map(|c| c.flops / 2.0).sum();
    assert!((0.70e9..0.73e9).contains(&macs), "alexnet MACs {macs:e}");
}

#[test]
fn chaining_the_stages_equals_the_forward_pass_at_every_granularity() {
    let cpu = Device::cpu();
    let x = Var::constant(Tensor::from_vec((0..2 * 3 * 32 * 32).map(|i| (i % 17) as f32 / 17.0).collect(), &[2, 3, 32, 32], &cpu).unwrap());
    for name in ["simple-cnn", "resnet20-cifar", "alexnet-cifar"] {
        for &g in granularities(name) {
            let model = build_at(name, 10, &cpu, 0, g).unwrap();
            model.net.set_training(false);
            let whole = no_grad(|| model.net.forward(&x)).unwrap().value().to_vec().unwrap();
            let staged = (0..model.submodels.len()).try_fold(x.clone(), |h, i| no_grad(|| model.forward_stage(i, &h))).unwrap();
            assert_eq!(staged.value().to_vec().unwrap(), whole, "{name} at {g}");
            // Every parameter in exactly one sub-model; dependencies name earlier sub-models.
            for (param, _) in model.net.named_params() {
                let owners: Vec<&str> = model.submodels.iter().filter(|s| s.owns(&param)).map(|s| s.name.as_str()).collect();
                assert_eq!(owners.len(), 1, "{name} at {g}: {param} owned by {owners:?}");
            }
            for (i, sub) in model.submodels.iter().enumerate() {
                assert!(sub.deps.iter().all(|d| model.submodels[..i].iter().any(|s| &s.name == d)), "{name} at {g}: {} depends on {:?}", sub.name, sub.deps);
            }
            assert_eq!(model.cuts.len(), model.submodels.len() + 1);
        }
    }
}

#[test]
fn granularities_cut_where_they_say() {
    let cpu = Device::cpu();
    let names = |g: Granularity, model: &str| -> Vec<String> { build_at(model, 10, &cpu, 0, g).unwrap().submodels.into_iter().map(|s| s.name).collect() };
    assert_eq!(names(Granularity::Stage, "resnet20-cifar"), ["stem", "layer1", "layer2", "layer3", "fc"]);
    let blocks = names(Granularity::Block, "resnet20-cifar");
    assert_eq!(blocks.len(), 11);
    assert_eq!((blocks[1].as_str(), blocks[9].as_str()), ("layer1.0", "layer3.2"));
    assert_eq!(names(Granularity::Layer, "alexnet-cifar"), ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]);
    // Branch: each block's residual branch, and its projection shortcut where it has one.
    let r20 = build_at("resnet20-cifar", 10, &cpu, 0, Granularity::Branch).unwrap();
    let sub = |n: &str| r20.submodels.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n}"));
    assert_eq!(r20.submodels.len(), 1 + 9 + 2 + 1);
    assert_eq!(sub("layer2.0.shortcut").prefixes, ["layer2.0.downsample"]);
    assert_eq!(sub("layer2.0.body").prefixes, ["layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2", "layer2.0.bn2"]);
    // What a block reads is the sum of the previous block's branch and shortcut ...
    assert_eq!(sub("layer2.1.body").deps, ["layer2.0.body", "layer2.0.shortcut"]);
    // ... or, past an identity shortcut, that block's branch and whatever fed it.
    assert_eq!(sub("layer1.1.body").deps, ["layer1.0.body", "stem"]);
    assert_eq!(sub("fc").deps, ["layer3.2.body", "layer3.1.body", "layer3.0.body", "layer3.0.shortcut"]);
    let e = build_at("alexnet-cifar", 10, &cpu, 0, Granularity::Branch).err().unwrap().to_string();
    assert!(e.contains("alexnet-cifar has no branch granularity; it has: stage, layer"), "{e}");
}

/// airbench94 as the paper builds it: 1,972,792 parameters at 10 classes (whitening conv 312,
/// conv groups 50,944 + 738,304 + 1,180,672, head 2,560); batch-norm scales frozen at 1;
/// each 3×3 convolution's first `in` filters identities; five sub-models in a chain.
#[test]
fn airbench94_has_the_papers_shape() {
    let model = build("airbench94", 10, &Device::cpu(), 0).unwrap();
    assert_eq!(model.param_count(), 312 + 50_944 + 738_304 + 1_180_672 + 2_560);
    let names: Vec<&str> = model.submodels.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["whiten", "block1", "block2", "block3", "head"]);
    let params = model.net.named_params();
    let frozen: Vec<&str> = params.iter().filter(|(_, p)| !p.requires_grad()).map(|(n, _)| n.as_str()).collect();
    assert_eq!(frozen, ["4.weight", "7.weight", "11.weight", "14.weight", "18.weight", "21.weight"], "the batch-norm scales");
    let (_, conv) = params.iter().find(|(n, _)| n == "9.weight").unwrap(); // block2's first conv, 64 → 256
    let w = conv.value().to_vec().unwrap();
    for o in [0, 63] {
        let filter = &w[o * 64 * 9..(o + 1) * 64 * 9];
        assert!(filter.iter().enumerate().all(|(i, &v)| v == if i == o * 9 + 4 { 1.0 } else { 0.0 }), "filter {o} is the identity");
    }
    assert!(w[64 * 64 * 9..].iter().any(|&v| v != 0.0), "filters past the inputs keep their random start");
}
