// The training step's guard and running metrics: one state vector per run, kept on the device
// so a step never waits for the host.
//   state[0] this step is flagged (a non-finite loss or gradient)   state[1] flagged steps
//   state[2] first flagged step (0: none)                             state[3] applied steps
//   state[4] Σ loss·batch   state[5] Σ correct top-1 predictions   state[6] Σ images   (applied steps)
//   state[7] loss scale (1 without dynamic scaling)   state[8] clean steps since it last changed
//   state[9] steps skipped for a scaled gradient's overflow
// The flag is 1 for a non-finite loss or gradient, 2 for an overflow of a gradient scaled by
// dynamic loss scaling (mixed precision: the step is skipped, the scale halves, and the run goes
// on). The optimizer kernels read state[0] (a flagged step leaves weights and optimizer state as
// they were) and divide gradients by state[7]. The host reads the vector only at progress
// refreshes and at the end of an epoch.

struct GuardParams {
    n: u32,        // values to check; rows of logits (guard_loss, guard_hits)
    step: u32,     // the step's 1-based number (guard_close)
    sticky: u32,   // guard_open: keep an earlier step's non-finite flag (stop at the first bad step)
    classes: u32,  // guard_hits: columns of logits
    overflow: u32, // guard_check: a finding is an overflow of scaled gradients (flag 2), not 1
    growth: u32,   // guard_close: dynamic scaling doubles the scale after this many clean steps (0: off)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GuardParams;
@group(0) @binding(1) var<storage, read> values: array<f32>;   // a tensor to check, the loss, or logits
@group(0) @binding(2) var<storage, read> labels: array<u32>;   // guard_hits: one label per row
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

// Exponent bits all ones: ±inf or NaN (a bit test, which no fast-math pass folds away).
fn non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// Clears this step's flag (a non-finite one stays when sticky; an overflow never does). One
// invocation.
@compute @workgroup_size(256)
fn guard_open(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x == 0u && (p.sticky == 0u || state[0] == 2.0)) { state[0] = 0.0; }
}

// Flags the step if any values[i] is not finite, one invocation per value: 1, or 2 for an
// overflow (which never replaces a 1). Every invocation of a launch writes the same value.
@compute @workgroup_size(256)
fn guard_check(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < p.n && non_finite(values[i])) {
        if (p.overflow == 0u) { state[0] = 1.0; } else if (state[0] == 0.0) { state[0] = 2.0; }
    }
}

// Σ loss·batch and Σ images += the mean loss values[0] of a batch of n, unless flagged.
@compute @workgroup_size(256)
fn guard_loss(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x == 0u && state[0] == 0.0) {
        state[4] += values[0] * f32(p.n);
        state[6] += f32(p.n);
    }
}

var<workgroup> hits: array<u32, 256>;

// Σ correct += rows of logits [n, classes] whose first largest value is at the label, unless
// flagged. One workgroup: each invocation counts rows lid, lid + 256, …; then a tree.
@compute @workgroup_size(256)
fn guard_hits(@builtin(local_invocation_id) lid: vec3<u32>) {
    var count = 0u;
    for (var r = lid.x; r < p.n; r += 256u) {
        let row = r * p.classes;
        var best = 0u;
        var best_value = values[row];
        for (var c = 1u; c < p.classes; c++) {
            let v = values[row + c];
            if (v > best_value) { best_value = v; best = c; }
        }
        count += u32(best == labels[r]);
    }
    hits[lid.x] = count;
    workgroupBarrier();
    for (var half = 128u; half > 0u; half >>= 1u) {
        if (lid.x < half) { hits[lid.x] += hits[lid.x + half]; }
        workgroupBarrier();
    }
    if (lid.x == 0u && state[0] == 0.0) { state[5] += f32(hits[0]); }
}

// Ends the step: counts it as flagged (remembering the first) or applied. One invocation.
@compute @workgroup_size(256)
fn guard_close(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x != 0u) { return; }
    if (state[0] == 1.0) {
        state[1] += 1.0;
        if (state[2] == 0.0) { state[2] = f32(p.step); }
        state[8] = 0.0;
    } else if (state[0] == 2.0) {
        // torch.cuda.amp.GradScaler: skip, halve, start counting clean steps again.
        state[9] += 1.0;
        state[7] *= 0.5;
        state[8] = 0.0;
    } else {
        state[3] += 1.0;
        if (p.growth != 0u) {
            state[8] += 1.0;
            if (state[8] >= f32(p.growth)) { state[7] *= 2.0; state[8] = 0.0; }
        }
    }
}
