//! conv2d of one image too big for one pass on a GPU: its patch matrix (or its input) exceeds
//! a storage binding, so the image runs as horizontal bands of output rows. A band is an
//! ordinary convolution of the input rows it reads, with its top padding shifted so that the
//! band's first input row is row 0; the kernels (conv2d.wgsl) need nothing new. The forward
//! and the weight gradient walk bands of output rows; the input gradient walks bands of input
//! rows, each gathering (col2im) from the output rows that reach it, so no two bands write the
//! same input row and nothing is summed across bands.
use super::conv2d::{col2im, patches, weight_matrix, ConvShape};
use super::gemm::gemm_mixed;
use super::{accumulate, join, narrow, GemmOpts};
use crate::error::{shape_err, Result};
use crate::gpu::GpuBackend;
use crate::tensor::Tensor;
use crate::tensor_f16::MixedTensor;
use std::sync::Arc;
use tessera_shaders::Kernel;

/// A band: input rows [in0, in0 + shape.h), output rows [out0, out0 + shape.ho), and the
/// band's own shape (one image; `padding[0]` shifted to the band).
#[derive(Clone, Copy, Debug)]
struct Band {
    in0: usize,
    out0: usize,
    shape: ConvShape,
}

impl Band {
    /// The band of output rows [r0, r1) of the one-image shape `s`.
    fn of_output_rows(s: &ConvShape, r0: usize, r1: usize) -> Self {
        let (stride, pad) = (s.opts.stride[0], s.opts.padding[0]);
        let span = s.opts.dilation[0] * (s.kh - 1) + 1;
        // The first and one past the last input row the band reads (rows in the padding
        // are not read); at least one row, which may go unread.
        let in0 = (r0 * stride).saturating_sub(pad);
        let in1 = ((r1 - 1) * stride + span).saturating_sub(pad).clamp(in0 + 1, s.h);
        Self::new(s, in0, in1, r0, r1)
    }

    /// The band of input rows [i0, i1) of `s`, with the output rows whose patches reach them.
    fn of_input_rows(s: &ConvShape, i0: usize, i1: usize) -> Self {
        let (stride, pad) = (s.opts.stride[0], s.opts.padding[0]);
        let reach = s.opts.dilation[0] * (s.kh - 1);
        // Rounded down, so that r0·stride ≤ i0 + pad (the band's padding stays ≥ 0); an extra
        // output row only adds patches that touch none of the band's rows.
        let r0 = ((i0 + pad).saturating_sub(reach) / stride).min(s.ho - 1);
        let r1 = ((i1 - 1 + pad) / stride + 1).clamp(r0 + 1, s.ho);
        Self::new(s, i0, i1, r0, r1)
    }

    fn new(s: &ConvShape, in0: usize, in1: usize, out0: usize, out1: usize) -> Self {
        let mut opts = s.opts;
        // Input row y of the band is row in0 + y of the image: oh·stride − pad + i·dil − in0.
        opts.padding[0] = s.opts.padding[0] + in0 - out0 * s.opts.stride[0];
        Self { in0, out0, shape: ConvShape { n: 1, h: in1 - in0, ho: out1 - out0, opts, ..*s } }
    }

    /// Whether one pass of the band binds nothing over the adapter's limit: its input rows,
    /// its patch matrix and its GEMM result (the f16 GEMM binds its operands whole).
    fn fits(&self, gpu: &GpuBackend) -> bool {
        let s = &self.shape;
        4 * (s.c * s.h * s.w).max(s.patch_len().max(s.o) * s.ho * s.wo) as u64 <= gpu.max_binding_bytes()
    }
}

/// Whether one image of `s` fits one pass.
pub(super) fn image_fits(gpu: &GpuBackend, s: &ConvShape) -> bool {
    Band::of_output_rows(&ConvShape { n: 1, ..*s }, 0, s.ho).fits(gpu)
}

/// `cut(start, end)` bands covering [0, len) in runs of equal length, the longest run whose
/// every band fits (one row each if none does: its launch then names the binding).
fn bands(gpu: &GpuBackend, len: usize, cut: impl Fn(usize, usize) -> Band) -> Vec<Band> {
    let mut run = len;
    loop {
        let all: Vec<Band> = (0..len).step_by(run).map(|start| cut(start, (start + run).min(len))).collect();
        if run == 1 || all.iter().all(|b| b.fits(gpu)) {
            return all;
        }
        run = run.div_ceil(2);
    }
}

/// The band's input rows of x [1, C, H, W].
fn band_input(x: &Tensor, b: &Band) -> Result<Tensor> {
    narrow(x, 2, b.in0, b.shape.h)
}

/// The band's output rows of g [1, O, Ho, Wo] as the GEMMs' [O, rows·Wo] operand.
fn band_gradient(g: &Tensor, b: &Band, half: bool) -> Result<MixedTensor> {
    let s = &b.shape;
    MixedTensor::new(narrow(g, 2, b.out0, s.ho)?.reshape(&[s.o, s.ho * s.wo])?, half)
}

/// `conv(band input, band shape)` → [1, O, rows, Wo] over bands of output rows of one image
/// x [1, C, H, W], joined into [1, O, Ho, Wo].
pub(super) fn map_output_bands(gpu: &GpuBackend, x: &Tensor, s: &ConvShape, mut conv: impl FnMut(&Tensor, &ConvShape) -> Result<Tensor>) -> Result<Tensor> {
    let mut out = None;
    for band in bands(gpu, s.ho, |r0, r1| Band::of_output_rows(s, r0, r1)) {
        out = Some(join(out, conv(&band_input(x, &band)?, &band.shape)?, 2)?);
    }
    out.ok_or_else(|| shape_err("conv2d", format!("{s:?} has no output rows")))
}

/// conv2d without bias of one image x [1, C, H, W] → [1, O, Ho, Wo], band by band.
pub(super) fn forward(gpu: &Arc<GpuBackend>, x: &Tensor, weight: &Tensor, s: &ConvShape, im2col_kernel: Option<&'static Kernel>) -> Result<Tensor> {
    let w_mat = weight_matrix(weight, s)?;
    map_output_bands(gpu, x, s, |xb, sb| gemm_mixed(&w_mat, &patches(gpu, xb, sb, im2col_kernel)?, GemmOpts::default())?.reshape(&sb.out_shape()))
}

/// The gradients of [`forward`], each only if asked for: dW = Σ over bands of g_band·cols_bandᵀ,
/// dx band by band of input rows as col2im(Wᵀ·g over the output rows that reach the band).
pub(super) fn backward(
    gpu: &Arc<GpuBackend>,
    x: &Tensor,
    weight: &Tensor,
    g: &Tensor,
    s: &ConvShape,
    need_input: bool,
    need_weight: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let mut dw = None;
    if need_weight {
        for band in bands(gpu, s.ho, |r0, r1| Band::of_output_rows(s, r0, r1)) {
            let cols = patches(gpu, &band_input(x, &band)?, &band.shape, None)?;
            let part = gemm_mixed(&band_gradient(g, &band, s.opts.half)?, &cols, GemmOpts { trans_b: true, ..Default::default() })?;
            dw = Some(accumulate(dw, part)?);
        }
    }
    let mut dx = None;
    if need_input {
        let w_mat = weight_matrix(weight, s)?;
        for band in bands(gpu, s.h, |i0, i1| Band::of_input_rows(s, i0, i1)) {
            let dcols = gemm_mixed(&w_mat, &band_gradient(g, &band, s.opts.half)?, GemmOpts { trans_a: true, ..Default::default() })?;
            dx = Some(join(dx, col2im(gpu, &dcols, &band.shape)?, 2)?);
        }
    }
    Ok((dx, dw.map(|d| d.reshape(weight.shape())).transpose()?))
}
