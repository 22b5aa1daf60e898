// The 4×4 register-tile GEMM body, shared by the f32 module (gemm.wgsl) and the f16-storage
// modules (gemm_f16.wgsl, gemm_f16_packed.wgsl): it reads A and B only through the module's
// load_a / load_b, so one body serves every storage format; products accumulate in f32.

// 4×4 outputs per invocation held in registers; no workgroup memory, no barriers. The
// fallback for thin products (M or N < 16), where larger register tiles compute mostly padding.
@compute @workgroup_size(8, 8, 1)
fn gemm_reg4x4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * 4u;
    let col = gid.x * 4u;
    if (row >= p.m || col >= p.n) { return; }
    let bz = gid.z;
    let ra = p.a_off + bz * p.a_bs + min(row, p.m - 1u) * p.a_rs;
    let ra1 = p.a_off + bz * p.a_bs + min(row + 1u, p.m - 1u) * p.a_rs;
    let ra2 = p.a_off + bz * p.a_bs + min(row + 2u, p.m - 1u) * p.a_rs;
    let ra3 = p.a_off + bz * p.a_bs + min(row + 3u, p.m - 1u) * p.a_rs;
    let cb = p.b_off + bz * p.b_bs + min(col, p.n - 1u) * p.b_cs;
    let cb1 = p.b_off + bz * p.b_bs + min(col + 1u, p.n - 1u) * p.b_cs;
    let cb2 = p.b_off + bz * p.b_bs + min(col + 2u, p.n - 1u) * p.b_cs;
    let cb3 = p.b_off + bz * p.b_bs + min(col + 3u, p.n - 1u) * p.b_cs;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var l = 0u; l < p.k; l++) {
        let ka = l * p.a_cs;
        let kb = l * p.b_rs;
        let bv = vec4<f32>(load_b(cb + kb), load_b(cb1 + kb), load_b(cb2 + kb), load_b(cb3 + kb));
        acc0 = fma(vec4<f32>(load_a(ra + ka)), bv, acc0);
        acc1 = fma(vec4<f32>(load_a(ra1 + ka)), bv, acc1);
        acc2 = fma(vec4<f32>(load_a(ra2 + ka)), bv, acc2);
        acc3 = fma(vec4<f32>(load_a(ra3 + ka)), bv, acc3);
    }
    store_row4(bz, row, col, acc0);
    store_row4(bz, row + 1u, col, acc1);
    store_row4(bz, row + 2u, col, acc2);
    store_row4(bz, row + 3u, col, acc3);
}
