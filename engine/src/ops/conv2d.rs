//! conv2d (NCHW, PyTorch semantics: stride, padding, dilation, optional bias) as GEMMs over
//! unfolded patches. GPU route below: shaders/wgsl/conv2d.wgsl (im2col, col2im, swap01) around
//! batch-wide GEMMs (gemm.wgsl; the f32 forward's runs per image straight into NCHW where
//! planes hold ≥ 16 positions, `gemm_per_image`); in mixed precision the patches go to f16
//! (conv2d_f16.wgsl) and the GEMMs multiply f16 with f32 accumulation; CPU twin:
//! conv2d_cpu.rs, image by image with OpenBLAS; conformance: tests/ops_conformance.rs.
use super::conv2d_bands as bands;
use super::gemm::{gemm_mixed, gemm_per_image};
use super::{conv2d_cpu, cpu_data, cpu_tensor, gpu_buffer, grid_1d, launch_map, to_u32};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::gpu::GpuBackend;
use crate::ops::{add_channel, narrow, GemmOpts};
use crate::tensor::Tensor;
use crate::tensor_f16::{require_f16_pack, HalfTensor, MixedTensor};
use std::sync::Arc;
use tessera_shaders::conv2d as k;
use tessera_shaders::Kernel;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dOpts {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    /// Mixed precision: the GPU's GEMMs multiply in f16 with f32 accumulation
    /// ([`GemmOpts::half`]); the CPU ignores it.
    pub half: bool,
}

impl Default for Conv2dOpts {
    fn default() -> Self {
        Self { stride: [1, 1], padding: [0, 0], dilation: [1, 1], half: false }
    }
}

impl Conv2dOpts {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self { stride: [stride; 2], padding: [padding; 2], ..Self::default() }
    }
}

/// The shape rules of conv2d, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub ho: usize,
    pub wo: usize,
    pub opts: Conv2dOpts,
}

impl ConvShape {
    /// x [N, C, H, W], weight [O, C, kh, kw]; Ho = ⌊(H + 2·pad − dil·(kh − 1) − 1) / stride⌋ + 1.
    pub fn new(x: &[usize], weight: &[usize], opts: Conv2dOpts) -> Result<Self> {
        let err = |d: String| shape_err("conv2d", d);
        let [n, c, h, w] = *x else { return Err(err(format!("input must be 4-D [N, C, H, W], got {x:?}"))) };
        let [o, wc, kh, kw] = *weight else {
            return Err(err(format!("weight must be 4-D [out, in, kh, kw], got {weight:?}")));
        };
        if wc != c {
            return Err(err(format!("input has {c} channels but weight {weight:?} expects {wc} (input {x:?})")));
        }
        if opts.stride.contains(&0) || opts.dilation.contains(&0) || kh == 0 || kw == 0 {
            return Err(err(format!("stride, dilation and kernel size must be positive: {opts:?}, weight {weight:?}")));
        }
        let out = |size: usize, k: usize, i: usize| -> Option<usize> {
            let span = opts.dilation[i] * (k - 1) + 1;
            (size + 2 * opts.padding[i]).checked_sub(span).map(|r| r / opts.stride[i] + 1)
        };
        let (Some(ho), Some(wo)) = (out(h, kh, 0), out(w, kw, 1)) else {
            return Err(err(format!("kernel {kh}×{kw} ({opts:?}) is larger than the padded input {x:?}")));
        };
        Ok(Self { n, c, h, w, o, kh, kw, ho, wo, opts })
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.ho, self.wo]
    }

    /// Rows of the patch matrix: C·kh·kw.
    pub fn patch_len(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Columns of the patch matrix: N·Ho·Wo.
    pub fn positions(&self) -> usize {
        self.n * self.ho * self.wo
    }

    pub fn forward_flops(&self) -> f64 {
        2.0 * (self.o * self.patch_len() * self.positions()) as f64
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    ho: u32,
    wo: u32,
    stride: [u32; 2],
    pad: [u32; 2],
    dil: [u32; 2],
    a: u32,
    b: u32,
    inner: u32,
    total: u32,
    _pad: [u32; 2],
}

impl ConvParams {
    fn of(s: &ConvShape, total: usize) -> Result<Self> {
        let u = |x| to_u32("conv2d", x);
        let o = &s.opts;
        Ok(Self {
            n: u(s.n)?,
            c: u(s.c)?,
            h: u(s.h)?,
            w: u(s.w)?,
            kh: u(s.kh)?,
            kw: u(s.kw)?,
            ho: u(s.ho)?,
            wo: u(s.wo)?,
            stride: [u(o.stride[0])?, u(o.stride[1])?],
            pad: [u(o.padding[0])?, u(o.padding[1])?],
            dil: [u(o.dilation[0])?, u(o.dilation[1])?],
            total: u(total)?,
            ..Default::default()
        })
    }
}

/// One launch of a conv2d.wgsl kernel from `src` into a new tensor of `out_shape`.
fn launch(gpu: &Arc<GpuBackend>, kernel: &Kernel, params: ConvParams, src: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    launch_map(gpu, "conv2d", kernel, bytemuck::bytes_of(&params), &[src], out_shape, params.total as usize)
}

/// The im2col kernels: one patch-matrix value per invocation, four (`im2col_x4`), or one
/// output row's Wo (`im2col_rows`).
pub(crate) static IM2COL_VARIANTS: [&Kernel; 3] = [&k::IM2COL, &k::IM2COL_X4, &k::IM2COL_ROWS];

/// x [N, C, H, W] → patches [C·kh·kw, N·Ho·Wo] on the GPU, with the kernel `pinned`, else the
/// one tuned for this adapter and size class, else one output row per invocation (on
/// lavapipe 2.0× faster than four values per invocation over a ResNet-20 step's patches).
fn im2col(gpu: &Arc<GpuBackend>, x: &Tensor, s: &ConvShape, pinned: Option<&'static Kernel>) -> Result<Tensor> {
    let total = s.patch_len() * s.positions();
    let params = ConvParams::of(s, total)?;
    let run = |kernel: &Kernel| {
        let per_invocation = match kernel.entry {
            "im2col_x4" => 4,
            "im2col_rows" => s.wo,
            _ => 1,
        };
        launch_map(gpu, "conv2d", kernel, bytemuck::bytes_of(&params), &[x], &[s.patch_len(), s.positions()], total.div_ceil(per_invocation))
    };
    let kernel = match pinned {
        Some(kernel) => kernel,
        None if total < super::TUNE_MIN_VALUES => &k::IM2COL_ROWS,
        None => {
            let what = format!("im2col/v{}", total.next_power_of_two());
            crate::gpu::tune::choose(gpu, &what, &IM2COL_VARIANTS, |k| k.entry, |k| run(k).map(drop))?.unwrap_or(&k::IM2COL_ROWS)
        }
    };
    run(kernel)
}

/// x [N, C, H, W] → patches [C·kh·kw, N·Ho·Wo] rounded to f16 (mixed precision), or in f32
/// by [`im2col`] (with its kernel `pinned`).
pub(super) fn patches(gpu: &Arc<GpuBackend>, x: &Tensor, s: &ConvShape, pinned: Option<&'static Kernel>) -> Result<MixedTensor> {
    if !s.opts.half {
        return Ok(MixedTensor::F32(im2col(gpu, x, s, pinned)?));
    }
    require_f16_pack(gpu, "conv2d")?;
    let total = s.patch_len() * s.positions();
    let words = total.div_ceil(2);
    let out = gpu.alloc(words as u64 * 4)?;
    let kernel = &tessera_shaders::conv2d_f16::IM2COL_F16;
    let groups = grid_1d(gpu, "conv2d", words, kernel.workgroup[0] as usize)?;
    gpu.launch(kernel, bytemuck::bytes_of(&ConvParams::of(s, total)?), &[&gpu_buffer(x), &out], groups)?;
    Ok(MixedTensor::F16(HalfTensor::from_gpu_buffer(out, vec![s.patch_len(), s.positions()], gpu)))
}

/// The weight as the GEMMs' [O, C·kh·kw] operand (in f16 under mixed precision).
pub(super) fn weight_matrix(weight: &Tensor, s: &ConvShape) -> Result<MixedTensor> {
    MixedTensor::new(weight.reshape(&[s.o, s.patch_len()])?, s.opts.half)
}

/// The adjoint of [`im2col`]: patches [C·kh·kw, N·Ho·Wo] → dx [N, C, H, W], summing overlaps.
pub(super) fn col2im(gpu: &Arc<GpuBackend>, cols: &Tensor, s: &ConvShape) -> Result<Tensor> {
    let params = ConvParams::of(s, s.n * s.c * s.h * s.w)?;
    launch_map(gpu, "conv2d", &k::COL2IM_ROWS, bytemuck::bytes_of(&params), &[cols], &[s.n, s.c, s.h, s.w], s.n * s.c * s.h)
}

/// [a, b, inner] → [b, a, inner] on the GPU (given as the flat tensor's leading view).
fn swap01(gpu: &Arc<GpuBackend>, x: &Tensor, a: usize, b: usize, inner: usize, out_shape: &[usize]) -> Result<Tensor> {
    let u = |v| to_u32("swap01", v);
    let params = ConvParams { a: u(a)?, b: u(b)?, inner: u(inner)?, total: u(x.numel())?, ..Default::default() };
    launch(gpu, &k::SWAP01, params, x, out_shape)
}

/// Images per GPU pass: one pass's input [n, C, H, W], patch matrix [C·kh·kw, n·Ho·Wo] and
/// GEMM result [O, n·Ho·Wo] must each fit one storage binding (128 MiB on lavapipe: ResNet-50's
/// layer1 at 224 px, batch 32, needs 231 MB). Larger batches run in chunks of images; an image
/// that does not fit alone runs in bands of rows (conv2d_bands.rs).
fn images_per_pass(gpu: &GpuBackend, s: &ConvShape) -> usize {
    let per_image = 4 * (s.patch_len().max(s.o) * s.ho * s.wo).max(s.c * s.h * s.w);
    (gpu.max_binding_bytes() as usize / per_image.max(1)).clamp(1, s.n.max(1))
}

/// The images [start, start + len) of a batch tensor.
fn images(t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    narrow(t, 0, start, len)
}

/// conv2d(x, weight, bias): x [N, C, H, W], weight [O, C, kh, kw], bias [O] → [N, O, Ho, Wo].
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, opts: Conv2dOpts) -> Result<Tensor> {
    conv2d_with_im2col(x, weight, bias, opts, None)
}

/// [`conv2d`] with the GPU's im2col kernel pinned (the conformance suite checks each).
pub(crate) fn conv2d_with_im2col(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    opts: Conv2dOpts,
    im2col_kernel: Option<&'static Kernel>,
) -> Result<Tensor> {
    let s = ConvShape::new(x.shape(), weight.shape(), opts)?;
    super::same_device("conv2d", &[x, weight])?;
    let gpu = match x.device() {
        Device::Cpu(cpu) => {
            super::gemm::add_gemm_flops(s.forward_flops());
            let out = cpu_tensor(conv2d_cpu::conv2d(cpu, &s, cpu_data(x), cpu_data(weight)), &s.out_shape(), x.device());
            return match bias {
                Some(b) => add_channel(&out, b, 1),
                None => Ok(out),
            };
        }
        Device::Gpu(gpu) => gpu,
    };
    let per_pass = images_per_pass(gpu, &s);
    if per_pass < s.n {
        let mut out = None;
        for start in (0..s.n).step_by(per_pass) {
            let part = conv2d_with_im2col(&images(x, start, per_pass.min(s.n - start))?, weight, bias, opts, im2col_kernel)?;
            out = Some(super::join(out, part, 0)?);
        }
        let Some(out) = out else { return Err(shape_err("conv2d", format!("{s:?} has no images"))) };
        return Ok(out);
    }
    let out = if s.n == 1 && !bands::image_fits(gpu, &s) {
        bands::forward(gpu, x, weight, &s, im2col_kernel)?
    } else if per_image_product(&s) {
        let w_mat = weight.reshape(&[s.o, s.patch_len()])?;
        gemm_per_image(&w_mat, &im2col(gpu, x, &s, im2col_kernel)?, s.n)?.reshape(&s.out_shape())?
    } else {
        let cols = patches(gpu, x, &s, im2col_kernel)?;
        let w_mat = weight_matrix(weight, &s)?;
        let out_onp = gemm_mixed(&w_mat, &cols, GemmOpts::default())?; // [O, N·Ho·Wo]
        if let (Some(b), true) = (bias, s.n > 1) {
            return swap01_bias(gpu, &out_onp, b, &s);
        }
        to_nchw(gpu, &out_onp, &s)?
    };
    match bias {
        Some(b) => add_channel(&out, b, 1),
        None => Ok(out),
    }
}

/// Output planes at least this big take [`gemm_per_image`] in the forward pass; smaller ones
/// (a 1×1 plane is one column per image) leave the GEMM's tiles mostly empty, and keep one
/// product over the batch followed by `swap01`.
const PER_IMAGE_MIN_PLANE: usize = 16;

/// Whether the forward GEMM runs per image straight into NCHW: f32, several images, planes of
/// at least [`PER_IMAGE_MIN_PLANE`] positions.
fn per_image_product(s: &ConvShape) -> bool {
    !s.opts.half && s.n > 1 && s.ho * s.wo >= PER_IMAGE_MIN_PLANE
}

/// The GEMMs' [O, N·Ho·Wo] as [N, O, Ho, Wo] plus `bias` per channel, in one pass
/// (conv2d_bias.wgsl) where swap01 and add_channel took two.
fn swap01_bias(gpu: &Arc<GpuBackend>, out_onp: &Tensor, bias: &Tensor, s: &ConvShape) -> Result<Tensor> {
    if bias.shape() != [s.o] {
        return Err(shape_err("conv2d", format!("bias has shape {:?}; expected [{}]", bias.shape(), s.o)));
    }
    let u = |v| to_u32("conv2d", v);
    let total = out_onp.numel();
    let params = ConvParams { a: u(s.o)?, b: u(s.n)?, inner: u(s.ho * s.wo)?, total: u(total)?, ..Default::default() };
    launch_map(gpu, "conv2d", &tessera_shaders::conv2d_bias::SWAP01_BIAS, bytemuck::bytes_of(&params), &[out_onp, bias], &s.out_shape(), total)
}

/// The GEMMs' [O, N·Ho·Wo] as [N, O, Ho, Wo] (one image: the same values).
fn to_nchw(gpu: &Arc<GpuBackend>, out_onp: &Tensor, s: &ConvShape) -> Result<Tensor> {
    match s.n {
        1 => out_onp.reshape(&s.out_shape()),
        _ => swap01(gpu, out_onp, s.o, s.n, s.ho * s.wo, &s.out_shape()),
    }
}

/// [N, O, Ho, Wo] as the GEMMs' [O, N·Ho·Wo] (one image: the same values).
fn from_nchw(gpu: &Arc<GpuBackend>, g: &Tensor, s: &ConvShape) -> Result<Tensor> {
    match s.n {
        1 => g.reshape(&[s.o, s.positions()]),
        _ => swap01(gpu, g, s.n, s.o, s.ho * s.wo, &[s.o, s.positions()]),
    }
}

/// Gradients of conv2d with respect to the input and the weight, each only if asked for:
/// dW = g'·colsᵀ and dx = col2im(Wᵀ·g') with g' = g as [O, N·Ho·Wo]. The bias gradient is
/// Σ g over N, H, W (`ops::sum`).
pub fn conv2d_backward(
    x: &Tensor,
    weight: &Tensor,
    g: &Tensor,
    opts: Conv2dOpts,
    need_input: bool,
    need_weight: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let s = ConvShape::new(x.shape(), weight.shape(), opts)?;
    if g.shape() != s.out_shape() {
        return Err(shape_err("conv2d_backward", format!("gradient {:?} does not match output {:?}", g.shape(), s.out_shape())));
    }
    super::same_device("conv2d_backward", &[x, weight, g])?;
    let gpu = match x.device() {
        Device::Cpu(cpu) => {
            super::gemm::add_gemm_flops(s.forward_flops() * (need_input as u8 + need_weight as u8) as f64);
            let (dx, dw) = conv2d_cpu::conv2d_backward(cpu, &s, cpu_data(x), cpu_data(weight), cpu_data(g), need_input, need_weight);
            return Ok((dx.map(|d| cpu_tensor(d, x.shape(), x.device())), dw.map(|d| cpu_tensor(d, weight.shape(), x.device()))));
        }
        Device::Gpu(gpu) => gpu,
    };
    let per_pass = images_per_pass(gpu, &s);
    if per_pass < s.n {
        // dx: the passes' input gradients side by side; dW: their sum.
        let (mut dx, mut dw) = (None, None);
        for start in (0..s.n).step_by(per_pass) {
            let len = per_pass.min(s.n - start);
            let (dx_part, dw_part) = conv2d_backward(&images(x, start, len)?, weight, &images(g, start, len)?, opts, need_input, need_weight)?;
            dx = dx_part.map(|part| super::join(dx, part, 0)).transpose()?;
            dw = dw_part.map(|part| super::accumulate(dw, part)).transpose()?;
        }
        return Ok((dx, dw));
    }
    if s.n == 1 && !bands::image_fits(gpu, &s) {
        return bands::backward(gpu, x, weight, g, &s, need_input, need_weight);
    }
    let g_onp = MixedTensor::new(from_nchw(gpu, g, &s)?, opts.half)?;
    let dw = if need_weight {
        let cols = patches(gpu, x, &s, None)?;
        let dw = gemm_mixed(&g_onp, &cols, GemmOpts { trans_b: true, ..Default::default() })?;
        Some(dw.reshape(weight.shape())?)
    } else {
        None
    };
    let dx = if need_input {
        let w_mat = weight_matrix(weight, &s)?;
        let dcols = gemm_mixed(&w_mat, &g_onp, GemmOpts { trans_a: true, ..Default::default() })?;
        Some(col2im(gpu, &dcols, &s)?)
    } else {
        None
    };
    Ok((dx, dw))
}

/// The bias gradient of conv2d: Σ g over N, H, W.
pub fn conv2d_bias_backward(g: &Tensor) -> Result<Tensor> {
    super::sum_except(g, 1)
}
