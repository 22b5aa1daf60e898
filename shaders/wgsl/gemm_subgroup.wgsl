// GEMM with subgroup broadcasts, for software drivers whose subgroups are 8 lanes wide
// (lavapipe on 256-bit SIMD). Declarations in gemm_common.wgsl, as for gemm.wgsl; kept in its
// own file because subgroup operations need an adapter feature that not every adapter has
// (Mesa's GL driver lacks it), and a module using them would not compile there.
//
// Why: on lavapipe every storage load is a per-lane scalar loop, so loads per FMA set the
// speed. Each lane computes 32 rows × 8 columns. All lanes of a subgroup share the 32 rows,
// so each lane loads only 4 of them and subgroupBroadcast (a register shuffle there) shares
// them: per K step 12 loads feed 256 FMAs, where gemm_reg16x16 needs 32 loads for 256.
// The engine picks this kernel only where the adapter's subgroup size is exactly 8.

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

// 32×8 outputs per lane; a workgroup is 4 subgroups of 8 lanes (128 rows × 64 columns).
@compute @workgroup_size(32, 1, 1)
fn gemm_sg32x8(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // Subgroup `sg` owns a 32-row band; its lane `lane` owns 8 columns of it.
    let row = (wid.y * 4u + sg) * 32u;
    let col = (wid.x * 8u + lane) * 8u;
    let bz = wid.z;
    let ab = p.a_off + bz * p.a_bs;
    let bb = p.b_off + bz * p.b_bs;
    let mx = p.m - 1u;
    let nx = p.n - 1u;
    let a0 = ab + min(row + 0u + lane, mx) * p.a_rs;
    let a1 = ab + min(row + 8u + lane, mx) * p.a_rs;
    let a2 = ab + min(row + 16u + lane, mx) * p.a_rs;
    let a3 = ab + min(row + 24u + lane, mx) * p.a_rs;
    let b0 = bb + min(col + 0u, nx) * p.b_cs;
    let b1 = bb + min(col + 1u, nx) * p.b_cs;
    let b2 = bb + min(col + 2u, nx) * p.b_cs;
    let b3 = bb + min(col + 3u, nx) * p.b_cs;
    let b4 = bb + min(col + 4u, nx) * p.b_cs;
    let b5 = bb + min(col + 5u, nx) * p.b_cs;
    let b6 = bb + min(col + 6u, nx) * p.b_cs;
    let b7 = bb + min(col + 7u, nx) * p.b_cs;
    var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0);
    var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0);
    var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0);
    var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0);
    var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0);
    var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0);
    var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0);
    var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0);
    var c8_0 = vec4<f32>(0.0); var c8_1 = vec4<f32>(0.0);
    var c9_0 = vec4<f32>(0.0); var c9_1 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0);
    var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0);
    var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0);
    var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0);
    var c16_0 = vec4<f32>(0.0); var c16_1 = vec4<f32>(0.0);
    var c17_0 = vec4<f32>(0.0); var c17_1 = vec4<f32>(0.0);
    var c18_0 = vec4<f32>(0.0); var c18_1 = vec4<f32>(0.0);
    var c19_0 = vec4<f32>(0.0); var c19_1 = vec4<f32>(0.0);
    var c20_0 = vec4<f32>(0.0); var c20_1 = vec4<f32>(0.0);
    var c21_0 = vec4<f32>(0.0); var c21_1 = vec4<f32>(0.0);
    var c22_0 = vec4<f32>(0.0); var c22_1 = vec4<f32>(0.0);
    var c23_0 = vec4<f32>(0.0); var c23_1 = vec4<f32>(0.0);
    var c24_0 = vec4<f32>(0.0); var c24_1 = vec4<f32>(0.0);
    var c25_0 = vec4<f32>(0.0); var c25_1 = vec4<f32>(0.0);
    var c26_0 = vec4<f32>(0.0); var c26_1 = vec4<f32>(0.0);
    var c27_0 = vec4<f32>(0.0); var c27_1 = vec4<f32>(0.0);
    var c28_0 = vec4<f32>(0.0); var c28_1 = vec4<f32>(0.0);
    var c29_0 = vec4<f32>(0.0); var c29_1 = vec4<f32>(0.0);
    var c30_0 = vec4<f32>(0.0); var c30_1 = vec4<f32>(0.0);
    var c31_0 = vec4<f32>(0.0); var c31_1 = vec4<f32>(0.0);
    // c<r>_<j>: row r, columns 4j..4j+3.
    for (var l = 0u; l < p.k; l++) {
        let ka = l * p.a_cs;
        let kb = l * p.b_rs;
        // Lane i loads rows i, 8+i, 16+i, 24+i of the band; broadcasts hand row r to all lanes.
        let s0 = a[a0 + ka];
        let s1 = a[a1 + ka];
        let s2 = a[a2 + ka];
        let s3 = a[a3 + ka];
        let x0 = vec4<f32>(b[b0 + kb], b[b1 + kb], b[b2 + kb], b[b3 + kb]);
        let x1 = vec4<f32>(b[b4 + kb], b[b5 + kb], b[b6 + kb], b[b7 + kb]);
        let v0 = vec4<f32>(subgroupBroadcast(s0, 0u));
        c0_0 = fma(v0, x0, c0_0); c0_1 = fma(v0, x1, c0_1);
        let v1 = vec4<f32>(subgroupBroadcast(s0, 1u));
        c1_0 = fma(v1, x0, c1_0); c1_1 = fma(v1, x1, c1_1);
        let v2 = vec4<f32>(subgroupBroadcast(s0, 2u));
        c2_0 = fma(v2, x0, c2_0); c2_1 = fma(v2, x1, c2_1);
        let v3 = vec4<f32>(subgroupBroadcast(s0, 3u));
        c3_0 = fma(v3, x0, c3_0); c3_1 = fma(v3, x1, c3_1);
        let v4 = vec4<f32>(subgroupBroadcast(s0, 4u));
        c4_0 = fma(v4, x0, c4_0); c4_1 = fma(v4, x1, c4_1);
        let v5 = vec4<f32>(subgroupBroadcast(s0, 5u));
        c5_0 = fma(v5, x0, c5_0); c5_1 = fma(v5, x1, c5_1);
        let v6 = vec4<f32>(subgroupBroadcast(s0, 6u));
        c6_0 = fma(v6, x0, c6_0); c6_1 = fma(v6, x1, c6_1);
        let v7 = vec4<f32>(subgroupBroadcast(s0, 7u));
        c7_0 = fma(v7, x0, c7_0); c7_1 = fma(v7, x1, c7_1);
        let v8 = vec4<f32>(subgroupBroadcast(s1, 0u));
        c8_0 = fma(v8, x0, c8_0); c8_1 = fma(v8, x1, c8_1);
        let v9 = vec4<f32>(subgroupBroadcast(s1, 1u));
        c9_0 = fma(v9, x0, c9_0); c9_1 = fma(v9, x1, c9_1);
        let v10 = vec4<f32>(subgroupBroadcast(s1, 2u));
        c10_0 = fma(v10, x0, c10_0); c10_1 = fma(v10, x1, c10_1);
        let v11 = vec4<f32>(subgroupBroadcast(s1, 3u));
        c11_0 = fma(v11, x0, c11_0); c11_1 = fma(v11, x1, c11_1);
        let v12 = vec4<f32>(subgroupBroadcast(s1, 4u));
        c12_0 = fma(v12, x0, c12_0); c12_1 = fma(v12, x1, c12_1);
        let v13 = vec4<f32>(subgroupBroadcast(s1, 5u));
        c13_0 = fma(v13, x0, c13_0); c13_1 = fma(v13, x1, c13_1);
        let v14 = vec4<f32>(subgroupBroadcast(s1, 6u));
        c14_0 = fma(v14, x0, c14_0); c14_1 = fma(v14, x1, c14_1);
        let v15 = vec4<f32>(subgroupBroadcast(s1, 7u));
        c15_0 = fma(v15, x0, c15_0); c15_1 = fma(v15, x1, c15_1);
        let v16 = vec4<f32>(subgroupBroadcast(s2, 0u));
        c16_0 = fma(v16, x0, c16_0); c16_1 = fma(v16, x1, c16_1);
        let v17 = vec4<f32>(subgroupBroadcast(s2, 1u));
        c17_0 = fma(v17, x0, c17_0); c17_1 = fma(v17, x1, c17_1);
        let v18 = vec4<f32>(subgroupBroadcast(s2, 2u));
        c18_0 = fma(v18, x0, c18_0); c18_1 = fma(v18, x1, c18_1);
        let v19 = vec4<f32>(subgroupBroadcast(s2, 3u));
        c19_0 = fma(v19, x0, c19_0); c19_1 = fma(v19, x1, c19_1);
        let v20 = vec4<f32>(subgroupBroadcast(s2, 4u));
        c20_0 = fma(v20, x0, c20_0); c20_1 = fma(v20, x1, c20_1);
        let v21 = vec4<f32>(subgroupBroadcast(s2, 5u));
        c21_0 = fma(v21, x0, c21_0); c21_1 = fma(v21, x1, c21_1);
        let v22 = vec4<f32>(subgroupBroadcast(s2, 6u));
        c22_0 = fma(v22, x0, c22_0); c22_1 = fma(v22, x1, c22_1);
        let v23 = vec4<f32>(subgroupBroadcast(s2, 7u));
        c23_0 = fma(v23, x0, c23_0); c23_1 = fma(v23, x1, c23_1);
        let v24 = vec4<f32>(subgroupBroadcast(s3, 0u));
        c24_0 = fma(v24, x0, c24_0); c24_1 = fma(v24, x1, c24_1);
        let v25 = vec4<f32>(subgroupBroadcast(s3, 1u));
        c25_0 = fma(v25, x0, c25_0); c25_1 = fma(v25, x1, c25_1);
        let v26 = vec4<f32>(subgroupBroadcast(s3, 2u));
        c26_0 = fma(v26, x0, c26_0); c26_1 = fma(v26, x1, c26_1);
        let v27 = vec4<f32>(subgroupBroadcast(s3, 3u));
        c27_0 = fma(v27, x0, c27_0); c27_1 = fma(v27, x1, c27_1);
        let v28 = vec4<f32>(subgroupBroadcast(s3, 4u));
        c28_0 = fma(v28, x0, c28_0); c28_1 = fma(v28, x1, c28_1);
        let v29 = vec4<f32>(subgroupBroadcast(s3, 5u));
        c29_0 = fma(v29, x0, c29_0); c29_1 = fma(v29, x1, c29_1);
        let v30 = vec4<f32>(subgroupBroadcast(s3, 6u));
        c30_0 = fma(v30, x0, c30_0); c30_1 = fma(v30, x1, c30_1);
        let v31 = vec4<f32>(subgroupBroadcast(s3, 7u));
        c31_0 = fma(v31, x0, c31_0); c31_1 = fma(v31, x1, c31_1);
    }
    // No early exit before the loop: every lane must take part in the broadcasts.
    if (row >= p.m || col >= p.n) { return; }
    store_row4(bz, row + 0u, col + 0u, c0_0); store_row4(bz, row + 0u, col + 4u, c0_1);
    store_row4(bz, row + 1u, col + 0u, c1_0); store_row4(bz, row + 1u, col + 4u, c1_1);
    store_row4(bz, row + 2u, col + 0u, c2_0); store_row4(bz, row + 2u, col + 4u, c2_1);
    store_row4(bz, row + 3u, col + 0u, c3_0); store_row4(bz, row + 3u, col + 4u, c3_1);
    store_row4(bz, row + 4u, col + 0u, c4_0); store_row4(bz, row + 4u, col + 4u, c4_1);
    store_row4(bz, row + 5u, col + 0u, c5_0); store_row4(bz, row + 5u, col + 4u, c5_1);
    store_row4(bz, row + 6u, col + 0u, c6_0); store_row4(bz, row + 6u, col + 4u, c6_1);
    store_row4(bz, row + 7u, col + 0u, c7_0); store_row4(bz, row + 7u, col + 4u, c7_1);
    store_row4(bz, row + 8u, col + 0u, c8_0); store_row4(bz, row + 8u, col + 4u, c8_1);
    store_row4(bz, row + 9u, col + 0u, c9_0); store_row4(bz, row + 9u, col + 4u, c9_1);
    store_row4(bz, row + 10u, col + 0u, c10_0); store_row4(bz, row + 10u, col + 4u, c10_1);
    store_row4(bz, row + 11u, col + 0u, c11_0); store_row4(bz, row + 11u, col + 4u, c11_1);
    store_row4(bz, row + 12u, col + 0u, c12_0); store_row4(bz, row + 12u, col + 4u, c12_1);
    store_row4(bz, row + 13u, col + 0u, c13_0); store_row4(bz, row + 13u, col + 4u, c13_1);
    store_row4(bz, row + 14u, col + 0u, c14_0); store_row4(bz, row + 14u, col + 4u, c14_1);
    store_row4(bz, row + 15u, col + 0u, c15_0); store_row4(bz, row + 15u, col + 4u, c15_1);
    store_row4(bz, row + 16u, col + 0u, c16_0); store_row4(bz, row + 16u, col + 4u, c16_1);
    store_row4(bz, row + 17u, col + 0u, c17_0); store_row4(bz, row + 17u, col + 4u, c17_1);
    store_row4(bz, row + 18u, col + 0u, c18_0); store_row4(bz, row + 18u, col + 4u, c18_1);
    store_row4(bz, row + 19u, col + 0u, c19_0); store_row4(bz, row + 19u, col + 4u, c19_1);
    store_row4(bz, row + 20u, col + 0u, c20_0); store_row4(bz, row + 20u, col + 4u, c20_1);
    store_row4(bz, row + 21u, col + 0u, c21_0); store_row4(bz, row + 21u, col + 4u, c21_1);
    store_row4(bz, row + 22u, col + 0u, c22_0); store_row4(bz, row + 22u, col + 4u, c22_1);
    store_row4(bz, row + 23u, col + 0u, c23_0); store_row4(bz, row + 23u, col + 4u, c23_1);
    store_row4(bz, row + 24u, col + 0u, c24_0); store_row4(bz, row + 24u, col + 4u, c24_1);
    store_row4(bz, row + 25u, col + 0u, c25_0); store_row4(bz, row + 25u, col + 4u, c25_1);
    store_row4(bz, row + 26u, col + 0u, c26_0); store_row4(bz, row + 26u, col + 4u, c26_1);
    store_row4(bz, row + 27u, col + 0u, c27_0); store_row4(bz, row + 27u, col + 4u, c27_1);
    store_row4(bz, row + 28u, col + 0u, c28_0); store_row4(bz, row + 28u, col + 4u, c28_1);
    store_row4(bz, row + 29u, col + 0u, c29_0); store_row4(bz, row + 29u, col + 4u, c29_1);
    store_row4(bz, row + 30u, col + 0u, c30_0); store_row4(bz, row + 30u, col + 4u, c30_1);
    store_row4(bz, row + 31u, col + 0u, c31_0); store_row4(bz, row + 31u, col + 4u, c31_1);
}
