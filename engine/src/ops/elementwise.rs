//! Elementwise ops. Kernels: shaders/wgsl/elementwise.wgsl; CPU twins below (rayon);
//! conformance: tests/ops_conformance.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, launch_flat, launch_rows, par_fill, same_device, same_shape, to_u32, Bind};
use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use tessera_shaders::elementwise as k;
use tessera_shaders::Kernel;

/// The uniform block of elementwise.wgsl (`EwParams`).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EwParams {
    n: u32,
    alpha: f32,
    beta: f32,
    inner: u32,
    channels: u32,
    /// The launch's first value in the whole tensor (a tensor beyond one binding runs in
    /// several launches); kernels whose result depends on the index add it.
    base: u32,
    _pad: [u32; 2],
}

/// Values per parallel task: a task per value costs more than the value.
const BLOCK: usize = 1 << 14;

/// Runs `kernel` over x (and y, of x's length) into a new tensor shaped like x; `cpu` is its
/// CPU twin, mapping (x_i, y_i, i) to out_i.
fn map2(op: &'static str, kernel: &Kernel, x: &Tensor, y: &Tensor, params: EwParams, cpu: impl Fn(f32, f32, usize) -> f32 + Sync) -> Result<Tensor> {
    same_device(op, &[x, y])?;
    let n = x.numel();
    match x.device() {
        Device::Cpu(backend) => {
            let (xs, ys) = (cpu_data(x), cpu_data(y));
            let out = par_fill(backend, n, (BLOCK, 1), |first, len| {
                let cpu = &cpu;
                xs[first..][..len].iter().zip(&ys[first..][..len]).enumerate().map(move |(j, (a, b))| cpu(*a, *b, first + j))
            });
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(gpu) => {
            let out = Tensor::uninit_gpu(x.shape().to_vec(), gpu)?;
            let (xb, yb, ob) = (gpu_buffer(x), gpu_buffer(y), gpu_buffer(&out));
            launch_flat(gpu, kernel, n, &[Bind::flat(&xb), Bind::flat(&yb), Bind::flat(&ob)], |first, len| {
                Ok(bytemuck::bytes_of(&EwParams { n: to_u32(op, len)?, base: to_u32(op, first)?, ..params }).to_vec())
            })?;
            Ok(out)
        }
    }
}

/// alpha·x + beta·y.
pub fn axpby(alpha: f32, x: &Tensor, beta: f32, y: &Tensor) -> Result<Tensor> {
    same_shape("axpby", x, y)?;
    map2("axpby", &k::AXPBY, x, y, EwParams { alpha, beta, ..Default::default() }, |a, b, _| alpha * a + beta * b)
}

/// x + y.
pub fn add(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    axpby(1.0, x, 1.0, y)
}

/// alpha·x.
pub fn scale(x: &Tensor, alpha: f32) -> Result<Tensor> {
    // y = x with beta = 0: the kernel reads y but it contributes nothing.
    map2("scale", &k::AXPBY, x, x, EwParams { alpha, ..Default::default() }, |a, _, _| alpha * a)
}

/// x·y.
pub fn mul(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    same_shape("mul", x, y)?;
    map2("mul", &k::MUL, x, y, EwParams::default(), |a, b, _| a * b)
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    map2("relu", &k::RELU_FORWARD, x, x, EwParams::default(), |a, _, _| a.max(0.0))
}

/// The gradient of relu at `x` given the upstream gradient `g`: g·[x > 0].
pub fn relu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape("relu_backward", x, g)?;
    map2("relu_backward", &k::RELU_BACKWARD, x, g, EwParams::default(), |a, g, _| if a > 0.0 { g } else { 0.0 })
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7): the formula elementwise.wgsl uses
/// (WGSL has no erf), so both backends round alike.
pub fn erf(v: f32) -> f32 {
    let a = v.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * (-a * a).exp()).copysign(v)
}

/// GELU(x) = x·Φ(x) = ½·x·(1 + erf(x/√2)), PyTorch's exact form (approximate='none').
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    map2("gelu", &k::GELU_FORWARD, x, x, EwParams::default(), |v, _, _| 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2)))
}

/// The gradient of GELU at `x` given the upstream gradient `g`: g·(Φ(x) + x·φ(x)).
pub fn gelu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape("gelu_backward", x, g)?;
    map2("gelu_backward", &k::GELU_BACKWARD, x, g, EwParams::default(), |v, g, _| {
        let cdf = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        g * (cdf + v * 0.398_942_3 * (-0.5 * v * v).exp())
    })
}

/// x + b broadcast along `axis`: b has x.shape()[axis] values (a bias per feature or channel).
pub fn add_channel(x: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let channels = *x.shape().get(axis).ok_or_else(|| shape_err("add_channel", format!("axis {axis} out of range for shape {:?}", x.shape())))?;
    if b.shape() != [channels] {
        return Err(shape_err("add_channel", format!("bias has shape {:?}; expected [{channels}] for axis {axis} of {:?}", b.shape(), x.shape())));
    }
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let params = EwParams { inner: to_u32("add_channel", inner.max(1))?, channels: to_u32("add_channel", channels.max(1))?, ..Default::default() };
    same_device("add_channel", &[x, b])?;
    match x.device() {
        Device::Cpu(cpu) => {
            let (xs, bs) = (cpu_data(x), cpu_data(b));
            // Units of `inner` values share one bias; tasks take ~BLOCK values.
            let inner = inner.max(1);
            let out = par_fill(cpu, x.numel(), (inner, BLOCK.div_ceil(inner)), |first, len| {
                let b = bs[(first / inner) % channels];
                xs[first..][..len].iter().map(move |v| v + b)
            });
            Ok(cpu_tensor(out, x.shape(), x.device()))
        }
        Device::Gpu(gpu) => {
            let out = Tensor::uninit_gpu(x.shape().to_vec(), gpu)?;
            let (xb, bb, ob) = (gpu_buffer(x), gpu_buffer(b), gpu_buffer(&out));
            launch_flat(gpu, &k::ADD_CHANNEL, x.numel(), &[Bind::flat(&xb), Bind::Whole(&bb), Bind::flat(&ob)], |first, len| {
                Ok(bytemuck::bytes_of(&EwParams { n: to_u32("add_channel", len)?, base: to_u32("add_channel", first)?, ..params }).to_vec())
            })?;
            Ok(out)
        }
    }
}

/// The dropout mask hash; the same bits as `hash` in elementwise.wgsl.
fn dropout_hash(i: u32, seed: u32) -> u32 {
    let mut h = i ^ seed.wrapping_mul(0x9e37_79b9);
    h = (h ^ (h >> 16)).wrapping_mul(0x7feb_352d);
    h = (h ^ (h >> 15)).wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// Dropout with probability `p` and mask seed `seed`: x·keep/(1 − p). The mask is a pure
/// function of (index, seed), identical on both backends; the backward is this same op
/// applied to the gradient with the same seed.
pub fn dropout(x: &Tensor, p: f32, seed: u32) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(shape_err("dropout", format!("probability {p} must be in [0, 1)")));
    }
    let alpha = 1.0 / (1.0 - p);
    let params = EwParams { alpha, beta: p, inner: seed, ..Default::default() };
    map2("dropout", &k::DROPOUT, x, x, params, move |a, _, i| {
        let u = (dropout_hash(i as u32, seed) >> 8) as f32 / 16_777_216.0;
        if u >= p {
            a * alpha
        } else {
            0.0
        }
    })
}

/// Concatenation of `a` and `b` along `axis` (all other axes equal).
pub fn concat(a: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let compatible = sa.len() == sb.len() && axis < sa.len() && sa.iter().zip(sb).enumerate().all(|(d, (x, y))| d == axis || x == y);
    if !compatible {
        return Err(shape_err("concat", format!("cannot join {sa:?} and {sb:?} along axis {axis}")));
    }
    same_device("concat", &[a, b])?;
    let outer: usize = sa[..axis].iter().product();
    let (la, lb) = (a.numel() / outer.max(1), b.numel() / outer.max(1));
    let mut shape = sa.to_vec();
    shape[axis] += sb[axis];
    let n = outer * (la + lb);
    match a.device() {
        Device::Cpu(_) => {
            let (xa, xb) = (cpu_data(a), cpu_data(b));
            let mut out = Vec::with_capacity(n);
            for r in 0..outer {
                out.extend_from_slice(&xa[r * la..(r + 1) * la]);
                out.extend_from_slice(&xb[r * lb..(r + 1) * lb]);
            }
            Ok(cpu_tensor(out, &shape, a.device()))
        }
        Device::Gpu(gpu) => {
            let out = Tensor::uninit_gpu(shape, gpu)?;
            let (ab, bb, ob) = (gpu_buffer(a), gpu_buffer(b), gpu_buffer(&out));
            let binds = [Bind::Rows(&ab, la), Bind::Rows(&bb, lb), Bind::Rows(&ob, la + lb)];
            if outer <= 1 || super::rows_per_launch(gpu, k::CONCAT2.entry, outer, &binds).is_err() {
                // Rows of a then b as buffer copies: one row (a batch's passes joined along
                // axis 0), or rows too long for aligned windows of one binding (bands of a
                // big image's planes).
                for r in 0..outer.max(1) as u64 {
                    let (la, lb) = (4 * la as u64, 4 * lb as u64);
                    gpu.copy(&ab, r * la, &ob, r * (la + lb), la)?;
                    gpu.copy(&bb, r * lb, &ob, r * (la + lb) + la, lb)?;
                }
                return Ok(out);
            }
            // Rows of a then b, in windows of whole rows when they exceed one binding.
            launch_rows(gpu, &k::CONCAT2, (outer, la + lb), &binds, |_, rows| {
                let params =
                    EwParams { n: to_u32("concat", rows * (la + lb))?, inner: to_u32("concat", la)?, channels: to_u32("concat", lb)?, ..Default::default() };
                Ok(bytemuck::bytes_of(&params).to_vec())
            })?;
            Ok(out)
        }
    }
}
