//! Test-time augmentation (eval::Tta): the views it averages and their weights.
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_scheduler::eval::{tta_logits, view, Tta};

#[test]
fn views_mirror_and_translate_with_reflected_borders() {
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let shape = [1, 1, 3, 3];
    assert_eq!(view(&x, &shape, false, 0), x);
    assert_eq!(view(&x, &shape, true, 0), [3., 2., 1., 6., 5., 4., 9., 8., 7.]);
    // (y, x) shows (y + 1, x + 1): the last row and column reflect back to the middle ones.
    assert_eq!(view(&x, &shape, false, 1), [5., 6., 5., 8., 9., 8., 5., 6., 5.]);
    assert_eq!(view(&x, &shape, false, -1), [5., 4., 5., 2., 1., 2., 5., 4., 5.]);
    // Mirrored after the translation (airbench mirrors the translated batch): a row 1 2 3 4
    // translated by one is 2 3 4 3, mirrored 3 4 3 2.
    assert_eq!(view(&[1., 2., 3., 4.], &[1, 1, 1, 4], true, 1), [3., 4., 3., 2.]);
    assert_eq!(view(&[1., 2., 3., 4.], &[1, 1, 1, 4], true, -1), [3., 2., 1., 2.]);
    // 2 1 2 3 mirrored
}

#[test]
fn tta_averages_the_views_logits_with_airbenchs_weights() {
    let dev = Device::cpu();
    let model = tessera_models::build("simple-cnn", 10, &dev, 0).unwrap();
    model.net.set_training(false);
    let shape = [2, 3, 32, 32];
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let logits = |v: Vec<f32>| no_grad(|| model.net.forward(&Var::constant(Tensor::from_vec(v, &shape, &dev).unwrap())).unwrap().value().to_vec().unwrap());
    let mirror =
        |shift| -> Vec<f32> { logits(view(&x, &shape, false, shift)).iter().zip(logits(view(&x, &shape, true, shift))).map(|(a, b)| 0.5 * (a + b)).collect() };
    let (m0, up, down) = (mirror(0), mirror(-1), mirror(1));
    let want_translate: Vec<f32> = (0..m0.len()).map(|i| 0.5 * m0[i] + 0.25 * (up[i] + down[i])).collect();
    let got = |tta| no_grad(|| tta_logits(&model, x.clone(), &shape, &dev, tta).unwrap().to_vec().unwrap());
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()));
    assert!(close(&got(Tta::None), &logits(x.clone())));
    assert!(close(&got(Tta::Mirror), &m0));
    assert!(close(&got(Tta::MirrorTranslate), &want_translate));
    assert!(!close(&m0, &logits(x.clone())), "the mirror view changes the logits: the test can tell the levels apart");
    assert_eq!("mirror-translate".parse::<Tta>().unwrap(), Tta::MirrorTranslate);
    assert!("sideways".parse::<Tta>().unwrap_err().contains("mirror-translate"));
}
