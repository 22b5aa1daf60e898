//! Per-adapter autotuning of kernel choices: the first time a kernel with variants (GEMM, the
//! batch-norm and axis reductions, im2col) runs at a given size class on an adapter, every
//! supported variant is timed on it and the fastest is kept in a cache file keyed by adapter
//! and driver, so later runs (and processes) reuse it.
//! Tuning is on by default for hardware adapters; on software ones (lavapipe, llvmpipe) the
//! built-in heuristic, measured for them, decides unless `TESSERA_AUTOTUNE=1` (timing every
//! variant there costs tenths of a second per size class). `TESSERA_AUTOTUNE=0` turns tuning
//! off everywhere. The file is
//! `TESSERA_TUNE_CACHE`, else `$XDG_CACHE_HOME/tessera/tune.json`, else
//! `~/.cache/tessera/tune.json`. `tessera bench gemm --retune` forgets an adapter's choices.
use super::GpuBackend;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether kernel choices on an adapter (`software`: a CPU-emulated one) are tuned or left
/// to the heuristic.
pub fn enabled(software: bool) -> bool {
    match std::env::var("TESSERA_AUTOTUNE").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !software,
    }
}

pub fn cache_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_TUNE_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tessera").join("tune.json")
}

/// The cache: "adapter key / what" → the chosen kernel's entry point name.
fn cache() -> &'static Mutex<BTreeMap<String, String>> {
    static CACHE: OnceLock<Mutex<BTreeMap<String, String>>> = OnceLock::new();
    CACHE.get_or_init(|| {
        // An unreadable or malformed file is only a lost cache: start empty.
        let entries = std::fs::read_to_string(cache_path()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        Mutex::new(entries)
    })
}

/// The tuned choice among `candidates` for the size class `what` on `gpu`: the cached one
/// while it is still a candidate; else each is timed by `run` on the caller's operands — one
/// warm-up run, then the best of two — and the fastest is stored. `None` when tuning is off
/// for this adapter: the caller's heuristic decides.
pub fn choose<'a, T>(
    gpu: &GpuBackend,
    what: &str,
    candidates: &[&'a T],
    name: impl Fn(&T) -> &'static str,
    mut run: impl FnMut(&T) -> Result<()>,
) -> Result<Option<&'a T>> {
    if !enabled(gpu.is_software()) || candidates.is_empty() {
        return Ok(None);
    }
    let key = format!("{}/{what}", gpu.tune_key());
    if let Some(found) = lookup(&key).and_then(|stored| candidates.iter().find(|c| name(c) == stored)) {
        return Ok(Some(*found));
    }
    let mut best: Option<(Duration, &'a T)> = None;
    for &candidate in candidates {
        gpu.synchronize()?;
        let mut fastest = Duration::MAX;
        for round in 0..3 {
            let start = Instant::now();
            run(candidate)?;
            gpu.synchronize()?;
            if round > 0 {
                fastest = fastest.min(start.elapsed());
            }
        }
        if best.is_none_or(|(t, _)| fastest < t) {
            best = Some((fastest, candidate));
        }
    }
    let chosen = best.map(|(_, c)| c);
    if let Some(c) = chosen {
        store(&key, name(c));
    }
    Ok(chosen)
}

/// The choice stored under `key`, if any.
pub fn lookup(key: &str) -> Option<String> {
    cache().lock().ok()?.get(key).cloned()
}

/// Stores a choice and rewrites the file (atomically; a failure to write only loses the cache).
pub fn store(key: &str, value: &str) {
    let Ok(mut entries) = cache().lock() else { return };
    entries.insert(key.to_string(), value.to_string());
    let _ = write(&entries);
}

/// Forgets every choice of the adapter `adapter_key`; returns how many there were.
pub fn forget_adapter(adapter_key: &str) -> usize {
    let Ok(mut entries) = cache().lock() else { return 0 };
    let before = entries.len();
    entries.retain(|k, _| !k.starts_with(&format!("{adapter_key}/")));
    let removed = before - entries.len();
    let _ = write(&entries);
    removed
}

fn write(entries: &BTreeMap<String, String>) -> std::io::Result<()> {
    let path = cache_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(entries).expect("strings serialise"))?;
    std::fs::rename(tmp, path)
}
