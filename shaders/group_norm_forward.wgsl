// GroupNorm (+ SiLU), forward: one workgroup per (image b, group g), whose L = C/G channels of
// S = H W pixels lie contiguous in x [B, C, H, W].
//
//   mean, var over the group (two passes: no cancellation), rstd = 1 / sqrt(var + eps)
//   z = (x - mean) rstd gamma_c + beta_c,   y = z sigmoid(z) with SiLU, y = z without
//
// and stats [B, G, 2] = (mean, rstd) for the backward pass.
//
// Template values: c, s, groups, n (= B G), silu (true or false), eps, access (the inputs'
// storage access mode, as in mmd_forward.wgsl).

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
const EPS: f32 = {{ eps }};
const WG: u32 = 256u;
const L: u32 = C / GROUPS * S;

{{ workgroup_sum }}
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
    let base = w * L;
    let c0 = (w % GROUPS) * (C / GROUPS);
    var sum = 0.0;
    for (var i = lid; i < L; i += WG) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(lid, sum) / f32(L);
    var sq = 0.0;
    for (var i = lid; i < L; i += WG) {
        let d = x[base + i] - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(lid, sq) / f32(L) + EPS);
    if lid == 0u {
        stats[2u * w] = mean;
        stats[2u * w + 1u] = rstd;
    }
    for (var i = lid; i < L; i += WG) {
        let ch = c0 + i / S;
        let z = (x[base + i] - mean) * rstd * gamma[ch] + beta[ch];
        if SILU {
            y[base + i] = z / (1.0 + exp(-z));
        } else {
            y[base + i] = z;
        }
    }
}
