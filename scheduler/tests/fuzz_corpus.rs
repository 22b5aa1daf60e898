//! The fuzz targets' committed corpus (`fuzz/corpus/<target>/`: seeds from
//! scripts/make_fuzz_corpus.py plus what fuzzing runs kept) replayed through the same checks
//! the targets run (`tessera_scheduler::untrusted`): every input that ever mattered to a
//! loader of untrusted bytes stays a regression test.
use std::path::Path;
use tessera_scheduler::untrusted;

/// One target's check of an input.
type Check = fn(&[u8]);

#[test]
fn every_corpus_input_is_rejected_cleanly_or_accepted_whole() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets: [(&str, Check); 4] =
        [("checkpoint", untrusted::checkpoint), ("cifar_bin", untrusted::cifar_bin), ("image_decode", untrusted::image_decode), ("plan", untrusted::plan)];
    for (target, check) in targets {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: {} broke its loader's guarantee", file.display());
            }
        }
        println!("{target}: {} inputs", files.len());
    }
}
