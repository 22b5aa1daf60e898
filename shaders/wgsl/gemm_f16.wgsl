enable f16;

// GEMM with A and B stored as f16 (half the memory and bandwidth of f32), for adapters with
// the SHADER_F16 feature: native f16 loads, widened to f32 for accumulation. C and the output
// stay f32. The bodies are gemm_reg4x4.wgsl and gemm_reg16x16.wgsl; gemm_common.wgsl follows.

@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;

fn load_a(i: u32) -> f32 { return f32(a[i]); }
fn load_b(i: u32) -> f32 { return f32(b[i]); }
