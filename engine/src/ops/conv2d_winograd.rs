//! Winograd F(2×2, 3×3) for the CPU's stride-1 3×3 convolutions (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2015). Each 2×2 block of outputs is
//! Aᵀ[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]A of its 4×4 input tile d and the 3×3 filter g, so a block costs 16
//! multiplies per (output, input) channel pair instead of 36; summed over the input channels,
//! the 16 element-wise products become 16 GEMMs [O, C]·[C, tiles]. The backward passes are the
//! exact adjoints of the same transforms: dd = B[Σₒ (G·g·Gᵀ) ⊙ (A·dy·Aᵀ)]Bᵀ and
//! dg = Gᵀ[Σ_tiles (A·dy·Aᵀ) ⊙ (Bᵀ·d·B)]G, again 16 GEMMs each.
//!
//! Layouts (T = tiles of the run's images, ξ = one of the 16 transformed points): the filters
//! U [O][ξ][C], the input tiles V [C][ξ][T], the products and output-gradient tiles [ξ][O][T]
//! or [O][ξ][T]; every GEMM reads its ξ slice through a leading dimension, so each transform
//! writes whole per-channel blocks and runs in parallel without sharing them.
use super::conv2d::ConvShape;
use crate::cpu::{blas, with_scratch, CpuBackend, Gemm};
use rayon::prelude::*;
use std::ops::{Add, Mul, Neg, Sub};

/// Points of a transformed tile: one GEMM each.
const XI: usize = 16;

/// Below this many channels on either side the GEMMs are too thin to repay the transforms.
const MIN_CHANNELS: usize = 16;

/// Below this many tiles per image (a 9×9 output plane) the rows of tiles are too short and
/// the 16 GEMMs too narrow: at ResNet-50's 8×8, 4×4 and 2×2 planes (32 px, batch 32) the
/// route took 1.2–1.3×, 2× and 2.4× the unfolded time; at AlexNet's 13×13 (batch 8)
/// 0.82–0.92× forward and 0.81–0.89× backward, at ResNet-50's 56×56 (batch 4) 0.81× and 0.85×.
const MIN_TILES: usize = 25;

/// Values one transformed buffer of a run may hold (16 MiB); larger batches go in runs.
const RUN_VALUES: usize = 1 << 22;

/// Scratch slots (`with_scratch`), apart from the unfolding route's 0 and 1.
const SLOT_TILES: usize = 2;
const SLOT_PRODUCTS: usize = 3;

/// Whether a convolution takes this route: 3×3, stride 1, no dilation, at least
/// `MIN_CHANNELS` each way, and at most 0.6× the multiplies of the unfolded product (which
/// drops the taps that read only padding: on a 1×1 plane a 3×3 convolution is its centre tap).
pub(super) fn applies(s: &ConvShape) -> bool {
    if !enabled() {
        return false;
    }
    let shape = s.kh == 3 && s.kw == 3 && s.opts.stride == [1, 1] && s.opts.dilation == [1, 1];
    if !shape || s.c < MIN_CHANNELS || s.o < MIN_CHANNELS || tiles_per_image(s) < MIN_TILES {
        return false;
    }
    let live = |i: usize, size: usize, out: usize| (0..3).filter(|&t| t < size + s.opts.padding[i] && out + t > s.opts.padding[i]).count();
    let unfolded = live(0, s.h, s.ho) * live(1, s.w, s.wo) * s.ho * s.wo;
    10 * XI * tiles_per_image(s) <= 6 * unfolded
}

/// `TESSERA_WINOGRAD=0` turns the route off, for timing the two routes against each other
/// (`tessera bench kernels` and `bench train` under both settings).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("TESSERA_WINOGRAD").map_or(true, |v| v != "0"))
}

fn tiles_per_image(s: &ConvShape) -> usize {
    s.ho.div_ceil(2) * s.wo.div_ceil(2)
}

/// Images per run, so that each transformed buffer stays within `RUN_VALUES`.
fn images_per_run(s: &ConvShape) -> usize {
    (RUN_VALUES / (XI * s.c.max(s.o) * tiles_per_image(s))).clamp(1, s.n.max(1))
}

/// Values that the transforms take: f32 for one tile, `Lanes` for 8 tiles at once.
trait Value: Copy + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> + Mul<f32, Output = Self> {}
impl<T: Copy + Add<Output = T> + Sub<Output = T> + Neg<Output = T> + Mul<f32, Output = T>> Value for T {}

/// Tiles transformed together: one 256-bit vector of f32.
const LANES: usize = 8;

/// One value of `LANES` tiles (or filters), so that each transform's adds run as vector adds.
#[derive(Clone, Copy)]
struct Lanes([f32; LANES]);

impl Lanes {
    /// The first `len` values of `src`, zeros after.
    fn load(src: &[f32], len: usize) -> Self {
        if len == LANES {
            return Lanes(src[..LANES].try_into().expect("LANES values"));
        }
        let mut v = [0f32; LANES];
        v.iter_mut().zip(&src[..len]).for_each(|(d, s)| *d = *s);
        Lanes(v)
    }

    fn store(self, dst: &mut [f32], len: usize) {
        if len == LANES {
            dst[..LANES].copy_from_slice(&self.0);
        } else {
            dst[..len].iter_mut().zip(self.0).for_each(|(d, s)| *d = s);
        }
    }
}

impl Add for Lanes {
    type Output = Self;
    fn add(self, r: Self) -> Self {
        Lanes(std::array::from_fn(|l| self.0[l] + r.0[l]))
    }
}
impl Sub for Lanes {
    type Output = Self;
    fn sub(self, r: Self) -> Self {
        Lanes(std::array::from_fn(|l| self.0[l] - r.0[l]))
    }
}
impl Neg for Lanes {
    type Output = Self;
    fn neg(self) -> Self {
        Lanes(self.0.map(|v| -v))
    }
}
impl Mul<f32> for Lanes {
    type Output = Self;
    fn mul(self, r: f32) -> Self {
        Lanes(self.0.map(|v| v * r))
    }
}

/// L·x·Rᵀ with L = R given by `f` applied to one column or row: the two-sided transforms.
fn sandwich<T: Value, const I: usize, const O: usize>(x: [[T; I]; I], f: impl Fn([T; I]) -> [T; O]) -> [[T; O]; O] {
    let columns: [[T; O]; I] = std::array::from_fn(|j| f(std::array::from_fn(|r| x[r][j])));
    std::array::from_fn(|r| f(std::array::from_fn(|j| columns[j][r])))
}

/// `sandwich` of a square of lanes, each lane's value read by `at(lane, i, j)`.
fn sandwich_lanes<const I: usize, const O: usize>(at: impl Fn(usize, usize, usize) -> f32, f: impl Fn([Lanes; I]) -> [Lanes; O]) -> [[Lanes; O]; O] {
    sandwich(std::array::from_fn(|i| std::array::from_fn(|j| Lanes(std::array::from_fn(|l| at(l, i, j))))), f)
}

// The transform matrices, each as its product with one vector.
/// Bᵀ·v, Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].
fn bt<T: Value>(v: [T; 4]) -> [T; 4] {
    [v[0] - v[2], v[1] + v[2], v[2] - v[1], v[1] - v[3]]
}
/// B·v (the adjoint of `bt`).
fn b<T: Value>(v: [T; 4]) -> [T; 4] {
    [v[0], v[1] - v[2] + v[3], v[1] + v[2] - v[0], -v[3]]
}
/// G·v, G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
fn g<T: Value>(v: [T; 3]) -> [T; 4] {
    [v[0], (v[0] + v[1] + v[2]) * 0.5, (v[0] - v[1] + v[2]) * 0.5, v[2]]
}
/// Gᵀ·v (the adjoint of `g`).
fn gt<T: Value>(v: [T; 4]) -> [T; 3] {
    [v[0] + (v[1] + v[2]) * 0.5, (v[1] - v[2]) * 0.5, (v[1] + v[2]) * 0.5 + v[3]]
}
/// Aᵀ·v, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]].
fn at<T: Value>(v: [T; 4]) -> [T; 2] {
    [v[0] + v[1] + v[2], v[1] - v[2] - v[3]]
}
/// A·v (the adjoint of `at`).
fn a<T: Value>(v: [T; 2]) -> [T; 4] {
    [v[0], v[0] + v[1], v[0] - v[1], -v[1]]
}

/// dst[r][x] = f(src[·][x])[r] for x over the rows' common length: one pass whose body the
/// compiler turns into vector operations (the transforms along whole rows of tiles).
fn map_rows<const I: usize, const O: usize>(dst: [&mut [f32]; O], src: [&[f32]; I], f: impl Fn([f32; I]) -> [f32; O]) {
    let n = dst.iter().map(|d| d.len()).chain(src.iter().map(|s| s.len())).min().unwrap_or(0);
    let src = src.map(|s| &s[..n]);
    let mut dst = dst.map(|d| &mut d[..n]);
    for x in 0..n {
        let r = f(std::array::from_fn(|i| src[i][x]));
        dst.iter_mut().zip(r).for_each(|(d, v)| d[x] = v);
    }
}

/// R rows of `len` values of `buf` starting at `starts` (increasing, non-overlapping), each
/// mutable on its own.
fn rows_mut<const R: usize>(buf: &mut [f32], starts: [usize; R], len: usize) -> [&mut [f32]; R] {
    let (mut rest, mut consumed) = (buf, 0);
    let mut rows: [Option<&mut [f32]>; R] = std::array::from_fn(|_| None);
    for (row, start) in rows.iter_mut().zip(starts) {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(start - consumed);
        let (this, tail) = tail.split_at_mut(len);
        (*row, rest, consumed) = (Some(this), tail, start + len);
    }
    rows.map(|r| r.expect("one slice per start"))
}

/// A row's even and odd columns apart: a tile's four columns are then even[t], odd[t],
/// even[t + 1], odd[t + 1], contiguous across tiles.
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((pair, e), o) in row.chunks_exact(2).zip(even).zip(odd) {
        (*e, *o) = (pair[0], pair[1]);
    }
}

/// Four rows of `len` values, as scratch.
fn four_rows(len: usize) -> [Vec<f32>; 4] {
    std::array::from_fn(|_| vec![0f32; len])
}

fn as_mut<const R: usize>(rows: &mut [Vec<f32>; R]) -> [&mut [f32]; R] {
    rows.each_mut().map(|r| r.as_mut_slice())
}

fn as_ref<const R: usize>(rows: &[Vec<f32>; R]) -> [&[f32]; R] {
    rows.each_ref().map(|r| r.as_slice())
}

/// Rows and columns of the zero-padded plane that holds every tile's 4×4 window: input (y, x)
/// sits at (y + pad, x + pad), tile t's window at its corner.
fn padded_dims(s: &ConvShape) -> (usize, usize) {
    (2 * s.ho.div_ceil(2) + 2, 2 * s.wo.div_ceil(2) + 2)
}

/// One input plane [H, W] into `padded` (zeros around it).
fn pad_plane(s: &ConvShape, plane: &[f32], padded: &mut [f32]) {
    let pw = padded_dims(s).1;
    padded.fill(0.0);
    for (y, row) in plane.chunks(s.w).enumerate() {
        padded[(y + s.opts.padding[0]) * pw + s.opts.padding[1]..][..s.w].copy_from_slice(row);
    }
}

/// U[o][ξ][c] = (G·g·Gᵀ)[ξ] of the filter g = weight[o][c].
fn filter_transform(cpu: &CpuBackend, s: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let mut u = vec![0f32; s.o * XI * s.c];
    cpu.install(|| {
        u.par_chunks_mut(XI * s.c).enumerate().for_each(|(o, u_o)| {
            for c0 in (0..s.c).step_by(LANES) {
                let len = LANES.min(s.c - c0);
                let w = &weight[(o * s.c + c0) * 9..][..len * 9];
                let t = sandwich_lanes(|l, i, j| w[l.min(len - 1) * 9 + 3 * i + j], g);
                t.iter().flatten().enumerate().for_each(|(xi, v)| v.store(&mut u_o[xi * s.c + c0..], len));
            }
        })
    });
    u
}

/// dW[o][c] = Gᵀ·dU·G of dU[ξ][o][c]: the adjoint of [`filter_transform`].
fn filter_adjoint(cpu: &CpuBackend, s: &ConvShape, du: &[f32]) -> Vec<f32> {
    let mut dw = vec![0f32; s.o * s.c * 9];
    cpu.install(|| {
        dw.par_chunks_mut(s.c * 9).enumerate().for_each(|(o, dw_o)| {
            for c0 in (0..s.c).step_by(LANES) {
                let len = LANES.min(s.c - c0);
                let d: [[Lanes; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| Lanes::load(&du[((4 * i + j) * s.o + o) * s.c + c0..], len)));
                let d = sandwich(d, gt);
                for l in 0..len {
                    let dw_oc = &mut dw_o[(c0 + l) * 9..][..9];
                    d.iter().flatten().zip(dw_oc).for_each(|(v, w)| *w = v.0[l]);
                }
            }
        })
    });
    dw
}

/// V[c][ξ][k·tiles + t] = (Bᵀ·d·B)[ξ] of tile t of image first + k, channel c, a row of tiles
/// at a time: Bᵀ combines the windows' four padded rows along whole rows, then B each tile's
/// columns, read from the even and odd columns apart (neighbouring windows overlap by two).
fn input_transform(cpu: &CpuBackend, s: &ConvShape, x: &[f32], (first, count): (usize, usize), v: &mut [f32]) {
    let (per_image, plane) = (tiles_per_image(s), s.h * s.w);
    let (width, (ph, pw), tw) = (count * per_image, padded_dims(s), s.wo.div_ceil(2));
    cpu.install(|| {
        v.par_chunks_mut(XI * width).enumerate().for_each(|(c, v_c)| {
            let mut padded = vec![0f32; ph * pw];
            let (mut combined, mut even, mut odd) = (four_rows(pw), four_rows(tw + 1), four_rows(tw + 1));
            for k in 0..count {
                pad_plane(s, &x[((first + k) * s.c + c) * plane..][..plane], &mut padded);
                for ty in 0..s.ho.div_ceil(2) {
                    map_rows(as_mut(&mut combined), std::array::from_fn(|i| &padded[(2 * ty + i) * pw..][..pw]), bt);
                    let q = k * per_image + ty * tw;
                    for i in 0..4 {
                        deinterleave(&combined[i], &mut even[i], &mut odd[i]);
                        let dst = rows_mut(v_c, std::array::from_fn(|j| (4 * i + j) * width + q), tw);
                        map_rows(dst, [&even[i][..tw], &odd[i][..tw], &even[i][1..], &odd[i][1..]], bt);
                    }
                }
            }
        })
    })
}

/// The adjoint of [`input_transform`]: dx[k][c] += B·dV·Bᵀ of each tile, dV [ξ][C][T], summed
/// over the overlapping 4×4 windows in a padded plane whose inside is then added to dx. A row
/// of tiles at a time: B along each window row's columns (scattered to the tiles' columns),
/// then B across the four rows.
fn input_adjoint(cpu: &CpuBackend, s: &ConvShape, dv: &[f32], count: usize, dx: &mut [f32]) {
    let (per_image, plane) = (tiles_per_image(s), s.h * s.w);
    let (width, (ph, pw), tw) = (count * per_image, padded_dims(s), s.wo.div_ceil(2));
    let (py, px) = (s.opts.padding[0], s.opts.padding[1]);
    cpu.install(|| {
        dx[..count * s.c * plane].par_chunks_mut(plane).enumerate().for_each(|(kc, dx_kc)| {
            let (k, c) = (kc / s.c, kc % s.c);
            let mut padded = vec![0f32; ph * pw];
            let (mut cols, mut rows, mut combined) = (four_rows(tw), four_rows(pw), four_rows(pw));
            for ty in 0..s.ho.div_ceil(2) {
                let q = k * per_image + ty * tw;
                for (i, row) in rows.iter_mut().enumerate() {
                    map_rows(as_mut(&mut cols), std::array::from_fn(|j| &dv[((4 * i + j) * s.c + c) * width + q..][..tw]), b);
                    row.fill(0.0);
                    for tx in 0..tw {
                        for (j, col) in cols.iter().enumerate() {
                            row[2 * tx + j] += col[tx];
                        }
                    }
                }
                map_rows(as_mut(&mut combined), as_ref(&rows), b);
                let dst: [&mut [f32]; 4] = rows_mut(&mut padded, std::array::from_fn(|i| (2 * ty + i) * pw), pw);
                for (d, add) in dst.into_iter().zip(&combined) {
                    d.iter_mut().zip(add).for_each(|(d, a)| *d += a);
                }
            }
            for (y, row) in dx_kc.chunks_mut(s.w).enumerate() {
                row.iter_mut().zip(&padded[(y + py) * pw + px..]).for_each(|(d, p)| *d += p);
            }
        })
    })
}

/// out[k][o] = Aᵀ·m·A of each tile, m = M[ξ][o][k·tiles + t], clipped to Ho × Wo; a row of
/// tiles at a time: Aᵀ across the four rows of each column, then A along each output row.
fn output_transform(cpu: &CpuBackend, s: &ConvShape, m: &[f32], count: usize, out: &mut [f32]) {
    let (per_image, plane, tw) = (tiles_per_image(s), s.ho * s.wo, s.wo.div_ceil(2));
    let width = count * per_image;
    cpu.install(|| {
        out[..count * s.o * plane].par_chunks_mut(plane).enumerate().for_each(|(ko, out_ko)| {
            let (k, o) = (ko / s.o, ko % s.o);
            // By output row a: the four columns j of every tile in the row.
            let (mut top, mut bottom, mut pair) = (four_rows(tw), four_rows(tw), [vec![0f32; tw], vec![0f32; tw]]);
            for ty in 0..s.ho.div_ceil(2) {
                let q = k * per_image + ty * tw;
                let m_row = |xi: usize| &m[(xi * s.o + o) * width + q..][..tw];
                for j in 0..4 {
                    map_rows([&mut top[j], &mut bottom[j]], [m_row(j), m_row(4 + j), m_row(8 + j), m_row(12 + j)], at);
                }
                for (a, columns) in [&top, &bottom].into_iter().enumerate().filter(|(a, _)| 2 * ty + a < s.ho) {
                    map_rows(as_mut(&mut pair), as_ref(columns), at);
                    let row = &mut out_ko[(2 * ty + a) * s.wo..][..s.wo];
                    for (yx, (left, right)) in row.chunks_mut(2).zip(pair[0].iter().zip(&pair[1])) {
                        yx[0] = *left;
                        if let Some(r) = yx.get_mut(1) {
                            *r = *right;
                        }
                    }
                }
            }
        })
    })
}

/// Gy[o][ξ][k·tiles + t] = (A·dy·Aᵀ)[ξ] of the 2×2 output-gradient block of tile t (zeros
/// past Ho × Wo): the adjoint of [`output_transform`], a row of tiles at a time.
fn output_adjoint(cpu: &CpuBackend, s: &ConvShape, dy: &[f32], (first, count): (usize, usize), gy: &mut [f32]) {
    let (per_image, plane, tw) = (tiles_per_image(s), s.ho * s.wo, s.wo.div_ceil(2));
    let width = count * per_image;
    cpu.install(|| {
        gy.par_chunks_mut(XI * width).enumerate().for_each(|(o, gy_o)| {
            // Two output rows, zero past Wo (and past Ho), 2·tw wide.
            let mut pair = [vec![0f32; 2 * tw], vec![0f32; 2 * tw]];
            let (mut combined, mut even, mut odd) = (four_rows(2 * tw), four_rows(tw), four_rows(tw));
            for k in 0..count {
                let dy_ko = &dy[((first + k) * s.o + o) * plane..][..plane];
                for ty in 0..s.ho.div_ceil(2) {
                    for (a, row) in pair.iter_mut().enumerate() {
                        let y = 2 * ty + a;
                        row.fill(0.0);
                        if y < s.ho {
                            row[..s.wo].copy_from_slice(&dy_ko[y * s.wo..][..s.wo]);
                        }
                    }
                    map_rows(as_mut(&mut combined), as_ref(&pair), a);
                    let q = k * per_image + ty * tw;
                    for i in 0..4 {
                        deinterleave(&combined[i], &mut even[i], &mut odd[i]);
                        let dst = rows_mut(gy_o, std::array::from_fn(|j| (4 * i + j) * width + q), tw);
                        map_rows(dst, [&even[i][..], &odd[i][..]], a);
                    }
                }
            }
        })
    })
}

/// The 16 GEMMs of one run, one per task: `out[ξ] = op(A_ξ)·op(B_ξ) + beta·out[ξ]`, A_ξ and
/// B_ξ read at offsets ξ·`a_step` and ξ·`b_step` of `a` and `b`.
fn products(cpu: &CpuBackend, shape: Gemm, (a, a_step): (&[f32], usize), (b, b_step): (&[f32], usize), beta: f32, out: &mut [f32]) {
    cpu.install(|| {
        out.par_chunks_mut(shape.m * shape.n).enumerate().for_each(|(xi, out_xi)| {
            blas::sgemm(&shape, 1.0, &a[xi * a_step..], &b[xi * b_step..], beta, out_xi);
        })
    })
}

/// out = conv2d(x, weight) through the transforms: x [N, C, H, W], weight [O, C, 3, 3].
pub(super) fn conv2d(cpu: &CpuBackend, s: &ConvShape, x: &[f32], weight: &[f32]) -> Vec<f32> {
    let u = filter_transform(cpu, s, weight);
    let (per_image, plane, per_run) = (tiles_per_image(s), s.ho * s.wo, images_per_run(s));
    let mut out = vec![0f32; s.n * s.o * plane];
    for first in (0..s.n).step_by(per_run) {
        let count = per_run.min(s.n - first);
        let width = count * per_image;
        with_scratch(SLOT_TILES, s.c * XI * width, |v| {
            with_scratch(SLOT_PRODUCTS, XI * s.o * width, |m| {
                input_transform(cpu, s, x, (first, count), v);
                // M[ξ] = U[ξ]·V[ξ]: [O, C]·[C, T].
                let shape = Gemm { lda: XI * s.c, ldb: XI * width, ..Gemm::packed(false, false, s.o, width, s.c) };
                products(cpu, shape, (&u, s.c), (v, width), 0.0, m);
                output_transform(cpu, s, m, count, &mut out[first * s.o * plane..]);
            })
        })
    }
    out
}

/// (dx, dW) of [`conv2d`], each only if asked for, from the output gradient dy [N, O, Ho, Wo].
pub(super) fn conv2d_backward(
    cpu: &CpuBackend,
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_input: bool,
    need_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let u = need_input.then(|| filter_transform(cpu, s, weight));
    let (per_image, per_run) = (tiles_per_image(s), images_per_run(s));
    let image = s.c * s.h * s.w;
    let mut dx = vec![0f32; if need_input { s.n * image } else { 0 }];
    // dU [ξ][O][C], summed over the runs.
    let mut du = vec![0f32; if need_weight { XI * s.o * s.c } else { 0 }];
    for first in (0..s.n).step_by(per_run) {
        let count = per_run.min(s.n - first);
        let width = count * per_image;
        with_scratch(SLOT_TILES, s.c * XI * width, |v| {
            with_scratch(SLOT_PRODUCTS, s.o * XI * width, |gy| {
                output_adjoint(cpu, s, dy, (first, count), gy);
                if need_weight {
                    // dU[ξ] += Gy[ξ]·V[ξ]ᵀ: [O, T]·[T, C].
                    input_transform(cpu, s, x, (first, count), v);
                    let shape = Gemm { lda: XI * width, ldb: XI * width, ..Gemm::packed(false, true, s.o, s.c, width) };
                    products(cpu, shape, (gy, width), (v, width), if first == 0 { 0.0 } else { 1.0 }, &mut du);
                }
                if let Some(u) = &u {
                    // dV[ξ] = U[ξ]ᵀ·Gy[ξ]: [C, O]·[O, T], into V's buffer as [ξ][C][T].
                    let shape = Gemm { lda: XI * s.c, ldb: XI * width, ..Gemm::packed(true, false, s.c, width, s.o) };
                    products(cpu, shape, (u, s.c), (gy, width), 0.0, v);
                    input_adjoint(cpu, s, v, count, &mut dx[first * image..]);
                }
            })
        })
    }
    let dw = need_weight.then(|| filter_adjoint(cpu, s, &du));
    (need_input.then_some(dx), dw)
}

#[cfg(test)]
mod tests {
    use super::super::conv2d::{Conv2dOpts, ConvShape};
    use super::super::conv2d_cpu;
    use crate::cpu::CpuBackend;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic values in [−1, 1).
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Forward, input and weight gradients against the unfolding route, on odd and even
    /// planes, padding 0, 1 and 2, and a batch cut into several runs.
    #[test]
    fn matches_the_unfolded_convolution() {
        let cpu = CpuBackend::new(2);
        let cases = [(2, 16, 7, 9, 16, 1), (3, 16, 8, 8, 24, 1), (1, 20, 5, 6, 16, 0), (2, 16, 6, 5, 17, 2), (4, 32, 2, 2, 16, 1), (1, 16, 1, 1, 16, 1)];
        for (n, c, h, w, o, pad) in cases {
            let opts = Conv2dOpts { padding: [pad, pad], ..Default::default() };
            let s = ConvShape::new(&[n, c, h, w], &[o, c, 3, 3], opts).unwrap();
            let (x, weight, dy) = (values(n * c * h * w, 1), values(o * c * 9, 2), values(n * o * s.ho * s.wo, 3));
            let want = conv2d_cpu::conv2d_unfolded(&cpu, &s, &x, &weight);
            let got = super::conv2d(&cpu, &s, &x, &weight);
            assert!(max_diff(&got, &want) < 1e-4, "forward {:?}: {}", (n, c, h, w, o, pad), max_diff(&got, &want));
            let (want_dx, want_dw) = conv2d_cpu::conv2d_backward_unfolded(&cpu, &s, &x, &weight, &dy, true, true);
            let (dx, dw) = super::conv2d_backward(&cpu, &s, &x, &weight, &dy, true, true);
            assert!(max_diff(&dx.unwrap(), &want_dx.unwrap()) < 1e-4, "dx {:?}", (n, c, h, w, o, pad));
            assert!(max_diff(&dw.unwrap(), &want_dw.unwrap()) < 1e-3, "dW {:?}", (n, c, h, w, o, pad));
            let (dx_only, none) = super::conv2d_backward(&cpu, &s, &x, &weight, &dy, true, false);
            assert!(none.is_none() && dx_only.is_some());
        }
    }

    #[test]
    fn runs_of_images_sum_the_weight_gradient() {
        // 64 channels of 64×64 planes: 1024 tiles per image, 4 images per run.
        let cpu = CpuBackend::new(2);
        let opts = Conv2dOpts { padding: [1, 1], ..Default::default() };
        let s = ConvShape::new(&[9, 64, 64, 64], &[64, 64, 3, 3], opts).unwrap();
        assert!(super::images_per_run(&s) < s.n);
        let (x, weight, dy) = (values(9 * 64 * 4096, 4), values(64 * 64 * 9, 5), values(9 * 64 * 4096, 6));
        let got = super::conv2d(&cpu, &s, &x, &weight);
        assert!(max_diff(&got, &conv2d_cpu::conv2d_unfolded(&cpu, &s, &x, &weight)) < 1e-4);
        let (dx, dw) = super::conv2d_backward(&cpu, &s, &x, &weight, &dy, true, true);
        let (want_dx, want_dw) = conv2d_cpu::conv2d_backward_unfolded(&cpu, &s, &x, &weight, &dy, true, true);
        assert!(max_diff(&dx.unwrap(), &want_dx.unwrap()) < 1e-4);
        assert!(max_diff(&dw.unwrap(), &want_dw.unwrap()) < 5e-3);
    }

    #[test]
    fn takes_only_the_shapes_where_it_saves() {
        let shape = |c, h, o, stride, pad| {
            let opts = Conv2dOpts { stride: [stride, stride], padding: [pad, pad], ..Default::default() };
            ConvShape::new(&[2, c, h, h], &[o, c, 3, 3], opts).unwrap()
        };
        assert!(super::applies(&shape(64, 9, 64, 1, 1)));
        assert!(!super::applies(&shape(64, 8, 64, 1, 1)), "8×8 planes: 16 tiles");
        assert!(super::applies(&shape(192, 13, 384, 1, 1)));
        assert!(!super::applies(&shape(256, 2, 256, 1, 1)), "2×2 planes: one tile per image");
        assert!(!super::applies(&shape(512, 1, 512, 1, 1)), "1×1 planes: the centre tap alone");
        assert!(!super::applies(&shape(64, 6, 64, 1, 0)), "4×4 output: 4 tiles");
        assert!(!super::applies(&shape(64, 8, 64, 2, 1)), "stride 2");
        assert!(!super::applies(&shape(3, 32, 64, 1, 1)), "3 input channels");
    }
}
