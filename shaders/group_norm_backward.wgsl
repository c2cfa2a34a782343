// GroupNorm (+ SiLU), backward: one workgroup per (image b, group g), as the forward pass; x, dy
// and dx share its layout.
//
//   xhat = (x - mean) rstd,  z = xhat gamma_c + beta_c,  dz = dy silu'(z) (dz = dy without SiLU)
//   dx = rstd (gamma_c dz - mean(gamma dz) - xhat mean(gamma dz xhat))   (means over the group)
//
// and, per channel c of the image, partial[b, c] = (sum dz xhat, sum dz) over its pixels, which
// group_norm_sum.wgsl adds up over the images into dgamma and dbeta. mean and rstd come from the
// forward pass's stats [B, G, 2]; z is recomputed rather than stored.
//
// Template values: as group_norm_forward.wgsl.

@group(0) @binding(0) var<storage, {{ access }}> x: array<f32>;
@group(0) @binding(1) var<storage, {{ access }}> gamma: array<f32>;
@group(0) @binding(2) var<storage, {{ access }}> beta: array<f32>;
@group(0) @binding(3) var<storage, {{ access }}> stats: array<f32>;
@group(0) @binding(4) var<storage, {{ access }}> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> partial_sums: array<f32>;

const C: u32 = {{ c }}u;
const S: u32 = {{ s }}u;
const GROUPS: u32 = {{ groups }}u;
const N: u32 = {{ n }}u;
const SILU: bool = {{ silu }};
const LAST: bool = {{ channels_last }};
const WG: u32 = 256u;
const CG: u32 = C / GROUPS;
const L: u32 = CG * S;

{{ workgroup_sum }}
{{ layout }}
// dL/dz at one element.
fn dz_of(ch: u32, xhat: f32, g: f32) -> f32 {
    if !SILU {
        return g;
    }
    let z = xhat * gamma[ch] + beta[ch];
    let sig = 1.0 / (1.0 + exp(-z));
    return g * sig * (1.0 + z * (1.0 - sig));
}

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
    let c0 = (w % GROUPS) * CG;
    let b = w / GROUPS;
    let mean = stats[2u * w];
    let rstd = stats[2u * w + 1u];
    // Sums over the group of gamma dz and gamma dz xhat, from the per-channel sums. Channels of
    // many pixels are summed by the whole workgroup, one after another; channels of few (LayerNorm
    // has one) by a thread each, since two workgroup sums per channel would dominate.
    var sum_g = 0.0;
    var sum_gx = 0.0;
    if S >= 64u {
        for (var k = 0u; k < CG; k++) {
            let ch = c0 + k;
            var a = 0.0;
            var d = 0.0;
            for (var p = lid; p < S; p += WG) {
                let i = pixel_index(b, ch, p);
                let xhat = (x[i] - mean) * rstd;
                let dz = dz_of(ch, xhat, dy[i]);
                a += dz * xhat;
                d += dz;
            }
            let sum_dz_xhat = workgroup_sum(lid, a);
            let sum_dz = workgroup_sum(lid, d);
            if lid == 0u {
                partial_sums[2u * (b * C + ch)] = sum_dz_xhat;
                partial_sums[2u * (b * C + ch) + 1u] = sum_dz;
            }
            sum_g += gamma[ch] * sum_dz;
            sum_gx += gamma[ch] * sum_dz_xhat;
        }
    } else {
        var g = 0.0;
        var gx = 0.0;
        for (var k = lid; k < CG; k += WG) {
            let ch = c0 + k;
            var a = 0.0;
            var d = 0.0;
            for (var p = 0u; p < S; p++) {
                let i = pixel_index(b, ch, p);
                let xhat = (x[i] - mean) * rstd;
                let dz = dz_of(ch, xhat, dy[i]);
                a += dz * xhat;
                d += dz;
            }
            partial_sums[2u * (b * C + ch)] = a;
            partial_sums[2u * (b * C + ch) + 1u] = d;
            g += gamma[ch] * d;
            gx += gamma[ch] * a;
        }
        sum_g = workgroup_sum(lid, g);
        sum_gx = workgroup_sum(lid, gx);
    }
    let mean_g = sum_g / f32(L);
    let mean_gx = sum_gx / f32(L);
    for (var i = lid; i < L; i += WG) {
        let k = group_index(b, c0, i);
        let ch = group_channel(c0, i);
        let xhat = (x[k] - mean) * rstd;
        let dz = dz_of(ch, xhat, dy[k]);
        dx[k] = rstd * (gamma[ch] * dz - mean_g - xhat * mean_gx);
    }
}
