// The 16×16 register-tile GEMM body, shared like gemm_reg4x4.wgsl by the f32 module
// (gemm.wgsl) and the native-f16 module (gemm_f16.wgsl): it reads A and B only through
// load_a / load_b.

// 16×16 outputs per invocation in 64 vec4 registers, 8×4 invocations. For software drivers
// (lavapipe): there every storage load is a per-lane scalar loop, so the cost is the number
// of loads per FMA — here 32 loads feed 256 FMAs per K step (4×4: 8 loads, 16 FMAs).
// Measured on lavapipe at 1024³: 4×4 ≈ 4.3 GFLOP/s, 8×8 ≈ 8–10, 16×16 ≈ 14–15, 32×32 ≈ 15.
// On hardware GPUs 256 accumulators per thread would spill: they get gemm_tiled64 instead.
@compute @workgroup_size(8, 4, 1)
fn gemm_reg16x16(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * 16u;
    let col = gid.x * 16u;
    if (row >= p.m || col >= p.n) { return; }
    let bz = gid.z;
    let ab = p.a_off + bz * p.a_bs;
    let bb = p.b_off + bz * p.b_bs;
    let mx = p.m - 1u;
    let nx = p.n - 1u;
    // Offsets of the 16 rows of A and 16 columns of B this invocation reads, clamped in bounds.
    let a0 = ab + min(row + 0u, mx) * p.a_rs; let a1 = ab + min(row + 1u, mx) * p.a_rs; let a2 = ab + min(row + 2u, mx) * p.a_rs; let a3 = ab + min(row + 3u, mx) * p.a_rs;
    let a4 = ab + min(row + 4u, mx) * p.a_rs; let a5 = ab + min(row + 5u, mx) * p.a_rs; let a6 = ab + min(row + 6u, mx) * p.a_rs; let a7 = ab + min(row + 7u, mx) * p.a_rs;
    let a8 = ab + min(row + 8u, mx) * p.a_rs; let a9 = ab + min(row + 9u, mx) * p.a_rs; let a10 = ab + min(row + 10u, mx) * p.a_rs; let a11 = ab + min(row + 11u, mx) * p.a_rs;
    let a12 = ab + min(row + 12u, mx) * p.a_rs; let a13 = ab + min(row + 13u, mx) * p.a_rs; let a14 = ab + min(row + 14u, mx) * p.a_rs; let a15 = ab + min(row + 15u, mx) * p.a_rs;
    let b0 = bb + min(col + 0u, nx) * p.b_cs; let b1 = bb + min(col + 1u, nx) * p.b_cs; let b2 = bb + min(col + 2u, nx) * p.b_cs; let b3 = bb + min(col + 3u, nx) * p.b_cs;
    let b4 = bb + min(col + 4u, nx) * p.b_cs; let b5 = bb + min(col + 5u, nx) * p.b_cs; let b6 = bb + min(col + 6u, nx) * p.b_cs; let b7 = bb + min(col + 7u, nx) * p.b_cs;
    let b8 = bb + min(col + 8u, nx) * p.b_cs; let b9 = bb + min(col + 9u, nx) * p.b_cs; let b10 = bb + min(col + 10u, nx) * p.b_cs; let b11 = bb + min(col + 11u, nx) * p.b_cs;
    let b12 = bb + min(col + 12u, nx) * p.b_cs; let b13 = bb + min(col + 13u, nx) * p.b_cs; let b14 = bb + min(col + 14u, nx) * p.b_cs; let b15 = bb + min(col + 15u, nx) * p.b_cs;
    // c<r>_<j>: row r, columns 4j..4j+3.
    var c0_0 = vec4<f32>(0.0); var c0_1 = vec4<f32>(0.0); var c0_2 = vec4<f32>(0.0); var c0_3 = vec4<f32>(0.0);
    var c1_0 = vec4<f32>(0.0); var c1_1 = vec4<f32>(0.0); var c1_2 = vec4<f32>(0.0); var c1_3 = vec4<f32>(0.0);
    var c2_0 = vec4<f32>(0.0); var c2_1 = vec4<f32>(0.0); var c2_2 = vec4<f32>(0.0); var c2_3 = vec4<f32>(0.0);
    var c3_0 = vec4<f32>(0.0); var c3_1 = vec4<f32>(0.0); var c3_2 = vec4<f32>(0.0); var c3_3 = vec4<f32>(0.0);
    var c4_0 = vec4<f32>(0.0); var c4_1 = vec4<f32>(0.0); var c4_2 = vec4<f32>(0.0); var c4_3 = vec4<f32>(0.0);
    var c5_0 = vec4<f32>(0.0); var c5_1 = vec4<f32>(0.0); var c5_2 = vec4<f32>(0.0); var c5_3 = vec4<f32>(0.0);
    var c6_0 = vec4<f32>(0.0); var c6_1 = vec4<f32>(0.0); var c6_2 = vec4<f32>(0.0); var c6_3 = vec4<f32>(0.0);
    var c7_0 = vec4<f32>(0.0); var c7_1 = vec4<f32>(0.0); var c7_2 = vec4<f32>(0.0); var c7_3 = vec4<f32>(0.0);
    var c8_0 = vec4<f32>(0.0); var c8_1 = vec4<f32>(0.0); var c8_2 = vec4<f32>(0.0); var c8_3 = vec4<f32>(0.0);
    var c9_0 = vec4<f32>(0.0); var c9_1 = vec4<f32>(0.0); var c9_2 = vec4<f32>(0.0); var c9_3 = vec4<f32>(0.0);
    var c10_0 = vec4<f32>(0.0); var c10_1 = vec4<f32>(0.0); var c10_2 = vec4<f32>(0.0); var c10_3 = vec4<f32>(0.0);
    var c11_0 = vec4<f32>(0.0); var c11_1 = vec4<f32>(0.0); var c11_2 = vec4<f32>(0.0); var c11_3 = vec4<f32>(0.0);
    var c12_0 = vec4<f32>(0.0); var c12_1 = vec4<f32>(0.0); var c12_2 = vec4<f32>(0.0); var c12_3 = vec4<f32>(0.0);
    var c13_0 = vec4<f32>(0.0); var c13_1 = vec4<f32>(0.0); var c13_2 = vec4<f32>(0.0); var c13_3 = vec4<f32>(0.0);
    var c14_0 = vec4<f32>(0.0); var c14_1 = vec4<f32>(0.0); var c14_2 = vec4<f32>(0.0); var c14_3 = vec4<f32>(0.0);
    var c15_0 = vec4<f32>(0.0); var c15_1 = vec4<f32>(0.0); var c15_2 = vec4<f32>(0.0); var c15_3 = vec4<f32>(0.0);
    for (var l = 0u; l < p.k; l++) {
        let ka = l * p.a_cs;
        let kb = l * p.b_rs;
        let x0 = vec4<f32>(load_b(b0 + kb), load_b(b1 + kb), load_b(b2 + kb), load_b(b3 + kb));
        let x1 = vec4<f32>(load_b(b4 + kb), load_b(b5 + kb), load_b(b6 + kb), load_b(b7 + kb));
        let x2 = vec4<f32>(load_b(b8 + kb), load_b(b9 + kb), load_b(b10 + kb), load_b(b11 + kb));
        let x3 = vec4<f32>(load_b(b12 + kb), load_b(b13 + kb), load_b(b14 + kb), load_b(b15 + kb));
        let v0 = vec4<f32>(load_a(a0 + ka));
        c0_0 = fma(v0, x0, c0_0); c0_1 = fma(v0, x1, c0_1); c0_2 = fma(v0, x2, c0_2); c0_3 = fma(v0, x3, c0_3);
        let v1 = vec4<f32>(load_a(a1 + ka));
        c1_0 = fma(v1, x0, c1_0); c1_1 = fma(v1, x1, c1_1); c1_2 = fma(v1, x2, c1_2); c1_3 = fma(v1, x3, c1_3);
        let v2 = vec4<f32>(load_a(a2 + ka));
        c2_0 = fma(v2, x0, c2_0); c2_1 = fma(v2, x1, c2_1); c2_2 = fma(v2, x2, c2_2); c2_3 = fma(v2, x3, c2_3);
        let v3 = vec4<f32>(load_a(a3 + ka));
        c3_0 = fma(v3, x0, c3_0); c3_1 = fma(v3, x1, c3_1); c3_2 = fma(v3, x2, c3_2); c3_3 = fma(v3, x3, c3_3);
        let v4 = vec4<f32>(load_a(a4 + ka));
        c4_0 = fma(v4, x0, c4_0); c4_1 = fma(v4, x1, c4_1); c4_2 = fma(v4, x2, c4_2); c4_3 = fma(v4, x3, c4_3);
        let v5 = vec4<f32>(load_a(a5 + ka));
        c5_0 = fma(v5, x0, c5_0); c5_1 = fma(v5, x1, c5_1); c5_2 = fma(v5, x2, c5_2); c5_3 = fma(v5, x3, c5_3);
        let v6 = vec4<f32>(load_a(a6 + ka));
        c6_0 = fma(v6, x0, c6_0); c6_1 = fma(v6, x1, c6_1); c6_2 = fma(v6, x2, c6_2); c6_3 = fma(v6, x3, c6_3);
        let v7 = vec4<f32>(load_a(a7 + ka));
        c7_0 = fma(v7, x0, c7_0); c7_1 = fma(v7, x1, c7_1); c7_2 = fma(v7, x2, c7_2); c7_3 = fma(v7, x3, c7_3);
        let v8 = vec4<f32>(load_a(a8 + ka));
        c8_0 = fma(v8, x0, c8_0); c8_1 = fma(v8, x1, c8_1); c8_2 = fma(v8, x2, c8_2); c8_3 = fma(v8, x3, c8_3);
        let v9 = vec4<f32>(load_a(a9 + ka));
        c9_0 = fma(v9, x0, c9_0); c9_1 = fma(v9, x1, c9_1); c9_2 = fma(v9, x2, c9_2); c9_3 = fma(v9, x3, c9_3);
        let v10 = vec4<f32>(load_a(a10 + ka));
        c10_0 = fma(v10, x0, c10_0); c10_1 = fma(v10, x1, c10_1); c10_2 = fma(v10, x2, c10_2); c10_3 = fma(v10, x3, c10_3);
        let v11 = vec4<f32>(load_a(a11 + ka));
        c11_0 = fma(v11, x0, c11_0); c11_1 = fma(v11, x1, c11_1); c11_2 = fma(v11, x2, c11_2); c11_3 = fma(v11, x3, c11_3);
        let v12 = vec4<f32>(load_a(a12 + ka));
        c12_0 = fma(v12, x0, c12_0); c12_1 = fma(v12, x1, c12_1); c12_2 = fma(v12, x2, c12_2); c12_3 = fma(v12, x3, c12_3);
        let v13 = vec4<f32>(load_a(a13 + ka));
        c13_0 = fma(v13, x0, c13_0); c13_1 = fma(v13, x1, c13_1); c13_2 = fma(v13, x2, c13_2); c13_3 = fma(v13, x3, c13_3);
        let v14 = vec4<f32>(load_a(a14 + ka));
        c14_0 = fma(v14, x0, c14_0); c14_1 = fma(v14, x1, c14_1); c14_2 = fma(v14, x2, c14_2); c14_3 = fma(v14, x3, c14_3);
        let v15 = vec4<f32>(load_a(a15 + ka));
        c15_0 = fma(v15, x0, c15_0); c15_1 = fma(v15, x1, c15_1); c15_2 = fma(v15, x2, c15_2); c15_3 = fma(v15, x3, c15_3);
    }
    store_row4(bz, row + 0u, col + 0u, c0_0); store_row4(bz, row + 0u, col + 4u, c0_1); store_row4(bz, row + 0u, col + 8u, c0_2); store_row4(bz, row + 0u, col + 12u, c0_3);
    store_row4(bz, row + 1u, col + 0u, c1_0); store_row4(bz, row + 1u, col + 4u, c1_1); store_row4(bz, row + 1u, col + 8u, c1_2); store_row4(bz, row + 1u, col + 12u, c1_3);
    store_row4(bz, row + 2u, col + 0u, c2_0); store_row4(bz, row + 2u, col + 4u, c2_1); store_row4(bz, row + 2u, col + 8u, c2_2); store_row4(bz, row + 2u, col + 12u, c2_3);
    store_row4(bz, row + 3u, col + 0u, c3_0); store_row4(bz, row + 3u, col + 4u, c3_1); store_row4(bz, row + 3u, col + 8u, c3_2); store_row4(bz, row + 3u, col + 12u, c3_3);
    store_row4(bz, row + 4u, col + 0u, c4_0); store_row4(bz, row + 4u, col + 4u, c4_1); store_row4(bz, row + 4u, col + 8u, c4_2); store_row4(bz, row + 4u, col + 12u, c4_3);
    store_row4(bz, row + 5u, col + 0u, c5_0); store_row4(bz, row + 5u, col + 4u, c5_1); store_row4(bz, row + 5u, col + 8u, c5_2); store_row4(bz, row + 5u, col + 12u, c5_3);
    store_row4(bz, row + 6u, col + 0u, c6_0); store_row4(bz, row + 6u, col + 4u, c6_1); store_row4(bz, row + 6u, col + 8u, c6_2); store_row4(bz, row + 6u, col + 12u, c6_3);
    store_row4(bz, row + 7u, col + 0u, c7_0); store_row4(bz, row + 7u, col + 4u, c7_1); store_row4(bz, row + 7u, col + 8u, c7_2); store_row4(bz, row + 7u, col + 12u, c7_3);
    store_row4(bz, row + 8u, col + 0u, c8_0); store_row4(bz, row + 8u, col + 4u, c8_1); store_row4(bz, row + 8u, col + 8u, c8_2); store_row4(bz, row + 8u, col + 12u, c8_3);
    store_row4(bz, row + 9u, col + 0u, c9_0); store_row4(bz, row + 9u, col + 4u, c9_1); store_row4(bz, row + 9u, col + 8u, c9_2); store_row4(bz, row + 9u, col + 12u, c9_3);
    store_row4(bz, row + 10u, col + 0u, c10_0); store_row4(bz, row + 10u, col + 4u, c10_1); store_row4(bz, row + 10u, col + 8u, c10_2); store_row4(bz, row + 10u, col + 12u, c10_3);
    store_row4(bz, row + 11u, col + 0u, c11_0); store_row4(bz, row + 11u, col + 4u, c11_1); store_row4(bz, row + 11u, col + 8u, c11_2); store_row4(bz, row + 11u, col + 12u, c11_3);
    store_row4(bz, row + 12u, col + 0u, c12_0); store_row4(bz, row + 12u, col + 4u, c12_1); store_row4(bz, row + 12u, col + 8u, c12_2); store_row4(bz, row + 12u, col + 12u, c12_3);
    store_row4(bz, row + 13u, col + 0u, c13_0); store_row4(bz, row + 13u, col + 4u, c13_1); store_row4(bz, row + 13u, col + 8u, c13_2); store_row4(bz, row + 13u, col + 12u, c13_3);
    store_row4(bz, row + 14u, col + 0u, c14_0); store_row4(bz, row + 14u, col + 4u, c14_1); store_row4(bz, row + 14u, col + 8u, c14_2); store_row4(bz, row + 14u, col + 12u, c14_3);
    store_row4(bz, row + 15u, col + 0u, c15_0); store_row4(bz, row + 15u, col + 4u, c15_1); store_row4(bz, row + 15u, col + 8u, c15_2); store_row4(bz, row + 15u, col + 12u, c15_3);
}
