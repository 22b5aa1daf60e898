// GEMM kernels without subgroup operations, f32 storage; gemm_common.wgsl, gemm_reg4x4.wgsl
// and gemm_reg16x16.wgsl follow this file in the module.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

fn load_a(i: u32) -> f32 { return a[i]; }
fn load_b(i: u32) -> f32 { return b[i]; }

// Classic workgroup-memory tiling for hardware GPUs: a 16×16 workgroup computes a 64×64
// block, staging 64×16 slices of A and 16×64 slices of B in workgroup memory (zero-padded
// at the edges) so each global value is loaded once per workgroup; each invocation keeps
// 4×4 outputs in registers. On lavapipe the two barriers per K step make it ~50× slower
// than gemm_reg16x16, hence the per-adapter choice.
const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
var<workgroup> tile_a: array<f32, 1024>; // [TILE_K][TILE], k-major: row reads are contiguous
var<workgroup> tile_b: array<f32, 1024>; // [TILE_K][TILE]

@compute @workgroup_size(16, 16, 1)
fn gemm_tiled64(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let bz = wid.z;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var t = 0u; t < p.k; t += TILE_K) {
        for (var i = 0u; i < 4u; i++) {
            let e = li + i * 256u;
            // A slice: consecutive invocations walk k (contiguous when A is not transposed).
            let ar = e / TILE_K;
            let ak = e % TILE_K;
            var va = 0.0;
            if (row0 + ar < p.m && t + ak < p.k) {
                va = a[p.a_off + bz * p.a_bs + (row0 + ar) * p.a_rs + (t + ak) * p.a_cs];
            }
            tile_a[ak * TILE + ar] = va;
            // B slice: consecutive invocations walk columns.
            let bk = e / TILE;
            let bc = e % TILE;
            var vb = 0.0;
            if (col0 + bc < p.n && t + bk < p.k) {
                vb = b[p.b_off + bz * p.b_bs + (t + bk) * p.b_rs + (col0 + bc) * p.b_cs];
            }
            tile_b[bk * TILE + bc] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ra = kk * TILE + lid.y * 4u;
            let rb = kk * TILE + lid.x * 4u;
            let bv = vec4<f32>(tile_b[rb], tile_b[rb + 1u], tile_b[rb + 2u], tile_b[rb + 3u]);
            acc0 = fma(vec4<f32>(tile_a[ra]), bv, acc0);
            acc1 = fma(vec4<f32>(tile_a[ra + 1u]), bv, acc1);
            acc2 = fma(vec4<f32>(tile_a[ra + 2u]), bv, acc2);
            acc3 = fma(vec4<f32>(tile_a[ra + 3u]), bv, acc3);
        }
        workgroupBarrier();
    }
    let row = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    store_row4(bz, row, col, acc0);
    store_row4(bz, row + 1u, col, acc1);
    store_row4(bz, row + 2u, col, acc2);
    store_row4(bz, row + 3u, col, acc3);
}
