//! The CPU twins of batch_norm2d (shape rules, dispatch and the GPU route: batchnorm.rs). Every
//! kernel is one of two walks over [N, C, H·W]: a per-channel affine map into a new tensor
//! (`channel_affine`) or a per-channel sum (`channel_sum`). Where planes are small (ResNet at
//! 32 px: 1–16 values) they walk whole images against per-value rows of the channel
//! coefficients, so the loops vectorize across channels: plane by plane, the per-plane work
//! cost 3–7× the values themselves. Larger planes go plane by plane.
use super::batchnorm::BnShape;
use super::{lane_sum, par_fill};
use crate::cpu::CpuBackend;
use rayon::prelude::*;

/// Values per parallel task.
const TASK: usize = 1 << 14;

/// Planes of at least this many values go plane by plane: the per-plane work is then small,
/// and the image walk's coefficient rows cost more memory traffic than they save (measured:
/// equal at 64, plane by plane 2.5× faster at 256, 2.7× slower at 16).
const MIN_PLANE: usize = 64;

/// Images walk whole only when one image [C, H·W] is at most this long: its coefficient rows
/// (four of them, 128 KiB each) and input rows then stay in the core's L2.
const IMAGE_ROW: usize = 1 << 15;

impl BnShape {
    fn image_len(&self) -> usize {
        self.c * self.hw
    }

    fn by_images(&self) -> bool {
        self.hw < MIN_PLANE && self.image_len() <= IMAGE_ROW
    }

    /// A per-channel coefficient repeated over its plane: one image's row [C·H·W].
    fn expand(&self, coef: &[f32]) -> Vec<f32> {
        coef.iter().flat_map(|&k| std::iter::repeat_n(k, self.hw)).collect()
    }

    /// A new [N, C, H, W] tensor: out = p[c]·u + q[c]·(v − s[c]) + r[c].
    fn channel_affine(&self, cpu: &CpuBackend, u: &[f32], v: &[f32], [p, q, s, r]: [&[f32]; 4]) -> Vec<f32> {
        let total = self.n * self.image_len();
        let map = |u: f32, v: f32, (p, q, s, r): (f32, f32, f32, f32)| p * u + q * (v - s) + r;
        if self.by_images() {
            let row = self.image_len().max(1);
            let [p, q, s, r] = [p, q, s, r].map(|k| self.expand(k));
            return par_fill(cpu, total, (row, TASK.div_ceil(row)), |first, len| {
                let coefs = p.iter().zip(&q).zip(&s).zip(&r).map(|(((p, q), s), r)| (*p, *q, *s, *r));
                u[first..][..len].iter().zip(&v[first..][..len]).zip(coefs).map(move |((u, v), k)| map(*u, *v, k))
            });
        }
        let hw = self.hw;
        par_fill(cpu, total, (hw, TASK.div_ceil(hw)), |first, len| {
            let c = (first / hw) % self.c;
            let k = (p[c], q[c], s[c], r[c]);
            u[first..][..len].iter().zip(&v[first..][..len]).map(move |(u, v)| map(*u, *v, k))
        })
    }

    /// Per channel c, Σ f(u, v, k[c]) over the channel's values.
    fn channel_sum(&self, cpu: &CpuBackend, u: &[f32], v: &[f32], k: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
        let (row, hw) = (self.image_len(), self.hw);
        if self.by_images() {
            // Σ over images of each position's f, then over each plane's positions.
            let k = self.expand(k);
            let add_image = |mut acc: Vec<f32>, n: usize| {
                let (u, v) = (&u[n * row..][..row], &v[n * row..][..row]);
                acc.iter_mut().zip(u.iter().zip(v).zip(&k)).for_each(|(a, ((u, v), k))| *a += f(*u, *v, *k));
                acc
            };
            let add = |mut a: Vec<f32>, b: Vec<f32>| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            };
            let zeros = || vec![0f32; row];
            let per_task = TASK.div_ceil(row.max(1));
            let positions = cpu.install(|| (0..self.n).into_par_iter().with_min_len(per_task).fold(zeros, add_image).reduce(zeros, add));
            return positions.chunks(hw).map(|plane| plane.iter().sum()).collect();
        }
        let planes: Vec<f32> = cpu.install(|| {
            (0..self.n * self.c)
                .into_par_iter()
                .with_min_len(TASK.div_ceil(hw))
                .map(|p| {
                    let kc = k[p % self.c];
                    lane_sum(&u[p * hw..][..hw], &v[p * hw..][..hw], |u, v| f(u, v, kc))
                })
                .collect()
        });
        let mut out = vec![0f32; self.c];
        for image in planes.chunks(self.c) {
            out.iter_mut().zip(image).for_each(|(o, p)| *o += p);
        }
        out
    }
}

/// Per-channel mean and biased variance, two passes (mean, then centred squares) for accuracy.
pub(super) fn batch_stats(cpu: &CpuBackend, s: &BnShape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let m = s.count() as f32;
    let zeros = vec![0f32; s.c];
    let mean: Vec<f32> = s.channel_sum(cpu, x, x, &zeros, |x, _, _| x).into_iter().map(|v| v / m).collect();
    let var = s.channel_sum(cpu, x, x, &mean, |x, _, mu| (x - mu) * (x - mu)).into_iter().map(|v| v / m).collect();
    (mean, var)
}

/// y = (x − mean)·γ/√(var + eps) + β.
pub(super) fn forward(cpu: &CpuBackend, s: &BnShape, x: &[f32], [mean, var, gamma, beta]: [&[f32]; 4], eps: f32) -> Vec<f32> {
    let scale: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    s.channel_affine(cpu, x, x, [&vec![0f32; s.c], &scale, mean, beta])
}

/// [Σg | Σg·x̂] per channel (x̂ = (x − mean)/√(var + eps)): dβ, dγ, and what the
/// training-mode dx needs.
pub(super) fn grad_sums(cpu: &CpuBackend, s: &BnShape, x: &[f32], g: &[f32], mean: &[f32], var: &[f32], eps: f32) -> Vec<f32> {
    let sum_g = s.channel_sum(cpu, g, g, mean, |g, _, _| g);
    let sum_gx = s.channel_sum(cpu, g, x, mean, |g, x, mu| g * (x - mu));
    sum_g.into_iter().chain(sum_gx.into_iter().zip(var).map(|(sgx, v)| sgx / (v + eps).sqrt())).collect()
}

/// Training-mode dx = γ·inv_std·(g − Σg/M − x̂·Σg·x̂/M), as a·g − a·k·(x − mean) − a·Σg/M with
/// a = γ·inv_std and k = Σg·x̂/M·inv_std.
pub(super) fn input_grad_train(cpu: &CpuBackend, s: &BnShape, x: &[f32], g: &[f32], [mean, var, gamma]: [&[f32]; 3], sums: &[f32], eps: f32) -> Vec<f32> {
    let m = s.count() as f32;
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let a: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, i)| g * i).collect();
    let minus_ak: Vec<f32> = (0..s.c).map(|c| -a[c] * sums[s.c + c] / m * inv_std[c]).collect();
    let shift: Vec<f32> = (0..s.c).map(|c| -a[c] * sums[c] / m).collect();
    s.channel_affine(cpu, g, x, [&a, &minus_ak, mean, &shift])
}

/// Eval-mode dx = γ/√(var + eps)·g (statistics that do not depend on x).
pub(super) fn input_grad_eval(cpu: &CpuBackend, s: &BnShape, g: &[f32], var: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    let a: Vec<f32> = gamma.iter().zip(var).map(|(g, v)| g / (v + eps).sqrt()).collect();
    let zeros = vec![0f32; s.c];
    s.channel_affine(cpu, g, g, [&a, &zeros, &zeros, &zeros])
}
