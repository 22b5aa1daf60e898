//! SGD against torch.optim.SGD's update rule (written out below from its documentation) over
//! 10 steps, on both backends; FreezeOut's schedule and its freezing.
use rand::{rngs::StdRng, SeedableRng};
use tessera_engine::autograd as ag;
use tessera_engine::nn::{Linear, Module, Param};
use tessera_engine::ops::SgdHyper;
use tessera_engine::optim::{FreezeOut, LrSchedule, Optimizer, ParamGroup, Spacing};
use tessera_engine::{Device, Tensor, Var};
use tessera_tests::{gpu_devices, max_rel_err, random_vec};

/// torch.optim.SGD.step for one tensor, scalar by scalar.
fn torch_sgd_reference(p: &mut [f32], buf: &mut Option<Vec<f32>>, g: &[f32], lr: f32, h: SgdHyper) {
    let mut d: Vec<f32> = g.iter().zip(p.iter()).map(|(g, p)| g + h.weight_decay * p).collect();
    if h.momentum != 0.0 {
        let b = match buf.take() {
            None => d.clone(),
            Some(b) => b.iter().zip(&d).map(|(b, d)| h.momentum * b + (1.0 - h.dampening) * d).collect(),
        };
        d = if h.nesterov { d.iter().zip(&b).map(|(d, b)| d + h.momentum * b).collect() } else { b.clone() };
        *buf = Some(b);
    }
    p.iter_mut().zip(&d).for_each(|(p, d)| *p -= lr * d);
}

#[test]
fn sgd_matches_torch_update_rule_over_ten_steps() {
    let configs = [
        SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 1e-4, nesterov: false },
        SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true },
        SgdHyper { momentum: 0.5, dampening: 0.1, weight_decay: 0.0, nesterov: false },
        SgdHyper { momentum: 0.0, dampening: 0.0, weight_decay: 1e-2, nesterov: false },
    ];
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices());
    for dev in devices {
        for (ci, h) in configs.into_iter().enumerate() {
            let init = random_vec(37, ci as u64);
            let param = Param::new(Tensor::from_vec(init.clone(), &[37], &dev).unwrap());
            let mut sgd = Optimizer::new(vec![ParamGroup::new("all", vec![param.clone()])], 0.1, h);
            let (mut want, mut buf) = (init, None);
            for step in 0..10 {
                let g = random_vec(37, 1000 + step);
                // loss = Σ p·G, so dloss/dp = G.
                let gv = Var::constant(Tensor::from_vec(g.clone(), &[37], &dev).unwrap());
                ag::sum(&ag::mul(&param.var(), &gv).unwrap(), &[0], false).unwrap().backward().unwrap();
                sgd.step().unwrap();
                sgd.zero_grad();
                torch_sgd_reference(&mut want, &mut buf, &g, 0.1, h);
            }
            let err = max_rel_err(&param.value().to_vec().unwrap(), &want);
            assert!(err < 1e-5, "{dev} config {ci}: {err:e}");
        }
    }
}

/// torch.optim.SGD with two param groups, each with its own `lr` and `weight_decay` (airbench's
/// batch-norm biases and the rest): every group follows the rule with its own values.
#[test]
fn sgd_param_groups_have_their_own_lr_and_weight_decay() {
    let h = SgdHyper { momentum: 0.85, dampening: 0.0, weight_decay: 0.5, nesterov: true };
    // (lr_scale, weight_decay) per group; the rule's 0.5 must be overridden in both.
    let groups = [(64.0f32, 2e-5f32), (1.0, 1.3e-3)];
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices());
    for dev in devices {
        let inits: Vec<Vec<f32>> = (0..2).map(|i| random_vec(23, 50 + i)).collect();
        let params: Vec<_> = inits.iter().map(|v| Param::new(Tensor::from_vec(v.clone(), &[23], &dev).unwrap())).collect();
        let opt_groups = groups.iter().zip(&params).map(|(&(scale, wd), p)| ParamGroup::new("g", vec![p.clone()]).with_hyper(scale, wd)).collect();
        let mut sgd = Optimizer::new(opt_groups, 0.01, h);
        let mut want: Vec<(Vec<f32>, Option<Vec<f32>>)> = inits.iter().map(|v| (v.clone(), None)).collect();
        for step in 0..10 {
            for (i, p) in params.iter().enumerate() {
                let g = random_vec(23, 2000 + 10 * step + i as u64);
                let gv = Var::constant(Tensor::from_vec(g.clone(), &[23], &dev).unwrap());
                ag::sum(&ag::mul(&p.var(), &gv).unwrap(), &[0], false).unwrap().backward().unwrap();
                let (scale, wd) = groups[i];
                let (w, buf) = &mut want[i];
                torch_sgd_reference(w, buf, &g, 0.01 * scale, SgdHyper { weight_decay: wd, ..h });
            }
            sgd.step().unwrap();
            sgd.zero_grad();
        }
        for (i, p) in params.iter().enumerate() {
            let err = max_rel_err(&p.value().to_vec().unwrap(), &want[i].0);
            assert!(err < 1e-5, "{dev} group {i}: {err:e}");
        }
    }
}

#[test]
fn freezeout_anneals_then_freezes_layers_front_to_back() {
    let f = FreezeOut { t0: 0.5, total_steps: 100, spacing: Spacing::Linear, scale_lr: false };
    assert_eq!((f.t_i(0, 3), f.t_i(1, 3), f.t_i(2, 3)), (0.5, 0.75, 1.0));
    let cubic = FreezeOut { spacing: Spacing::Cubic, ..f };
    assert!((cubic.t_i(0, 3) - 0.125).abs() < 1e-6);
    assert_eq!(f.multiplier(0, 0, 3), 1.0);
    assert!((f.multiplier(25, 0, 3) - 0.5).abs() < 1e-6, "half-way down the cosine at t = t_0/2");
    assert_eq!(f.multiplier(50, 0, 3), 0.0);
    assert!(f.multiplier(50, 1, 3) > 0.0 && f.multiplier(99, 2, 3) > 0.0);
    let scaled = FreezeOut { scale_lr: true, ..f };
    assert!((scaled.multiplier(0, 0, 3) - 2.0).abs() < 1e-6, "starts at lr / t_i");

    // In a run: the first layer freezes at step 5 of 10 and stops changing; the last trains on.
    let dev = Device::cpu();
    let mut rng = StdRng::seed_from_u64(0);
    let layers = [Linear::new(4, 4, true, &dev, &mut rng).unwrap(), Linear::new(4, 2, true, &dev, &mut rng).unwrap()];
    let groups = layers.iter().enumerate().map(|(i, l)| ParamGroup::new(format!("{i}"), l.named_params().into_iter().map(|(_, p)| p).collect())).collect();
    let mut sgd = Optimizer::new(groups, 0.1, SgdHyper { momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false }).with_schedule(FreezeOut {
        t0: 0.5,
        total_steps: 10,
        spacing: Spacing::Linear,
        scale_lr: false,
    });
    let x = Var::constant(Tensor::from_vec(random_vec(8, 3), &[2, 4], &dev).unwrap());
    let mut frozen_at = None;
    for step in 0..10 {
        let h = ag::relu(&layers[0].forward(&x).unwrap()).unwrap();
        ag::cross_entropy(&layers[1].forward(&h).unwrap(), &[0, 1]).unwrap().backward().unwrap();
        let before = layers[0].weight.value().to_vec().unwrap();
        sgd.step().unwrap();
        sgd.zero_grad();
        if !layers[0].weight.requires_grad() && frozen_at.is_none() {
            frozen_at = Some(step);
            assert_eq!(layers[0].weight.value().to_vec().unwrap(), before, "a frozen layer is not updated");
        }
    }
    assert_eq!(frozen_at, Some(5));
    assert!(layers[1].weight.requires_grad(), "the last layer trains to the end");
}

/// Lookahead over a parameter and a buffer (batch-norm statistics, which airbench averages
/// too): φ ← φ + α·(θ − φ), θ ← φ for both; α = 0 puts the slow values back.
#[test]
fn lookahead_averages_parameters_and_buffers() {
    use tessera_engine::nn::Buffer;
    use tessera_engine::optim::Lookahead;
    let dev = Device::cpu();
    let t = |v: Vec<f32>| Tensor::from_vec(v, &[2], &dev).unwrap();
    let (param, buffer) = (Param::new(t(vec![1.0, 2.0])), Buffer::new(t(vec![10.0, 20.0])));
    let mut slow = Lookahead::new(std::slice::from_ref(&param), std::slice::from_ref(&buffer));
    param.set_value(t(vec![5.0, -2.0]));
    buffer.set_value(t(vec![30.0, 0.0]));
    slow.sync(0.25).unwrap();
    assert_eq!(param.value().to_vec().unwrap(), [2.0, 1.0]);
    assert_eq!(buffer.value().to_vec().unwrap(), [15.0, 15.0]);
    param.set_value(t(vec![0.0, 0.0]));
    buffer.set_value(t(vec![0.0, 0.0]));
    slow.sync(0.0).unwrap();
    assert_eq!(param.value().to_vec().unwrap(), [2.0, 1.0], "α = 0 restores the slow weights");
    assert_eq!(buffer.value().to_vec().unwrap(), [15.0, 15.0]);
    assert!(slow.sync(1.5).is_err());
}

/// airbench's triangle, as numpy's interp over (0, 0.2), (⌊0.23·T⌋, 1), (T, 0.07) gives it.
#[test]
fn triangle_schedule_matches_numpy_interp() {
    use tessera_engine::optim::Triangle;
    let s = Triangle { total_steps: 476, peak: 0.23, start: 0.2, end: 0.07 };
    let at = |step| s.multiplier(step, 0, 1);
    // ⌊0.23·476⌋ = 109
    assert_eq!(at(0), 0.2);
    assert!((at(109) - 1.0).abs() < 1e-6);
    assert!((at(50) - (0.2 + 0.8 * 50.0 / 109.0)).abs() < 1e-6);
    assert!((at(300) - (1.0 - 0.93 * 191.0 / 367.0)).abs() < 1e-6);
    assert!((at(476) - 0.07).abs() < 1e-6);
    assert_eq!(at(1000), 0.07);
}
