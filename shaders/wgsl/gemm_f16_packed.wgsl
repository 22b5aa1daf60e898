// GEMM with A and B stored as f16, for every adapter: without the SHADER_F16 feature WGSL has
// no f16 type, so the same bytes are read as u32 words of two halves and widened with the
// core builtin unpack2x16float (element i is half i & 1 of word i >> 1, little-endian as
// the f16 module sees it). The body is gemm_reg4x4.wgsl; gemm_common.wgsl follows.

@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;

fn load_a(i: u32) -> f32 { return unpack2x16float(a[i >> 1u])[i & 1u]; }
fn load_b(i: u32) -> f32 { return unpack2x16float(b[i >> 1u])[i & 1u]; }
