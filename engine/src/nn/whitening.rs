//! The patch-whitening initialisation of a first convolution (airbench's, after Coates & Ng):
//! its filters are the eigenvectors of the training images' patch covariance, each scaled by
//! 1/√(λ + ε), so that the layer's outputs are decorrelated with unit variance over the data;
//! each filter also appears negated, so that a ReLU after the layer keeps both signs.
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

/// The [2·C·kh·kw, C, kh, kw] weight for a `kernel` convolution (stride 1, no padding) over
/// `images` [N, C, H, W]: rows are the eigenvectors of the uncentred covariance of every
/// kh×kw patch, by eigenvalue from largest, each divided by √(λ + `eps`) and made to have its
/// largest-magnitude entry positive (an eigenvector's sign is arbitrary), then the same rows
/// negated. On the images' device; the arithmetic is f64 on the host.
pub fn patch_whitening(images: &Tensor, kernel: [usize; 2], eps: f32) -> Result<Tensor> {
    let err = |d: String| shape_err("patch_whitening", d);
    let [n, c, h, w] = *images.shape() else { return Err(err(format!("images must be [N, C, H, W], got {:?}", images.shape()))) };
    let [kh, kw] = kernel;
    if kh == 0 || kw == 0 || kh > h || kw > w || n == 0 || c == 0 {
        return Err(err(format!("a {kh}×{kw} patch does not fit images {:?}", images.shape())));
    }
    if eps.is_nan() || eps <= 0.0 {
        return Err(err(format!("ε must be positive, got {eps}")));
    }
    let values = images.to_vec()?;
    let d = c * kh * kw;
    let (ho, wo) = (h - kh + 1, w - kw + 1);
    // Σ over images of Σ over positions of p·pᵀ, p indexed as the weight's (c, i, j).
    let sums = values
        .par_chunks(c * h * w)
        .map(|image| {
            let (mut sum, mut patch) = (vec![0f64; d * d], vec![0f64; d]);
            for y in 0..ho {
                for x in 0..wo {
                    for (k, v) in patch.iter_mut().enumerate() {
                        let (ch, i, j) = (k / (kh * kw), (k / kw) % kh, k % kw);
                        *v = image[(ch * h + y + i) * w + x + j] as f64;
                    }
                    for a in 0..d {
                        for b in a..d {
                            sum[a * d + b] += patch[a] * patch[b];
                        }
                    }
                }
            }
            sum
        })
        .reduce(|| vec![0f64; d * d], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
    let count = (n * ho * wo) as f64;
    let covariance = DMatrix::from_fn(d, d, |a, b| sums[a.min(b) * d + a.max(b)] / count);
    let eigen = SymmetricEigen::new(covariance);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
    let mut rows = Vec::with_capacity(2 * d * d);
    for &k in &order {
        let v = eigen.eigenvectors.column(k);
        let largest = v.iter().copied().fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        let scale = largest.signum() / (eigen.eigenvalues[k].max(0.0) + eps as f64).sqrt();
        rows.extend(v.iter().map(|x| (x * scale) as f32));
    }
    let negated: Vec<f32> = rows.iter().map(|v| -v).collect();
    rows.extend(negated);
    Tensor::from_vec(rows, &[2 * d, c, kh, kw], images.device())
}
