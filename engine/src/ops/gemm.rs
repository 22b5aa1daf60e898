//! GEMM: out = alpha·op(A)·op(B) + beta·C, strided-batched. Kernel: shaders/wgsl/gemm.wgsl;
//! gemm_f16.wgsl / gemm_f16_packed.wgsl for f16 storage; CPU twin: OpenBLAS sgemm per batch
//! entry, split across threads; conformance: tests/gemm_conformance.rs.
use super::{cpu_data, cpu_tensor, gpu_buffer, to_u32};
use crate::cpu::{CpuBackend, Gemm};
use crate::device::Device;
use crate::error::{shape_err, Error, Result};
use crate::gpu::GpuBackend;
use crate::gpu::{GpuBuffer, Window};
use crate::tensor::Tensor;
use crate::tensor_f16::{HalfStorage, HalfTensor, MixedTensor};
use std::sync::Arc;
use tessera_shaders::gemm::{GemmKernel, Storage, F16_PACKED_REG4X4, F16_REG16X16, F16_REG4X4, REG_16X16, REG_4X4, SUBGROUP_32X8, TILED_64, VARIANTS};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmOpts {
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    /// Ignored (treated as 0, as in PyTorch's addmm) when no C is given.
    pub beta: f32,
}

impl Default for GemmOpts {
    fn default() -> Self {
        Self { trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 }
    }
}

/// GEMM dimensions and element strides, derived once from the operand shapes.
/// op(A)(i, l) of batch z sits at z·a_bs + i·a_rs + l·a_cs (likewise B); out is contiguous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_rs: usize,
    pub a_cs: usize,
    pub a_bs: usize,
    pub b_rs: usize,
    pub b_cs: usize,
    pub b_bs: usize,
    /// Batch stride of C (0 broadcasts a 2-D C over the batch); None without C.
    pub c_bs: Option<usize>,
    pub out_shape: Vec<usize>,
}

impl GemmShape {
    /// The shape rules. A is `[M, K]` (`[K, M]` when transposed) or batched `[B, ·, ·]`;
    /// likewise B with `[K, N]`. A 2-D operand is broadcast over the other's batch.
    /// C must have the output's shape, or be `[M, N]` (broadcast over the batch).
    pub fn new(a: &[usize], b: &[usize], c: Option<&[usize]>, o: GemmOpts) -> Result<Self> {
        let err = |detail: String| shape_err("gemm", detail);
        let split = |name: &str, s: &[usize]| -> Result<(Option<usize>, usize, usize)> {
            match *s {
                [r, c] => Ok((None, r, c)),
                [bt, r, c] => Ok((Some(bt), r, c)),
                _ => Err(err(format!("{name} must be 2-D or 3-D (batched), got shape {s:?}"))),
            }
        };
        let (ab, ar, ac) = split("A", a)?;
        let (bb, br, bc) = split("B", b)?;
        let (m, ka) = if o.trans_a { (ac, ar) } else { (ar, ac) };
        let (kb, n) = if o.trans_b { (bc, br) } else { (br, bc) };
        if ka != kb {
            return Err(err(format!(
                "inner dimensions differ: op(A) is {m}×{ka} (A {a:?}{}), op(B) is {kb}×{n} (B {b:?}{})",
                if o.trans_a { ", transposed" } else { "" },
                if o.trans_b { ", transposed" } else { "" }
            )));
        }
        let batch = match (ab, bb) {
            (Some(x), Some(y)) if x != y => return Err(err(format!("batch sizes differ: A {a:?}, B {b:?}"))),
            (Some(x), _) | (None, Some(x)) => Some(x),
            (None, None) => None,
        };
        let out_shape: Vec<usize> = batch.into_iter().chain([m, n]).collect();
        let c_bs = match c {
            None => None,
            Some(cs) if cs == out_shape.as_slice() => Some(if batch.is_some() { m * n } else { 0 }),
            Some([cm, cn]) if (*cm, *cn) == (m, n) => Some(0),
            Some(cs) => return Err(err(format!("C has shape {cs:?}; expected {out_shape:?} or [{m}, {n}]"))),
        };
        // Row-major storage: a stored row is `ac` long, so (i, l) → i·ac + l, or l·ac + i transposed.
        let (a_rs, a_cs) = if o.trans_a { (1, ac) } else { (ac, 1) };
        let (b_rs, b_cs) = if o.trans_b { (1, bc) } else { (bc, 1) };
        Ok(Self {
            batch: batch.unwrap_or(1),
            m,
            n,
            k: ka,
            a_rs,
            a_cs,
            a_bs: if ab.is_some() { ar * ac } else { 0 },
            b_rs,
            b_cs,
            b_bs: if bb.is_some() { br * bc } else { 0 },
            c_bs,
            out_shape,
        })
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

thread_local! {
    static GEMM_FLOPS: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) };
}

/// Runs `f` and returns its result with the GEMM FLOPs (2·M·N·K per product) it issued on
/// this thread: the work of every convolution and linear layer, the usual FLOP count.
pub fn count_gemm_flops<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let before = GEMM_FLOPS.with(|c| c.get());
    let out = f();
    (out, GEMM_FLOPS.with(|c| c.get()) - before)
}

/// Runs `f` without adding its products to this thread's count: reductions that run as
/// products (`ops::sum_except`) are not a layer's work.
pub(crate) fn without_gemm_flops<R>(f: impl FnOnce() -> R) -> R {
    let before = GEMM_FLOPS.with(|c| c.get());
    let out = f();
    GEMM_FLOPS.with(|c| c.set(before));
    out
}

/// Adds `flops` to this thread's count for products issued outside [`gemm`] (the CPU conv).
pub(crate) fn add_gemm_flops(flops: f64) {
    GEMM_FLOPS.with(|f| f.set(f.get() + flops));
}

/// out = alpha·op(A)·op(B) + beta·C on the operands' device.
pub fn gemm(a: &Tensor, b: &Tensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    gemm_dispatch(None, a, b, c, o)
}

/// GEMM with a chosen GPU kernel variant (benchmarks and conformance tests use every
/// variant); on the CPU the variant is ignored.
pub fn gemm_with_kernel(variant: &GemmKernel, a: &Tensor, b: &Tensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    gemm_dispatch(Some(variant), a, b, c, o)
}

fn gemm_dispatch(variant: Option<&GemmKernel>, a: &Tensor, b: &Tensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    check_storage("gemm", variant, false)?;
    let shape = GemmShape::new(a.shape(), b.shape(), c.map(|c| c.shape()), o)?;
    a.check_same_device("gemm", b)?;
    if let Some(c) = c {
        a.check_same_device("gemm", c)?;
    }
    add_gemm_flops(shape.flops());
    match a.device() {
        Device::Cpu(cpu) => {
            let out = gemm_cpu(cpu, &shape, cpu_data(a), cpu_data(b), c, o);
            Ok(cpu_tensor(out, &shape.out_shape, a.device()))
        }
        Device::Gpu(gpu) => {
            let (ab, bb) = (gpu_buffer(a), gpu_buffer(b));
            let variant = match variant {
                Some(v) => v,
                None => tuned_kernel(gpu, &shape, &ab, &bb, c, o)?,
            };
            gemm_gpu(gpu, variant, &shape, ab, bb, c, o)
        }
    }
}

/// out [N, O, P] = W·patchesₙ for each image n of a GPU patch matrix [C·kh·kw, N·P], read in
/// place: one batched product whose batch steps P columns along B, so the result is already
/// NCHW and needs no [O, N·P] → [N, O, P] pass after it. `w` is [O, C·kh·kw].
pub(crate) fn gemm_per_image(w: &Tensor, patches: &Tensor, images: usize) -> Result<Tensor> {
    let (&[o, k], &[k_b, columns]) = (w.shape(), patches.shape()) else {
        return Err(shape_err("gemm", format!("per-image product of a {:?} weight and {:?} patches; both must be 2-D", w.shape(), patches.shape())));
    };
    if k != k_b || images == 0 || columns % images != 0 {
        return Err(shape_err("gemm", format!("per-image product of a {:?} weight and {:?} patches over {images} images", w.shape(), patches.shape())));
    }
    w.check_same_device("gemm", patches)?;
    let Device::Gpu(gpu) = w.device() else {
        return Err(Error::Unsupported { op: "gemm", detail: "the per-image product reads GPU patch matrices in place".into() });
    };
    let p = columns / images;
    let shape =
        GemmShape { batch: images, m: o, n: p, k, a_rs: k, a_cs: 1, a_bs: 0, b_rs: columns, b_cs: 1, b_bs: p, c_bs: None, out_shape: vec![images, o, p] };
    add_gemm_flops(shape.flops());
    let (ab, bb) = (gpu_buffer(w), gpu_buffer(patches));
    let variant = tuned_kernel(gpu, &shape, &ab, &bb, None, GemmOpts::default())?;
    gemm_gpu(gpu, variant, &shape, ab, bb, None, GemmOpts::default())
}

/// The longest K one launch takes on a software adapter ([`crate::gpu::SOFTWARE_LOOP_TRIPS`]:
/// a product with K = 70 000 came out 30 % wrong). Longer products run as K slices
/// accumulated through C (`gemm_gpu`).
const SOFTWARE_MAX_K: usize = crate::gpu::SOFTWARE_LOOP_TRIPS;

/// Products below this many multiply-adds keep the heuristic's kernel: timing them costs more
/// than any choice saves.
const TUNE_MIN_MACS: usize = 1 << 18;

/// The size class a tuned choice applies to: each dimension rounded up to a power of two.
fn size_class(s: &GemmShape) -> String {
    format!("gemm/m{}n{}k{}", s.m.next_power_of_two(), s.n.next_power_of_two(), s.k.next_power_of_two())
}

/// The kernel for this product on this adapter: the tuned choice of its size class
/// (`gpu::tune::choose`, timed on these operands), or the heuristic [`choose_kernel`] where
/// tuning is off or the product is too small to be worth timing.
fn tuned_kernel(
    gpu: &Arc<GpuBackend>,
    s: &GemmShape,
    ab: &Arc<GpuBuffer>,
    bb: &Arc<GpuBuffer>,
    c: Option<&Tensor>,
    o: GemmOpts,
) -> Result<&'static GemmKernel> {
    let heuristic = choose_kernel(gpu, s);
    if s.batch * s.m * s.n * s.k < TUNE_MIN_MACS {
        return Ok(heuristic);
    }
    let supported: Vec<&'static GemmKernel> = VARIANTS.iter().filter(|v| unsupported_reason(gpu, v).is_none()).collect();
    let run = |v: &GemmKernel| gemm_gpu(gpu, v, s, ab.clone(), bb.clone(), c, o).map(drop);
    Ok(crate::gpu::tune::choose(gpu, &size_class(s), &supported, |v| v.kernel.entry, run)?.unwrap_or(heuristic))
}

/// out = alpha·op(A)·op(B) + beta·C with A and B stored in f16 and products accumulated in
/// f32 (C and the output are f32): the f16-storage route. On GPUs, the native-f16 kernel where
/// the adapter has SHADER_F16, else the packed-u32 kernel; on the CPU, OpenBLAS on the values
/// widened to f32.
pub fn gemm_f16(a: &HalfTensor, b: &HalfTensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    gemm_f16_dispatch(None, a, b, c, o)
}

/// [`gemm_f16`] with a chosen GPU kernel (`HALF_VARIANTS`); on the CPU the variant is ignored.
pub fn gemm_f16_with_kernel(variant: &GemmKernel, a: &HalfTensor, b: &HalfTensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    gemm_f16_dispatch(Some(variant), a, b, c, o)
}

fn gemm_f16_dispatch(variant: Option<&GemmKernel>, a: &HalfTensor, b: &HalfTensor, c: Option<&Tensor>, o: GemmOpts) -> Result<Tensor> {
    check_storage("gemm_f16", variant, true)?;
    let shape = GemmShape::new(a.shape(), b.shape(), c.map(|c| c.shape()), o)?;
    for other in [Some(b.device()), c.map(|c| c.device())].into_iter().flatten() {
        if !a.device().same(other) {
            return Err(Error::DeviceMismatch { op: "gemm_f16", left: a.device().to_string(), right: other.to_string() });
        }
    }
    add_gemm_flops(shape.flops());
    match (a.device(), a.storage(), b.storage()) {
        (Device::Cpu(cpu), HalfStorage::Cpu(av), HalfStorage::Cpu(bv)) => {
            let widen = |v: &[half::f16]| v.iter().map(|h| h.to_f32()).collect::<Vec<f32>>();
            let out = gemm_cpu(cpu, &shape, &widen(av), &widen(bv), c, o);
            Ok(cpu_tensor(out, &shape.out_shape, a.device()))
        }
        (Device::Gpu(gpu), HalfStorage::Gpu(ab), HalfStorage::Gpu(bb)) => {
            let variant = match variant {
                Some(v) => v,
                None => choose_half_kernel(gpu, &shape),
            };
            gemm_gpu(gpu, variant, &shape, ab.clone(), bb.clone(), c, o)
        }
        _ => unreachable!("storage always matches the device"),
    }
}

/// The f16-storage kernel for a product of `shape` on `gpu`: with SHADER_F16, native f16 loads
/// in the 16×16 register tile on software drivers (as [`choose_kernel`] picks for f32) and
/// the 4×4 for thin products and on hardware GPUs (no workgroup-tiled f16 kernel yet);
/// without it, packed words in the 4×4.
fn choose_half_kernel(gpu: &GpuBackend, shape: &GemmShape) -> &'static GemmKernel {
    let wide = shape.m >= 16 && shape.n >= 16 && gpu.is_software();
    match (gpu.has_shader_f16(), wide) {
        (true, true) => &F16_REG16X16,
        (true, false) => &F16_REG4X4,
        (false, _) => &F16_PACKED_REG4X4,
    }
}

/// Errors unless a chosen kernel reads the operands' storage format.
fn check_storage(op: &'static str, variant: Option<&GemmKernel>, half: bool) -> Result<()> {
    match variant {
        Some(v) if (v.storage != Storage::F32) != half => {
            Err(Error::Unsupported { op, detail: format!("kernel {} of {} reads {:?} operands", v.kernel.entry, v.kernel.shader.file, v.storage) })
        }
        _ => Ok(()),
    }
}

/// op(A)·op(B): in f32 when both operands are, else with both in f16 and f32 accumulation.
pub fn gemm_mixed(a: &MixedTensor, b: &MixedTensor, o: GemmOpts) -> Result<Tensor> {
    match (a, b) {
        (MixedTensor::F32(a), MixedTensor::F32(b)) => gemm(a, b, None, o),
        _ => gemm_f16(&a.half()?, &b.half()?, None, o),
    }
}

/// A·B.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    gemm(a, b, None, GemmOpts::default())
}

fn gemm_cpu(cpu: &CpuBackend, s: &GemmShape, a: &[f32], b: &[f32], c: Option<&Tensor>, o: GemmOpts) -> Vec<f32> {
    let mn = s.m * s.n;
    let g = Gemm::packed(o.trans_a, o.trans_b, s.m, s.n, s.k);
    let (a_len, b_len) = (s.m * s.k, s.k * s.n);
    if s.batch == 1 && (c.is_none() || o.beta == 0.0) {
        return cpu.sgemm_new(&g, o.alpha, &a[..a_len], &b[..b_len]);
    }
    let mut out = vec![0.0f32; s.batch * mn];
    let beta = match (c, s.c_bs) {
        (Some(c), Some(c_bs)) if o.beta != 0.0 => {
            let c = cpu_data(c);
            for (z, dst) in out.chunks_mut(mn.max(1)).enumerate() {
                dst.copy_from_slice(&c[z * c_bs..z * c_bs + mn]);
            }
            o.beta
        }
        _ => 0.0,
    };
    for z in 0..s.batch {
        let (a_z, b_z) = (&a[z * s.a_bs..][..a_len], &b[z * s.b_bs..][..b_len]);
        cpu.sgemm(&g, o.alpha, a_z, b_z, beta, &mut out[z * mn..(z + 1) * mn]);
    }
    out
}

/// The kernel for a product of `shape` on `gpu`. Software drivers (lavapipe) pay per load,
/// not per barrier-free FMA, so they get a register tile: the subgroup 32×8 tile for products
/// over 64 rows where 8-lane subgroups exist, else the 16×16 (a ResNet-20 step's convolutions,
/// 16 to 64 output channels, tuned to it in 14 of 16 size classes); hardware GPUs get the
/// workgroup-memory tiling. Thin products, where a 16×16 tile would be mostly padding, take
/// the 4×4 kernel.
pub fn choose_kernel(gpu: &GpuBackend, shape: &GemmShape) -> &'static GemmKernel {
    let pick = |entry: &str| VARIANTS.iter().find(|v| v.kernel.entry == entry).expect("known GEMM kernel");
    if shape.m < 16 || shape.n < 16 {
        pick(REG_4X4.kernel.entry)
    } else if !gpu.is_software() {
        pick(TILED_64.kernel.entry)
    } else if shape.m > 64 && gpu.supports_subgroup_size(SUBGROUP_32X8.subgroup_size) {
        pick(SUBGROUP_32X8.kernel.entry)
    } else {
        pick(REG_16X16.kernel.entry)
    }
}

/// Whether `variant` can run on `device` (the CPU runs every GEMM through OpenBLAS).
pub fn kernel_supported(device: &Device, variant: &GemmKernel) -> bool {
    match device {
        Device::Cpu(_) => true,
        Device::Gpu(gpu) => unsupported_reason(gpu, variant).is_none(),
    }
}

/// Why `variant` cannot run on `gpu`, if it cannot.
fn unsupported_reason(gpu: &GpuBackend, variant: &GemmKernel) -> Option<String> {
    let name = gpu.name();
    if !gpu.supports_subgroup_size(variant.subgroup_size) {
        let has = gpu.fixed_subgroup_size().map_or("no fixed subgroup width".to_string(), |n| format!("{n}-lane subgroups"));
        return Some(format!(
            "kernel {} needs subgroups of exactly {} lanes; adapter `{name}` has {has}",
            variant.kernel.entry,
            variant.subgroup_size.unwrap_or(0),
        ));
    }
    match variant.storage {
        Storage::F32 => None,
        Storage::F16 if !gpu.has_shader_f16() => Some(format!("{} needs SHADER_F16, which adapter `{name}` lacks", variant.kernel.shader.file)),
        Storage::F16 | Storage::F16Packed if !gpu.has_f16_pack() => {
            Some(format!("f16 storage needs pack2x16float (downlevel SHADER_F16_IN_F32), which adapter `{name}` lacks"))
        }
        Storage::F16 | Storage::F16Packed => None,
    }
}

/// The uniform block of gemm.wgsl (`GemmParams`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    a_rs: u32,
    a_cs: u32,
    a_bs: u32,
    b_rs: u32,
    b_cs: u32,
    b_bs: u32,
    c_bs: u32,
    has_c: u32,
    alpha: f32,
    beta: f32,
    /// Where op(A) and op(B) start: a K slice's first column of A and row of B.
    a_off: u32,
    b_off: u32,
}

/// The product on the GPU. On software adapters a K longer than [`SOFTWARE_MAX_K`] runs as
/// slices read in place at an offset, each launch adding onto the previous one's result
/// through C (beta = 1): out = alpha·Σₛ op(A)ₛ·op(B)ₛ + beta·C. Operands or a result bigger
/// than one binding take [`gemm_gpu_blocked`].
fn gemm_gpu(
    gpu: &Arc<GpuBackend>,
    variant: &GemmKernel,
    s: &GemmShape,
    ab: Arc<GpuBuffer>,
    bb: Arc<GpuBuffer>,
    c: Option<&Tensor>,
    o: GemmOpts,
) -> Result<Tensor> {
    let max = gpu.max_binding_bytes();
    let out_bytes = 4 * (s.batch * s.m * s.n) as u64;
    if [ab.len_bytes(), bb.len_bytes(), out_bytes, c.map_or(0, |c| 4 * c.numel() as u64)].iter().any(|&b| b > max) {
        return gemm_gpu_blocked(gpu, variant, s, &ab, &bb, c, o);
    }
    let k_slice = if gpu.is_software() { SOFTWARE_MAX_K } else { s.k.max(1) };
    let operands = |k0: usize| Operands { a: ab.whole(), a_off: k0 * s.a_cs, b: bb.whole(), b_off: k0 * s.b_rs };
    let c_first = c.map(|c| (gpu_buffer(c), s.c_bs.unwrap_or(0)));
    let mut out = launch_gemm(gpu, variant, s, k_slice.min(s.k), operands(0), c_first, o)?;
    for k0 in (k_slice..s.k).step_by(k_slice) {
        let partial = Some((gpu_buffer(&out), s.m * s.n));
        out = launch_gemm(gpu, variant, s, k_slice.min(s.k - k0), operands(k0), partial, GemmOpts { beta: 1.0, ..o })?;
    }
    Ok(out)
}

/// One launch's operands: windows of A and B, and where op(A)(0, 0) and op(B)(0, 0) sit in
/// them (elements).
struct Operands<'a> {
    a: Window<'a>,
    a_off: usize,
    b: Window<'a>,
    b_off: usize,
}

/// Bytes per stored operand element: 4 for f32, 2 for f16 (native or packed in words).
fn element_bytes(variant: &GemmKernel) -> usize {
    match variant.storage {
        Storage::F32 => 4,
        Storage::F16 | Storage::F16Packed => 2,
    }
}

/// Block sizes (rows of op(A), columns of op(B), K) for a product too big for one binding:
/// halves the dimension that spreads an operand widest (its larger stride) until the A and B
/// windows a block reads fit `max_elements` (with `align` elements of slack for the window's
/// aligned start) and its f32 result fits `max_values`.
fn block_sizes(s: &GemmShape, (max_elements, max_values): (usize, usize), align: usize, max_k: usize) -> (usize, usize, usize) {
    let (mut mb, mut nb, mut kb) = (s.m.max(1), s.n.max(1), s.k.clamp(1, max_k.max(1)));
    let extent = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1 + align;
    loop {
        if extent(mb, s.a_rs, kb, s.a_cs) > max_elements {
            if (s.a_rs >= s.a_cs && mb > 1) || kb == 1 {
                mb = mb.div_ceil(2);
            } else {
                kb = kb.div_ceil(2);
            }
        } else if extent(kb, s.b_rs, nb, s.b_cs) > max_elements {
            if (s.b_cs >= s.b_rs && nb > 1) || kb == 1 {
                nb = nb.div_ceil(2);
            } else {
                kb = kb.div_ceil(2);
            }
        } else if mb * nb > max_values {
            if mb >= nb {
                mb = mb.div_ceil(2);
            } else {
                nb = nb.div_ceil(2);
            }
        } else {
            return (mb, nb, kb);
        }
    }
}

/// A product whose operands or result exceed one binding: blocks of rows × columns (× K
/// slices accumulated through C), batch entry by entry. Each block reads A and B (f32 or f16)
/// through windows at aligned offsets (the rest of the way in a_off/b_off), computes into an
/// f32 tensor of its own, and is copied into place (C's block likewise copied out first).
fn gemm_gpu_blocked(
    gpu: &Arc<GpuBackend>,
    variant: &GemmKernel,
    s: &GemmShape,
    ab: &GpuBuffer,
    bb: &GpuBuffer,
    c: Option<&Tensor>,
    o: GemmOpts,
) -> Result<Tensor> {
    // In operand elements: f16 windows start on the same byte alignment, twice as many in.
    let bytes_each = element_bytes(variant);
    let align = gpu.binding_alignment_values() * 4 / bytes_each;
    let max_elements = gpu.max_binding_values() * 4 / bytes_each;
    let max_k = if gpu.is_software() { SOFTWARE_MAX_K } else { s.k.max(1) };
    let (mb, nb, kb) = block_sizes(s, (max_elements, gpu.max_binding_values()), align, max_k);
    let out = Tensor::uninit_gpu(s.out_shape.clone(), gpu)?;
    let ob = gpu_buffer(&out);
    let c = c.map(|c| (gpu_buffer(c), s.c_bs.unwrap_or(0)));
    let window = |buffer, base, rows, cols| aligned_window(buffer, (align, bytes_each), base, rows, cols);
    for z in 0..s.batch {
        for i0 in (0..s.m).step_by(mb) {
            let rows = mb.min(s.m - i0);
            for j0 in (0..s.n).step_by(nb) {
                let cols = nb.min(s.n - j0);
                // Block [rows × cols] of out z: from row i0, column j0, rows n apart.
                let place = |from: &GpuBuffer, to: &GpuBuffer, block_is_src: bool, base: usize| -> Result<()> {
                    if cols == s.n {
                        let (src, dst) = if block_is_src { (0, base + i0 * s.n) } else { (base + i0 * s.n, 0) };
                        return gpu.copy(from, 4 * src as u64, to, 4 * dst as u64, 4 * (rows * cols) as u64);
                    }
                    for r in 0..rows {
                        let (blk, full) = (r * cols, base + (i0 + r) * s.n + j0);
                        let (src, dst) = if block_is_src { (blk, full) } else { (full, blk) };
                        gpu.copy(from, 4 * src as u64, to, 4 * dst as u64, 4 * cols as u64)?;
                    }
                    Ok(())
                };
                let blk = GemmShape { batch: 1, m: rows, n: cols, a_bs: 0, b_bs: 0, c_bs: Some(0), out_shape: vec![rows, cols], ..s.clone() };
                let mut acc = match &c {
                    Some((cb, c_bs)) if o.beta != 0.0 => {
                        let part = Tensor::uninit_gpu(vec![rows, cols], gpu)?;
                        place(cb, &gpu_buffer(&part), false, z * c_bs)?;
                        Some(part)
                    }
                    _ => None,
                };
                for k0 in (0..s.k.max(1)).step_by(kb) {
                    let depth = kb.min(s.k - k0.min(s.k));
                    let (a, a_off) = window(ab, z * s.a_bs + i0 * s.a_rs + k0 * s.a_cs, (rows, s.a_rs), (depth.max(1), s.a_cs));
                    let (b, b_off) = window(bb, z * s.b_bs + k0 * s.b_rs + j0 * s.b_cs, (depth.max(1), s.b_rs), (cols, s.b_cs));
                    let beta = if acc.is_some() && k0 > 0 { 1.0 } else { o.beta };
                    let c_in = acc.as_ref().map(|t| (gpu_buffer(t), 0));
                    acc = Some(launch_gemm(gpu, variant, &blk, depth, Operands { a, a_off, b, b_off }, c_in, GemmOpts { beta, ..o })?);
                }
                let block = acc.expect("at least one K slice");
                place(&gpu_buffer(&block), &ob, true, z * s.m * s.n)?;
            }
        }
    }
    Ok(out)
}

/// The window of `buffer` holding `rows` × `cols` elements (of `bytes_each` bytes) of an
/// operand stored from element `base` with strides (rs, cs), started at the aligned offset
/// below `base` (`align` elements); with `base`'s distance from that start (the kernel's
/// a_off / b_off).
fn aligned_window(
    buffer: &GpuBuffer,
    (align, bytes_each): (usize, usize),
    base: usize,
    (rows, rs): (usize, usize),
    (cols, cs): (usize, usize),
) -> (Window<'_>, usize) {
    let start = base - base % align;
    (buffer.elements(start, base - start + (rows - 1) * rs + (cols - 1) * cs + 1, bytes_each), base - start)
}

/// One launch: the product over `k_len` of the operands' windows, plus beta·C with C's batch
/// stride.
fn launch_gemm(
    gpu: &Arc<GpuBackend>,
    variant: &GemmKernel,
    s: &GemmShape,
    k_len: usize,
    x: Operands,
    c: Option<(Arc<GpuBuffer>, usize)>,
    o: GemmOpts,
) -> Result<Tensor> {
    if let Some(detail) = unsupported_reason(gpu, variant) {
        return Err(Error::Unsupported { op: "gemm", detail });
    }
    let out = Tensor::uninit_gpu(s.out_shape.clone(), gpu)?;
    let u32_of = |x: usize| to_u32("gemm", x);
    let params = GemmParams {
        m: u32_of(s.m)?,
        n: u32_of(s.n)?,
        k: u32_of(k_len)?,
        batch: u32_of(s.batch)?,
        a_rs: u32_of(s.a_rs)?,
        a_cs: u32_of(s.a_cs)?,
        a_bs: u32_of(s.a_bs)?,
        b_rs: u32_of(s.b_rs)?,
        b_cs: u32_of(s.b_cs)?,
        b_bs: u32_of(s.b_bs)?,
        c_bs: u32_of(c.as_ref().map_or(0, |(_, bs)| *bs))?,
        has_c: c.is_some() as u32,
        alpha: o.alpha,
        beta: o.beta,
        a_off: u32_of(x.a_off)?,
        b_off: u32_of(x.b_off)?,
    };
    let ob = gpu_buffer(&out);
    // Without C the kernel never reads binding 3; bind A there to fill the slot.
    let c_window = c.as_ref().map_or(x.a, |(buffer, _)| buffer.whole());
    let [rows, cols] = variant.block;
    let groups = [u32_of(s.n)?.div_ceil(cols), u32_of(s.m)?.div_ceil(rows), u32_of(s.batch)?];
    if s.m * s.n * s.batch > 0 {
        gpu.launch_windows(&variant.kernel, bytemuck::bytes_of(&params), &[x.a, x.b, c_window, ob.whole()], groups)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(ta: bool, tb: bool) -> GemmOpts {
        GemmOpts { trans_a: ta, trans_b: tb, ..Default::default() }
    }

    #[test]
    fn strides_follow_transposes() {
        let s = GemmShape::new(&[3, 5], &[5, 7], None, opts(false, false)).unwrap();
        assert_eq!((s.m, s.n, s.k, s.a_rs, s.a_cs, s.b_rs, s.b_cs), (3, 7, 5, 5, 1, 7, 1));
        let s = GemmShape::new(&[5, 3], &[7, 5], None, opts(true, true)).unwrap();
        assert_eq!((s.m, s.n, s.k, s.a_rs, s.a_cs, s.b_rs, s.b_cs), (3, 7, 5, 1, 3, 1, 5));
        assert_eq!(s.out_shape, vec![3, 7]);
    }

    #[test]
    fn batches_broadcast_a_2d_operand() {
        let s = GemmShape::new(&[4, 3, 5], &[5, 7], Some(&[3, 7]), opts(false, false)).unwrap();
        assert_eq!((s.batch, s.a_bs, s.b_bs, s.c_bs), (4, 15, 0, Some(0)));
        assert_eq!(s.out_shape, vec![4, 3, 7]);
    }

    #[test]
    fn mismatched_shapes_are_clear_errors() {
        let e = GemmShape::new(&[3, 5], &[6, 7], None, opts(false, false)).unwrap_err().to_string();
        assert!(e.contains("inner dimensions differ") && e.contains("3×5") && e.contains("6×7"), "{e}");
        let e = GemmShape::new(&[2, 3, 5], &[4, 5, 7], None, opts(false, false)).unwrap_err().to_string();
        assert!(e.contains("batch sizes differ"), "{e}");
        let e = GemmShape::new(&[3], &[3, 7], None, opts(false, false)).unwrap_err().to_string();
        assert!(e.contains("2-D or 3-D"), "{e}");
        let e = GemmShape::new(&[3, 5], &[5, 7], Some(&[7, 3]), opts(false, false)).unwrap_err().to_string();
        assert!(e.contains("C has shape [7, 3]"), "{e}");
    }
}
