// Grouped Laplace-kernel MMD, backward: dL/dy_t from dL/dmmd ([G]) and the coefficients the
// forward pass wrote (c_ij = dk/dd / d_ij of the tt and tr pairs; y_r is under stop-gradient):
//
//   dL/dy_t[g, p] = dL/dmmd_g (2 / M^2) sum_j ( c_tt[p, j] (a_p - a_j) - c_tr[p, j] (a_p - b_j) )
//
// One thread per (group, column): it reads the column's 2M values once and writes its M outputs.
//
// Template values: m, d, g (sizes) and access, the inputs' storage access mode (see src/fused.rs).

@group(0) @binding(0) var<storage, {{ access }}> y_t: array<f32>;
@group(0) @binding(1) var<storage, {{ access }}> y_r: array<f32>;
@group(0) @binding(2) var<storage, {{ access }}> coef: array<f32>;
@group(0) @binding(3) var<storage, {{ access }}> grad_mmd: array<f32>;
@group(0) @binding(4) var<storage, read_write> grad_y_t: array<f32>;

const M: u32 = {{ m }}u;
const D: u32 = {{ d }}u;
const G: u32 = {{ g }}u;
const PAIRS: u32 = M * M;

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let index = (wid.x + wid.y * nwg.x) * 256u + lid;
    if index >= G * D {
        return;
    }
    let g = index / D;
    let col = index % D;
    let base = g * M * D + col;
    var a: array<f32, M>;
    var b: array<f32, M>;
    for (var j = 0u; j < M; j++) {
        a[j] = y_t[base + j * D];
        b[j] = y_r[base + j * D];
    }
    let c = g * 2u * PAIRS;
    let up = grad_mmd[g] * 2.0 / f32(PAIRS);
    for (var p = 0u; p < M; p++) {
        var sum = 0.0;
        for (var j = 0u; j < M; j++) {
            sum += coef[c + p * M + j] * (a[p] - a[j]) - coef[c + PAIRS + p * M + j] * (a[p] - b[j]);
        }
        grad_y_t[base + p * D] = up * sum;
    }
}
