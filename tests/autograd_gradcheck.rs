//! Finite-difference gradient checks for every differentiable op and a small network, on the
//! CPU backend and every GPU adapter. The loss is Σ(out ⊙ R) for a fixed random R, so every
//! output element's gradient path is exercised; central differences with ε = 1e-2 in f32,
//! compared norm-wise with tolerance 1e-2 (f32 rounding over ε bounds what can be asked).
use tessera_engine::autograd::{self as ag, Var};
use tessera_engine::{no_grad, Device, Result, Tensor};
use tessera_tests::{gpu_devices, random_vec};

const EPS: f32 = 1e-2;
const TOL: f32 = 1e-2;

/// Values in [-1, -0.1] ∪ [0.1, 1]: away from relu's kink by more than ε.
fn away_from_zero(v: Vec<f32>) -> Vec<f32> {
    v.into_iter().map(|x| x.signum() * (0.1 + 0.9 * x.abs())).collect()
}

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    d.extend(gpu_devices());
    d
}

fn scalar_loss(out: &Var, weights: &Var) -> Result<Var> {
    let rank = out.shape().len();
    ag::sum(&ag::mul(out, weights)?, &(0..rank).collect::<Vec<_>>(), false)
}

fn gradcheck(name: &str, shapes: &[&[usize]], f: impl Fn(&[Var]) -> Result<Var>) {
    gradcheck_on(name, shapes, |len, seed| away_from_zero(random_vec(len, seed)), f)
}

/// Distinct values 0.05 apart in shuffled order: no two within 2ε, so max-pooling's argmax
/// does not move under the finite-difference perturbation.
fn well_separated(len: usize, seed: u64) -> Vec<f32> {
    let keys = random_vec(len, seed);
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut out = vec![0f32; len];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = (rank as f32 - len as f32 / 2.0) * 0.05;
    }
    out
}

fn gradcheck_on(name: &str, shapes: &[&[usize]], data: impl Fn(usize, u64) -> Vec<f32>, f: impl Fn(&[Var]) -> Result<Var>) {
    for dev in devices() {
        let data: Vec<Vec<f32>> = shapes.iter().enumerate().map(|(i, s)| data(s.iter().product(), 100 + i as u64)).collect();
        let tensor = |i: usize, d: &[f32]| Tensor::from_vec(d.to_vec(), shapes[i], &dev).unwrap();
        let leaves: Vec<Var> = data.iter().enumerate().map(|(i, d)| Var::leaf(tensor(i, d))).collect();
        let out = f(&leaves).unwrap_or_else(|e| panic!("{name} on {dev}: {e}"));
        let weights = Var::constant(Tensor::from_vec(random_vec(out.value().numel(), 7), out.shape(), &dev).unwrap());
        scalar_loss(&out, &weights).unwrap().backward().unwrap();

        let loss_at = |inputs: Vec<Vec<f32>>| -> f32 {
            no_grad(|| {
                let vars: Vec<Var> = inputs.iter().enumerate().map(|(i, d)| Var::constant(tensor(i, d))).collect();
                scalar_loss(&f(&vars).unwrap(), &weights).unwrap().value().to_vec().unwrap()[0]
            })
        };
        for (i, leaf) in leaves.iter().enumerate() {
            let analytic = leaf.grad().unwrap_or_else(|| panic!("{name}: input {i} got no gradient")).to_vec().unwrap();
            let mut numeric = vec![0f32; analytic.len()];
            for j in 0..analytic.len() {
                let mut plus = data.clone();
                plus[i][j] += EPS;
                let mut minus = data.clone();
                minus[i][j] -= EPS;
                numeric[j] = (loss_at(plus) - loss_at(minus)) / (2.0 * EPS);
            }
            let scale = analytic.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let err = analytic.iter().zip(&numeric).fold(0f32, |m, (a, n)| m.max((a - n).abs())) / scale;
            assert!(err <= TOL, "{name} on {dev}: input {i}: analytic {analytic:?} vs numeric {numeric:?} (err {err:e})");
        }
    }
}

#[test]
fn elementwise_ops() {
    gradcheck("add", &[&[3, 4], &[3, 4]], |v| ag::add(&v[0], &v[1]));
    gradcheck("scale", &[&[5]], |v| ag::scale(&v[0], -1.5));
    gradcheck("mul", &[&[2, 3], &[2, 3]], |v| ag::mul(&v[0], &v[1]));
    gradcheck("relu", &[&[4, 5]], |v| ag::relu(&v[0]));
    gradcheck("add_channel", &[&[2, 3, 4], &[3]], |v| ag::add_channel(&v[0], &v[1], 1));
    gradcheck("reshape", &[&[2, 6]], |v| ag::reshape(&v[0], &[3, 4]));
}

#[test]
fn products() {
    gradcheck("matmul", &[&[3, 4], &[4, 5]], |v| ag::matmul(&v[0], &v[1]));
    gradcheck("linear", &[&[4, 6], &[3, 6], &[3]], |v| ag::linear(&v[0], &v[1], Some(&v[2])));
}

#[test]
fn reductions() {
    gradcheck("sum", &[&[2, 3, 4]], |v| ag::sum(&v[0], &[0, 2], false));
    gradcheck("mean", &[&[2, 3, 4]], |v| ag::mean(&v[0], &[1], true));
}

#[test]
fn softmax_family_and_cross_entropy() {
    gradcheck("softmax", &[&[3, 5]], |v| ag::softmax(&v[0]));
    gradcheck("log_softmax", &[&[3, 5]], |v| ag::log_softmax(&v[0]));
    gradcheck("cross_entropy", &[&[4, 3]], |v| ag::cross_entropy(&v[0], &[2, 0, 1, 2]));
}

#[test]
fn small_mlp_end_to_end() {
    gradcheck("mlp", &[&[4, 5], &[6, 5], &[6], &[3, 6], &[3]], |v| {
        let h = ag::relu(&ag::linear(&v[0], &v[1], Some(&v[2]))?)?;
        let logits = ag::linear(&h, &v[3], Some(&v[4]))?;
        ag::cross_entropy(&logits, &[0, 2, 1, 1])
    });
}

#[test]
fn gradients_accumulate_and_constants_get_none() {
    let dev = Device::cpu();
    let x = Var::leaf(Tensor::from_vec(vec![1.0, 2.0], &[2], &dev).unwrap());
    let c = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2], &dev).unwrap());
    for _ in 0..2 {
        ag::sum(&ag::mul(&x, &c).unwrap(), &[0], false).unwrap().backward().unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![6.0, 8.0], "two backward passes accumulate");
    assert!(c.grad().is_none());
    let y = no_grad(|| ag::mul(&x, &c).unwrap());
    assert!(!y.requires_grad() && y.op_name().is_none(), "no_grad records nothing");
    let err = ag::mul(&x, &c).unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("needs a scalar loss"), "{err}");
}

#[test]
fn backward_frees_the_saved_tensors_and_refuses_a_second_pass() {
    use tessera_engine::tensor::Storage;
    let dev = Device::cpu();
    let x = Var::leaf(Tensor::from_vec(vec![1.0, 2.0], &[2], &dev).unwrap());
    let c = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2], &dev).unwrap());
    let holders = |v: &Var| match v.value().storage() {
        Storage::Cpu(data) => std::sync::Arc::strong_count(data),
        Storage::Gpu(_) => unreachable!(),
    };
    let loss = ag::sum(&ag::mul(&x, &c).unwrap(), &[0], false).unwrap();
    // x's values: its node and the copy mul saved for dc.
    assert_eq!(holders(&x), 2);
    loss.backward().unwrap();
    assert_eq!(holders(&x), 1, "mul's saved copy of x is released by backward");
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![3.0, 4.0]);
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("second time") && err.contains("`sum`"), "{err}");
}

#[test]
fn conv2d_with_stride_padding_dilation() {
    use tessera_engine::ops::Conv2dOpts;
    let cases = [
        (Conv2dOpts::default(), [1usize, 2, 5, 5], [3usize, 2, 3, 3]),
        (Conv2dOpts::new(2, 1), [2, 2, 6, 5], [2, 2, 3, 3]),
        (Conv2dOpts { stride: [1, 2], padding: [2, 1], dilation: [2, 1], half: false }, [1, 1, 6, 6], [2, 1, 2, 3]),
        (Conv2dOpts::new(1, 1), [2, 2, 1, 1], [3, 2, 3, 3]), // taps that read only padding are dropped
    ];
    for (opts, xs, ws) in cases {
        gradcheck("conv2d", &[&xs, &ws, &[ws[0]]], |v| ag::conv2d(&v[0], &v[1], Some(&v[2]), opts));
    }
}

#[test]
fn pooling() {
    gradcheck_on("max_pool2d", &[&[1, 2, 5, 5]], well_separated, |v| ag::max_pool2d(&v[0], 3, 2, 1));
    gradcheck("avg_pool2d", &[&[2, 1, 5, 4]], |v| ag::avg_pool2d(&v[0], 2, 2, 1));
    gradcheck("adaptive_avg_pool2d", &[&[1, 2, 7, 5]], |v| ag::adaptive_avg_pool2d(&v[0], [3, 2]));
}

#[test]
fn batch_norm_training_and_eval() {
    use tessera_engine::ops::batch_stats;
    // Training: the statistics are recomputed from the perturbed input inside f.
    gradcheck("batch_norm2d train", &[&[3, 2, 2, 3], &[2], &[2]], |v| {
        let (mean, var) = batch_stats(v[0].value())?;
        ag::batch_norm2d(&v[0], &v[1], &v[2], &mean, &var, true, 1e-5)
    });
    gradcheck("batch_norm2d eval", &[&[2, 3, 2, 2], &[3], &[3]], |v| {
        let dev = v[0].value().device().clone();
        let mean = Tensor::from_vec(vec![0.1, -0.2, 0.3], &[3], &dev)?;
        let var = Tensor::from_vec(vec![0.5, 1.5, 2.0], &[3], &dev)?;
        ag::batch_norm2d(&v[0], &v[1], &v[2], &mean, &var, false, 1e-5)
    });
}

#[test]
fn dropout_and_concat() {
    gradcheck("dropout", &[&[4, 8]], |v| ag::dropout(&v[0], 0.3, 42));
    gradcheck("concat axis 1", &[&[2, 3, 2], &[2, 1, 2]], |v| ag::concat(&v[0], &v[1], 1));
    gradcheck("concat axis 0", &[&[2, 3], &[1, 3]], |v| ag::concat(&v[0], &v[1], 0));
}

#[test]
fn small_cnn_end_to_end() {
    use tessera_engine::ops::Conv2dOpts;
    // conv 2→3 (3×3, pad 1) + bias, relu, avg-pool 2, conv 3→2 (stride 2), residual-free
    // flatten, linear 2→3 + bias, cross-entropy: every parameter's gradient at once.
    gradcheck("cnn", &[&[2, 2, 6, 6], &[3, 2, 3, 3], &[3], &[2, 3, 2, 2], &[3, 2], &[3]], |v| {
        let h = ag::relu(&ag::conv2d(&v[0], &v[1], Some(&v[2]), Conv2dOpts::new(1, 1))?)?;
        let h = ag::avg_pool2d(&h, 2, 2, 0)?;
        let h = ag::conv2d(&h, &v[3], None, Conv2dOpts::new(2, 0))?;
        let h = ag::reshape(&h, &[2, 2])?;
        ag::cross_entropy(&ag::linear(&h, &v[4], Some(&v[5]))?, &[2, 0])
    });
}
