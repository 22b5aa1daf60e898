// f32 → f16 bits as IEEE rounding gives them, shared by the kernels that store f16 (half.wgsl,
// conv2d_f16.wgsl): pack2x16float alone leaves values beyond f16's range indeterminate.

// The f16 bits of x, rounded to nearest even; ±inf from 65520 on (where rounding leaves f16's range).
fn f16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) { return 0x7e00u; }
    if (abs(x) >= 65520.0) { return ((bits >> 16u) & 0x8000u) | 0x7c00u; }
    return pack2x16float(vec2<f32>(x, 0.0)) & 0xffffu;
}
