//! The CPU twin of conv2d (shape rules and the GPU route: conv2d.rs): image by image, each
//! image's patch matrix [C·kh·kw, Ho·Wo] unfolded into a per-thread buffer that stays in cache
//! and multiplied in place into the image's [O, Ho·Wo] output block, which in NCHW is already
//! the output layout. Compared with one batch-wide patch matrix this allocates and touches
//! N times less memory and needs no axis swap; a pointwise (1×1, stride 1, no padding)
//! convolution multiplies the image itself. Small output planes (< 256 positions) take a few
//! images side by side per GEMM instead (`conv2d_grouped`), unfolded through a table of tap
//! offsets (`TapTable`) that also drops the taps reading only padding.
use super::conv2d::ConvShape;
use crate::cpu::{blas, with_scratch, CpuBackend};
use rayon::prelude::*;

impl ConvShape {
    /// Input positions per output position are the identity: the image is its patch matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.opts.stride == [1, 1] && self.opts.padding == [0, 0]
    }

    fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }
}

/// The signed input coordinate of output position `o`, kernel tap `t` on axis `i`.
fn tap(s: &ConvShape, i: usize, o: usize, t: usize) -> isize {
    (o * s.opts.stride[i] + t * s.opts.dilation[i]) as isize - s.opts.padding[i] as isize
}

/// The output columns `ow` whose tap `j` lands inside the input row, and the input column of
/// the first: x = ow·stride + j·dil − pad ∈ [0, W) ⇔ ow ∈ [lo, hi). Bounds once per row instead
/// of a check per value.
fn valid_columns(s: &ConvShape, j: usize) -> (usize, usize, usize) {
    let (st, off) = (s.opts.stride[1] as isize, tap(s, 1, 0, j));
    let lo = if off >= 0 { 0 } else { (-off + st - 1) / st };
    let hi = if (s.w as isize) <= off { 0 } else { (s.w as isize - off + st - 1) / st };
    let (lo, hi) = (lo as usize, (hi as usize).min(s.wo));
    let lo = lo.min(hi);
    (lo, hi, if lo < hi { (lo as isize * st + off) as usize } else { 0 })
}

/// One image [C, H, W] → its patch matrix [C·kh·kw, Ho·Wo] (zeros where taps fall in padding).
fn im2col_image(s: &ConvShape, x: &[f32], cols: &mut [f32]) {
    let stride = s.opts.stride[1];
    for (row, dst) in cols.chunks_mut(s.out_plane()).take(s.patch_len()).enumerate() {
        let (c, i, j) = (row / (s.kh * s.kw), (row / s.kw) % s.kh, row % s.kw);
        let (lo, hi, x0) = valid_columns(s, j);
        for (oh, dst_row) in dst.chunks_mut(s.wo).enumerate() {
            let y = tap(s, 0, oh, i);
            if y < 0 || y as usize >= s.h {
                dst_row.fill(0.0);
                continue;
            }
            let src = &x[(c * s.h + y as usize) * s.w..][..s.w];
            dst_row[..lo].fill(0.0);
            dst_row[hi..].fill(0.0);
            if stride == 1 {
                dst_row[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
            } else {
                dst_row[lo..hi].iter_mut().zip(src[x0..].iter().step_by(stride)).for_each(|(d, v)| *d = *v);
            }
        }
    }
}

/// The adjoint of [`im2col_image`]: dx [C, H, W] += the patch gradients folded back.
fn col2im_image(s: &ConvShape, cols: &[f32], dx: &mut [f32]) {
    let stride = s.opts.stride[1];
    for (row, src) in cols.chunks(s.out_plane()).take(s.patch_len()).enumerate() {
        let (c, i, j) = (row / (s.kh * s.kw), (row / s.kw) % s.kh, row % s.kw);
        let (lo, hi, x0) = valid_columns(s, j);
        let plane = &mut dx[c * s.h * s.w..][..s.h * s.w];
        for (oh, src_row) in src.chunks(s.wo).enumerate() {
            let y = tap(s, 0, oh, i);
            if y < 0 || y as usize >= s.h {
                continue;
            }
            let dst = &mut plane[y as usize * s.w..][x0..];
            dst.iter_mut().step_by(stride).zip(&src_row[lo..hi]).for_each(|(d, v)| *d += v);
        }
    }
}

/// Where each kernel tap reads for each output position, for the small output planes that take
/// the grouped route: offsets into one input channel plane, −1 in the padding. There the
/// patch matrix is copied value by value, and per-row bounds arithmetic would cost more than
/// the copy. Taps that read only padding are dropped with their weight columns: on a 1×1
/// plane a 3×3 convolution (padding 1) is the 1×1 convolution by its centre tap, 9× less work.
struct TapTable {
    /// Kept taps, as i·kw + j.
    taps: Vec<usize>,
    /// taps.len() × Ho·Wo offsets.
    offsets: Vec<i32>,
    /// Per kept tap, the first offset when its offsets are one run inside the plane (every
    /// tap of a pointwise convolution): then its rows are plain copies.
    runs: Vec<Option<usize>>,
}

impl TapTable {
    fn new(s: &ConvShape) -> Self {
        let (mut taps, mut offsets) = (Vec::new(), Vec::new());
        for t in 0..s.kh * s.kw {
            let (i, j) = (t / s.kw, t % s.kw);
            let row: Vec<i32> = (0..s.out_plane())
                .map(|q| {
                    let (y, x) = (tap(s, 0, q / s.wo, i), tap(s, 1, q % s.wo, j));
                    let inside = (0..s.h as isize).contains(&y) && (0..s.w as isize).contains(&x);
                    if inside {
                        (y * s.w as isize + x) as i32
                    } else {
                        -1
                    }
                })
                .collect();
            if row.iter().any(|&o| o >= 0) {
                taps.push(t);
                offsets.extend(row);
            }
        }
        let runs = offsets.chunks(s.out_plane().max(1)).map(contiguous).collect();
        Self { taps, offsets, runs }
    }

    /// Rows of the compact patch matrix: C · kept taps.
    fn rows(&self, s: &ConvShape) -> usize {
        s.c * self.taps.len()
    }

    fn keeps_all(&self, s: &ConvShape) -> bool {
        self.taps.len() == s.kh * s.kw
    }

    /// The weight's columns for the kept taps: [O, C·kh·kw] → [O, C·taps].
    fn compact_weight<'a>(&self, s: &ConvShape, weight: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        if self.keeps_all(s) {
            return weight.into();
        }
        let mut compact = Vec::with_capacity(s.o * self.rows(s));
        for w_c in weight.chunks(s.kh * s.kw) {
            compact.extend(self.taps.iter().map(|&t| w_c[t]));
        }
        compact.into()
    }

    /// A compact weight gradient back in the weight's layout, zero at the dropped taps.
    fn expand_weight_grad(&self, s: &ConvShape, compact: Vec<f32>) -> Vec<f32> {
        if self.keeps_all(s) {
            return compact;
        }
        let mut dw = vec![0f32; s.o * s.patch_len()];
        for (dw_c, cw_c) in dw.chunks_mut(s.kh * s.kw).zip(compact.chunks(self.taps.len())) {
            self.taps.iter().zip(cw_c).for_each(|(&t, v)| dw_c[t] = *v);
        }
        dw
    }

    /// One image [C, H, W] into the columns `off..off + Ho·Wo` of the compact patch matrix
    /// whose rows are `ld` long.
    fn gather(&self, s: &ConvShape, x: &[f32], cols: &mut [f32], ld: usize, off: usize) {
        let p = s.out_plane();
        for (c, plane) in x.chunks(s.h * s.w).enumerate() {
            for (ti, (offsets, run)) in self.offsets.chunks(p).zip(&self.runs).enumerate() {
                let dst = &mut cols[(c * self.taps.len() + ti) * ld + off..][..p];
                match *run {
                    Some(start) => dst.copy_from_slice(&plane[start..start + p]),
                    None => dst.iter_mut().zip(offsets).for_each(|(d, &o)| *d = if o >= 0 { plane[o as usize] } else { 0.0 }),
                }
            }
        }
    }

    /// The adjoint of [`TapTable::gather`]: dx [C, H, W] += those columns folded back.
    fn scatter_add(&self, s: &ConvShape, cols: &[f32], ld: usize, off: usize, dx: &mut [f32]) {
        let p = s.out_plane();
        for (c, plane) in dx.chunks_mut(s.h * s.w).enumerate() {
            for (ti, (offsets, run)) in self.offsets.chunks(p).zip(&self.runs).enumerate() {
                let src = &cols[(c * self.taps.len() + ti) * ld + off..][..p];
                match *run {
                    Some(start) => plane[start..start + p].iter_mut().zip(src).for_each(|(d, v)| *d += v),
                    None => src.iter().zip(offsets).filter(|(_, &o)| o >= 0).for_each(|(v, &o)| plane[o as usize] += v),
                }
            }
        }
    }
}

/// The first offset when a tap's offsets are one run start, start + 1, … inside the plane.
fn contiguous(offsets: &[i32]) -> Option<usize> {
    let first = *offsets.first()?;
    (first >= 0 && offsets.iter().enumerate().all(|(q, &o)| o == first + q as i32)).then_some(first as usize)
}

/// C = op(A)·op(B) + beta·C: single-threaded when the images already run in parallel, split
/// across the pool when there are fewer images than threads.
#[allow(clippy::too_many_arguments)]
fn product(cpu: &CpuBackend, split: bool, ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
    if split {
        cpu.sgemm(ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, n)
    } else {
        blas::sgemm(ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, n)
    }
}

/// dW += g·patchesᵀ into a run's partial sum [m, n]; the first product (`dw` still empty)
/// writes fresh memory instead of adding onto a zero-filled one: per step those zeros were
/// twice the size of every convolution weight.
#[allow(clippy::too_many_arguments)]
fn accumulate_weight_grad(cpu: &CpuBackend, split: bool, m: usize, n: usize, k: usize, g: &[f32], patches: &[f32], dw: &mut Vec<f32>) {
    if !dw.is_empty() {
        return product(cpu, split, false, true, m, n, k, g, patches, 1.0, dw);
    }
    *dw = if split { cpu.sgemm_new(false, true, m, n, k, 1.0, g, k, patches, k) } else { blas::sgemm_new(false, true, m, n, k, 1.0, g, k, patches, k) };
}

/// Output planes smaller than this many positions are multiplied several images at a time:
/// image by image they would be thin GEMMs (a GEMV at 1×1) that waste the BLAS kernel.
const MIN_GEMM_COLUMNS: usize = 256;

/// Images per product: enough side by side to give the GEMM `MIN_GEMM_COLUMNS` columns.
fn group_size(s: &ConvShape) -> usize {
    MIN_GEMM_COLUMNS.div_ceil(s.out_plane().max(1)).min(s.n.max(1))
}

/// out[n] = W·patches(x[n]) for each image: x [N, C, H, W], weight [O, C·kh·kw] → [N, O, Ho, Wo].
pub(super) fn conv2d(cpu: &CpuBackend, s: &ConvShape, x: &[f32], weight: &[f32]) -> Vec<f32> {
    if group_size(s) > 1 {
        // At least one group per thread: unfolding and scattering run per group.
        return conv2d_grouped(cpu, s, x, weight, group_size(s).min(s.n.div_ceil(cpu.threads())).max(1));
    }
    let (ck, p) = (s.patch_len(), s.out_plane());
    let split = s.n < cpu.threads();
    let mut out = vec![0f32; s.n * s.o * p];
    let cols_len = if s.is_pointwise() { 0 } else { ck * p };
    cpu.install(|| {
        out.par_chunks_mut((s.o * p).max(1)).enumerate().for_each(|(n, out_n)| {
            let x_n = &x[n * s.image_len()..][..s.image_len()];
            if s.is_pointwise() {
                return product(cpu, split, false, false, s.o, p, ck, weight, x_n, 0.0, out_n);
            }
            with_scratch(0, cols_len, |cols| {
                im2col_image(s, x_n, cols);
                product(cpu, split, false, false, s.o, p, ck, weight, cols, 0.0, out_n);
            })
        })
    });
    out
}

/// conv2d for small output planes: `group` images' compact patch matrices side by side as one
/// [C·taps, group·Ho·Wo] matrix, one GEMM, then the [O, group·Ho·Wo] result scattered to NCHW.
fn conv2d_grouped(cpu: &CpuBackend, s: &ConvShape, x: &[f32], weight: &[f32], group: usize) -> Vec<f32> {
    let (p, o) = (s.out_plane(), s.o);
    let table = TapTable::new(s);
    let (rows, weight) = (table.rows(s), table.compact_weight(s, weight));
    let split = s.n.div_ceil(group) < cpu.threads();
    let mut out = vec![0f32; s.n * o * p];
    cpu.install(|| {
        out.par_chunks_mut((group * o * p).max(1)).enumerate().for_each(|(gi, out_g)| {
            let images = out_g.len() / (o * p).max(1);
            let width = images * p;
            with_scratch(0, rows * width, |cols| {
                with_scratch(1, o * width, |tmp| {
                    for k in 0..images {
                        let n = gi * group + k;
                        table.gather(s, &x[n * s.image_len()..][..s.image_len()], cols, width, k * p);
                    }
                    product(cpu, split, false, false, o, width, rows, &weight, cols, 0.0, tmp);
                    for k in 0..images {
                        for oc in 0..o {
                            out_g[(k * o + oc) * p..][..p].copy_from_slice(&tmp[oc * width + k * p..][..p]);
                        }
                    }
                })
            })
        })
    });
    out
}

/// The backward of [`conv2d_grouped`] for one run of images starting at `first`: the
/// gradient gathered to [O, group·Ho·Wo] per group, dW' += g·patchesᵀ, dpatches = W'ᵀ·g folded
/// back image by image (W' the compact weight). Returns the run's partial dW' [O, C·taps].
#[allow(clippy::too_many_arguments)]
fn backward_grouped_run(
    cpu: &CpuBackend,
    s: &ConvShape,
    (table, weight): (&TapTable, &[f32]),
    x: &[f32],
    g: &[f32],
    (first, count): (usize, usize),
    group: usize,
    split: bool,
    dx_run: &mut [f32],
    need: (bool, bool),
) -> Vec<f32> {
    let (rows, p, o) = (table.rows(s), s.out_plane(), s.o);
    let (need_input, need_weight) = need;
    let mut dw = Vec::new();
    with_scratch(0, rows * group * p, |cols| {
        with_scratch(1, o * group * p, |g_g| {
            let mut start = first;
            while start < first + count {
                let images = group.min(first + count - start);
                let width = images * p;
                for k in 0..images {
                    for oc in 0..o {
                        g_g[oc * width + k * p..][..p].copy_from_slice(&g[((start + k) * o + oc) * p..][..p]);
                    }
                }
                if need_weight {
                    for k in 0..images {
                        table.gather(s, &x[(start + k) * s.image_len()..][..s.image_len()], cols, width, k * p);
                    }
                    accumulate_weight_grad(cpu, split, o, rows, width, &g_g[..o * width], &cols[..rows * width], &mut dw);
                }
                if need_input {
                    product(cpu, split, true, false, rows, width, o, weight, &g_g[..o * width], 0.0, &mut cols[..rows * width]);
                    for k in 0..images {
                        let dx_n = &mut dx_run[(start + k - first) * s.image_len()..][..s.image_len()];
                        table.scatter_add(s, cols, width, k * p, dx_n);
                    }
                }
                start += images;
            }
        })
    });
    dw
}

/// dx[n] = col2im(Wᵀ·g[n]) and dW = Σₙ g[n]·patches(x[n])ᵀ, each only if asked for. The batch
/// is cut into one contiguous run of images per thread, each summing its own dW.
pub(super) fn conv2d_backward(
    cpu: &CpuBackend,
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    g: &[f32],
    need_input: bool,
    need_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (ck, p) = (s.patch_len(), s.out_plane());
    let runs = cpu.threads().min(s.n).max(1);
    let per_run = s.n.div_ceil(runs);
    let split = s.n < cpu.threads();
    let mut dx = vec![0f32; if need_input { s.n * s.image_len() } else { 0 }];
    let dx_chunk = if need_input { (per_run * s.image_len()).max(1) } else { 1 };
    let pointwise = s.is_pointwise();
    let group = group_size(s);
    let table = (group > 1).then(|| TapTable::new(s));
    let compact = table.as_ref().map(|t| (t, t.compact_weight(s, weight)));
    // One task per run of images: (first image, its dx block) → its partial dW.
    let run_images = |first: usize, dx_run: &mut [f32]| -> Vec<f32> {
        if let Some((table, weight)) = &compact {
            let count = per_run.min(s.n.saturating_sub(first));
            return backward_grouped_run(cpu, s, (table, weight), x, g, (first, count), group, split, dx_run, (need_input, need_weight));
        }
        let mut dw = Vec::new();
        with_scratch(0, if pointwise { 0 } else { ck * p }, |cols| {
            for n in first..(first + per_run).min(s.n) {
                let g_n = &g[n * s.o * p..][..s.o * p];
                if need_weight {
                    let x_n = &x[n * s.image_len()..][..s.image_len()];
                    let patches: &[f32] = if pointwise {
                        x_n
                    } else {
                        im2col_image(s, x_n, cols);
                        cols
                    };
                    accumulate_weight_grad(cpu, split, s.o, ck, p, g_n, patches, &mut dw);
                }
                if need_input {
                    let dx_n = &mut dx_run[(n - first) * s.image_len()..][..s.image_len()];
                    if pointwise {
                        product(cpu, split, true, false, ck, p, s.o, weight, g_n, 0.0, dx_n);
                    } else {
                        product(cpu, split, true, false, ck, p, s.o, weight, g_n, 0.0, cols);
                        col2im_image(s, cols, dx_n);
                    }
                }
            }
        });
        dw
    };
    let partial_dws: Vec<Vec<f32>> = cpu.install(|| {
        if need_input {
            dx.par_chunks_mut(dx_chunk).enumerate().map(|(r, dx_run)| run_images(r * per_run, dx_run)).collect()
        } else {
            (0..s.n.div_ceil(per_run.max(1))).into_par_iter().map(|r| run_images(r * per_run, &mut [])).collect()
        }
    });
    let dw = need_weight.then(|| {
        let mut parts = partial_dws.into_iter().filter(|part| !part.is_empty());
        let rows = table.as_ref().map_or(ck, |t| t.rows(s));
        let mut dw = parts.next().unwrap_or_else(|| vec![0f32; s.o * rows]);
        for part in parts {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        match &table {
            Some(t) => t.expand_weight_grad(s, dw),
            None => dw,
        }
    });
    (need_input.then_some(dx), dw)
}
