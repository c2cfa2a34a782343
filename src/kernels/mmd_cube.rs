//! The two MMD kernels of `shaders/mmd_*.wgsl` written in CubeCL, which compiles them for every
//! cubecl runtime (CUDA, ROCm, Metal, the CPU), where raw WGSL cannot run. Same layout, same
//! maths; the comments of the WGSL files apply.

use burn::cubecl;
use burn::cubecl::prelude::*;

/// exp(z) - 1 for z <= 0, summed as the reference does: Taylor (Horner) above -0.5.
#[cube]
fn expm1(z: f32) -> f32 {
    let mut out = z.exp() - 1.0f32;
    if z > -0.5f32 {
        let mut p = 1.0f32;
        for k in 0..9u32 {
            p = z * p / f32::cast_from(10 - k) + 1.0f32;
        }
        out = z * p;
    }
    out
}

/// The Laplace kernel's slope over the distance, dk/dd / d, or 0 where the clamp is active.
#[cube]
fn slope(sq: f32, w: f32) -> f32 {
    let dist = max(sq, 1e-8f32).sqrt();
    let mut out = 0.0f32;
    if sq >= 1e-8f32 {
        out = -w * (-w * dist).exp() / dist;
    }
    out
}

/// Forward: one cube of 256 units per group; MMD [G] and coefficients [G, 2, M, M].
#[cube(launch)]
pub fn mmd_forward(
    y_t: &[f32],
    y_r: &[f32],
    kernel_scale: &[f32],
    mmd: &mut [f32],
    coef: &mut [f32],
    #[comptime] m: usize,
    #[comptime] d: usize,
    #[comptime] groups: usize,
) {
    let g = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    if g >= groups {
        terminate!();
    }
    let pairs = comptime!(m * m);
    let slices = comptime!(256 / (m * m));
    let tile = comptime!(1024 / m);
    let lid = UNIT_POS as usize;
    let base = g * m * d;
    let pair = lid % pairs;
    let slice = lid / pairs;
    let i = pair / m;
    let j = pair % m;

    let mut tile_t = Shared::<[f32]>::new_slice(comptime!(m * tile));
    let mut tile_r = Shared::<[f32]>::new_slice(comptime!(m * tile));
    let mut partial = Shared::<[f32]>::new_slice(768usize);

    let mut tt = 0.0f32;
    let mut rr = 0.0f32;
    let mut tr = 0.0f32;
    let mut c0 = 0usize;
    while c0 < d {
        let mut e = lid;
        while e < m * tile {
            let row = e / tile;
            let col = c0 + e % tile;
            let mut a = 0.0f32;
            let mut b = 0.0f32;
            if col < d {
                a = y_t[base + row * d + col];
                b = y_r[base + row * d + col];
            }
            tile_t[e] = a;
            tile_r[e] = b;
            e += 256;
        }
        sync_cube();
        if slice < slices {
            let mut c = slice;
            while c < tile {
                let at = tile_t[i * tile + c] - tile_t[j * tile + c];
                let ar = tile_r[i * tile + c] - tile_r[j * tile + c];
                let x = tile_t[i * tile + c] - tile_r[j * tile + c];
                tt += at * at;
                rr += ar * ar;
                tr += x * x;
                c += slices;
            }
        }
        sync_cube();
        c0 += tile;
    }
    partial[3 * lid] = tt;
    partial[3 * lid + 1] = rr;
    partial[3 * lid + 2] = tr;
    sync_cube();

    let mut value = 0.0f32;
    if lid < pairs {
        let mut sq_tt = 0.0f32;
        let mut sq_rr = 0.0f32;
        let mut sq_tr = 0.0f32;
        for s in 0..slices {
            let q = 3 * (s * pairs + lid);
            sq_tt += partial[q];
            sq_rr += partial[q + 1];
            sq_tr += partial[q + 2];
        }
        let w = kernel_scale[g] / f32::cast_from(d);
        let d_tt = max(sq_tt, 1e-8f32).sqrt();
        let d_rr = max(sq_rr, 1e-8f32).sqrt();
        let d_tr = max(sq_tr, 1e-8f32).sqrt();
        value = expm1(-w * d_tt) + expm1(-w * d_rr) - 2.0f32 * expm1(-w * d_tr);
        coef[g * 2 * pairs + lid] = slope(sq_tt, w);
        coef[g * 2 * pairs + pairs + lid] = slope(sq_tr, w);
    }
    sync_cube();
    partial[lid] = value;
    sync_cube();
    if lid == 0 {
        let mut total = 0.0f32;
        for p in 0..pairs {
            total += partial[p];
        }
        mmd[g] = total / f32::cast_from(pairs);
    }
}

/// Backward: one unit per (group, column); dL/dy_t [G, M, D].
#[cube(launch)]
pub fn mmd_backward(
    y_t: &[f32],
    y_r: &[f32],
    coef: &[f32],
    grad_mmd: &[f32],
    grad_y_t: &mut [f32],
    #[comptime] m: usize,
    #[comptime] d: usize,
    #[comptime] groups: usize,
) {
    let index = ((CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * 256 + UNIT_POS) as usize;
    if index >= groups * d {
        terminate!();
    }
    let g = index / d;
    let col = index % d;
    let base = g * m * d + col;
    let pairs = comptime!(m * m);
    let mut a = Array::<f32>::new(m);
    let mut b = Array::<f32>::new(m);
    for j in 0..m {
        a[j] = y_t[base + j * d];
        b[j] = y_r[base + j * d];
    }
    let c = g * 2 * pairs;
    let up = grad_mmd[g] * 2.0f32 / f32::cast_from(pairs);
    for p in 0..m {
        let mut sum = 0.0f32;
        for j in 0..m {
            sum += coef[c + p * m + j] * (a[p] - a[j]) - coef[c + pairs + p * m + j] * (a[p] - b[j]);
        }
        grad_y_t[base + p * d] = up * sum;
    }
}
