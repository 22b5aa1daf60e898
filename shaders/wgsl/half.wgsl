// f32 ⇄ f16 storage conversion with the core pack2x16float / unpack2x16float builtins (no
// adapter feature needed): a tensor of n values in f16 is ⌈n/2⌉ u32 words, element i in half
// i & 1 of word i >> 1. Values beyond f16's finite range round to ±inf and NaN stays NaN, as
// IEEE rounding (and the CPU twin) gives: pack2x16float alone leaves them indeterminate, and
// mixed precision's overflow check needs them.

struct HalfParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: HalfParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// f16_bits(): f16_bits.wgsl.

// words[i] = f16(x[2i]) | f16(x[2i + 1]) << 16 (the odd tail pairs with 0). src holds f32 bits.
@compute @workgroup_size(256, 1, 1)
fn pack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= (p.n + 1u) / 2u) { return; }
    let lo = bitcast<f32>(src[2u * i]);
    var hi = 0.0;
    if (2u * i + 1u < p.n) { hi = bitcast<f32>(src[2u * i + 1u]); }
    dst[i] = f16_bits(lo) | (f16_bits(hi) << 16u);
}

// y[i] = f32(half i & 1 of words[i >> 1]); dst holds f32 bits.
@compute @workgroup_size(256, 1, 1)
fn unpack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] = bitcast<u32>(unpack2x16float(src[i >> 1u])[i & 1u]);
}
