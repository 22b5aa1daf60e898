//! The CPU backend: rayon for elementwise work, OpenBLAS for matrix products.
pub mod blas;

use std::sync::{Arc, OnceLock};

/// Host execution resources: a rayon pool and the OpenBLAS thread count, set together.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl CpuBackend {
    /// A backend using `threads` threads (0: one per core).
    pub fn new(threads: usize) -> Arc<Self> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        blas::set_num_threads(threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tessera-cpu-{i}"))
            .build()
            .expect("spawning rayon worker threads");
        Arc::new(Self { pool, threads })
    }

    /// The process-wide default backend (one thread per core, or `TESSERA_THREADS`).
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<CpuBackend>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let threads = std::env::var("TESSERA_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                CpuBackend::new(threads)
            })
            .clone()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Sets OpenBLAS to this backend's thread count (a process-wide setting in OpenBLAS).
    pub fn use_blas_threads(&self) {
        if blas::num_threads() != self.threads {
            blas::set_num_threads(self.threads);
        }
    }

    /// Runs `f` inside this backend's rayon pool, with OpenBLAS set to the same thread count.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.use_blas_threads();
        self.pool.install(f)
    }

    /// One line describing the backend for `tessera devices`.
    pub fn describe(&self) -> String {
        format!("{} ({} threads)", blas::config(), self.threads)
    }
}
