//! PyTorch golden values (tests/fixtures, written by scripts/make_golden.py in float64):
//! every op's output and input gradients, torch.optim.SGD and AdamW over 10 steps (with and
//! without a linear warm-up in front of a cosine schedule), and a small CNN's
//! logits, loss and parameter gradients — on the CPU backend and every GPU adapter; and one
//! mixed-precision step against torch.autocast on adapters with SHADER_F16.
use serde_json::Value;
use tessera_engine::autograd::{self as ag, Var};
use tessera_engine::nn::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use tessera_engine::ops::{AdamWHyper, Conv2dOpts, SgdHyper};
use tessera_engine::optim::{Constant, Cosine, Lookahead, LrSchedule, Optimizer, ParamGroup, Rule, Warmup};
use tessera_engine::{Device, Result};
use tessera_tests::{gpu_devices, max_rel_err, Fixture};

const TOL: f32 = 1e-4;

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    d.extend(gpu_devices());
    d
}

fn close(what: &str, got: &tessera_engine::Tensor, want: (Vec<f32>, Vec<usize>)) {
    assert_eq!(got.shape(), want.1.as_slice(), "{what}: shape");
    let err = max_rel_err(&got.to_vec().unwrap(), &want.0);
    assert!(err <= TOL, "{what}: max rel err {err:e} against PyTorch");
}

fn usize_list(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn run_op(case: &Value, v: &[Var]) -> Result<Var> {
    let n = |k: &str| case[k].as_u64().unwrap() as usize;
    match case["op"].as_str().unwrap() {
        "linear" => ag::linear(&v[0], &v[1], Some(&v[2])),
        "conv2d" => {
            let opts = Conv2dOpts { stride: [n("stride"); 2], padding: [n("padding"); 2], dilation: [n("dilation"); 2], half: false };
            ag::conv2d(&v[0], &v[1], Some(&v[2]), opts)
        }
        "max_pool2d" => ag::max_pool2d(&v[0], n("kernel"), n("stride"), n("padding")),
        "avg_pool2d" => ag::avg_pool2d(&v[0], n("kernel"), n("stride"), n("padding")),
        "adaptive_avg_pool2d" => {
            let out = usize_list(&case["out"]);
            ag::adaptive_avg_pool2d(&v[0], [out[0], out[1]])
        }
        "relu" => ag::relu(&v[0]),
        "softmax" => ag::softmax(&v[0]),
        "log_softmax" => ag::log_softmax(&v[0]),
        "cross_entropy" => ag::cross_entropy_smoothed(&v[0], &usize_list(&case["labels"]), case["smoothing"].as_f64().unwrap_or(0.0) as f32),
        "gelu" => ag::gelu(&v[0]),
        "sum" => ag::sum(&v[0], &usize_list(&case["axes"]), case["keepdim"].as_bool().unwrap()),
        "mean" => ag::mean(&v[0], &usize_list(&case["axes"]), case["keepdim"].as_bool().unwrap()),
        other => panic!("unknown op {other} in fixture"),
    }
}

fn weighted_sum(y: &Var, r: &Var) -> Result<Var> {
    ag::sum(&ag::mul(y, r)?, &(0..y.shape().len()).collect::<Vec<_>>(), false)
}

#[test]
fn every_op_matches_pytorch_forward_and_backward() {
    let fx = Fixture::open("ops_golden.safetensors");
    let cases = fx.meta("cases");
    for dev in devices() {
        for case in cases.as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let inputs: Vec<String> = case["inputs"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
            let r = Var::constant(fx.tensor(&format!("{name}.r"), &dev));
            if case["op"] == "batch_norm2d" {
                batch_norm_case(&fx, case, &r, &dev);
                continue;
            }
            let leaves: Vec<Var> = inputs.iter().map(|i| Var::leaf(fx.tensor(&format!("{name}.{i}"), &dev))).collect();
            let y = run_op(case, &leaves).unwrap_or_else(|e| panic!("{name} on {dev}: {e}"));
            close(&format!("{name} output on {dev}"), y.value(), fx.get(&format!("{name}.y")));
            weighted_sum(&y, &r).unwrap().backward().unwrap();
            for (input, leaf) in inputs.iter().zip(&leaves) {
                close(&format!("{name} d{input} on {dev}"), &leaf.grad().unwrap(), fx.get(&format!("{name}.d{input}")));
            }
        }
    }
}

fn batch_norm_case(fx: &Fixture, case: &Value, r: &Var, dev: &Device) {
    let name = case["name"].as_str().unwrap();
    let training = case["training"].as_bool().unwrap();
    let option = |k: &str, default: f64| case[k].as_f64().unwrap_or(default) as f32;
    let frozen = case["frozen_weight"].as_bool().unwrap_or(false);
    let mut bn = BatchNorm2d::new(4, dev).unwrap().with_momentum_eps(option("momentum", 0.1), option("eps", 1e-5)).unwrap();
    if frozen {
        bn = bn.with_frozen_weight();
    } else {
        bn.weight.set_value(fx.tensor(&format!("{name}.weight"), dev));
    }
    bn.set_training(training);
    bn.bias.set_value(fx.tensor(&format!("{name}.bias"), dev));
    bn.running_mean.set_value(fx.tensor(&format!("{name}.running_mean_in"), dev));
    bn.running_var.set_value(fx.tensor(&format!("{name}.running_var_in"), dev));
    let x = Var::leaf(fx.tensor(&format!("{name}.x"), dev));
    let y = bn.forward(&x).unwrap();
    close(&format!("{name} output on {dev}"), y.value(), fx.get(&format!("{name}.y")));
    close(&format!("{name} running_mean on {dev}"), &bn.running_mean.value(), fx.get(&format!("{name}.running_mean_out")));
    close(&format!("{name} running_var on {dev}"), &bn.running_var.value(), fx.get(&format!("{name}.running_var_out")));
    weighted_sum(&y, r).unwrap().backward().unwrap();
    close(&format!("{name} dx on {dev}"), &x.grad().unwrap(), fx.get(&format!("{name}.dx")));
    match frozen {
        true => assert!(bn.weight.grad().is_none(), "{name}: a frozen scale gets no gradient"),
        false => close(&format!("{name} dweight on {dev}"), &bn.weight.grad().unwrap(), fx.get(&format!("{name}.dweight"))),
    }
    close(&format!("{name} dbias on {dev}"), &bn.bias.grad().unwrap(), fx.get(&format!("{name}.dbias")));
}

#[test]
fn sgd_matches_torch_optim_sgd_over_ten_steps() {
    let fx = Fixture::open("sgd_golden.safetensors");
    for dev in devices() {
        for case in fx.meta("cases").as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let f = |k: &str| case[k].as_f64().unwrap() as f32;
            let hyper =
                SgdHyper { momentum: f("momentum"), dampening: f("dampening"), weight_decay: f("weight_decay"), nesterov: case["nesterov"].as_bool().unwrap() };
            let param = tessera_engine::nn::Param::new(fx.tensor(&format!("{name}.p0"), &dev));
            let mut sgd = Optimizer::new(vec![ParamGroup::new(name, vec![param.clone()])], f("lr"), hyper);
            for step in 0..10 {
                let g = Var::constant(fx.tensor(&format!("{name}.g{step}"), &dev));
                ag::sum(&ag::mul(&param.var(), &g).unwrap(), &[0], false).unwrap().backward().unwrap();
                sgd.step().unwrap();
                sgd.zero_grad();
                close(&format!("{name} step {} on {dev}", step + 1), &param.value(), fx.get(&format!("{name}.p{}", step + 1)));
            }
        }
    }
}

#[test]
fn adamw_sgd_and_warmup_match_torch_over_ten_steps() {
    let fx = Fixture::open("optim_golden.safetensors");
    for dev in devices() {
        for case in fx.meta("cases").as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let f = |k: &str| case[k].as_f64().unwrap() as f32;
            let rule = match case["kind"].as_str().unwrap() {
                "adamw" => {
                    let betas = case["betas"].as_array().unwrap();
                    let beta = |i: usize| betas[i].as_f64().unwrap() as f32;
                    Rule::AdamW(AdamWHyper { beta1: beta(0), beta2: beta(1), eps: f("eps"), weight_decay: f("weight_decay") })
                }
                _ => Rule::Sgd(SgdHyper {
                    momentum: f("momentum"),
                    dampening: f("dampening"),
                    weight_decay: f("weight_decay"),
                    nesterov: case["nesterov"].as_bool().unwrap(),
                }),
            };
            let (warmup, total) = (case["warmup"].as_u64().unwrap() as usize, case["total"].as_u64().unwrap() as usize);
            let inner: Box<dyn LrSchedule> = if total > 0 { Box::new(Cosine { total_steps: total }) } else { Box::new(Constant) };
            let param = tessera_engine::nn::Param::new(fx.tensor(&format!("{name}.p0"), &dev));
            let mut opt = Optimizer::new(vec![ParamGroup::new(name, vec![param.clone()])], f("lr"), rule).with_schedule(Warmup { steps: warmup, inner });
            let mut lookahead = Lookahead::new(std::slice::from_ref(&param), &[]);
            let every = case["lookahead_every"].as_u64().unwrap_or(0) as usize;
            for step in 0..10 {
                let g = Var::constant(fx.tensor(&format!("{name}.g{step}"), &dev));
                ag::sum(&ag::mul(&param.var(), &g).unwrap(), &[0], false).unwrap().backward().unwrap();
                opt.step().unwrap();
                opt.zero_grad();
                if every > 0 && (step + 1) % every == 0 {
                    lookahead.sync(f("lookahead_alpha")).unwrap();
                }
                close(&format!("{name} ({:?}) step {} on {dev}", rule, step + 1), &param.value(), fx.get(&format!("{name}.p{}", step + 1)));
            }
        }
    }
}

#[test]
fn small_cnn_matches_pytorch_logits_loss_and_gradients() {
    let fx = Fixture::open("cnn_golden.safetensors");
    let labels = usize_list(&fx.meta("labels"));
    for dev in devices() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
        let same = Conv2dOpts::new(1, 1);
        let model = Sequential::new()
            .with(Conv2d::new(3, 8, 3, same, true, &dev, &mut rng).unwrap())
            .with(ReLU)
            .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .with(Conv2d::new(8, 16, 3, same, true, &dev, &mut rng).unwrap())
            .with(ReLU)
            .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
            .with(Flatten)
            .with(Linear::new(64, 4, true, &dev, &mut rng).unwrap());
        let params = model.named_params();
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"], "PyTorch's names");
        for (name, p) in &params {
            p.set_value(fx.tensor(name, &dev));
        }
        let logits = model.forward(&Var::constant(fx.tensor("x", &dev))).unwrap();
        close(&format!("cnn logits on {dev}"), logits.value(), fx.get("logits"));
        let loss = ag::cross_entropy(&logits, &labels).unwrap();
        close(&format!("cnn loss on {dev}"), loss.value(), fx.get("loss"));
        loss.backward().unwrap();
        for (name, p) in &params {
            close(&format!("cnn grad.{name} on {dev}"), &p.grad().unwrap(), fx.get(&format!("grad.{name}")));
        }
    }
}

/// One mixed-precision step against torch.autocast(float16) (scripts/make_golden.py `amp`:
/// a conv–BN–ReLU CNN, loss scaled by 2¹⁰): on each adapter with SHADER_F16, Tessera's loss
/// and every unscaled gradient lie within PyTorch's own f16 deviation (autocast against its
/// f32 step) of PyTorch's autocast values, per tensor, largest |difference| (measured on
/// lavapipe: 0.07–0.75 of it); and f32 matches PyTorch's f32 step as tightly as the other
/// golden tests.
#[test]
fn mixed_precision_step_matches_pytorch_autocast_within_its_f16_deviation() {
    let fx = Fixture::open("amp_golden.safetensors");
    let labels = usize_list(&fx.meta("labels"));
    let scale = fx.meta("scale").as_f64().expect("scale in the metadata") as f32;
    for dev in tessera_tests::f16_gpu_devices() {
        for mixed in [false, true] {
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
            let same = Conv2dOpts::new(1, 1);
            let model = Sequential::new()
                .with(Conv2d::new(3, 16, 3, same, false, &dev, &mut rng).unwrap())
                .with(BatchNorm2d::new(16, &dev).unwrap())
                .with(ReLU)
                .with(MaxPool2d { kernel: 2, stride: 2, padding: 0 })
                .with(Conv2d::new(16, 8, 3, same, false, &dev, &mut rng).unwrap())
                .with(ReLU)
                .with(Flatten)
                .with(Linear::new(8 * 6 * 6, 5, true, &dev, &mut rng).unwrap());
            let params = model.named_params();
            for (name, p) in &params {
                p.set_value(fx.tensor(name, &dev));
            }
            let x = Var::constant(fx.tensor("x", &dev));
            let loss = ag::autocast(mixed, || ag::cross_entropy(&model.forward(&x).unwrap(), &labels).unwrap());
            let seed = tessera_engine::Tensor::from_vec(vec![scale], &[1], &dev).unwrap();
            loss.backward_seeded(Some(&seed), &mut |_| {}).unwrap();
            let mut got = vec![("loss".to_string(), loss.value().to_vec().unwrap())];
            for (name, p) in &params {
                got.push((format!("grad.{name}"), p.grad().unwrap().to_vec().unwrap().iter().map(|v| v / scale).collect()));
            }
            for (name, ours) in got {
                let (f32_ref, amp_ref) = (fx.get(&format!("f32.{name}")).0, fx.get(&format!("amp.{name}")).0);
                if !mixed {
                    let err = max_rel_err(&ours, &f32_ref);
                    assert!(err <= TOL, "f32 {name} on {dev}: max rel err {err:e} against PyTorch's f32 step");
                    continue;
                }
                let largest = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                let (ours_dev, torch_dev) = (largest(&ours, &amp_ref), largest(&amp_ref, &f32_ref));
                eprintln!("{name} on {dev}: |ours − autocast| {ours_dev:.2e}, PyTorch's |autocast − f32| {torch_dev:.2e}");
                assert!(ours_dev <= torch_dev, "mixed {name} on {dev}: {ours_dev:e} from autocast, beyond PyTorch's own f16 deviation {torch_dev:e}");
            }
        }
    }
}

/// The patch-whitening initialisation against numpy's eigendecomposition (fixture
/// `whitening_golden.safetensors`, scripts/make_golden.py whitening) on synthetic images, and
/// what it is for: over those images the first half of its filters give outputs whose
/// uncentred second moments are λ/(λ + ε) on the diagonal (≈ 1 here) and 0 off it.
#[test]
fn patch_whitening_matches_numpy_eigh_and_whitens() {
    let fx = Fixture::open("whitening_golden.safetensors");
    let eps = fx.meta("eps").as_f64().unwrap() as f32;
    let kernel = usize_list(&fx.meta("kernel"));
    for dev in devices() {
        let w = tessera_engine::nn::patch_whitening(&fx.tensor("x", &dev), [kernel[0], kernel[1]], eps).unwrap();
        close(&format!("whitening weight on {dev}"), &w, fx.get("weight"));
    }
    let cpu = Device::cpu();
    let x = fx.tensor("x", &cpu);
    let w = tessera_engine::nn::patch_whitening(&x, [kernel[0], kernel[1]], eps).unwrap();
    let d = w.shape()[0] / 2;
    let y = tessera_engine::ops::conv2d(&x, &tessera_engine::ops::narrow(&w, 0, 0, d).unwrap(), None, Conv2dOpts::default()).unwrap();
    let (values, shape) = (y.to_vec().unwrap(), y.shape().to_vec());
    let plane = shape[2] * shape[3];
    let count = (shape[0] * plane) as f64;
    let eigenvalues = fx.get("eigenvalues").0;
    for a in 0..d {
        for b in 0..d {
            let moment: f64 = (0..shape[0])
                .flat_map(|n| (0..plane).map(move |p| (n, p)))
                .map(|(n, p)| values[(n * d + a) * plane + p] as f64 * values[(n * d + b) * plane + p] as f64)
                .sum::<f64>()
                / count;
            let want = if a == b { eigenvalues[a] as f64 / (eigenvalues[a] as f64 + eps as f64) } else { 0.0 };
            assert!((moment - want).abs() < 1e-3, "E[y{a}·y{b}] = {moment}, want {want}");
        }
    }
}
