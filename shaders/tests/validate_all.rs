//! Every `.wgsl` file under shaders/wgsl must parse, validate, and translate to SPIR-V, MSL,
//! HLSL and GLSL ES for each entry point; a failure names the file, entry point and line.
use std::path::Path;
use tessera_shaders::validate::{translate_all, TARGETS};
use tessera_shaders::ALL;

fn wgsl_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let source = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            (name, source)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_shader_validates_and_translates_to_every_target() {
    let files = wgsl_files();
    assert!(!files.is_empty(), "no .wgsl files found");
    let mut failures = Vec::new();
    let mut translated = 0;
    for (file, source) in &files {
        match translate_all(file, source) {
            Err(e) => failures.push(e.to_string()),
            Ok(results) => {
                assert!(!results.is_empty(), "{file} has no entry points");
                for t in results {
                    match t.result {
                        Ok(size) => {
                            assert!(size > 0, "{file}: empty {} output for {}", t.target, t.entry);
                            translated += 1;
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "shader failures:\n{}", failures.join("\n"));
    println!("{} files, {translated} entry-point translations to {TARGETS:?}", files.len());
}

#[test]
fn the_registry_lists_exactly_the_files_on_disk() {
    let on_disk: Vec<String> = wgsl_files().into_iter().map(|(name, _)| name).collect();
    let mut registered: Vec<String> = ALL.iter().map(|s| s.file.to_string()).collect();
    registered.sort();
    assert_eq!(on_disk, registered, "tessera_shaders::ALL must list every file in shaders/wgsl");
    for shader in ALL {
        let disk = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("wgsl").join(shader.file)).unwrap();
        assert_eq!(disk, shader.source, "{} embedded source is stale", shader.file);
    }
}

#[test]
fn every_registered_kernel_names_a_real_entry_point() {
    for variant in tessera_shaders::gemm::VARIANTS {
        let k = &variant.kernel;
        let (module, _) = tessera_shaders::validate::validate(k.shader.file, k.shader.source).unwrap();
        let ep = module
            .entry_points
            .iter()
            .find(|e| e.name == k.entry)
            .unwrap_or_else(|| panic!("{} has no entry point {}", k.shader.file, k.entry));
        assert_eq!(ep.workgroup_size, k.workgroup, "{}: workgroup size mirrored wrongly", k.entry);
    }
}
