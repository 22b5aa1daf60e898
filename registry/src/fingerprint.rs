//! A data set's fingerprint: how many files it holds and a SHA-256 over their relative paths
//! and sizes (not their bytes: a fingerprint of 60 000 images takes a directory walk, not a
//! read of every file). Two runs on the same fingerprint saw the same files.
use crate::{RegistryError, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Fingerprint {
    pub files: usize,
    /// Hex SHA-256 of `path\tsize\n` for every file, in path order.
    pub hash: String,
}

/// The fingerprint of every file under `dir` (or of `dir` itself, a file).
pub fn data_fingerprint(dir: &Path) -> Result<Fingerprint> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for (path, size) in &files {
        h.update(format!("{path}\t{size}\n").as_bytes());
    }
    let hash = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Fingerprint { files: files.len(), hash })
}

fn walk(root: &Path, at: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
    let io = |error| RegistryError::Io { path: at.into(), error };
    let meta = std::fs::metadata(at).map_err(io)?;
    if meta.is_file() {
        let rel = at.strip_prefix(root).unwrap_or(at).to_string_lossy().into_owned();
        out.push((rel, meta.len()));
        return Ok(());
    }
    for entry in std::fs::read_dir(at).map_err(io)? {
        walk(root, &entry.map_err(io)?.path(), out)?;
    }
    Ok(())
}
