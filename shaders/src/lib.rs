//! Tessera's hand-written WGSL kernels, one file per op family under `shaders/wgsl/`, and
//! their validation and cross-compilation with naga. This crate knows WGSL text, nothing of
//! tensors: the engine decides which [`Kernel`] to launch and how.
pub mod validate;

/// One shader module: a `.wgsl` file, followed by the shared files it builds on.
#[derive(Debug)]
pub struct Shader {
    /// Short name, also the pipeline-cache key.
    pub name: &'static str,
    /// File name under `shaders/wgsl/`, for error messages.
    pub file: &'static str,
    /// The module's full WGSL: the file's text, then each shared file's. The module's own
    /// file comes first so that it may open with directives such as `enable f16;`.
    pub source: &'static str,
    /// Files of declarations shared by several modules (WGSL has no includes): name and text.
    pub shared: &'static [(&'static str, &'static str)],
}

impl Shader {
    /// Maps a 1-based line of [`Shader::source`] to the file and line it came from.
    pub fn locate(&self, line: u32) -> (&'static str, u32) {
        let shared_len: usize = self.shared.iter().map(|(_, text)| text.len()).sum();
        let own = &self.source[..self.source.len() - shared_len];
        let mut first = 1;
        for (file, text) in std::iter::once((self.file, own)).chain(self.shared.iter().copied()) {
            let lines = text.lines().count() as u32;
            if line < first + lines {
                return (file, line - first + 1);
            }
            first += lines;
        }
        (self.file, line)
    }
}

/// One compute entry point of a shader.
#[derive(Debug)]
pub struct Kernel {
    pub shader: &'static Shader,
    pub entry: &'static str,
    /// The entry point's `@workgroup_size`, mirrored here so launchers can size the grid.
    pub workgroup: [u32; 3],
}

macro_rules! shader {
    ($ident:ident, $name:literal $(, with $($shared:literal),+)?) => {
        pub static $ident: Shader = Shader {
            name: $name,
            file: concat!($name, ".wgsl"),
            source: concat!(
                include_str!(concat!("../wgsl/", $name, ".wgsl"))
                $($(, include_str!(concat!("../wgsl/", $shared, ".wgsl")))+)?
            ),
            shared: &[$($((concat!($shared, ".wgsl"), include_str!(concat!("../wgsl/", $shared, ".wgsl")))),+)?],
        };
    };
}

shader!(GEMM, "gemm", with "gemm_common", "gemm_reg4x4", "gemm_reg16x16");
shader!(GEMM_SUBGROUP, "gemm_subgroup", with "gemm_common");
shader!(GEMM_F16, "gemm_f16", with "gemm_common", "gemm_reg4x4", "gemm_reg16x16");
shader!(GEMM_F16_PACKED, "gemm_f16_packed", with "gemm_common", "gemm_reg4x4");
shader!(HALF, "half", with "f16_bits");
shader!(ELEMENTWISE, "elementwise");
shader!(REDUCE, "reduce");
shader!(SOFTMAX, "softmax");
shader!(CONV2D, "conv2d", with "conv2d_common");
shader!(CONV2D_F16, "conv2d_f16", with "conv2d_common", "f16_bits");
shader!(CONV2D_BIAS, "conv2d_bias", with "conv2d_common");
shader!(POOL, "pool");
shader!(BATCHNORM, "batchnorm");
shader!(BN_RUNNING, "bn_running");
shader!(SGD, "sgd");
shader!(ADAMW, "adamw");
shader!(GUARD, "guard");
shader!(INT8_PACK, "int8_pack");
shader!(INT8_CONV, "int8_conv");

/// Every shader module; the validation test checks that they use every file in the folder.
pub static ALL: &[&Shader] = &[
    &GEMM,
    &GEMM_SUBGROUP,
    &GEMM_F16,
    &GEMM_F16_PACKED,
    &HALF,
    &ELEMENTWISE,
    &REDUCE,
    &SOFTMAX,
    &CONV2D,
    &CONV2D_F16,
    &CONV2D_BIAS,
    &POOL,
    &BATCHNORM,
    &BN_RUNNING,
    &SGD,
    &ADAMW,
    &GUARD,
    &INT8_PACK,
    &INT8_CONV,
];

macro_rules! kernels {
    ($shader:ident, $workgroup:expr, $($ident:ident = $entry:literal),+ $(,)?) => {
        $(pub static $ident: Kernel = Kernel { shader: &$shader, entry: $entry, workgroup: $workgroup };)+
        /// Every kernel of this module.
        pub static ALL_KERNELS: &[&Kernel] = &[$(&$ident),+];
    };
}

/// Elementwise kernels (elementwise.wgsl), 256 invocations per workgroup.
pub mod elementwise {
    use super::{Kernel, ELEMENTWISE};
    kernels!(
        ELEMENTWISE,
        [256, 1, 1],
        AXPBY = "axpby",
        MUL = "mul",
        RELU_FORWARD = "relu_forward",
        RELU_BACKWARD = "relu_backward",
        GELU_FORWARD = "gelu_forward",
        GELU_BACKWARD = "gelu_backward",
        ADD_CHANNEL = "add_channel",
        DROPOUT = "dropout",
        CONCAT2 = "concat2",
    );
}

/// Softmax, log-softmax and cross-entropy over rows (softmax.wgsl), 64 rows per workgroup.
pub mod softmax {
    use super::{Kernel, SOFTMAX};
    kernels!(
        SOFTMAX,
        [64, 1, 1],
        SOFTMAX_FORWARD = "softmax_forward",
        SOFTMAX_BACKWARD = "softmax_backward",
        LOG_SOFTMAX_FORWARD = "log_softmax_forward",
        LOG_SOFTMAX_BACKWARD = "log_softmax_backward",
        CROSS_ENTROPY_FORWARD = "cross_entropy_forward",
        CROSS_ENTROPY_BACKWARD = "cross_entropy_backward",
    );
}

/// conv2d's unfold, fold and axis swap around the GEMMs (conv2d.wgsl).
pub mod conv2d {
    use super::{Kernel, CONV2D};
    kernels!(CONV2D, [256, 1, 1], IM2COL = "im2col", IM2COL_X4 = "im2col_x4", IM2COL_ROWS = "im2col_rows", COL2IM_ROWS = "col2im_rows", SWAP01 = "swap01");
}

/// im2col into f16 storage for mixed precision (conv2d_f16.wgsl).
pub mod conv2d_f16 {
    use super::{Kernel, CONV2D_F16};
    kernels!(CONV2D_F16, [256, 1, 1], IM2COL_F16 = "im2col_f16");
}

/// conv2d's output epilogue with its bias (conv2d_bias.wgsl).
pub mod conv2d_bias {
    use super::{Kernel, CONV2D_BIAS};
    kernels!(CONV2D_BIAS, [256, 1, 1], SWAP01_BIAS = "swap01_bias");
}

/// Max, average and adaptive-average pooling (pool.wgsl).
pub mod pool {
    use super::{Kernel, POOL};
    kernels!(
        POOL,
        [256, 1, 1],
        MAX_FORWARD = "max_pool_forward",
        MAX_BACKWARD = "max_pool_backward",
        AVG_FORWARD = "avg_pool_forward",
        AVG_BACKWARD = "avg_pool_backward",
        ADAPTIVE_AVG_FORWARD = "adaptive_avg_pool_forward",
        ADAPTIVE_AVG_BACKWARD = "adaptive_avg_pool_backward",
    );
}

/// batch_norm2d (batchnorm.wgsl): per-channel reductions 64 channels per workgroup or one
/// workgroup of 256 per channel (`*_WG`), the elementwise parts 256 values per workgroup.
pub mod batchnorm {
    use super::{Kernel, BATCHNORM};
    pub static MEAN: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_mean", workgroup: [64, 1, 1] };
    pub static VAR: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_var", workgroup: [64, 1, 1] };
    pub static GRAD_SUMS: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_grad_sums", workgroup: [64, 1, 1] };
    pub static MEAN_WG: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_mean_wg", workgroup: [256, 1, 1] };
    pub static VAR_WG: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_var_wg", workgroup: [256, 1, 1] };
    pub static GRAD_SUMS_WG: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_grad_sums_wg", workgroup: [256, 1, 1] };
    pub static FORWARD: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_forward", workgroup: [256, 1, 1] };
    pub static BACKWARD_TRAIN: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_backward_train", workgroup: [256, 1, 1] };
    pub static BACKWARD_EVAL: Kernel = Kernel { shader: &BATCHNORM, entry: "bn_backward_eval", workgroup: [256, 1, 1] };
    pub static ALL_KERNELS: &[&Kernel] = &[&MEAN, &VAR, &GRAD_SUMS, &MEAN_WG, &VAR_WG, &GRAD_SUMS_WG, &FORWARD, &BACKWARD_TRAIN, &BACKWARD_EVAL];
}

/// Batch norm's running mean and variance updated in one launch (bn_running.wgsl).
pub mod bn_running {
    use super::{Kernel, BN_RUNNING};
    kernels!(BN_RUNNING, [64, 1, 1], BN_RUNNING_UPDATE = "bn_running_update");
}

/// The fused SGD update (sgd.wgsl).
pub mod sgd {
    use super::{Kernel, SGD};
    kernels!(SGD, [256, 1, 1], SGD_STEP = "sgd_step");
}

/// The fused AdamW update (adamw.wgsl): the step count's tick, then the update.
pub mod adamw {
    use super::{Kernel, ADAMW};
    kernels!(ADAMW, [256, 1, 1], ADAMW_TICK = "adamw_tick", ADAMW_STEP = "adamw_step");
}

/// The training step's device-side guard and metrics (guard.wgsl).
pub mod guard {
    use super::{Kernel, GUARD};
    kernels!(
        GUARD,
        [256, 1, 1],
        GUARD_OPEN = "guard_open",
        GUARD_CHECK = "guard_check",
        GUARD_LOSS = "guard_loss",
        GUARD_HITS = "guard_hits",
        GUARD_CLOSE = "guard_close",
    );
}

/// f32 ⇄ f16 storage conversion (half.wgsl).
pub mod half {
    use super::{Kernel, HALF};
    kernels!(HALF, [256, 1, 1], PACK_F16 = "pack_f16", UNPACK_F16 = "unpack_f16");
}

/// Post-training int8 inference (int8_pack.wgsl, int8_conv.wgsl): activations quantized and
/// packed four per word, then conv2d / linear with `dot4I8Packed` and i32 accumulation.
pub mod int8 {
    use super::{Kernel, INT8_CONV, INT8_PACK};
    pub static QUANTIZE_PACK: Kernel = Kernel { shader: &INT8_PACK, entry: "quantize_pack_i8", workgroup: [256, 1, 1] };
    pub static CONV2D: Kernel = Kernel { shader: &INT8_CONV, entry: "conv2d_i8", workgroup: [256, 1, 1] };
    pub static ALL_KERNELS: &[&Kernel] = &[&QUANTIZE_PACK, &CONV2D];
}

/// The strided gather-sum behind reductions and broadcasts (reduce.wgsl).
pub mod reduce {
    use super::{Kernel, REDUCE};
    kernels!(REDUCE, [256, 1, 1], GATHER_SUM = "gather_sum", GATHER_SUM_WG = "gather_sum_wg");
}

/// GEMM kernels: register tiles without workgroup memory (`reg*`, `sg*`: fast on software
/// drivers such as lavapipe, where barriers and shared memory are slow) or cooperative
/// workgroup-memory tiles (`tiled*`: the classic shape for hardware GPUs).
pub mod gemm {
    use super::{Kernel, GEMM, GEMM_F16, GEMM_F16_PACKED, GEMM_SUBGROUP};

    /// How a GEMM kernel stores A and B.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Storage {
        F32,
        /// IEEE f16 read natively: needs the adapter's SHADER_F16 feature.
        F16,
        /// IEEE f16 read as u32 words of two halves: every adapter.
        F16Packed,
    }

    #[derive(Debug)]
    pub struct GemmKernel {
        pub kernel: Kernel,
        /// Outputs per workgroup: [rows, columns] (sizes the launch grid).
        pub block: [u32; 2],
        /// The exact subgroup width the kernel is written for, if it uses subgroup operations.
        pub subgroup_size: Option<u32>,
        pub storage: Storage,
    }

    /// Every GEMM kernel. The engine picks one per adapter and shape
    /// (`tessera_engine::ops::gemm::choose_kernel`); `tessera bench gemm --kernel all` times each.
    pub static VARIANTS: &[GemmKernel] = &[REG_4X4, REG_16X16, SUBGROUP_32X8, TILED_64];

    pub const REG_4X4: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM, entry: "gemm_reg4x4", workgroup: [8, 8, 1] },
        block: [32, 32],
        subgroup_size: None,
        storage: Storage::F32,
    };
    pub const REG_16X16: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM, entry: "gemm_reg16x16", workgroup: [8, 4, 1] },
        block: [64, 128],
        subgroup_size: None,
        storage: Storage::F32,
    };
    pub const SUBGROUP_32X8: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM_SUBGROUP, entry: "gemm_sg32x8", workgroup: [32, 1, 1] },
        block: [128, 64],
        subgroup_size: Some(8),
        storage: Storage::F32,
    };
    pub const TILED_64: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM, entry: "gemm_tiled64", workgroup: [16, 16, 1] },
        block: [64, 64],
        subgroup_size: None,
        storage: Storage::F32,
    };

    /// f16-storage GEMMs (A and B in f16, f32 accumulation and output), the same 4×4 and
    /// 16×16 bodies as the f32 kernels. The packed module has the 4×4 only: a packed 16×16
    /// (256 unpacks per K step) took llvmpipe GL's compiler past wgpu's context-lock timeout,
    /// and mixed precision runs only where SHADER_F16 gives native f16 loads.
    pub static HALF_VARIANTS: &[GemmKernel] = &[F16_REG4X4, F16_PACKED_REG4X4, F16_REG16X16];

    pub const F16_REG4X4: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM_F16, entry: "gemm_reg4x4", workgroup: [8, 8, 1] },
        block: [32, 32],
        subgroup_size: None,
        storage: Storage::F16,
    };
    pub const F16_PACKED_REG4X4: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM_F16_PACKED, entry: "gemm_reg4x4", workgroup: [8, 8, 1] },
        block: [32, 32],
        subgroup_size: None,
        storage: Storage::F16Packed,
    };
    pub const F16_REG16X16: GemmKernel = GemmKernel {
        kernel: Kernel { shader: &GEMM_F16, entry: "gemm_reg16x16", workgroup: [8, 4, 1] },
        block: [64, 128],
        subgroup_size: None,
        storage: Storage::F16,
    };

    /// The variant whose entry point is `name`.
    pub fn by_name(name: &str) -> Option<&'static GemmKernel> {
        VARIANTS.iter().find(|v| v.kernel.entry == name)
    }
}

/// How a module binds its resources, read from its declarations: engines build one bind
/// group layout per module from this, so every entry point of a module binds the same buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleBindings {
    /// `@group(0) @binding(0)`: the launch-parameter uniform block, if declared.
    pub has_params: bool,
    /// Storage buffers at bindings 1, 2, …, in order: `true` where read-only.
    pub storage_read_only: Vec<bool>,
}

impl Shader {
    /// The module's bindings. Errors if it breaks the convention the launcher relies on:
    /// group 0 only, the uniform block at binding 0, storage buffers at 1..=n without gaps.
    pub fn bindings(&self) -> Result<ModuleBindings, validate::ShaderError> {
        let (module, _) = validate::validate(self.file, self.source)?;
        let err = |message: String| validate::ShaderError { file: self.file.into(), stage: "binding layout", entry: None, line: None, message };
        let mut has_params = false;
        let mut storage = std::collections::BTreeMap::new();
        for (_, var) in module.global_variables.iter() {
            let Some(rb) = &var.binding else { continue };
            if rb.group != 0 {
                return Err(err(format!("binding {} uses group {}; only group 0 is supported", rb.binding, rb.group)));
            }
            match var.space {
                naga::AddressSpace::Uniform if rb.binding == 0 => has_params = true,
                naga::AddressSpace::Storage { access } if rb.binding > 0 => {
                    storage.insert(rb.binding, !access.contains(naga::StorageAccess::STORE));
                }
                other => return Err(err(format!("binding {}: unsupported {other:?}", rb.binding))),
            }
        }
        let storage_read_only: Vec<bool> = storage.values().copied().collect();
        if storage.keys().copied().ne(1..=storage.len() as u32) {
            return Err(err(format!("storage bindings must be 1..=n without gaps, found {:?}", storage.keys())));
        }
        Ok(ModuleBindings { has_params, storage_read_only })
    }
}
