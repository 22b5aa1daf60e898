//! Where a GPU step's time goes, kernel by kernel (`tessera bench train --kernels`): launches,
//! seconds and bytes bound per kernel entry point, and the same for buffer copies. While a
//! profile is open every launch runs alone — the work queued before it is finished first, then
//! it is submitted and waited for — so its time is its own (plus one submission), at the cost
//! of the batching an unprofiled step has. Bytes bound are the sizes of the windows a launch
//! binds (reads and writes): an upper bound on the memory it moves, as a kernel may leave part
//! of a binding unread, and a lower one where it reads a value twice.
use std::collections::BTreeMap;
use std::time::Duration;

/// One kernel's (or the buffer copies') totals over a profile.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelTotals {
    pub launches: u64,
    pub seconds: f64,
    pub bytes_bound: u64,
}

/// Totals per kernel entry point (`"buffer copy"` for copies between buffers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelProfile {
    pub kernels: BTreeMap<&'static str, KernelTotals>,
}

/// The name copies between buffers are recorded under.
pub const BUFFER_COPY: &str = "buffer copy";

impl KernelProfile {
    pub(crate) fn record(&mut self, kernel: &'static str, took: Duration, bytes_bound: u64) {
        let t = self.kernels.entry(kernel).or_default();
        t.launches += 1;
        t.seconds += took.as_secs_f64();
        t.bytes_bound += bytes_bound;
    }

    /// The kernels, most time first.
    pub fn by_time(&self) -> Vec<(&'static str, KernelTotals)> {
        let mut rows: Vec<_> = self.kernels.iter().map(|(k, t)| (*k, *t)).collect();
        rows.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds).then(a.0.cmp(b.0)));
        rows
    }

    /// The sum over kernels.
    pub fn total(&self) -> KernelTotals {
        self.kernels.values().fold(KernelTotals::default(), |acc, t| KernelTotals {
            launches: acc.launches + t.launches,
            seconds: acc.seconds + t.seconds,
            bytes_bound: acc.bytes_bound + t.bytes_bound,
        })
    }
}
