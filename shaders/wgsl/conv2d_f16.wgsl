// im2col into f16 storage (mixed precision): the patch matrix of conv2d.wgsl's im2col with
// each value rounded to f16, two per u32 word (element i in half i & 1 of word i >> 1), as
// half.wgsl's pack_f16 stores them. Writing f16 directly halves the patch matrix's bytes and
// spares the f32 matrix that a conversion afterwards would need beside it.
// ConvParams, src, flat(), patch_at(), patch_value(): conv2d_common.wgsl; f16_bits(): f16_bits.wgsl.

@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

// dst[w] = f16(cols[2w]) | f16(cols[2w + 1]) << 16 (an odd tail pairs with 0).
@compute @workgroup_size(256)
fn im2col_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = flat(gid, groups);
    let first = 2u * w;
    if (first >= p.total) { return; }
    var hi = 0.0;
    if (first + 1u < p.total) { hi = patch_value(patch_at(first + 1u)); }
    dst[w] = f16_bits(patch_value(patch_at(first))) | (f16_bits(hi) << 16u);
}
