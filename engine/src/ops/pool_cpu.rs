//! The CPU twins of pooling (shape rules and the GPU route: pool.rs), with pool.wgsl's window
//! rules: max takes a window's first maximum (a NaN wins), average divides by the whole
//! kernel (count_include_pad), adaptive average by its window. The windows' clipped spans are
//! worked out once per call, and tasks take whole planes, ~16 K input values each (at 1×1 a
//! plane is one value).
use super::par_fill;
use super::pool::{PoolKind, PoolShape};
use crate::cpu::CpuBackend;
use rayon::prelude::*;
use std::hint::select_unpredictable;

/// Input values per parallel task.
const TASK: usize = 1 << 14;

/// A window's clipped input span along one axis: [start, end).
type Span = (usize, usize);

/// The offset of a window that is all padding.
const NONE: usize = usize::MAX;

impl PoolShape {
    /// The input rows (i = 0) or columns (i = 1) of output row or column `o`, clipped.
    fn span(&self, i: usize, o: usize) -> Span {
        let size = if i == 0 { self.h } else { self.w };
        if self.kind == PoolKind::AdaptiveAvg {
            let n_out = if i == 0 { self.ho } else { self.wo };
            return (o * size / n_out, ((o + 1) * size).div_ceil(n_out));
        }
        let start = (o * self.stride[i]) as isize - self.padding[i] as isize;
        (start.max(0) as usize, ((start + self.kernel[i] as isize) as usize).min(size))
    }

    /// Every output position's window, row-major: (rows, columns).
    fn windows(&self) -> Vec<(Span, Span)> {
        let cols: Vec<Span> = (0..self.wo).map(|o| self.span(1, o)).collect();
        (0..self.ho).flat_map(|oh| cols.iter().map(move |&c| (self.span(0, oh), c))).collect()
    }

    fn divisor(&self, (rows, cols): (Span, Span)) -> f32 {
        match self.kind {
            PoolKind::AdaptiveAvg => ((rows.1 - rows.0) * (cols.1 - cols.0)) as f32,
            _ => (self.kernel[0] * self.kernel[1]) as f32,
        }
    }

    /// Each output position's window maximum within one plane and its offset (f32::MIN and
    /// `NONE` for a window that is all padding), in two separable passes: each input row's
    /// maximum over each output column's span, then each window's maximum over its rows,
    /// vectorized across the output row. That is the row-major first maximum, a NaN winning
    /// (the last one, as in pool.wgsl), and it selects rather than branches: whether a value
    /// beats the maximum so far is a coin flip, which branch predictors lose.
    fn window_maxima(&self, (rows, cols): (&[Span], &[Span]), plane: &[f32], scratch: &mut (Vec<f32>, Vec<usize>), max: &mut [f32], arg: &mut [usize]) {
        let wo = self.wo;
        let (row_max, row_arg) = scratch;
        row_max.resize(self.h * wo, f32::MIN);
        row_arg.resize(self.h * wo, NONE);
        for y in 0..self.h {
            let line = &plane[y * self.w..][..self.w];
            for (ow, &(x0, x1)) in cols.iter().enumerate() {
                if x0 >= x1 {
                    (row_max[y * wo + ow], row_arg[y * wo + ow]) = (f32::MIN, NONE);
                    continue;
                }
                // The maximum's bits: both selects are then integer moves (cmov), never branches.
                let (mut best, mut m) = (x0, line[x0].to_bits());
                for (x, &v) in line[x0 + 1..x1].iter().enumerate() {
                    let take = (v > f32::from_bits(m)) | v.is_nan();
                    best = select_unpredictable(take, x0 + 1 + x, best);
                    m = select_unpredictable(take, v.to_bits(), m);
                }
                (row_max[y * wo + ow], row_arg[y * wo + ow]) = (f32::from_bits(m), y * self.w + best);
            }
        }
        // A window's rows share its column span: all are padding or none is.
        for (oh, &(y0, y1)) in rows.iter().enumerate() {
            let (max, arg) = (&mut max[oh * wo..][..wo], &mut arg[oh * wo..][..wo]);
            if y0 >= y1 {
                max.fill(f32::MIN);
                arg.fill(NONE);
                continue;
            }
            max.copy_from_slice(&row_max[y0 * wo..][..wo]);
            arg.copy_from_slice(&row_arg[y0 * wo..][..wo]);
            for y in y0 + 1..y1 {
                let candidates = row_max[y * wo..][..wo].iter().zip(&row_arg[y * wo..][..wo]);
                for ((m, a), (&v, &i)) in max.iter_mut().zip(arg.iter_mut()).zip(candidates) {
                    let take = (v > *m) | v.is_nan();
                    *m = f32::from_bits(select_unpredictable(take, v.to_bits(), m.to_bits()));
                    *a = select_unpredictable(take, i, *a);
                }
            }
        }
    }

    fn spans(&self, i: usize) -> Vec<Span> {
        (0..if i == 0 { self.ho } else { self.wo }).map(|o| self.span(i, o)).collect()
    }

    fn planes_per_task(&self) -> usize {
        TASK.div_ceil((self.h * self.w).max(1))
    }
}

/// Max pooling's [N, C, Ho, Wo] of x [N, C, H, W], and each window's first maximum as its
/// offset in the plane (−1 for a window that is all padding), as pool.wgsl stores it.
pub(super) fn max_forward(cpu: &CpuBackend, s: &PoolShape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (hw, out_plane) = (s.h * s.w, s.ho * s.wo);
    let (rows, cols) = (s.spans(0), s.spans(1));
    let mut out = vec![0f32; s.n * s.c * out_plane];
    let mut argmax = vec![0f32; out.len()];
    let per_task = (out_plane * s.planes_per_task()).max(1);
    cpu.install(|| {
        out.par_chunks_mut(per_task).zip(argmax.par_chunks_mut(per_task)).enumerate().for_each(|(t, (task, task_arg))| {
            let (mut scratch, mut arg) = ((Vec::new(), Vec::new()), vec![NONE; out_plane]);
            for (i, (max, offsets)) in task.chunks_mut(out_plane.max(1)).zip(task_arg.chunks_mut(out_plane.max(1))).enumerate() {
                let plane = &x[(t * s.planes_per_task() + i) * hw..][..hw];
                s.window_maxima((&rows, &cols), plane, &mut scratch, max, &mut arg);
                offsets.iter_mut().zip(&arg).for_each(|(o, &a)| *o = if a == NONE { -1.0 } else { a as f32 });
            }
        })
    });
    (out, argmax)
}

/// dx [N, C, H, W] of max pooling: each window's gradient added at its stored maximum.
pub(super) fn max_backward(cpu: &CpuBackend, s: &PoolShape, argmax: &[f32], g: &[f32]) -> Vec<f32> {
    let (hw, out_plane, per_task) = (s.h * s.w, s.ho * s.wo, s.planes_per_task());
    let mut dx = vec![0f32; s.n * s.c * hw];
    cpu.install(|| {
        dx.par_chunks_mut((hw * per_task).max(1)).enumerate().for_each(|(t, task)| {
            for (i, dst) in task.chunks_mut(hw.max(1)).enumerate() {
                let p = t * per_task + i;
                for (&a, &go) in argmax[p * out_plane..][..out_plane].iter().zip(&g[p * out_plane..][..out_plane]) {
                    if a >= 0.0 {
                        dst[a as usize] += go;
                    }
                }
            }
        })
    });
    dx
}

/// The pooled [N, C, Ho, Wo] of x [N, C, H, W].
pub(super) fn forward(cpu: &CpuBackend, s: &PoolShape, x: &[f32]) -> Vec<f32> {
    let (hw, out_plane) = (s.h * s.w, s.ho * s.wo);
    if s.kind == PoolKind::Max {
        return max_forward(cpu, s, x).0;
    }
    let windows = s.windows();
    par_fill(cpu, s.n * s.c * out_plane, (out_plane, s.planes_per_task()), |first, _| {
        let plane = &x[first / out_plane.max(1) * hw..][..hw];
        windows.iter().map(move |&(rows, cols)| {
            let total: f32 = (rows.0..rows.1).map(|y| plane[y * s.w..][cols.0..cols.1].iter().sum::<f32>()).sum();
            total / s.divisor((rows, cols))
        })
    })
}

/// dx [N, C, H, W] of average pooling given the upstream gradient g [N, C, Ho, Wo]: each
/// window's gradient spread over it (max pooling: [`max_backward`]).
pub(super) fn avg_backward(cpu: &CpuBackend, s: &PoolShape, g: &[f32]) -> Vec<f32> {
    let windows = s.windows();
    let (hw, out_plane, per_task) = (s.h * s.w, s.ho * s.wo, s.planes_per_task());
    let mut dx = vec![0f32; s.n * s.c * hw];
    cpu.install(|| {
        dx.par_chunks_mut((hw * per_task).max(1)).enumerate().for_each(|(t, task)| {
            for (i, dst) in task.chunks_mut(hw.max(1)).enumerate() {
                let g_plane = &g[(t * per_task + i) * out_plane..][..out_plane];
                for (&win, &go) in windows.iter().zip(g_plane) {
                    let ((rows, cols), share) = (win, go / s.divisor(win));
                    for y in rows.0..rows.1 {
                        dst[y * s.w..][cols.0..cols.1].iter_mut().for_each(|d| *d += share);
                    }
                }
            }
        })
    });
    dx
}
