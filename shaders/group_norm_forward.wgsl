// GroupNorm (+ SiLU), forward: one workgroup per (image b, group g), over the L = C/G channels of
// S = H W pixels of x [B, C, H, W], stored NCHW or channels last (group_norm_layout.wgsl); y is
// written in the same layout.
//
//   mean, var over the group (two passes: no cancellation), rstd = 1 / sqrt(var + eps)
//   z = (x - mean) rstd gamma_c + beta_c,   y = z sigmoid(z) with SiLU, y = z without
//
// and stats [B, G, 2] = (mean, rstd) for the backward pass.
//
// Template values: c, s, groups, n (= B G), silu (true or false), eps, channels_last, access (the
// inputs' storage access mode, as in mmd_forward.wgsl).

@group(0) @binding(0) var<storage, {{ access }}> x: array<f32>;
@group(0) @binding(1) var<storage, {{ access }}> gamma: array<f32>;
@group(0) @binding(2) var<storage, {{ access }}> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

const C: u32 = {{ c }}u;
const S: u32 = {{ s }}u;
const GROUPS: u32 = {{ groups }}u;
const N: u32 = {{ n }}u;
const SILU: bool = {{ silu }};
const LAST: bool = {{ channels_last }};
const EPS: f32 = {{ eps }};
const WG: u32 = 256u;
const CG: u32 = C / GROUPS;
const L: u32 = CG * S;

{{ workgroup_sum }}
{{ layout }}
@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = wid.x + wid.y * nwg.x;
    if w >= N {
        return;
    }
    let b = w / GROUPS;
    let c0 = (w % GROUPS) * CG;
    var sum = 0.0;
    for (var i = lid; i < L; i += WG) {
        sum += x[group_index(b, c0, i)];
    }
    let mean = workgroup_sum(lid, sum) / f32(L);
    var sq = 0.0;
    for (var i = lid; i < L; i += WG) {
        let d = x[group_index(b, c0, i)] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(lid, sq) / f32(L) + EPS);
    if lid == 0u {
        stats[2u * w] = mean;
        stats[2u * w + 1u] = rstd;
    }
    for (var i = lid; i < L; i += WG) {
        let k = group_index(b, c0, i);
        let ch = group_channel(c0, i);
        let z = (x[k] - mean) * rstd * gamma[ch] + beta[ch];
        if SILU {
            y[k] = z / (1.0 + exp(-z));
        } else {
            y[k] = z;
        }
    }
}
