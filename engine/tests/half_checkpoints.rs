//! f32 → f16/bf16 checkpoint → f32: the rounding error is that of the format, no more.
use std::collections::HashMap;
use tessera_engine::checkpoint::{save_as, Checkpoint, FloatFormat};
use tessera_engine::{Device, Tensor};

#[test]
fn half_precision_round_trips_with_the_formats_rounding_error() {
    let dev = Device::cpu();
    let values: Vec<f32> = (0..10_000).map(|i| ((i as f32) * 0.7371).sin() * 3.0).collect();
    let t = Tensor::from_vec(values.clone(), &[100, 100], &dev).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-half-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Relative error of round-to-nearest: 2^-11 for f16 (10-bit mantissa), 2^-8 for bf16.
    for (format, bound) in [(FloatFormat::F16, 2f32.powi(-11)), (FloatFormat::BF16, 2f32.powi(-8)), (FloatFormat::F32, 0.0)] {
        let path = dir.join(format!("{format:?}.safetensors"));
        save_as(&path, &[("w".into(), t.clone())], &HashMap::new(), format).unwrap();
        let back = &Checkpoint::load(&path).unwrap().tensors["w"].0;
        let worst = values.iter().zip(back).filter(|(v, _)| v.abs() > 1e-3).map(|(v, b)| ((v - b) / v).abs()).fold(0f32, f32::max);
        assert!(worst <= bound, "{format:?}: worst relative error {worst:e} > {bound:e}");
        if format != FloatFormat::F32 {
            assert!(worst > bound / 4.0, "{format:?}: suspiciously exact ({worst:e}): was it really rounded?");
        }
        let expected_size = 10_000 * if format == FloatFormat::F32 { 4 } else { 2 };
        assert!(std::fs::metadata(&path).unwrap().len() as usize >= expected_size);
    }
    assert!("fp8".parse::<FloatFormat>().unwrap_err().contains("expected f32, f16 or bf16"));
}
