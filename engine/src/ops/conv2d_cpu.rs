//! The CPU twin of conv2d (shape rules and the GPU route: conv2d.rs): image by image, and
//! within an image by blocks of output rows, each block's patch matrix [C·kh·kw, rows·Wo]
//! unfolded into a per-thread buffer small enough to stay in L2 (`BLOCK_VALUES`) and
//! multiplied in place into the image's [O, Ho·Wo] output block, which in NCHW is already
//! the output layout. Compared with one batch-wide patch matrix this allocates and touches
//! far less memory and needs no axis swap; a pointwise (1×1, stride 1, no padding)
//! convolution multiplies the image itself. Small output planes (< 256 positions) take several
//! images side by side per GEMM instead (`conv2d_small_planes`): groups per thread, or the
//! whole batch in one product split across the threads where the weight outweighs the
//! activations (`small_plane_plan`), unfolded through a table of tap offsets (`TapTable`)
//! that also drops the taps reading only padding.
use super::conv2d::ConvShape;
use crate::cpu::{blas, with_scratch, CpuBackend, Gemm};
use rayon::prelude::*;
use std::ops::Range;

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

/// The output rows `rows` of one image [C, H, W] → their patch matrix [C·kh·kw, rows·Wo]
/// (zeros where taps fall in padding).
fn im2col_rows(s: &ConvShape, x: &[f32], rows: Range<usize>, cols: &mut [f32]) {
    let stride = s.opts.stride[1];
    let width = rows.len() * s.wo;
    for (row, dst) in cols.chunks_mut(width).take(s.patch_len()).enumerate() {
        let (c, i, j) = (row / (s.kh * s.kw), (row / s.kw) % s.kh, row % s.kw);
        let (lo, hi, x0) = valid_columns(s, j);
        for (oh, dst_row) in rows.clone().zip(dst.chunks_mut(s.wo)) {
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

/// The adjoint of [`im2col_rows`]: dx [C, H, W] += the patch gradients of output rows `rows`
/// folded back.
fn col2im_rows(s: &ConvShape, cols: &[f32], rows: Range<usize>, dx: &mut [f32]) {
    let stride = s.opts.stride[1];
    let width = rows.len() * s.wo;
    for (row, src) in cols.chunks(width).take(s.patch_len()).enumerate() {
        let (c, i, j) = (row / (s.kh * s.kw), (row / s.kw) % s.kh, row % s.kw);
        let (lo, hi, x0) = valid_columns(s, j);
        let plane = &mut dx[c * s.h * s.w..][..s.h * s.w];
        for (oh, src_row) in rows.clone().zip(src.chunks(s.wo)) {
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
/// the small-plane route: offsets into one input channel plane, −1 in the padding. There the
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

    /// Images `first..first + count` of x [N, C, H, W] as the compact patch matrix
    /// [C·taps, count·Ho·Wo], image k in columns k·Ho·Wo.., row by row.
    fn gather(&self, cpu: &CpuBackend, parallel: bool, s: &ConvShape, x: &[f32], (first, count): (usize, usize), cols: &mut [f32]) {
        let (p, taps) = (s.out_plane(), self.taps.len());
        let width = count * p;
        each_chunk(cpu, parallel, &mut cols[..self.rows(s) * width], width, |r, row| {
            let (c, ti) = (r / taps, r % taps);
            let offsets = &self.offsets[ti * p..][..p];
            for (k, dst) in row.chunks_mut(p).enumerate() {
                let plane = &x[((first + k) * s.c + c) * s.h * s.w..][..s.h * s.w];
                match self.runs[ti] {
                    Some(start) => dst.copy_from_slice(&plane[start..start + p]),
                    None => dst.iter_mut().zip(offsets).for_each(|(d, &o)| *d = if o >= 0 { plane[o as usize] } else { 0.0 }),
                }
            }
        })
    }

    /// The adjoint of [`TapTable::gather`]: dx [count, C, H, W] += the patch gradients
    /// [C·taps, count·Ho·Wo] folded back, image by image.
    fn scatter_add(&self, cpu: &CpuBackend, parallel: bool, s: &ConvShape, cols: &[f32], count: usize, dx: &mut [f32]) {
        let (p, taps) = (s.out_plane(), self.taps.len());
        let width = count * p;
        each_chunk(cpu, parallel, &mut dx[..count * s.image_len()], s.image_len(), |k, dx_k| {
            for (c, plane) in dx_k.chunks_mut(s.h * s.w).enumerate() {
                for (ti, (offsets, run)) in self.offsets.chunks(p).zip(&self.runs).enumerate() {
                    let src = &cols[(c * taps + ti) * width + k * p..][..p];
                    match *run {
                        Some(start) => plane[start..start + p].iter_mut().zip(src).for_each(|(d, v)| *d += v),
                        None => src.iter().zip(offsets).filter(|(_, &o)| o >= 0).for_each(|(v, &o)| plane[o as usize] += v),
                    }
                }
            }
        })
    }
}

/// Values per parallel task of the small-plane route's copies.
const TASK: usize = 1 << 12;

/// f(i, chunk i) over `data` cut into chunks of `len`: across the pool (tasks of at least
/// `TASK` values) when `parallel`, else on this thread.
fn each_chunk(cpu: &CpuBackend, parallel: bool, data: &mut [f32], len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let len = len.max(1);
    if parallel {
        cpu.install(|| data.par_chunks_mut(len).with_min_len(TASK.div_ceil(len)).enumerate().for_each(|(i, chunk)| f(i, chunk)))
    } else {
        data.chunks_mut(len).enumerate().for_each(|(i, chunk)| f(i, chunk))
    }
}

/// [count, rows, p] → [rows, count·p]: per-image blocks side by side as one matrix's columns.
fn images_to_columns(cpu: &CpuBackend, parallel: bool, src: &[f32], (count, rows, p): (usize, usize, usize), dst: &mut [f32]) {
    each_chunk(cpu, parallel, &mut dst[..rows * count * p], count * p, |r, row| {
        for (k, d) in row.chunks_mut(p).enumerate() {
            d.copy_from_slice(&src[(k * rows + r) * p..][..p]);
        }
    })
}

/// The inverse of [`images_to_columns`]: [rows, count·p] → [count, rows, p].
fn columns_to_images(cpu: &CpuBackend, parallel: bool, src: &[f32], (count, rows, p): (usize, usize, usize), dst: &mut [f32]) {
    each_chunk(cpu, parallel, &mut dst[..count * rows * p], rows * p, |k, image| {
        for (r, d) in image.chunks_mut(p).enumerate() {
            d.copy_from_slice(&src[r * count * p + k * p..][..p]);
        }
    })
}

/// The first offset when a tap's offsets are one run start, start + 1, … inside the plane.
fn contiguous(offsets: &[i32]) -> Option<usize> {
    let first = *offsets.first()?;
    (first >= 0 && offsets.iter().enumerate().all(|(q, &o)| o == first + q as i32)).then_some(first as usize)
}

/// C = op(A)·op(B) + beta·C: split across the pool when `split` (fewer images than threads,
/// or a batch-wide product), single-threaded when the images already run in parallel.
fn product(cpu: &CpuBackend, split: bool, g: Gemm, a: &[f32], b: &[f32], beta: f32, c: &mut [f32]) {
    if split {
        cpu.sgemm(&g, 1.0, a, b, beta, c)
    } else {
        blas::sgemm(&g, 1.0, a, b, beta, c)
    }
}

/// dW += g·patchesᵀ into a run's partial sum [m, n] (`shape` says how g and the patches are
/// laid out); the first product (`dw` still empty) writes fresh memory instead of adding onto
/// a zero-filled one: per step those zeros were twice the size of every convolution weight.
fn accumulate_weight_grad(cpu: &CpuBackend, split: bool, shape: Gemm, g: &[f32], patches: &[f32], dw: &mut Vec<f32>) {
    if !dw.is_empty() {
        return product(cpu, split, shape, g, patches, 1.0, dw);
    }
    *dw = if split { cpu.sgemm_new(&shape, 1.0, g, patches) } else { blas::sgemm_new(&shape, 1.0, g, patches) };
}

/// Patch-matrix values per block: 1 MiB, so that a block stays in a core's L2 cache between
/// its unfolding and its product. A whole image's patch matrix (7.4 MB at ResNet-50's 7×7
/// stem, 224 px) went out to memory and back.
const BLOCK_VALUES: usize = 1 << 18;

/// Output rows per block of the image-by-image route: whole rows, at least one.
fn rows_per_block(s: &ConvShape) -> usize {
    (BLOCK_VALUES / (s.patch_len() * s.wo).max(1)).clamp(1, s.ho.max(1))
}

/// The image's output rows in blocks of [`rows_per_block`].
fn row_blocks(s: &ConvShape) -> impl Iterator<Item = Range<usize>> {
    let (step, ho) = (rows_per_block(s), s.ho);
    (0..ho).step_by(step).map(move |r| r..(r + step).min(ho))
}

/// Output planes smaller than this many positions are multiplied several images at a time:
/// image by image they would be thin GEMMs (a GEMV at 1×1) that waste the BLAS kernel.
const MIN_GEMM_COLUMNS: usize = 256;

/// The batch-wide patch matrix holds at most this many values (64 MiB); larger batches go
/// through it in runs of images.
const BATCH_COLS_MAX: usize = 1 << 24;

fn small_planes(s: &ConvShape) -> bool {
    s.out_plane() < MIN_GEMM_COLUMNS && s.n > 1
}

/// How the small-plane route cuts the batch: (images per product, whether each copy and
/// product is split across the pool). Batch-wide — all images in one product split across
/// the threads — where the weight outweighs the patch matrix (O ≥ N·Ho·Wo: ResNet's last
/// stages), since per-thread products would each read the whole weight; elsewhere each
/// thread takes its own groups of images, whose patch matrices stay in its cache (at
/// ResNet-50's 8×8 planes, 2.4× faster than batch-wide).
fn small_plane_plan(cpu: &CpuBackend, s: &ConvShape, rows: usize) -> (usize, bool) {
    let p = s.out_plane().max(1);
    if s.o >= s.n * p {
        return ((BATCH_COLS_MAX / (rows.max(s.o) * p).max(1)).clamp(1, s.n), true);
    }
    let group = MIN_GEMM_COLUMNS.div_ceil(p).min(s.n.div_ceil(cpu.threads())).max(1);
    (group, false)
}

/// out[n] = W·patches(x[n]) for each image: x [N, C, H, W], weight [O, C·kh·kw] → [N, O, Ho, Wo].
pub(super) fn conv2d(cpu: &CpuBackend, s: &ConvShape, x: &[f32], weight: &[f32]) -> Vec<f32> {
    if small_planes(s) {
        return conv2d_small_planes(cpu, s, x, weight);
    }
    let (ck, p) = (s.patch_len(), s.out_plane());
    let split = s.n < cpu.threads();
    let mut out = vec![0f32; s.n * s.o * p];
    let cols_len = if s.is_pointwise() { 0 } else { ck * rows_per_block(s) * s.wo };
    cpu.install(|| {
        out.par_chunks_mut((s.o * p).max(1)).enumerate().for_each(|(n, out_n)| {
            let x_n = &x[n * s.image_len()..][..s.image_len()];
            if s.is_pointwise() {
                return product(cpu, split, Gemm::packed(false, false, s.o, p, ck), weight, x_n, 0.0, out_n);
            }
            with_scratch(0, cols_len, |cols| {
                for rows in row_blocks(s) {
                    let width = rows.len() * s.wo;
                    im2col_rows(s, x_n, rows.clone(), cols);
                    let shape = Gemm { ldc: p, ..Gemm::packed(false, false, s.o, width, ck) };
                    product(cpu, split, shape, weight, cols, 0.0, &mut out_n[rows.start * s.wo..]);
                }
            })
        })
    });
    out
}

/// conv2d for small output planes, in runs of images (`small_plane_plan`): a run's compact
/// patch matrices side by side as one [C·taps, run·Ho·Wo] matrix, one GEMM, then the
/// [O, run·Ho·Wo] result back to NCHW.
fn conv2d_small_planes(cpu: &CpuBackend, s: &ConvShape, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let (p, o) = (s.out_plane(), s.o);
    let table = TapTable::new(s);
    let (rows, weight) = (table.rows(s), table.compact_weight(s, weight));
    let (group, parallel) = small_plane_plan(cpu, s, rows);
    let mut out = vec![0f32; s.n * o * p];
    // Batch-wide runs go one after another, each across the pool; per-thread runs in parallel.
    each_chunk(cpu, !parallel, &mut out, group * o * p, |i, out_run| {
        let count = out_run.len() / (o * p).max(1);
        let width = count * p;
        with_scratch(0, rows * width, |cols| {
            with_scratch(1, o * width, |product_cols| {
                table.gather(cpu, parallel, s, x, (i * group, count), cols);
                product(cpu, parallel, Gemm::packed(false, false, o, width, rows), &weight, cols, 0.0, product_cols);
                columns_to_images(cpu, parallel, product_cols, (count, o, p), out_run);
            })
        })
    });
    out
}

/// The backward of [`conv2d_small_planes`] for the images `first..first + count`, `group` at a
/// time: g as [O, group·Ho·Wo], dW' += g·patchesᵀ, dpatches = W'ᵀ·g folded back into dx_run
/// (W' the compact weight). Returns the run's partial dW' [O, C·taps].
#[allow(clippy::too_many_arguments)]
fn backward_small_planes_run(
    cpu: &CpuBackend,
    s: &ConvShape,
    (table, weight): (&TapTable, &[f32]),
    x: &[f32],
    g: &[f32],
    (first, count): (usize, usize),
    (group, parallel): (usize, bool),
    dx_run: &mut [f32],
    (need_input, need_weight): (bool, bool),
) -> Vec<f32> {
    let (rows, p, o) = (table.rows(s), s.out_plane(), s.o);
    let mut dw = Vec::new();
    with_scratch(0, rows * group * p, |cols| {
        with_scratch(1, o * group * p, |g_cols| {
            for start in (first..first + count).step_by(group) {
                let images = group.min(first + count - start);
                let width = images * p;
                let (cols, g_cols) = (&mut cols[..rows * width], &mut g_cols[..o * width]);
                images_to_columns(cpu, parallel, &g[start * o * p..], (images, o, p), g_cols);
                if need_weight {
                    table.gather(cpu, parallel, s, x, (start, images), cols);
                    accumulate_weight_grad(cpu, parallel, Gemm::packed(false, true, o, rows, width), g_cols, cols, &mut dw);
                }
                if need_input {
                    product(cpu, parallel, Gemm::packed(true, false, rows, width, o), weight, g_cols, 0.0, cols);
                    table.scatter_add(cpu, parallel, s, cols, images, &mut dx_run[(start - first) * s.image_len()..]);
                }
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
    let small = small_planes(s).then(|| {
        let table = TapTable::new(s);
        let (weight, plan) = (table.compact_weight(s, weight), small_plane_plan(cpu, s, table.rows(s)));
        (table, weight, plan)
    });
    // One run of images per thread, or one batch-wide run.
    let batch_wide = small.as_ref().is_some_and(|(_, _, (_, parallel))| *parallel);
    let runs = if batch_wide { 1 } else { cpu.threads().min(s.n).max(1) };
    let per_run = s.n.div_ceil(runs);
    let split = s.n < cpu.threads();
    let mut dx = vec![0f32; if need_input { s.n * s.image_len() } else { 0 }];
    let dx_chunk = if need_input { (per_run * s.image_len()).max(1) } else { 1 };
    let pointwise = s.is_pointwise();
    // One task per run of images: (first image, its dx block) → its partial dW.
    let run_images = |first: usize, dx_run: &mut [f32]| -> Vec<f32> {
        if let Some((table, weight, plan)) = &small {
            let count = per_run.min(s.n.saturating_sub(first));
            return backward_small_planes_run(cpu, s, (table, weight), x, g, (first, count), *plan, dx_run, (need_input, need_weight));
        }
        let mut dw = Vec::new();
        with_scratch(0, if pointwise { 0 } else { ck * rows_per_block(s) * s.wo }, |cols| {
            for n in first..(first + per_run).min(s.n) {
                let g_n = &g[n * s.o * p..][..s.o * p];
                let x_n = &x[n * s.image_len()..][..s.image_len()];
                let dx_n = if need_input { &mut dx_run[(n - first) * s.image_len()..][..s.image_len()] } else { &mut [][..] };
                if pointwise {
                    if need_weight {
                        accumulate_weight_grad(cpu, split, Gemm::packed(false, true, s.o, ck, p), g_n, x_n, &mut dw);
                    }
                    if need_input {
                        product(cpu, split, Gemm::packed(true, false, ck, p, s.o), weight, g_n, 0.0, dx_n);
                    }
                    continue;
                }
                // Block by block of output rows: g's columns of the block are read in place.
                for rows in row_blocks(s) {
                    let (width, g_block) = (rows.len() * s.wo, &g_n[rows.start * s.wo..]);
                    if need_weight {
                        im2col_rows(s, x_n, rows.clone(), cols);
                        let shape = Gemm { lda: p, ..Gemm::packed(false, true, s.o, ck, width) };
                        accumulate_weight_grad(cpu, split, shape, g_block, cols, &mut dw);
                    }
                    if need_input {
                        let shape = Gemm { ldb: p, ..Gemm::packed(true, false, ck, width, s.o) };
                        product(cpu, split, shape, weight, g_block, 0.0, cols);
                        col2im_rows(s, cols, rows, dx_n);
                    }
                }
            }
        });
        dw
    };
    let partial_dws: Vec<Vec<f32>> = cpu.install(|| {
        if runs == 1 {
            vec![run_images(0, &mut dx)]
        } else if need_input {
            dx.par_chunks_mut(dx_chunk).enumerate().map(|(r, dx_run)| run_images(r * per_run, dx_run)).collect()
        } else {
            (0..s.n.div_ceil(per_run.max(1))).into_par_iter().map(|r| run_images(r * per_run, &mut [])).collect()
        }
    });
    let dw = need_weight.then(|| {
        let mut parts = partial_dws.into_iter().filter(|part| !part.is_empty());
        let rows = small.as_ref().map_or(ck, |(t, _, _)| t.rows(s));
        let mut dw = parts.next().unwrap_or_else(|| vec![0f32; s.o * rows]);
        for part in parts {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        match &small {
            Some((t, _, _)) => t.expand_weight_grad(s, dw),
            None => dw,
        }
    });
    (need_input.then_some(dx), dw)
}

#[cfg(test)]
mod tests {
    use super::super::conv2d::{Conv2dOpts, ConvShape};
    use crate::cpu::CpuBackend;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0).collect()
    }

    /// out, dx and dW by the definition, one multiply-add at a time.
    fn direct(s: &ConvShape, x: &[f32], w: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut out, mut dx, mut dw) = (vec![0f32; s.n * s.o * s.ho * s.wo], vec![0f32; x.len()], vec![0f32; w.len()]);
        for (n, o, oh, ow) in positions(s) {
            let at = ((n * s.o + o) * s.ho + oh) * s.wo + ow;
            for c in 0..s.c {
                for i in 0..s.kh {
                    for j in 0..s.kw {
                        let y = (oh * s.opts.stride[0] + i) as isize - s.opts.padding[0] as isize;
                        let xx = (ow * s.opts.stride[1] + j) as isize - s.opts.padding[1] as isize;
                        if y < 0 || xx < 0 || y as usize >= s.h || xx as usize >= s.w {
                            continue;
                        }
                        let xi = ((n * s.c + c) * s.h + y as usize) * s.w + xx as usize;
                        let wi = ((o * s.c + c) * s.kh + i) * s.kw + j;
                        out[at] += w[wi] * x[xi];
                        dx[xi] += w[wi] * g[at];
                        dw[wi] += x[xi] * g[at];
                    }
                }
            }
        }
        (out, dx, dw)
    }

    fn positions(s: &ConvShape) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        (0..s.n).flat_map(move |n| (0..s.o).flat_map(move |o| (0..s.ho).flat_map(move |oh| (0..s.wo).map(move |ow| (n, o, oh, ow)))))
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5 * scale * 100.0, "{what}: max |Δ| {worst} against values up to {scale}");
    }

    /// Planes unfolded in several blocks of output rows (the last one short), with stride,
    /// padding, one image (products split across the pool) and several (images in parallel).
    #[test]
    fn row_blocks_match_the_definition() {
        let cpu = CpuBackend::new(2);
        for (n, stride, pad) in [(1, 1, 2), (3, 2, 1)] {
            let opts = Conv2dOpts::new(stride, pad);
            let s = ConvShape::new(&[n, 32, 61, 60], &[5, 32, 5, 5], opts).unwrap();
            assert!(super::row_blocks(&s).count() > 2, "{:?} in {} blocks", s.out_shape(), super::row_blocks(&s).count());
            let (x, w, g) = (values(n * 32 * 61 * 60, 1), values(5 * 32 * 25, 2), values(n * 5 * s.ho * s.wo, 3));
            let (out, dx, dw) = direct(&s, &x, &w, &g);
            assert_close("forward", &super::conv2d(&cpu, &s, &x, &w), &out);
            let (got_dx, got_dw) = super::conv2d_backward(&cpu, &s, &x, &w, &g, true, true);
            assert_close("dx", &got_dx.unwrap(), &dx);
            assert_close("dW", &got_dw.unwrap(), &dw);
        }
    }
}
