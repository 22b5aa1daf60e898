//! Every shader module must parse, validate, and translate to SPIR-V, MSL, HLSL and GLSL ES
//! for each entry point, and the modules must use every `.wgsl` file in shaders/wgsl; a
//! failure names the file, entry point and line.
use std::collections::BTreeSet;
use std::path::Path;
use tessera_shaders::validate::{translate_shader, TARGETS};
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
    let mut translated = 0;
    for shader in ALL {
        match translate_shader(shader) {
            Err(e) => failures.push(e.to_string()),
            Ok(results) => {
                assert!(!results.is_empty(), "{} has no entry points", shader.file);
                for t in results {
                    match t.result {
                        Ok(size) => {
                            assert!(size > 0, "{}: empty {} output for {}", shader.file, t.target, t.entry);
                            translated += 1;
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "shader failures:\n{}", failures.join("\n"));
    println!("{} modules, {translated} entry-point translations to {TARGETS:?}", ALL.len());
}

#[test]
fn the_modules_use_exactly_the_files_on_disk() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(wgsl_dir())
        .expect("reading shaders/wgsl")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    let used: BTreeSet<String> =
        ALL.iter().flat_map(|s| std::iter::once(s.file).chain(s.prelude.map(|(f, _)| f))).map(String::from).collect();
    assert_eq!(on_disk, used, "tessera_shaders::ALL must use every file in shaders/wgsl, and only those");
    for shader in ALL {
        let prelude = shader.prelude.map(|(f, _)| read(f)).unwrap_or_default();
        assert_eq!(prelude + &read(shader.file), shader.source, "{}: embedded source is stale", shader.file);
    }
}

#[test]
fn errors_point_into_the_file_they_come_from() {
    static WITH_PRELUDE: Shader = Shader {
        name: "t",
        file: "body.wgsl",
        source: "const X: f32 = 1.0;\n@compute @workgroup_size(1)\nfn main() {\n  let y: u32 = X;\n}\n",
        prelude: Some(("prelude.wgsl", "const X: f32 = 1.0;\n")),
    };
    let err = translate_shader(&WITH_PRELUDE).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("body.wgsl", Some(3)), "{err}");
    assert_eq!(WITH_PRELUDE.locate(1), ("prelude.wgsl", 1));
}

#[test]
fn every_registered_kernel_names_a_real_entry_point() {
    let gemm = tessera_shaders::gemm::VARIANTS.iter().map(|v| &v.kernel);
    let others = [
        tessera_shaders::elementwise::ALL_KERNELS,
        tessera_shaders::reduce::ALL_KERNELS,
        tessera_shaders::softmax::ALL_KERNELS,
        tessera_shaders::conv2d::ALL_KERNELS,
        tessera_shaders::pool::ALL_KERNELS,
        tessera_shaders::batchnorm::ALL_KERNELS,
        tessera_shaders::sgd::ALL_KERNELS,
    ];
    for k in gemm.chain(others.into_iter().flatten().copied()) {
        let (module, _) = tessera_shaders::validate::validate(k.shader.file, k.shader.source).unwrap();
        let ep = module
            .entry_points
            .iter()
            .find(|e| e.name == k.entry)
            .unwrap_or_else(|| panic!("{} has no entry point {}", k.shader.file, k.entry));
        assert_eq!(ep.workgroup_size, k.workgroup, "{}: workgroup size mirrored wrongly", k.entry);
    }
}
