//! Per-op conformance, GPU against CPU, forward and backward, on random shapes: elementwise,
//! reductions, softmax family and cross-entropy. Max relative error ≤ 1e-4 (norm-wise, see
//! tessera_tests::max_rel_err).
use rand::{rngs::StdRng, Rng, SeedableRng};
use tessera_engine::ops::{self, Labels};
use tessera_engine::{Device, Error, Tensor};
use tessera_tests::{check_against_cpu, gpu_devices, random_tensor};

const TOL: f32 = 1e-4;

fn shapes(seed: u64, count: usize, rank: std::ops::RangeInclusive<usize>) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let r = rng.gen_range(rank.clone());
            (0..r).map(|_| rng.gen_range(1..9)).collect()
        })
        .collect()
}

#[test]
fn elementwise_ops_match() {
    for (i, shape) in shapes(1, 6, 1..=4).into_iter().enumerate() {
        let s = i as u64 * 3;
        check_against_cpu("elementwise", TOL, |d| {
            let (x, y) = (random_tensor(&shape, s, d), random_tensor(&shape, s + 1, d));
            Ok(vec![
                ops::axpby(0.5, &x, -2.0, &y)?,
                ops::add(&x, &y)?,
                ops::scale(&x, 3.0)?,
                ops::mul(&x, &y)?,
                ops::relu(&x)?,
                ops::relu_backward(&x, &y)?,
            ])
        });
        let axis = i % shape.len();
        check_against_cpu("add_channel", TOL, |d| {
            let x = random_tensor(&shape, s, d);
            let b = random_tensor(&[shape[axis]], s + 2, d);
            Ok(vec![ops::add_channel(&x, &b, axis)?])
        });
    }
}

#[test]
fn reductions_and_their_backward_match() {
    let mut rng = StdRng::seed_from_u64(2);
    for (i, shape) in shapes(3, 8, 1..=4).into_iter().enumerate() {
        let axes: Vec<usize> = (0..shape.len()).filter(|_| rng.gen_bool(0.5)).collect();
        let keepdim = i % 2 == 0;
        check_against_cpu("sum/mean", TOL, |d| {
            let x = random_tensor(&shape, i as u64, d);
            let s = ops::sum(&x, &axes, keepdim)?;
            let m = ops::mean(&x, &axes, keepdim)?;
            let back = ops::expand(&s, &shape, &axes, 0.5)?;
            Ok(vec![s, m, back])
        });
    }
    // A large reduction, to catch accumulation differences.
    check_against_cpu("sum 64x4096", 1e-4, |d| Ok(vec![ops::sum(&random_tensor(&[64, 4096], 9, d), &[1], false)?]));
}

#[test]
fn softmax_family_and_cross_entropy_match() {
    for (i, &(rows, cols)) in [(1, 1), (3, 10), (17, 7), (130, 33), (5, 1000)].iter().enumerate() {
        let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + i) % cols).collect();
        check_against_cpu("softmax family", TOL, |d| {
            // Scaled logits exercise the max-subtraction.
            let x = ops::scale(&random_tensor(&[rows, cols], i as u64, d), 20.0)?;
            let g = random_tensor(&[rows, cols], i as u64 + 1, d);
            let y = ops::softmax(&x)?;
            let ly = ops::log_softmax(&x)?;
            let lab = Labels::new(&x, &labels)?;
            let gs = Tensor::from_vec(vec![0.7], &[], d)?;
            Ok(vec![
                ops::softmax_backward(&y, &g)?,
                ops::log_softmax_backward(&ly, &g)?,
                ops::cross_entropy_per_sample(&x, &lab)?,
                ops::cross_entropy_backward(&x, &lab, &gs)?,
                y,
                ly,
            ])
        });
    }
}

#[test]
fn bad_input_names_the_op_and_shapes() {
    let mut devices = vec![Device::cpu()];
    devices.extend(gpu_devices().into_iter().take(1));
    for d in &devices {
        let x = random_tensor(&[4, 3], 1, d);
        let e = Labels::new(&x, &[0, 1, 3, 2]).err().unwrap().to_string();
        assert!(e.contains("cross_entropy") && e.contains("label 3 at index 2 is out of range for 3 classes"), "{e}");
        let e = Labels::new(&x, &[0, 1]).err().unwrap().to_string();
        assert!(e.contains("2 labels for a batch of 4"), "{e}");
        let e = ops::add(&x, &random_tensor(&[3, 4], 2, d)).unwrap_err();
        assert!(matches!(e, Error::Shape { op: "axpby", .. }) && e.to_string().contains("[4, 3] and [3, 4]"), "{e}");
        let e = ops::add_channel(&x, &random_tensor(&[4], 2, d), 1).unwrap_err().to_string();
        assert!(e.contains("add_channel") && e.contains("expected [3]"), "{e}");
        let e = ops::sum(&x, &[2], false).unwrap_err().to_string();
        assert!(e.contains("sum") && e.contains("axes [2] are invalid for shape [4, 3]"), "{e}");
    }
}
