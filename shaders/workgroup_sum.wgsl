// A workgroup's sum, shared by the GroupNorm shaders (the template value workgroup_sum). WG: the
// workgroup size, 256, as the shader that inserts it defines.

var<workgroup> partial: array<f32, 256>;

// The sum of every thread's v, returned to every thread.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
