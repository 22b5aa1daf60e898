//! Flag parsers for every numeric flag, from the ranges in `tessera_scheduler::settings`: a
//! bad value is an error naming the flag and its range before any command runs.
use tessera_scheduler::settings::{Real, Whole};

/// A whole-number flag within `w`'s range.
pub fn whole(w: Whole) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |text| w.parse(text).map(|v| v as usize)
}

/// A real-valued flag within `r`'s range, as f32.
pub fn real32(r: Real) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    move |text| r.parse(text).and_then(|v| if (v as f32).is_finite() { Ok(v as f32) } else { Err(format!("{} is beyond f32's range: {text}", r.name)) })
}

/// A real-valued flag within `r`'s range, as f64.
pub fn real64(r: Real) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text| r.parse(text)
}

/// The `--model` parser: one of the models Tessera ships (clap lists them in help and errors).
pub fn model_name() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(tessera_models::MODELS.iter().map(|m| m.name))
}
