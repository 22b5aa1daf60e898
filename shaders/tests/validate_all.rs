//! Every shader module must parse, validate, and translate to SPIR-V, MSL, HLSL and GLSL ES
//! for each entry point, and the modules must use every `.wgsl` file in shaders/wgsl; a
//! failure names the file, entry point and line.
use std::collections::BTreeSet;
use std::path::Path;
use tessera_shaders::validate::{translate_shader, Outcome, TARGETS};
use tessera_shaders::{Shader, ALL};

fn wgsl_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl")
}

fn read(file: &str) -> String {
    let path = wgsl_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn every_shader_validates_and_translates_to_every_target() {
    let mut failures = Vec::new();
    let (mut translated, mut skipped) = (0, 0);
    for shader in ALL {
        match translate_shader(shader) {
            Err(e) => failures.push(e.to_string()),
            Ok(results) => {
                assert!(!results.is_empty(), "{} has no entry points", shader.file);
                for t in results {
                    match t.result {
                        Outcome::Translated(size) => {
                            assert!(size > 0, "{}: empty {} output for {}", shader.file, t.target, t.entry);
                            translated += 1;
                        }
                        // Only f16 modules may skip a target, and only GLSL ES.
                        Outcome::NotApplicable(why) => {
                            assert!(shader.name == "gemm_f16" && t.target == "GLSL ES", "{}: {} skipped: {why}", shader.file, t.target);
                            skipped += 1;
                        }
                        Outcome::Failed(e) => failures.push(e.to_string()),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "shader failures:\n{}", failures.join("\n"));
    println!("{} modules, {translated} entry-point translations to {TARGETS:?}, {skipped} not applicable", ALL.len());
}

#[test]
fn the_modules_use_exactly_the_files_on_disk() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(wgsl_dir())
        .expect("reading shaders/wgsl")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    let used: BTreeSet<String> = ALL.iter().flat_map(|s| std::iter::once(s.file).chain(s.shared.iter().map(|(f, _)| *f))).map(String::from).collect();
    assert_eq!(on_disk, used, "tessera_shaders::ALL must use every file in shaders/wgsl, and only those");
    for shader in ALL {
        // The module is its own file first (directives such as `enable f16;` must lead), then
        // each shared file once, in the order `shared` lists them.
        let own = read(shader.file);
        assert!(shader.source.starts_with(&own), "{}: the module does not open with its own file", shader.file);
        let mut rest = &shader.source[own.len()..];
        for (file, text) in shader.shared {
            assert_eq!(*text, read(file), "{}: shared file {file} is not the one on disk", shader.file);
            rest = rest.strip_prefix(*text).unwrap_or_else(|| panic!("{}: {file} is not next in the module", shader.file));
        }
        assert!(rest.is_empty(), "{}: {} bytes after the shared files", shader.file, rest.len());
    }
}

/// Every compute entry point of every module is registered as a `Kernel` (a kernel written
/// but not registered can never be launched, tested or tuned), and every registered kernel
/// names a real entry point of its module.
#[test]
fn every_entry_point_is_registered() {
    let registered = registered_kernels();
    for shader in ALL {
        let (module, _) = tessera_shaders::validate::validate(shader.file, shader.source).unwrap();
        for ep in &module.entry_points {
            assert!(
                registered.iter().any(|k| std::ptr::eq(k.shader, *shader) && k.entry == ep.name),
                "{}: entry point `{}` is not registered in tessera_shaders",
                shader.file,
                ep.name
            );
        }
    }
}

fn registered_kernels() -> Vec<&'static tessera_shaders::Kernel> {
    let gemm = tessera_shaders::gemm::VARIANTS.iter().chain(tessera_shaders::gemm::HALF_VARIANTS).map(|v| &v.kernel);
    let others = [
        tessera_shaders::elementwise::ALL_KERNELS,
        tessera_shaders::reduce::ALL_KERNELS,
        tessera_shaders::softmax::ALL_KERNELS,
        tessera_shaders::conv2d::ALL_KERNELS,
        tessera_shaders::conv2d_f16::ALL_KERNELS,
        tessera_shaders::conv2d_bias::ALL_KERNELS,
        tessera_shaders::pool::ALL_KERNELS,
        tessera_shaders::batchnorm::ALL_KERNELS,
        tessera_shaders::bn_running::ALL_KERNELS,
        tessera_shaders::sgd::ALL_KERNELS,
        tessera_shaders::adamw::ALL_KERNELS,
        tessera_shaders::guard::ALL_KERNELS,
        tessera_shaders::half::ALL_KERNELS,
        tessera_shaders::int8::ALL_KERNELS,
    ];
    gemm.chain(others.into_iter().flatten().copied()).collect()
}

#[test]
fn errors_point_into_the_file_they_come_from() {
    static WITH_SHARED: Shader = Shader {
        name: "t",
        file: "body.wgsl",
        source: "@compute @workgroup_size(1)\nfn main() {\n  let y: u32 = X;\n}\nconst X: f32 = 1.0;\nconst Y: f32 = 2.0;\n",
        shared: &[("shared.wgsl", "const X: f32 = 1.0;\nconst Y: f32 = 2.0;\n")],
    };
    let err = translate_shader(&WITH_SHARED).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("body.wgsl", Some(3)), "{err}");
    assert_eq!(WITH_SHARED.locate(6), ("shared.wgsl", 2));
}

#[test]
fn every_registered_kernel_names_a_real_entry_point() {
    for k in registered_kernels() {
        let (module, _) = tessera_shaders::validate::validate(k.shader.file, k.shader.source).unwrap();
        let ep = module.entry_points.iter().find(|e| e.name == k.entry).unwrap_or_else(|| panic!("{} has no entry point {}", k.shader.file, k.entry));
        assert_eq!(ep.workgroup_size, k.workgroup, "{}: workgroup size mirrored wrongly", k.entry);
    }
}
