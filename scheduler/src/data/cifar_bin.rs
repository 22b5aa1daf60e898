//! The CIFAR-10 binary format: records of 1 label byte and 3072 pixel bytes (1024 red, 1024
//! green, 1024 blue, row-major 32×32), e.g. `data_batch_1.bin` … `test_batch.bin`.
use super::{DataError, ImageSet, Result};
use std::path::Path;

const RECORD: usize = 1 + 3 * 32 * 32;
pub const CIFAR10_CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Loads and concatenates CIFAR-10 binary files.
pub fn load_cifar_bin(files: &[&Path]) -> Result<ImageSet> {
    let mut set = ImageSet { classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(), height: 32, width: 32, ..Default::default() };
    for path in files {
        let bytes = std::fs::read(path).map_err(|error| DataError::Io { path: path.to_path_buf(), error })?;
        append_cifar_bin(&mut set, &bytes, path)?;
    }
    Ok(set)
}

/// Appends one CIFAR-10 binary file's records (`bytes`; `path` names it in errors) to `set`.
pub fn append_cifar_bin(set: &mut ImageSet, bytes: &[u8], path: &Path) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(DataError::Layout {
            path: path.to_path_buf(),
            detail: format!("{} bytes is not a whole number of {RECORD}-byte records (record {} is truncated)", bytes.len(), bytes.len() / RECORD),
        });
    }
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0] as usize;
        if label >= 10 {
            return Err(DataError::Layout { path: path.to_path_buf(), detail: format!("record {i} has label {label}; CIFAR-10 labels are 0..=9") });
        }
    }
    for record in bytes.chunks_exact(RECORD) {
        set.labels.push(record[0] as usize);
        set.pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}
