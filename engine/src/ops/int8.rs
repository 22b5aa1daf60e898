//! Post-training int8 inference: conv2d and linear layers with i8 weights (symmetric, one
//! scale per output channel) on i8 activations (symmetric, one scale per tensor, calibrated),
//! i8·i8 products summed exactly in i32. The GPU kernels are shaders/wgsl/int8_pack.wgsl
//! (quantize and pack four channels per word) and int8_conv.wgsl (`dot4I8Packed`); the CPU
//! twin below computes the same integers. Conformance: tests/int8.rs against the dequantised
//! f32 reference.
//!
//! out[n, o, y, x] = (Σ q(x)·q(w)) · input_scale · weight_scale[o] + bias[o],
//! q(v) = clamp(round_half_even(v / scale), −127, 127).
use super::{cpu_data, cpu_tensor, gpu_buffer, grid_1d, to_u32, Conv2dOpts, ConvShape};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::{GpuBackend, GpuBuffer};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::sync::Arc;
use tessera_shaders::int8 as k;

/// The largest |q|: symmetric quantisation uses −127..=127 so that −q is always representable.
pub const Q_MAX: f32 = 127.0;

/// `v` quantised with the reciprocal of its scale (the kernels multiply by `inv_scale`).
pub fn quantize(v: f32, inv_scale: f32) -> i8 {
    // Clamped first, then rounded half to even by adding and removing 1.5·2²³ (exact below
    // 2²²): what WGSL's round does, without a libm call per value. NaN lands on 0.
    const MAGIC: f32 = 12_582_912.0;
    let clamped = (v * inv_scale).clamp(-Q_MAX, Q_MAX);
    ((clamped + MAGIC) - MAGIC) as i8
}

/// The per-tensor scale for activations whose largest magnitude is `max_abs`.
pub fn scale_for(max_abs: f32) -> f32 {
    if max_abs > 0.0 && max_abs.is_finite() {
        max_abs / Q_MAX
    } else {
        1.0
    }
}

/// One layer's quantised weights, packed for the device they run on.
pub struct Int8Weights {
    /// [O, C, kh, kw] for a conv, [O, K] for a linear layer: the float weight's shape.
    shape: Vec<usize>,
    /// The i8 values in the float weight's (PyTorch's) order: what files store.
    values: Vec<i8>,
    weight_scale: Vec<f32>,
    input_scale: f32,
    bias: Vec<f32>,
    packed: Packed,
    device: Device,
}

enum Packed {
    /// [O, kh, kw, 4·⌈C/4⌉], channels past C zero; held as i16, which the CPU multiplies
    /// eight or sixteen at a time into i32 pairs (x86's pmaddwd), where i8 has no such op.
    Cpu(Vec<i16>),
    /// The same bytes as u32 words, and weight_scale[0..O] then bias[0..O].
    Gpu { words: GpuBuffer, scale_bias: GpuBuffer },
}

impl Int8Weights {
    /// `weight` ([O, C, kh, kw] or [O, K]) quantised per output channel: scale_o = max|w_o| / 127.
    pub fn quantize(weight: &Tensor, bias: Option<&Tensor>, input_scale: f32) -> Result<Self> {
        let o = *weight.shape().first().ok_or_else(|| shape_err("int8 weights", "a weight needs an output axis"))?;
        let w = weight.to_vec()?;
        let per = w.len() / o.max(1);
        let mut values = Vec::with_capacity(w.len());
        let mut weight_scale = Vec::with_capacity(o);
        for row in w.chunks(per.max(1)) {
            let scale = scale_for(row.iter().fold(0f32, |m, v| m.max(v.abs())));
            values.extend(row.iter().map(|&v| quantize(v, 1.0 / scale)));
            weight_scale.push(scale);
        }
        let bias = match bias {
            Some(b) => b.to_vec()?,
            None => vec![0.0; o],
        };
        Self::new(values, weight.shape(), weight_scale, input_scale, bias, weight.device())
    }

    /// Weights already quantised (read from a file), packed for `device`.
    pub fn new(values: Vec<i8>, shape: &[usize], weight_scale: Vec<f32>, input_scale: f32, bias: Vec<f32>, device: &Device) -> Result<Self> {
        let err = |d: String| shape_err("int8 weights", d);
        let [o, c, kh, kw] = conv_shape(shape)?;
        if values.len() != o * c * kh * kw {
            return Err(err(format!("{} values do not fill shape {shape:?}", values.len())));
        }
        if weight_scale.len() != o || bias.len() != o {
            return Err(err(format!("{o} output channels need {o} scales and biases, got {} and {}", weight_scale.len(), bias.len())));
        }
        if !(input_scale > 0.0 && input_scale.is_finite()) || weight_scale.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(err(format!("scales must be positive and finite (input scale {input_scale})")));
        }
        // [O, C, kh, kw] → [O, kh, kw, C padded to whole words].
        let cp = 4 * c.div_ceil(4);
        let mut host = vec![0i8; o * kh * kw * cp];
        for (oc, ch, y, x) in indices(o, c, kh, kw) {
            host[((oc * kh + y) * kw + x) * cp + ch] = values[((oc * c + ch) * kh + y) * kw + x];
        }
        let packed = match device {
            Device::Cpu(_) => Packed::Cpu(host.iter().map(|&v| v as i16).collect()),
            Device::Gpu(gpu) => {
                let scale_bias: Vec<f32> = weight_scale.iter().chain(&bias).copied().collect();
                Packed::Gpu { words: gpu.upload_bytes(bytemuck::cast_slice(&host))?, scale_bias: gpu.upload(&scale_bias)? }
            }
        };
        Ok(Self { shape: shape.to_vec(), values, weight_scale, input_scale, bias, packed, device: device.clone() })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &[i8] {
        &self.values
    }

    pub fn weight_scale(&self) -> &[f32] {
        &self.weight_scale
    }

    pub fn input_scale(&self) -> f32 {
        self.input_scale
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The weights the int8 ones stand for: q · scale_o.
    pub fn dequantized(&self) -> Vec<f32> {
        let per = self.values.len() / self.weight_scale.len().max(1);
        self.values.iter().enumerate().map(|(i, &q)| q as f32 * self.weight_scale[i / per.max(1)]).collect()
    }
}

/// [O, C, kh, kw], or [O, K] as the 1×1 case.
fn conv_shape(shape: &[usize]) -> Result<[usize; 4]> {
    match *shape {
        [o, c, kh, kw] => Ok([o, c, kh, kw]),
        [o, k] => Ok([o, k, 1, 1]),
        _ => Err(shape_err("int8 weights", format!("expected [O, C, kh, kw] or [O, K], got {shape:?}"))),
    }
}

/// Every (out, in, y, x) index of an [O, C, kh, kw] weight, in its storage order.
fn indices(o: usize, c: usize, kh: usize, kw: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..o).flat_map(move |a| (0..c).flat_map(move |b| (0..kh).flat_map(move |y| (0..kw).map(move |x| (a, b, y, x)))))
}

/// conv2d with int8 weights `w`: x [N, C, H, W] (f32, quantised on the way in) → [N, O, Ho, Wo].
pub fn conv2d_int8(x: &Tensor, w: &Int8Weights, opts: Conv2dOpts) -> Result<Tensor> {
    let s = ConvShape::new(x.shape(), &conv_shape(&w.shape)?, opts)?;
    if opts.dilation != [1, 1] {
        return Err(Error::Unsupported { op: "int8 conv2d", detail: format!("dilation {:?} (only 1 is)", opts.dilation) });
    }
    if !x.device().same(&w.device) {
        return Err(Error::DeviceMismatch { op: "int8 conv2d", left: x.device().to_string(), right: w.device.to_string() });
    }
    super::gemm::add_gemm_flops(s.forward_flops());
    match (&w.packed, x.device()) {
        (Packed::Cpu(packed), Device::Cpu(cpu)) => {
            let out = cpu.install(|| conv_cpu(&s, cpu_data(x), w, packed));
            Ok(cpu_tensor(out, &s.out_shape(), x.device()))
        }
        (Packed::Gpu { words, scale_bias }, Device::Gpu(gpu)) => conv_gpu_passes(gpu, x, &s, &|x, s| conv_gpu(gpu, x, s, w.input_scale, words, scale_bias)),
        _ => unreachable!("devices compared above"),
    }
}

/// A linear layer with int8 weights [O, K]: x [N, K] → [N, O] (the 1×1 conv of [N, K, 1, 1]).
pub fn linear_int8(x: &Tensor, w: &Int8Weights) -> Result<Tensor> {
    let [n, k] = *x.shape() else { return Err(shape_err("int8 linear", format!("input must be [N, K], got {:?}", x.shape()))) };
    let out = conv2d_int8(&x.reshape(&[n, k, 1, 1])?, w, Conv2dOpts::default())?;
    out.reshape(&[n, w.weight_scale.len()])
}

/// The CPU twin: activations quantised channel-last (as the GPU packs them), then per output
/// row a patch of kh·kw·C' i8 values dotted with each output channel's packed weights.
fn conv_cpu(s: &ConvShape, x: &[f32], w: &Int8Weights, packed: &[i16]) -> Vec<f32> {
    let cp = 4 * s.c.div_ceil(4);
    let inv = 1.0 / w.input_scale;
    let mut xq = vec![0i16; s.n * s.h * s.w * cp];
    xq.par_chunks_mut(s.w * cp).enumerate().for_each(|(row, dst)| {
        let (n, y) = (row / s.h, row % s.h);
        for ch in 0..s.c {
            let src = &x[((n * s.c + ch) * s.h + y) * s.w..][..s.w];
            for (px, &v) in src.iter().enumerate() {
                dst[px * cp + ch] = quantize(v, inv) as i16;
            }
        }
    });
    let k = s.kh * s.kw * cp;
    let (stride, pad) = (s.opts.stride, s.opts.padding);
    let rows: Vec<Vec<f32>> = (0..s.n * s.ho)
        .into_par_iter()
        .map(|row| {
            let (n, oy) = (row / s.ho, row % s.ho);
            // The row's patches, [Wo, k]: each output channel's weights meet every patch.
            let mut patches = vec![0i16; s.wo * k];
            for (ox, patch) in patches.chunks_exact_mut(k).enumerate() {
                for ky in 0..s.kh {
                    let iy = (oy * stride[0] + ky) as isize - pad[0] as isize;
                    if iy < 0 || iy >= s.h as isize {
                        continue;
                    }
                    for kx in 0..s.kw {
                        let ix = (ox * stride[1] + kx) as isize - pad[1] as isize;
                        if ix < 0 || ix >= s.w as isize {
                            continue;
                        }
                        let src = ((n * s.h + iy as usize) * s.w + ix as usize) * cp;
                        patch[(ky * s.kw + kx) * cp..][..cp].copy_from_slice(&xq[src..src + cp]);
                    }
                }
            }
            row_outputs_best(&patches, packed, k, s.wo, w)
        })
        .collect();
    // Rows are [O, Wo] per (n, oy): scatter into [N, O, Ho, Wo].
    let mut y = vec![0f32; s.n * s.o * s.ho * s.wo];
    for (row, values) in rows.iter().enumerate() {
        let (n, oy) = (row / s.ho, row % s.ho);
        for oc in 0..s.o {
            y[((n * s.o + oc) * s.ho + oy) * s.wo..][..s.wo].copy_from_slice(&values[oc * s.wo..][..s.wo]);
        }
    }
    y
}

/// Σ aᵢ·bᵢ over i8 values held in i16, exactly, in eight i32 lanes: the portable path
/// (without AVX2; LLVM vectorises it with shuffles and 32-bit multiplies, not pmaddwd).
fn dot_i16(a: &[i16], b: &[i16]) -> i32 {
    const PAIRS: usize = 8;
    let mut acc = [0i32; PAIRS];
    let (a16, b16) = (a.chunks_exact(2 * PAIRS), b.chunks_exact(2 * PAIRS));
    let tail: i32 = a16.remainder().iter().zip(b16.remainder()).map(|(&x, &y)| x as i32 * y as i32).sum();
    for (x, y) in a16.zip(b16) {
        for l in 0..PAIRS {
            acc[l] += x[2 * l] as i32 * y[2 * l] as i32 + x[2 * l + 1] as i32 * y[2 * l + 1] as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// out[oc·Wo + ox] for every output channel and patch of one output row.
fn row_outputs(patches: &[i16], packed: &[i16], k: usize, wo: usize, w: &Int8Weights) -> Vec<f32> {
    let mut out = vec![0f32; w.weight_scale.len() * wo];
    for (oc, wrow) in packed.chunks_exact(k).enumerate() {
        for (ox, patch) in patches.chunks_exact(k).enumerate() {
            out[oc * wo + ox] = dot_i16(patch, wrow) as f32 * w.input_scale * w.weight_scale[oc] + w.bias[oc];
        }
    }
    out
}

/// [`row_outputs`] with AVX2's vpmaddwd: sixteen i16 products summed into eight i32 lanes
/// per instruction, four output channels per pass over a patch (each patch load feeds four).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_outputs_avx2(patches: &[i16], packed: &[i16], k: usize, wo: usize, w: &Int8Weights) -> Vec<f32> {
    use std::arch::x86_64::*;
    let o = w.weight_scale.len();
    let mut out = vec![0f32; o * wo];
    let body = k / 16 * 16;
    let hsum = |v: __m256i| -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_hadd_epi32(s, s);
        _mm_cvtsi128_si32(_mm_hadd_epi32(s, s))
    };
    let tail = |x: &[i16], y: &[i16]| -> i32 { x[body..].iter().zip(&y[body..]).map(|(&a, &b)| a as i32 * b as i32).sum() };
    for oc0 in (0..o).step_by(4) {
        let rows: Vec<&[i16]> = (oc0..(oc0 + 4).min(o)).map(|oc| &packed[oc * k..][..k]).collect();
        for (ox, patch) in patches.chunks_exact(k).enumerate() {
            let mut acc = [_mm256_setzero_si256(); 4];
            for i in (0..body).step_by(16) {
                // SAFETY: i + 16 ≤ body ≤ k, the length of `patch` and of every row.
                let x = _mm256_loadu_si256(patch.as_ptr().add(i) as *const __m256i);
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, _mm256_loadu_si256(row.as_ptr().add(i) as *const __m256i)));
                }
            }
            for (j, (a, row)) in acc.iter().zip(&rows).enumerate() {
                let oc = oc0 + j;
                let dot = hsum(*a) + tail(patch, row);
                out[oc * wo + ox] = dot as f32 * w.input_scale * w.weight_scale[oc] + w.bias[oc];
            }
        }
    }
    out
}

fn row_outputs_best(patches: &[i16], packed: &[i16], k: usize, wo: usize, w: &Int8Weights) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { row_outputs_avx2(patches, packed, k, wo, w) };
    }
    row_outputs(patches, packed, k, wo, w)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PackParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    c4: u32,
    words: u32,
    inv_scale: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvI8Params {
    n: u32,
    c4: u32,
    h: u32,
    w: u32,
    o: u32,
    kh: u32,
    kw: u32,
    ho: u32,
    wo: u32,
    stride: [u32; 2],
    pad: [u32; 2],
    total: u32,
    input_scale: f32,
    _pad: u32,
}

/// `conv` over passes whose input and output each fit one binding (the kernel binds both
/// whole): the batch in chunks of images, an image too big alone in bands of output rows.
fn conv_gpu_passes(gpu: &GpuBackend, x: &Tensor, s: &ConvShape, conv: &dyn Fn(&Tensor, &ConvShape) -> Result<Tensor>) -> Result<Tensor> {
    let per_image = 4 * (s.c * s.h * s.w).max(s.o * s.ho * s.wo) as u64;
    if s.n as u64 * per_image <= gpu.max_binding_bytes() {
        return conv(x, s);
    }
    let per_pass = (gpu.max_binding_bytes() / per_image.max(1)).max(1) as usize;
    let mut out = None;
    for start in (0..s.n).step_by(per_pass) {
        let len = per_pass.min(s.n - start);
        let images = super::narrow(x, 0, start, len)?;
        let part = match len {
            1 if per_image > gpu.max_binding_bytes() => super::conv2d_bands::map_output_bands(gpu, &images, &ConvShape { n: 1, ..*s }, conv)?,
            _ => conv(&images, &ConvShape { n: len, ..*s })?,
        };
        out = Some(super::join(out, part, 0)?);
    }
    out.ok_or_else(|| shape_err("int8 conv2d", format!("{s:?} has no images")))
}

fn conv_gpu(gpu: &Arc<GpuBackend>, x: &Tensor, s: &ConvShape, input_scale: f32, words: &GpuBuffer, scale_bias: &GpuBuffer) -> Result<Tensor> {
    let u = |v| to_u32("int8 conv2d", v);
    let c4 = s.c.div_ceil(4);
    let packed_words = s.n * s.h * s.w * c4;
    let packed = gpu.alloc(packed_words as u64 * 4)?;
    let pack = PackParams { n: u(s.n)?, c: u(s.c)?, h: u(s.h)?, w: u(s.w)?, c4: u(c4)?, words: u(packed_words)?, inv_scale: 1.0 / input_scale, _pad: 0 };
    let groups = grid_1d(gpu, "int8 quantize", packed_words, k::QUANTIZE_PACK.workgroup[0] as usize)?;
    gpu.launch(&k::QUANTIZE_PACK, bytemuck::bytes_of(&pack), &[&gpu_buffer(x), &packed], groups)?;
    let out = Tensor::uninit_gpu(s.out_shape().to_vec(), gpu)?;
    // One invocation per pixel and four output channels.
    let total = s.n * s.o.div_ceil(4) * s.ho * s.wo;
    let params = ConvI8Params {
        n: u(s.n)?,
        c4: u(c4)?,
        h: u(s.h)?,
        w: u(s.w)?,
        o: u(s.o)?,
        kh: u(s.kh)?,
        kw: u(s.kw)?,
        ho: u(s.ho)?,
        wo: u(s.wo)?,
        stride: [u(s.opts.stride[0])?, u(s.opts.stride[1])?],
        pad: [u(s.opts.padding[0])?, u(s.opts.padding[1])?],
        total: u(total)?,
        input_scale,
        _pad: 0,
    };
    let groups = grid_1d(gpu, "int8 conv2d", total, k::CONV2D.workgroup[0] as usize)?;
    gpu.launch(&k::CONV2D, bytemuck::bytes_of(&params), &[&packed, words, scale_bias, &gpu_buffer(&out)], groups)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable row kernel and the AVX2 one give the same integers (and so the same outputs).
    #[test]
    fn row_kernels_agree() {
        let (o, k, wo) = (7, 9 * 12, 5);
        let val = |i: usize| ((i * 7919 + 13) % 255) as i16 - 127;
        let patches: Vec<i16> = (0..wo * k).map(val).collect();
        let packed: Vec<i16> = (0..o * k).map(|i| val(i * 31 + 5)).collect();
        let w = Int8Weights::new(vec![0; o * k], &[o, k], (1..=o).map(|i| i as f32 / 64.0).collect(), 0.5, vec![0.25; o], &Device::cpu()).unwrap();
        let portable = row_outputs(&patches, &packed, k, wo, &w);
        assert_eq!(row_outputs_best(&patches, &packed, k, wo, &w), portable);
        let exact: i32 = patches[..k].iter().zip(&packed[..k]).map(|(&a, &b)| a as i32 * b as i32).sum();
        assert_eq!(portable[0], exact as f32 * 0.5 * (1.0 / 64.0) + 0.25);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_clamps() {
        assert_eq!([0.5, 1.5, 2.5, -0.5, -2.5, 126.6, 500.0, -500.0, f32::NAN].map(|v| quantize(v, 1.0)), [0, 2, 2, 0, -2, 127, 127, -127, 0]);
    }
}
