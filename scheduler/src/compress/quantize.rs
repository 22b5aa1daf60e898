//! Post-training quantisation: int8 (weights per output channel, activations per tensor with
//! scales calibrated on training images) and f16 weights. The int8 file stores each
//! quantised layer L as `L.weight` (I8, the float weight's shape), `L.weight_scale` (F32 [O])
//! and `L.input_scale` (F32 []); everything else stays F32 (`run_state::load_weights` reads it).
use crate::data::{Dataset, Loader, LoaderSpec, Subset};
use crate::error::TrainError;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_engine::checkpoint::Int8Entry;
use tessera_engine::ops::int8::{scale_for, Int8Weights};
use tessera_engine::{no_grad, Device, Tensor, Var};
use tessera_models::Model;

/// `count` training images spread evenly over `train` (every k-th), for calibration.
pub fn calibration_set(train: &Dataset, count: usize) -> Dataset {
    let step = (train.len() / count.max(1)).max(1);
    let indices: Vec<usize> = (0..train.len()).step_by(step).take(count).collect();
    let labels = indices.iter().map(|&i| train.label(i)).collect();
    Arc::new(Subset { base: train.clone(), indices, labels, classes: train.classes().to_vec() })
}

/// Runs `calibration` through `model` in eval mode recording every conv and linear layer's
/// largest input magnitude, then switches each to int8 with that scale. Returns the layers.
pub fn quantize_int8(model: &Model, calibration: &Dataset, batch: usize, device: &Device) -> Result<Vec<String>, TrainError> {
    if calibration.is_empty() {
        return Err(TrainError::Config("int8 calibration needs at least one training image (--calibrate N)".into()));
    }
    let slots = model.net.named_int8();
    slots.iter().for_each(|(_, s)| s.calibrate());
    model.net.set_training(false);
    let ran = Loader::new(calibration, &LoaderSpec::eval(batch)).map_err(TrainError::from).and_then(|loader| {
        loader.into_iter().try_for_each(|b| -> Result<(), TrainError> {
            let b = b?;
            no_grad(|| model.net.forward(&Var::constant(Tensor::from_vec(b.x, &b.shape, device)?)))?;
            Ok(())
        })
    });
    model.net.set_training(true);
    ran?;
    let params: HashMap<String, Arc<tessera_engine::nn::Param>> = model.net.named_params().into_iter().collect();
    let mut layers = Vec::new();
    for (name, slot) in &slots {
        let max_abs = slot.observed().unwrap_or(0.0);
        let layer = name.trim_end_matches(".weight");
        let bias = params.get(&format!("{layer}.bias")).map(|b| b.value());
        let w = Int8Weights::quantize(&params[name].value(), bias.as_ref(), scale_for(max_abs))?;
        slot.set(Some(Arc::new(w)));
        layers.push(layer.to_string());
    }
    Ok(layers)
}

/// The model's tensors for a file: f32 parameters and buffers, except the weights of layers
/// running int8, which go as I8 entries with their scales.
pub fn file_tensors(model: &Model) -> (Vec<(String, Tensor)>, Vec<Int8Entry>) {
    let int8: HashMap<String, Arc<Int8Weights>> = model.net.named_int8().into_iter().filter_map(|(n, s)| s.weights().map(|w| (n, w))).collect();
    let mut floats = Vec::new();
    let mut ints = Vec::new();
    for (name, p) in model.net.named_params() {
        match int8.get(&name) {
            Some(w) => {
                let layer = name.trim_end_matches(".weight");
                ints.push((name.clone(), w.shape().to_vec(), w.values().to_vec()));
                let device = Device::cpu();
                let scale = Tensor::from_vec(w.weight_scale().to_vec(), &[w.weight_scale().len()], &device).expect("one scale per output channel");
                floats.push((format!("{name}_scale"), scale));
                floats.push((format!("{layer}.input_scale"), Tensor::from_vec(vec![w.input_scale()], &[], &device).expect("a scalar")));
            }
            None => floats.push((name, p.value())),
        }
    }
    floats.extend(model.net.named_buffers().into_iter().map(|(n, b)| (n, b.value())));
    (floats, ints)
}
