//! The process's peak resident memory (Linux: VmHWM in /proc/self/status), resettable so that
//! successive runs in one process each get their own peak.

fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident set size since the last reset, if the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident set size now.
pub fn current_rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// Resets the peak to the current resident size (Linux ≥ 4.0: writing 5 to clear_refs).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
