//! The CPU backend: rayon for all parallel work, single-threaded OpenBLAS for matrix blocks.
//!
//! One thread pool only: OpenBLAS's own threads spin in `sched_yield` after each call and
//! fought rayon's for the two cores (12–18 % of a resnet20 training step), so OpenBLAS runs
//! one thread per call and large products are split into row or column blocks across rayon.
pub mod alloc;
pub mod blas;

pub use blas::Gemm;

use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// Products below this many multiply-adds run as one block: splitting costs more than it saves.
const SPLIT_MIN_MACS: usize = 1 << 18;

/// Host execution resources: a rayon pool; OpenBLAS runs single-threaded inside it.
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    threads: usize,
}

impl CpuBackend {
    /// A backend using `threads` threads (0: one per core).
    pub fn new(threads: usize) -> Arc<Self> {
        Self::build(threads, false)
    }

    /// `threads` workers (0: one per core), the calling thread one of them when `join_caller`.
    fn build(threads: usize, join_caller: bool) -> Arc<Self> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        blas::set_num_threads(1);
        let builder = rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("tessera-cpu-{i}"));
        let builder = if join_caller { builder.use_current_thread() } else { builder };
        let pool = builder.build().expect("spawning rayon worker threads");
        Arc::new(Self { pool, threads })
    }

    /// The process-wide default backend (one thread per core, or `TESSERA_THREADS`). Made on
    /// the main thread, that thread is one of its workers: the training loop then runs its
    /// serial parts on a worker and its parallel ops need no hand-off. With the main thread
    /// outside the pool, every worker spun in `sched_yield` through each serial stretch,
    /// competing with it for the cores: a ResNet-50 CPU step (32 px, batch 32) took 8–10 %
    /// longer, its SGD update 30 %.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<CpuBackend>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let threads = std::env::var("TESSERA_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                CpuBackend::build(threads, std::thread::current().name() == Some("main"))
            })
            .clone()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` inside this backend's rayon pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// `C = alpha·op(A)·op(B) + beta·C`, split across the pool into one block of C's rows (or
    /// columns, when C is wide) per thread, each a single-threaded OpenBLAS call.
    pub fn sgemm(&self, g: &Gemm, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
        g.check_bounds(a.len(), b.len(), c.len());
        // SAFETY: bounds checked above; `c` is borrowed mutably for the call.
        unsafe { self.sgemm_ptr(g, alpha, a, b, beta, c.as_mut_ptr()) }
    }

    /// A new m×n product `alpha·op(A)·op(B)`, written straight into fresh memory: with beta = 0
    /// BLAS sets every element of C without reading it, so no zero-filling pass first (for
    /// AlexNet's fc6 weight gradient that pass alone wrote 151 MB per step).
    pub fn sgemm_new(&self, g: &Gemm, alpha: f32, a: &[f32], b: &[f32]) -> Vec<f32> {
        let g = Gemm { ldc: g.n, ..*g };
        g.check_bounds(a.len(), b.len(), g.m * g.n);
        // SAFETY: bounds checked against the m×n product.
        unsafe { blas::new_product(g.m, g.n, |c| self.sgemm_ptr(&g, alpha, a, b, 0.0, c)) }
    }

    /// [`CpuBackend::sgemm`] into C at `c`.
    ///
    /// # Safety
    /// The operands must satisfy [`Gemm::check_bounds`] (C's extent counted from `c`), and
    /// nothing else may touch that extent of C during the call.
    unsafe fn sgemm_ptr(&self, g: &Gemm, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: *mut f32) {
        let by_rows = g.m >= g.n;
        let extent = if by_rows { g.m } else { g.n };
        let blocks = self.threads.min(extent.div_ceil(8));
        if blocks <= 1 || g.m * g.n * g.k < SPLIT_MIN_MACS {
            return blas::sgemm_raw(g, alpha, a.as_ptr(), b.as_ptr(), beta, c);
        }
        // Block i covers [start, start + len) of the split axis; rounded to 8 for the kernels.
        let step = extent.div_ceil(blocks).next_multiple_of(8);
        let (a_ptr, b_ptr, c_ptr) = (SharedPtr(a.as_ptr() as *mut f32), SharedPtr(b.as_ptr() as *mut f32), SharedPtr(c));
        self.install(|| {
            (0..extent.div_ceil(step)).into_par_iter().for_each(|i| {
                let (start, len) = (i * step, step.min(extent - i * step));
                // Offsets of the block's first element in A (rows) or B (columns), and in C.
                let (a_off, b_off, c_off, block) = if by_rows {
                    (if g.trans_a { start } else { start * g.lda }, 0, start * g.ldc, Gemm { m: len, ..*g })
                } else {
                    (0, if g.trans_b { start * g.ldb } else { start }, start, Gemm { n: len, ..*g })
                };
                // SAFETY: the caller's bounds cover the whole product; each block reads inside
                // it and writes a disjoint block of C.
                unsafe { blas::sgemm_raw(&block, alpha, a_ptr.get().add(a_off), b_ptr.get().add(b_off), beta, c_ptr.get().add(c_off)) }
            })
        })
    }

    /// One line describing the backend for `tessera devices`.
    pub fn describe(&self) -> String {
        let note = blas::ensure_native_kernels().map(|n| format!("; {n}")).unwrap_or_default();
        format!("{} ({} threads){note}", blas::config(), self.threads)
    }
}

/// Runs `f` with a scratch buffer of `len` values whose contents are left from earlier use
/// (callers overwrite what they read): the per-call patch matrices of the convolution reuse
/// this thread's buffers instead of allocating and zeroing megabytes per layer. `slot` tells
/// apart buffers used at the same time. A nested use of a slot (rayon may run another task on
/// this thread while `f` waits) gets a fresh buffer.
pub fn with_scratch<R>(slot: usize, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut buf = SCRATCH.with(|s| s.borrow_mut().get_mut(slot).map(std::mem::take).unwrap_or_default());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() <= slot {
            s.resize_with(slot + 1, Vec::new);
        }
        s[slot] = buf;
    });
    out
}

/// A pointer shared by tasks that touch disjoint parts of its buffer.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

// SAFETY: only used for blocks that the caller proves disjoint (writes) or read-only.
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}
