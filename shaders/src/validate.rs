//! naga validation and cross-compilation: every kernel must parse, validate, and translate to
//! SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES (GL) — our portability check on Linux.
use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationError, ValidationFlags, Validator};
use std::fmt;

/// The translation targets, in report order.
pub const TARGETS: [&str; 4] = ["SPIR-V", "MSL", "HLSL", "GLSL ES"];

/// Why a shader failed: the file, the entry point where known, the line, and naga's message.
#[derive(Debug)]
pub struct ShaderError {
    pub file: String,
    pub stage: &'static str,
    pub entry: Option<String>,
    pub line: Option<u32>,
    pub message: String,
}

impl fmt::Display for ShaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(entry) = &self.entry {
            write!(f, " (entry point `{entry}`)")?;
        }
        write!(f, ": {} failed: {}", self.stage, self.message)
    }
}

impl std::error::Error for ShaderError {}

/// One entry point's translation result for one target.
#[derive(Debug)]
pub struct Translation {
    pub entry: String,
    pub target: &'static str,
    pub result: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    /// The generated code's length (bytes for text, words for SPIR-V).
    Translated(usize),
    /// The target cannot express the module by design (why); adapters of that API use another module.
    NotApplicable(&'static str),
    Failed(ShaderError),
}

/// Why `target` cannot express a module, if it cannot: f16 arithmetic has no GLSL ES form in
/// naga, so GL adapters run the packed-u32 f16 kernels instead.
fn not_applicable(source: &str, target: &str) -> Option<&'static str> {
    (target == "GLSL ES" && uses_f16(source)).then_some("no f16 type in GLSL ES; GL adapters use gemm_f16_packed")
}

fn uses_f16(source: &str) -> bool {
    source.lines().any(|l| l.trim() == "enable f16;")
}

/// Validates and translates a registered shader, reporting errors at the file and line they
/// come from (its own file or a shared one).
pub fn translate_shader(shader: &crate::Shader) -> Result<Vec<Translation>, ShaderError> {
    let relocate = |e: &mut ShaderError| {
        if let Some(line) = e.line {
            let (file, line) = shader.locate(line);
            (e.file, e.line) = (file.to_string(), Some(line));
        }
    };
    let mut results = translate_all(shader.file, shader.source).map_err(|mut e| {
        relocate(&mut e);
        e
    })?;
    for t in &mut results {
        if let Outcome::Failed(e) = &mut t.result {
            relocate(e);
        }
    }
    Ok(results)
}

/// Parses and validates `source`, returning the module and its info.
pub fn validate(file: &str, source: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), ShaderError> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| ShaderError {
        file: file.into(),
        stage: "parse",
        entry: None,
        line: e.location(source).map(|l| l.line_number),
        message: e.emit_to_string_with_path(source, file),
    })?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::SUBGROUP | Capabilities::SHADER_FLOAT16 | Capabilities::SHADER_FLOAT16_IN_FLOAT32)
        .validate(&module)
        .map_err(|e| {
            let entry = match e.as_inner() {
                ValidationError::EntryPoint { name, .. } | ValidationError::Function { name, .. } => Some(name.clone()),
                _ => None,
            };
            ShaderError {
                file: file.into(),
                stage: "validation",
                entry,
                line: e.location(source).map(|l| l.line_number),
                message: e.emit_to_string_with_path(source, file),
            }
        })?;
    Ok((module, info))
}

/// Validates `source` and translates each entry point to every target.
pub fn translate_all(file: &str, source: &str) -> Result<Vec<Translation>, ShaderError> {
    let (module, info) = validate(file, source)?;
    let mut out = Vec::new();
    for ep in &module.entry_points {
        for target in TARGETS {
            let result = if let Some(why) = not_applicable(source, target) {
                Outcome::NotApplicable(why)
            } else {
                match translate(&module, &info, target, &ep.name, ep.stage, uses_f16(source)) {
                    Ok(size) => Outcome::Translated(size),
                    Err(message) => Outcome::Failed(ShaderError {
                        file: file.into(),
                        stage: target,
                        entry: Some(ep.name.clone()),
                        line: line_of_entry(source, &ep.name),
                        message,
                    }),
                }
            };
            out.push(Translation { entry: ep.name.clone(), target, result });
        }
    }
    Ok(out)
}

fn translate(module: &naga::Module, info: &naga::valid::ModuleInfo, target: &str, entry: &str, stage: naga::ShaderStage, f16: bool) -> Result<usize, String> {
    let entry = entry.to_string();
    match target {
        "SPIR-V" => {
            let pipeline = spv::PipelineOptions { shader_stage: stage, entry_point: entry };
            spv::write_vec(module, info, &spv::Options::default(), Some(&pipeline)).map(|words| words.len()).map_err(|e| e.to_string())
        }
        "MSL" => {
            let options = msl::Options { lang_version: (2, 1), ..Default::default() };
            let pipeline = msl::PipelineOptions { entry_point: Some((stage, entry)), ..Default::default() };
            msl::write_string(module, info, &options, &pipeline).map(|(s, _)| s.len()).map_err(|e| e.to_string())
        }
        "HLSL" => {
            let mut text = String::new();
            // f16 needs shader model 6.2 (native 16-bit types); everything else runs on 6.0.
            let shader_model = if f16 { hlsl::ShaderModel::V6_2 } else { hlsl::ShaderModel::V6_0 };
            let options = hlsl::Options { shader_model, ..Default::default() };
            let pipeline = hlsl::PipelineOptions { entry_point: Some((stage, entry)) };
            hlsl::Writer::new(&mut text, &options, &pipeline).write(module, info, None).map(|_| text.len()).map_err(|e| e.to_string())
        }
        "GLSL ES" => {
            let mut text = String::new();
            let options = glsl::Options { version: glsl::Version::new_gles(310), ..Default::default() };
            let pipeline = glsl::PipelineOptions { shader_stage: stage, entry_point: entry, multiview: None };
            glsl::Writer::new(&mut text, module, info, &options, &pipeline, Default::default())
                .and_then(|mut w| w.write())
                .map(|_| text.len())
                .map_err(|e| e.to_string())
        }
        other => Err(format!("unknown target {other}")),
    }
}

/// The 1-based line of `fn <entry>(` in the source, for messages about an entry point.
fn line_of_entry(source: &str, entry: &str) -> Option<u32> {
    let needle = format!("fn {entry}(");
    source.lines().position(|l| l.contains(&needle)).map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_shader_names_file_and_line() {
        let src = "@compute @workgroup_size(1)\nfn main() {\n  let x: f32 = 1u;\n}\n";
        let err = validate("broken.wgsl", src).unwrap_err();
        assert_eq!(err.file, "broken.wgsl");
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.to_string().starts_with("broken.wgsl:3"), "{err}");
    }

    #[test]
    fn a_validation_error_names_the_entry_point() {
        // Parses, but writes through a read-only binding: rejected by the validator.
        let src = "@group(0) @binding(0) var<storage, read> v: array<f32>;\n\
                   @compute @workgroup_size(1)\nfn writer() {\n  v[0] = 1.0;\n}\n";
        let err = validate("ro.wgsl", src).unwrap_err();
        assert_eq!(err.entry.as_deref(), Some("writer"), "{err}");
        assert!(err.to_string().contains("ro.wgsl:") && err.to_string().contains("entry point `writer`"), "{err}");
    }
}
