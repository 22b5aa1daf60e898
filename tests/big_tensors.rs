//! Tensors bigger than one storage binding: every op family runs them in windows and matches
//! the CPU backend. The adapters are opened with their binding limit lowered to 64 KiB, so
//! shapes of a few hundred KB are "several times the limit" (the same code path that takes
//! AlexNet's 151 MB fc6 weight through lavapipe's 128 MiB limit).
use tessera_engine::ops::{self, AdamWHyper, AdamWState, GemmOpts, SgdHyper, StepGuard};
use tessera_engine::{Device, Tensor};
use tessera_tests::{gpu_devices_with_binding_limit, max_rel_err, random_tensor};

const LIMIT: u64 = 64 << 10;

fn close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    let (got, want) = (got.to_vec().unwrap(), want.to_vec().unwrap());
    let err = max_rel_err(&got, &want);
    assert!(err <= tol, "{what}: off by {err}");
}

/// A tensor of `shape` several times the limit.
fn big(shape: &[usize], seed: u64) -> Tensor {
    let t = random_tensor(shape, seed, &Device::cpu());
    assert!(4 * t.numel() as u64 > 3 * LIMIT, "{shape:?} is not big enough to test anything");
    t
}

#[test]
fn elementwise_ops_run_in_windows() {
    let (x, y) = (big(&[7, 10_001], 1), big(&[7, 10_001], 2));
    let bias = random_tensor(&[10_001], 3, &Device::cpu());
    let rows = random_tensor(&[7], 4, &Device::cpu());
    for dev in gpu_devices_with_binding_limit(LIMIT) {
        let on = |t: &Tensor| t.to_device(&dev).unwrap();
        let (xg, yg) = (on(&x), on(&y));
        close("add", &ops::add(&xg, &yg).unwrap(), &ops::add(&x, &y).unwrap(), 1e-6);
        close("mul", &ops::mul(&xg, &yg).unwrap(), &ops::mul(&x, &y).unwrap(), 1e-6);
        close("relu", &ops::relu(&xg).unwrap(), &ops::relu(&x).unwrap(), 0.0);
        close("relu_backward", &ops::relu_backward(&xg, &yg).unwrap(), &ops::relu_backward(&x, &y).unwrap(), 0.0);
        close("add_channel (last axis)", &ops::add_channel(&xg, &on(&bias), 1).unwrap(), &ops::add_channel(&x, &bias, 1).unwrap(), 1e-6);
        close("add_channel (first axis)", &ops::add_channel(&xg, &on(&rows), 0).unwrap(), &ops::add_channel(&x, &rows, 0).unwrap(), 1e-6);
        close("dropout", &ops::dropout(&xg, 0.3, 77).unwrap(), &ops::dropout(&x, 0.3, 77).unwrap(), 1e-6);
    }
}

#[test]
fn gemm_splits_big_operands_and_results() {
    let cpu = Device::cpu();
    let nt = GemmOpts { trans_b: true, ..Default::default() };
    let tn = GemmOpts { trans_a: true, ..Default::default() };
    let nn = GemmOpts::default();
    // (A, B, opts, C): a linear layer's forward with a big weight (x·Wᵀ), its weight gradient
    // (gᵀ·x, a big result), its input gradient (g·W, big B read in K slices), a big A, a
    // big batched product with a C added.
    type Case = (Vec<usize>, Vec<usize>, GemmOpts, Option<Vec<usize>>);
    let cases: Vec<Case> = vec![
        (vec![5, 300], vec![250, 300], nt, None),
        (vec![6, 250], vec![6, 300], tn, None),
        (vec![5, 250], vec![250, 300], nn, None),
        (vec![300, 200], vec![200, 9], nn, Some(vec![300, 9])),
        (vec![3, 120, 150], vec![3, 150, 130], GemmOpts { alpha: 0.5, beta: 2.0, ..nn }, Some(vec![3, 120, 130])),
    ];
    for dev in gpu_devices_with_binding_limit(LIMIT) {
        for (i, (ash, bsh, o, csh)) in cases.iter().enumerate() {
            let (a, b) = (random_tensor(ash, 10 + i as u64, &cpu), random_tensor(bsh, 20 + i as u64, &cpu));
            let c = csh.as_ref().map(|s| random_tensor(s, 30 + i as u64, &cpu));
            let want = ops::gemm(&a, &b, c.as_ref(), *o).unwrap();
            let sizes = [a.numel(), b.numel(), c.as_ref().map_or(0, |c| c.numel()), want.numel()];
            assert!(sizes.iter().any(|&n| 4 * n as u64 > 2 * LIMIT), "case {i} has nothing big");
            let on = |t: &Tensor| t.to_device(&dev).unwrap();
            let got = ops::gemm(&on(&a), &on(&b), c.as_ref().map(on).as_ref(), *o).unwrap();
            close(&format!("gemm {ash:?}·{bsh:?} {o:?}"), &got, &want, 1e-4);
        }
    }
}

#[test]
fn optimizer_updates_and_the_guard_run_in_windows() {
    let (p, g) = (big(&[300, 257], 1), big(&[300, 257], 2));
    let h = SgdHyper { momentum: 0.9, weight_decay: 1e-3, ..Default::default() };
    let (mut want_p, mut want_b) = (p.clone(), None);
    for _ in 0..2 {
        ops::sgd_step_in_place(&mut want_p, &g, &mut want_b, 0.1, h, None).unwrap();
    }
    let mut want_a = p.clone();
    let mut state = AdamWState::zeros(&want_a).unwrap();
    for _ in 0..2 {
        ops::adamw_step_in_place(&mut want_a, &g, &mut state, 0.01, AdamWHyper::default(), None).unwrap();
    }
    for dev in gpu_devices_with_binding_limit(LIMIT) {
        let on = |t: &Tensor| t.to_device(&dev).unwrap();
        let (mut pg, gg, mut buf) = (on(&p), on(&g), None);
        let mut guard = StepGuard::new(&dev, false).unwrap();
        guard.open().unwrap();
        guard.check(&gg).unwrap();
        for _ in 0..2 {
            ops::sgd_step_in_place(&mut pg, &gg, &mut buf, 0.1, h, Some(guard.state())).unwrap();
        }
        close("sgd with momentum", &pg, &want_p, 1e-5);
        close("sgd momentum buffer", buf.as_ref().unwrap(), want_b.as_ref().unwrap(), 1e-5);
        let mut pa = on(&p);
        let mut state = AdamWState::zeros(&pa).unwrap();
        for _ in 0..2 {
            ops::adamw_step_in_place(&mut pa, &gg, &mut state, 0.01, AdamWHyper::default(), Some(guard.state())).unwrap();
        }
        close("adamw", &pa, &want_a, 1e-5);
        // A non-finite value in the last window flags the step.
        let mut bad = g.to_vec().unwrap();
        *bad.last_mut().unwrap() = f32::NAN;
        guard.check(&Tensor::from_vec(bad, g.shape(), &dev).unwrap()).unwrap();
        guard.close(1).unwrap();
        assert_eq!(guard.read().unwrap().flagged_steps, 1, "a NaN in the last window is seen");
    }
}
