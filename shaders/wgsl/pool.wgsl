// 2-D pooling over NCHW planes, forward and backward side by side: max (padding counts as
// −∞; the forward stores each window's first maximum as its offset in the plane, and the
// backward routes gradients by those offsets, as PyTorch's indices do), average
// (count_include_pad, as PyTorch's default) and adaptive average (PyTorch's window bounds
// ⌊i·H/Ho⌋ .. ⌈(i+1)·H/Ho⌉). Backward passes gather per input pixel: no atomics.

struct PoolParams {
    planes: u32, h: u32, w: u32, ho: u32,
    wo: u32, kh: u32, kw: u32, stride_h: u32,
    stride_w: u32, pad_h: u32, pad_w: u32, total: u32,
}

@group(0) @binding(0) var<uniform> p: PoolParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;     // the forward input (max backward: the argmax)
@group(0) @binding(2) var<storage, read> g: array<f32>;     // upstream gradient (backward)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// max_pool_forward: each window's first maximum as its offset in the plane (an f32 integer,
// exact below 2^24), −1 for a window that is all padding.
@group(0) @binding(4) var<storage, read_write> argmax: array<f32>;

fn flat(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// (plane, oh, ow) of output index o, and (plane, y, x) of input index i
fn out_coords(o: u32) -> vec3<u32> {
    return vec3<u32>(o / (p.wo * p.ho), (o / p.wo) % p.ho, o % p.wo);
}

fn in_coords(i: u32) -> vec3<u32> {
    return vec3<u32>(i / (p.w * p.h), (i / p.w) % p.h, i % p.w);
}

// Index in x of the first maximum of window (oh, ow) of `plane` (−1 if all padding).
fn window_argmax(plane: u32, oh: u32, ow: u32) -> i32 {
    let y0 = i32(oh * p.stride_h) - i32(p.pad_h);
    let x0 = i32(ow * p.stride_w) - i32(p.pad_w);
    var best = -1;
    var m = 0.0;
    for (var i = 0; i < i32(p.kh); i++) {
        let y = y0 + i;
        if (y < 0 || y >= i32(p.h)) { continue; }
        for (var j = 0; j < i32(p.kw); j++) {
            let xx = x0 + j;
            if (xx < 0 || xx >= i32(p.w)) { continue; }
            let idx = i32(plane * p.h * p.w) + y * i32(p.w) + xx;
            let v = x[idx];
            // NaN propagates, as in PyTorch.
            if (best < 0 || v > m || v != v) { best = idx; m = v; }
        }
    }
    return best;
}

// Output windows [lo, hi) along one axis that contain input coordinate c.
fn windows_containing(c: u32, k: u32, s: u32, pad: u32, n_out: u32) -> vec2<u32> {
    let cp = c + pad;
    var lo = 0u;
    if (cp + 1u > k) { lo = (cp + 1u - k + s - 1u) / s; }
    let hi = min(cp / s + 1u, n_out);
    return vec2<u32>(lo, max(lo, hi));
}

// out = max over the window
@compute @workgroup_size(256)
fn max_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat(gid, groups);
    if (o >= p.total) { return; }
    let at = out_coords(o);
    let plane = at.x;
    let oh = at.y;
    let ow = at.z;
    let best = window_argmax(plane, oh, ow);
    out[o] = select(-3.4028235e38, x[u32(max(best, 0))], best >= 0);
    argmax[o] = select(-1.0, f32(best - i32(plane * p.h * p.w)), best >= 0);
}

// dx[i] = Σ g[window] over the windows whose stored maximum (x: the forward's argmax) is i
@compute @workgroup_size(256)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let at = in_coords(i);
    let plane = at.x;
    let here = f32(at.y * p.w + at.z);
    let rows = windows_containing(at.y, p.kh, p.stride_h, p.pad_h, p.ho);
    let cols = windows_containing(at.z, p.kw, p.stride_w, p.pad_w, p.wo);
    var acc = 0.0;
    for (var oh = rows.x; oh < rows.y; oh++) {
        for (var ow = cols.x; ow < cols.y; ow++) {
            let o = (plane * p.ho + oh) * p.wo + ow;
            if (x[o] == here) { acc += g[o]; }
        }
    }
    out[i] = acc;
}

// out = Σ window / (kh·kw), padding counted as zeros
@compute @workgroup_size(256)
fn avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat(gid, groups);
    if (o >= p.total) { return; }
    let at = out_coords(o);
    let plane = at.x;
    let oh = at.y;
    let ow = at.z;
    let y0 = i32(oh * p.stride_h) - i32(p.pad_h);
    let x0 = i32(ow * p.stride_w) - i32(p.pad_w);
    var acc = 0.0;
    for (var i = max(y0, 0); i < min(y0 + i32(p.kh), i32(p.h)); i++) {
        for (var j = max(x0, 0); j < min(x0 + i32(p.kw), i32(p.w)); j++) {
            acc += x[(plane * p.h + u32(i)) * p.w + u32(j)];
        }
    }
    out[o] = acc / f32(p.kh * p.kw);
}

// dx[i] = Σ g[window] / (kh·kw) over the windows containing i
@compute @workgroup_size(256)
fn avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let at = in_coords(i);
    let plane = at.x;
    let y = at.y;
    let xx = at.z;
    let rows = windows_containing(y, p.kh, p.stride_h, p.pad_h, p.ho);
    let cols = windows_containing(xx, p.kw, p.stride_w, p.pad_w, p.wo);
    var acc = 0.0;
    for (var oh = rows.x; oh < rows.y; oh++) {
        for (var ow = cols.x; ow < cols.y; ow++) {
            acc += g[(plane * p.ho + oh) * p.wo + ow];
        }
    }
    out[i] = acc / f32(p.kh * p.kw);
}

fn adaptive_start(i: u32, size: u32, n_out: u32) -> u32 {
    return (i * size) / n_out;
}

fn adaptive_end(i: u32, size: u32, n_out: u32) -> u32 {
    return ((i + 1u) * size + n_out - 1u) / n_out;
}

// out = mean over the adaptive window
@compute @workgroup_size(256)
fn adaptive_avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat(gid, groups);
    if (o >= p.total) { return; }
    let at = out_coords(o);
    let plane = at.x;
    let oh = at.y;
    let ow = at.z;
    let y0 = adaptive_start(oh, p.h, p.ho);
    let y1 = adaptive_end(oh, p.h, p.ho);
    let x0 = adaptive_start(ow, p.w, p.wo);
    let x1 = adaptive_end(ow, p.w, p.wo);
    var acc = 0.0;
    for (var i = y0; i < y1; i++) {
        for (var j = x0; j < x1; j++) { acc += x[(plane * p.h + i) * p.w + j]; }
    }
    out[o] = acc / f32((y1 - y0) * (x1 - x0));
}

// dx[i] = Σ g[window] / |window| over the adaptive windows containing i
@compute @workgroup_size(256)
fn adaptive_avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(gid, groups);
    if (i >= p.total) { return; }
    let at = in_coords(i);
    let plane = at.x;
    let y = at.y;
    let xx = at.z;
    var acc = 0.0;
    for (var oh = 0u; oh < p.ho; oh++) {
        let y0 = adaptive_start(oh, p.h, p.ho);
        let y1 = adaptive_end(oh, p.h, p.ho);
        if (y < y0 || y >= y1) { continue; }
        for (var ow = 0u; ow < p.wo; ow++) {
            let x0 = adaptive_start(ow, p.w, p.wo);
            let x1 = adaptive_end(ow, p.w, p.wo);
            if (xx < x0 || xx >= x1) { continue; }
            acc += g[(plane * p.ho + oh) * p.wo + ow] / f32((y1 - y0) * (x1 - x0));
        }
    }
    out[i] = acc;
}
