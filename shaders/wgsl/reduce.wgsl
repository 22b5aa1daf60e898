// Strided gather-sum, the one kernel behind sum/mean over any axes and their backward
// (broadcasting a gradient back over the reduced axes):
//   out[o] = scale · Σ_{r < red_numel} x[base + offset(kept coords of o) + offset(reduced coords of r)]
// With nothing reduced and a base offset it is also a strided copy (narrow/slice).
// Coordinates are decoded from the flat indices with the shapes below (row-major, rank ≤ 8);
// a stride of 0 repeats a value (broadcast). Two variants, chosen per adapter: one invocation
// per output value looping over its reduced values (`gather_sum`), or, for few outputs over
// many values (a bias gradient: C outputs over N·H·W), one workgroup of 256 per output summing
// strided slices and then a tree in workgroup memory (`gather_sum_wg`).

struct ReduceParams {
    out_numel: u32,
    red_numel: u32,
    kept_rank: u32,
    red_rank: u32,
    scale: f32,
    base: u32,
    // The reduced indices [r_begin, r_end) this launch sums (all of them unless a software
    // adapter's loop budget splits the sum into several launches).
    r_begin: u32,
    r_end: u32,
    kept_shape: array<vec4<u32>, 2>,
    kept_stride: array<vec4<u32>, 2>,
    red_shape: array<vec4<u32>, 2>,
    red_stride: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: ReduceParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

fn at(v: array<vec4<u32>, 2>, i: u32) -> u32 {
    return v[i / 4u][i % 4u];
}

// Offset into x of flat index `flat` over the given shape and strides (last axis fastest).
fn offset_of(flat: u32, rank: u32, shape: array<vec4<u32>, 2>, stride: array<vec4<u32>, 2>) -> u32 {
    var rest = flat;
    var off = 0u;
    for (var d = rank; d > 0u; d--) {
        let size = at(shape, d - 1u);
        off += (rest % size) * at(stride, d - 1u);
        rest /= size;
    }
    return off;
}

@compute @workgroup_size(256)
fn gather_sum(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = gid.x + gid.y * groups.x * 256u;
    if (o >= p.out_numel) { return; }
    let base = p.base + offset_of(o, p.kept_rank, p.kept_shape, p.kept_stride);
    var acc = 0.0;
    for (var r = p.r_begin; r < p.r_end; r++) {
        acc += x[base + offset_of(r, p.red_rank, p.red_shape, p.red_stride)];
    }
    out[o] = p.scale * acc;
}

var<workgroup> lanes: array<f32, 256>;

@compute @workgroup_size(256)
fn gather_sum_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wid.x + wid.y * groups.x;
    if (o >= p.out_numel) { return; }
    let base = p.base + offset_of(o, p.kept_rank, p.kept_shape, p.kept_stride);
    var acc = 0.0;
    for (var r = p.r_begin + lid; r < p.r_end; r += 256u) {
        acc += x[base + offset_of(r, p.red_rank, p.red_shape, p.red_stride)];
    }
    lanes[lid] = acc;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half = half >> 1u) {
        if (lid < half) { lanes[lid] += lanes[lid + half]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[o] = p.scale * lanes[0]; }
}
