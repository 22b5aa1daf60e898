//! The few OpenBLAS entry points the CPU backend uses, linked from the system library
//! (see build.rs). Declared by hand: four functions do not warrant a bindings crate.
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

extern "C" {
    fn cblas_sgemm(
        layout: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_get_config() -> *const c_char;
    fn openblas_get_corename() -> *const c_char;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn openblas_get_num_threads() -> c_int;
    fn openblas_set_num_threads(n: c_int);
}

/// The shape of one row-major product C = alpha·op(A)·op(B) + beta·C: op(A) is m×k, op(B)
/// k×n, C m×n, and each stored matrix's rows lie its leading dimension apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

impl Gemm {
    /// A product of contiguous matrices: each stored row is as long as its matrix is wide.
    pub fn packed(trans_a: bool, trans_b: bool, m: usize, n: usize, k: usize) -> Self {
        Self { trans_a, trans_b, m, n, k, lda: if trans_a { m } else { k }, ldb: if trans_b { k } else { n }, ldc: n }
    }

    /// Panics unless every element the product touches lies inside the given lengths.
    pub(crate) fn check_bounds(&self, a_len: usize, b_len: usize, c_len: usize) {
        let (a_rows, b_rows) = (if self.trans_a { self.k } else { self.m }, if self.trans_b { self.n } else { self.k });
        assert!(a_rows == 0 || a_len >= (a_rows - 1) * self.lda + if self.trans_a { self.m } else { self.k });
        assert!(b_rows == 0 || b_len >= (b_rows - 1) * self.ldb + if self.trans_b { self.k } else { self.n });
        assert!(self.m == 0 || c_len >= (self.m - 1) * self.ldc + self.n);
    }
}

/// `C = alpha·op(A)·op(B) + beta·C` on one thread; slices are checked against the dimensions
/// so the unsafe call cannot read or write out of bounds.
pub fn sgemm(g: &Gemm, alpha: f32, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    g.check_bounds(a.len(), b.len(), c.len());
    // SAFETY: bounds checked above.
    unsafe { sgemm_raw(g, alpha, a.as_ptr(), b.as_ptr(), beta, c.as_mut_ptr()) }
}

/// A new m×n product `alpha·op(A)·op(B)` on one thread, written straight into fresh memory:
/// with beta = 0 BLAS sets every element of C without reading it.
pub fn sgemm_new(g: &Gemm, alpha: f32, a: &[f32], b: &[f32]) -> Vec<f32> {
    let g = Gemm { ldc: g.n, ..*g };
    g.check_bounds(a.len(), b.len(), g.m * g.n);
    // SAFETY: bounds checked against the m×n product.
    unsafe { new_product(g.m, g.n, |c| sgemm_raw(&g, alpha, a.as_ptr(), b.as_ptr(), 0.0, c)) }
}

/// A fresh m×n matrix that `write` fills through a pointer to its first element.
///
/// # Safety
/// `write` must set all m·n elements: a GEMM with beta = 0 does (BLAS sets every element of C
/// without reading it, k = 0 included: C := 0).
pub(crate) unsafe fn new_product(m: usize, n: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut c = Vec::with_capacity(m * n);
    write(c.as_mut_ptr());
    c.set_len(m * n);
    c
}

/// The OpenBLAS call on raw pointers.
///
/// # Safety
/// The pointers must cover the elements [`Gemm::check_bounds`] describes, and no other thread
/// may touch the written block of C meanwhile.
pub(crate) unsafe fn sgemm_raw(g: &Gemm, alpha: f32, a: *const f32, b: *const f32, beta: f32, c: *mut f32) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    let t = |x: bool| if x { CBLAS_TRANS } else { CBLAS_NO_TRANS };
    let d = |x: usize| x.max(1) as c_int;
    cblas_sgemm(CBLAS_ROW_MAJOR, t(g.trans_a), t(g.trans_b), d(g.m), d(g.n), g.k as c_int, alpha, a, d(g.lda), b, d(g.ldb), beta, c, d(g.ldc))
}

/// OpenBLAS's kernel family for this CPU, e.g. `Haswell`.
pub fn corename() -> String {
    // SAFETY: OpenBLAS returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(openblas_get_corename()) }.to_string_lossy().into_owned()
}

/// The kernel family this CPU can run, by its instruction set, and the OpenBLAS families that
/// already use it fully.
#[cfg(target_arch = "x86_64")]
fn native_core() -> Option<(&'static str, &'static [&'static str])> {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
        Some(("SkylakeX", &["SkylakeX", "Cooperlake", "SapphireRapids"]))
    } else if has!("avx2") && has!("fma") {
        Some(("Haswell", &["Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"]))
    } else {
        None
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn native_core() -> Option<(&'static str, &'static [&'static str])> {
    None
}

/// Makes a DYNAMIC_ARCH OpenBLAS use the kernels this CPU supports when its own detection
/// failed: OpenBLAS 0.3.21 (Debian 12) does not know CPU models newer than it, such as
/// Emerald Rapids, and falls back to the SSE3 `Prescott` kernels — 26 instead of 220 GFLOP/s
/// at 2048³ on such a machine. It re-runs OpenBLAS's own core selection with
/// `OPENBLAS_CORETYPE` set, as a user would in the environment; a user's setting is kept.
/// Returns a note on what was changed, once per process. It runs when the program starts
/// (below), before main and any other thread: setting the environment while another thread
/// reads it is a data race.
pub fn ensure_native_kernels() -> Option<&'static str> {
    static NOTE: OnceLock<Option<String>> = OnceLock::new();
    NOTE.get_or_init(|| {
        if std::env::var_os("OPENBLAS_CORETYPE").is_some() {
            return None;
        }
        let (native, covered) = native_core()?;
        let detected = corename();
        if covered.iter().any(|c| c.eq_ignore_ascii_case(&detected)) {
            return None;
        }
        // Only DYNAMIC_ARCH builds export the selection functions: look them up, do not link.
        // SAFETY: dlsym on the process's global scope (RTLD_DEFAULT = null) with NUL-terminated names.
        let (quit, init) =
            unsafe { (dlsym(std::ptr::null_mut(), c"gotoblas_dynamic_quit".as_ptr()), dlsym(std::ptr::null_mut(), c"gotoblas_dynamic_init".as_ptr())) };
        if quit.is_null() || init.is_null() {
            return None;
        }
        std::env::set_var("OPENBLAS_CORETYPE", native);
        // SAFETY: both are `void f(void)` in OpenBLAS's dynamic.c; quit clears the selection and
        // init re-selects it from OPENBLAS_CORETYPE. No BLAS call is running yet.
        unsafe {
            std::mem::transmute::<*mut c_void, extern "C" fn()>(quit)();
            std::mem::transmute::<*mut c_void, extern "C" fn()>(init)();
        }
        let now = corename();
        Some(format!("OpenBLAS detected `{detected}` kernels on this CPU; switched to `{now}`"))
    })
    .as_deref()
}

// SAFETY (of running before main): OpenBLAS, a shared library this one links, has finished
// its own constructor by then; the selection uses only the environment, cpuid and OpenBLAS.
#[ctor::ctor]
fn select_kernels_at_start() {
    ensure_native_kernels();
}

/// OpenBLAS's build configuration string, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64`.
pub fn config() -> String {
    // SAFETY: OpenBLAS returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(openblas_get_config()) }.to_string_lossy().into_owned()
}

pub fn num_threads() -> usize {
    // SAFETY: plain getter.
    unsafe { openblas_get_num_threads() as usize }
}

pub fn set_num_threads(n: usize) {
    // SAFETY: plain setter; OpenBLAS clamps to its compiled maximum.
    unsafe { openblas_set_num_threads(n.max(1) as c_int) }
}
