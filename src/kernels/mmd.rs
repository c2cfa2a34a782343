//! IMM's grouped MMD: [`mmd_reference`] in plain burn tensor ops, and [`mmd`], which runs the
//! fused GPU kernels of `mmd_gpu.rs` on cubecl devices and the reference elsewhere.

use burn::tensor::Tensor;

#[cfg(feature = "gpu")]
pub use super::mmd_gpu::{Comparison, FusedMmd, comparison, mmd_with};
#[cfg(feature = "gpu")]
use super::{Kernels, kernels_for};

/// Bytes of the reference's [G, M, M, D] intermediates per launch in [`mmd_reference_chunked`].
pub const REFERENCE_CHUNK_BYTES: usize = 64 << 20;

/// The reference over a few groups at a time (groups are independent), so that its [G, M, M, D]
/// intermediates stay within wgpu's buffer limits: at the paper's batch (G = 1024, M = 4,
/// D = 3072) one is 201 MB, over lavapipe's 128 MiB.
///
/// # Shapes
/// - y_t, y_r: [G, M, D]; kernel_scale: [G]; output: [G]
pub fn mmd_reference_chunked(y_t: Tensor<3>, y_r: Tensor<3>, kernel_scale: Tensor<1>) -> Tensor<1> {
    let [groups, m, d] = y_t.dims();
    let chunk = (REFERENCE_CHUNK_BYTES / (m * m * d * size_of::<f32>())).max(1);
    let parts = (0..groups)
        .step_by(chunk)
        .map(|start| {
            let n = chunk.min(groups - start);
            mmd_reference(
                y_t.clone().narrow(0, start, n),
                y_r.clone().narrow(0, start, n),
                kernel_scale.clone().narrow(0, start, n),
            )
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// `count` random shapes [G, M, D] for tests (M cycling through 1..=16, D up to `max_dim` and
/// mostly not a multiple of 4 or of the tile), after fixed edge cases: M = 1, D = 1, D a tile and
/// one past it, M = 16.
pub fn test_shapes(seed: u64, count: usize, max_dim: usize) -> Vec<[usize; 3]> {
    let mut rng = crate::Rng::new(seed);
    let fixed = [[1, 1, 1], [2, 2, 1], [3, 4, 64], [5, 4, 65], [1, 16, 257], [70, 4, 7]];
    let random = (0..count).map(|i| {
        let g = 1 + (rng.next_u64() % 4) as usize;
        [g, 1 + i % 16, 1 + (rng.next_u64() % max_dim as u64) as usize]
    });
    fixed.into_iter().filter(|s| s[2] <= max_dim).chain(random.collect::<Vec<_>>()).collect()
}

/// max |ours - reference| / max |reference| (0 when both are zero; NaN anywhere gives infinity).
pub fn relative_error(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    if ours.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let err = ours.iter().zip(reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    if err == 0.0 { 0.0 } else { err / scale }
}


/// exp(z) - 1 for z <= 0, exact near 0 where exp(z) - 1 cancels (burn has no expm1): the MMD is
/// a small difference of kernel values close to 1, so it is summed from k - 1.
fn expm1<const D: usize>(z: Tensor<D>) -> Tensor<D> {
    let near_zero = z.clone().greater_elem(-0.5);
    let zs = z.clone().clamp(-0.5, 0.0);
    // Taylor series in Horner form, z (1 + z/2 (1 + z/3 (...))), error below 1e-8 for |z| <= 0.5.
    let mut p = zs.ones_like();
    for n in (2..=10).rev() {
        p = (zs.clone() * p).div_scalar(n as f32).add_scalar(1.0);
    }
    (z.exp().sub_scalar(1.0)).mask_where(near_zero, zs * p)
}

/// Pairwise distances within each group, clamped as sqrt(max(||a - b||^2, 1e-8)) so that the
/// diagonal has a zero (not NaN) gradient.
///
/// # Shapes
/// - a, b: [G, M, D]
/// - output: [G, M, M]
fn distances(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    let [g, m, d] = a.dims();
    let diff = a.reshape([g, m, 1, d]) - b.reshape([g, 1, m, d]);
    diff.square().sum_dim(3).reshape([g, m, m]).clamp_min(1e-8).sqrt()
}

/// Per-group MMD^2 as a V-statistic (diagonal included) with k(a, b) = exp(-w ||a - b|| / D),
/// differentiable in y_t; y_r is the stop-gradient target. Runs the fused kernels on cubecl
/// devices (WGSL on wgpu, CubeCL on CUDA/ROCm; f32, M <= 16) and `mmd_reference` elsewhere.
///
/// # Shapes
/// - y_t, y_r: [G, M, D]
/// - kernel_scale: [G], w = 1 / |c_out(s, t)| of the group
/// - output: [G]
pub fn mmd(y_t: Tensor<3>, y_r: Tensor<3>, kernel_scale: Tensor<1>) -> Tensor<1> {
    #[cfg(feature = "gpu")]
    if let Some(kernels @ (Kernels::Wgsl | Kernels::CubeCl)) = kernels_for(&y_t.device(), y_t.dtype())
        && y_t.dims()[1] <= 16
    {
        return mmd_with(y_t, y_r, kernel_scale, kernels);
    }
    mmd_reference(y_t, y_r.detach(), kernel_scale)
}

/// `mmd` in plain burn tensor ops.
///
/// # Shapes
/// - y_t, y_r: [G, M, D]
/// - kernel_scale: [G]
/// - output: [G]
pub fn mmd_reference(y_t: Tensor<3>, y_r: Tensor<3>, kernel_scale: Tensor<1>) -> Tensor<1> {
    let [g, _, d] = y_t.dims();
    let scale = kernel_scale.reshape([g, 1, 1]).div_scalar(-(d as f32));
    let mean_k_minus_1 =
        |a: Tensor<3>, b: Tensor<3>| expm1(distances(a, b) * scale.clone()).mean_dims(&[1, 2]).reshape([g]);
    mean_k_minus_1(y_t.clone(), y_t.clone()) + mean_k_minus_1(y_r.clone(), y_r.clone())
        - mean_k_minus_1(y_t, y_r).mul_scalar(2.0)
}
