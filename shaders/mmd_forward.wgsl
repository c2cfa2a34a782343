// Grouped Laplace-kernel MMD, forward: one workgroup per group g of M particles of dimension D.
//
//   d_ij  = sqrt(max(||a_i - b_j||^2, 1e-8))
//   k_ij  = exp(-w_g d_ij / D)
//   mmd_g = mean_ij (k(tt) - 1) + mean_ij (k(rr) - 1) - 2 mean_ij (k(tr) - 1)   (V-statistic)
//
// with tt = (y_t, y_t), rr = (y_r, y_r), tr = (y_t, y_r). The rows of both groups are read once,
// tile by tile, into workgroup memory; each thread then accumulates the three squared distances of
// one pair (i, j) over a slice of the tile's columns. Besides mmd it writes, for the backward pass,
// dk/dd / d = -(w_g / D) k_ij / d_ij of tt and tr (0 where the clamp is active, as the reference's
// gradient is), so the backward pass does not recompute distances.
//
// Template values: m, d, g (sizes, so that loops have constant bounds) and access, the inputs'
// storage access mode (see src/fused.rs).

@group(0) @binding(0) var<storage, {{ access }}> y_t: array<f32>;
@group(0) @binding(1) var<storage, {{ access }}> y_r: array<f32>;
@group(0) @binding(2) var<storage, {{ access }}> kernel_scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> mmd: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;

const M: u32 = {{ m }}u;
const D: u32 = {{ d }}u;
const G: u32 = {{ g }}u;
const WG: u32 = 256u;
// Columns per tile: 1024 floats of each input in workgroup memory (8 KiB), whatever M.
const TILE: u32 = 1024u / M;
const PAIRS: u32 = M * M;
const SLICES: u32 = WG / PAIRS;

var<workgroup> tile_t: array<f32, M * TILE>;
var<workgroup> tile_r: array<f32, M * TILE>;
var<workgroup> partial: array<f32, 768>;

// exp(z) - 1 for z <= 0, summed as the reference does: Taylor (Horner) above -0.5, where
// exp(z) - 1 would cancel.
fn expm1(z: f32) -> f32 {
    if z > -0.5 {
        var p = 1.0;
        for (var n = 10u; n >= 2u; n--) {
            p = z * p / f32(n) + 1.0;
        }
        return z * p;
    }
    return exp(z) - 1.0;
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = wid.x + wid.y * nwg.x;
    if g >= G {
        return;
    }
    let base = g * M * D;
    let pair = lid % PAIRS;
    let slice = lid / PAIRS;
    let i = pair / M;
    let j = pair % M;
    let in_slice = slice < SLICES;

    var tt = 0.0;
    var rr = 0.0;
    var tr = 0.0;
    for (var c0 = 0u; c0 < D; c0 += TILE) {
        for (var e = lid; e < M * TILE; e += WG) {
            let row = e / TILE;
            let col = c0 + e % TILE;
            var a = 0.0;
            var b = 0.0;
            if col < D {
                a = y_t[base + row * D + col];
                b = y_r[base + row * D + col];
            }
            tile_t[e] = a;
            tile_r[e] = b;
        }
        workgroupBarrier();
        if in_slice {
            // Columns past D were loaded as zeros on both sides: they add nothing.
            for (var c = slice; c < TILE; c += SLICES) {
                let at = tile_t[i * TILE + c] - tile_t[j * TILE + c];
                let ar = tile_r[i * TILE + c] - tile_r[j * TILE + c];
                let x = tile_t[i * TILE + c] - tile_r[j * TILE + c];
                tt += at * at;
                rr += ar * ar;
                tr += x * x;
            }
        }
        workgroupBarrier();
    }
    partial[3u * lid] = tt;
    partial[3u * lid + 1u] = rr;
    partial[3u * lid + 2u] = tr;
    workgroupBarrier();

    var value = 0.0;
    if lid < PAIRS {
        var sq = vec3<f32>(0.0);
        for (var s = 0u; s < SLICES; s++) {
            let q = 3u * (s * PAIRS + lid);
            sq += vec3<f32>(partial[q], partial[q + 1u], partial[q + 2u]);
        }
        let w = kernel_scale[g] / f32(D);
        let dist = sqrt(max(sq, vec3<f32>(1e-8)));
        value = expm1(-w * dist.x) + expm1(-w * dist.y) - 2.0 * expm1(-w * dist.z);
        let slope = -w * exp(-w * dist) / dist;
        let open = sq >= vec3<f32>(1e-8);
        coef[g * 2u * PAIRS + lid] = select(0.0, slope.x, open.x);
        coef[g * 2u * PAIRS + PAIRS + lid] = select(0.0, slope.z, open.z);
    }
    workgroupBarrier();
    partial[lid] = value;
    workgroupBarrier();
    if lid == 0u {
        var total = 0.0;
        for (var p = 0u; p < PAIRS; p++) {
            total += partial[p];
        }
        mmd[g] = total / f32(PAIRS);
    }
}
