//! Per-adapter autotuning of kernel choices: the first time a product of a given size class
//! runs on an adapter, every supported kernel variant is timed on it and the fastest is kept
//! in a cache file keyed by adapter and driver, so later runs (and processes) reuse it.
//! Tuning is on by default for hardware adapters; on software ones (lavapipe, llvmpipe) the
//! built-in heuristic, measured for them, decides unless `TESSERA_AUTOTUNE=1` (timing every
//! variant there costs tenths of a second per size class). `TESSERA_AUTOTUNE=0` turns tuning
//! off everywhere. The file is
//! `TESSERA_TUNE_CACHE`, else `$XDG_CACHE_HOME/tessera/tune.json`, else
//! `~/.cache/tessera/tune.json`. `tessera bench gemm --retune` forgets an adapter's choices.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

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
