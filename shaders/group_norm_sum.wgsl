// GroupNorm's parameter gradients: dgamma_c = sum_b partial[b, c, 0], dbeta_c = sum_b partial[b, c, 1],
// from the per-image sums of group_norm_backward.wgsl. One thread per channel.
//
// Template values: c, batch, access.

@group(0) @binding(0) var<storage, {{ access }}> partial_sums: array<f32>;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;

const C: u32 = {{ c }}u;
const BATCH: u32 = {{ batch }}u;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    if c >= C {
        return;
    }
    var g = 0.0;
    var b = 0.0;
    for (var i = 0u; i < BATCH; i++) {
        g += partial_sums[2u * (i * C + c)];
        b += partial_sums[2u * (i * C + c) + 1u];
    }
    dgamma[c] = g;
    dbeta[c] = b;
}
