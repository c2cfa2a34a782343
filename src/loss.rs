//! Training losses: IMM's grouped Laplace-kernel MMD ([P] §4.1, Eq. 12, App. C.4/C.8/C.9) and the
//! conditional flow-matching baseline. `mmd_reference` is plain burn tensor ops, the reference for
//! the fused kernels of `fused.rs`; `mmd` picks between them by device.

use burn::tensor::Tensor;

use crate::network::Network;
use crate::precond::Precond;
use crate::schedule::weight;
use crate::{column, row};

/// One group's times, shared by its M particles: s <= r < t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupTimes {
    pub s: f64,
    pub r: f64,
    pub t: f64,
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
    let [_, m, _] = y_t.dims();
    match crate::fused::kernels_for(&y_t.device(), y_t.dtype()) {
        Some(kernels) if m <= 16 => crate::fused::mmd_with(y_t, y_r, kernel_scale, kernels),
        _ => mmd_reference(y_t, y_r.detach(), kernel_scale),
    }
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

/// The IMM loss and its parts.
pub struct ImmTerms {
    /// mean over groups of w * MMD^2: [1]
    pub loss: Tensor<1>,
    /// per-group MMD^2: [G]
    pub mmd: Tensor<1>,
    /// per-group weight w(s, t)
    pub weight: Vec<f64>,
    /// per-group kernel scale 1/|c_out(s, t)|
    pub kernel_scale: Vec<f64>,
}

/// The IMM loss on one batch: groups of M = B / G contiguous particles share (s, r, t); each has its
/// own x and eps; x_r = alpha_r x + sigma_r eps reuses eps; the target pass uses the current weights
/// under stop-gradient ([P] §4.1, Alg. 1).
///
/// # Shapes
/// - x, eps: [B, D] with B a multiple of groups.len()
pub fn imm_loss<N: Network>(
    net: &N,
    precond: &Precond,
    x: Tensor<2>,
    eps: Tensor<2>,
    groups: &[GroupTimes],
    (a, b): (f64, f64),
) -> ImmTerms {
    let [batch, d] = x.dims();
    let (g, m) = (groups.len(), batch / groups.len());
    let per_particle = |f: fn(&GroupTimes) -> f64| -> Vec<f64> {
        groups.iter().flat_map(|gr| std::iter::repeat_n(f(gr), m)).collect()
    };
    let (s, r, t) = (per_particle(|g| g.s), per_particle(|g| g.r), per_particle(|g| g.t));
    let schedule = precond.schedule;
    let x_t = schedule.interpolate(x.clone(), eps.clone(), &t);
    let x_r = schedule.interpolate(x, eps, &r);

    let y_t = precond.f(net, x_t, &s, &t);
    let y_r = precond.f(&net.target(), x_r.inner(), &s, &r);

    let kernel_scale: Vec<f64> = groups.iter().map(|gr| precond.kernel_scale(gr.s, gr.t)).collect();
    let weight: Vec<f64> = groups.iter().map(|gr| weight(schedule, gr.t, a, b)).collect();
    let device = y_t.device();
    let mmd = mmd(y_t.reshape([g, m, d]), y_r.reshape([g, m, d]), row(&kernel_scale, &device));
    let loss = (mmd.clone() * row(&weight, &device)).mean();
    ImmTerms { loss, mmd, weight, kernel_scale }
}

/// Conditional flow matching: sigma_d G(c_in x_t, t, t) regresses the velocity alpha'_t x + sigma'_t eps.
/// The second time input is t itself, the limit s -> t of IMM's jump f_{s,t}.
///
/// # Shapes
/// - x, eps: [B, D]; t: B values
/// - output: [1]
pub fn fm_loss<N: Network>(net: &N, precond: &Precond, x: Tensor<2>, eps: Tensor<2>, t: &[f64]) -> Tensor<1> {
    let schedule = precond.schedule;
    let device = x.device();
    let (d_alpha, d_sigma): (Vec<f64>, Vec<f64>) = t.iter().map(|&t| schedule.d_alpha_sigma(t)).unzip();
    let velocity = x.clone() * column(&d_alpha, &device) + eps.clone() * column(&d_sigma, &device);
    let x_t = schedule.interpolate(x, eps, t);
    let predicted = precond.g_raw(net, x_t, t, t).mul_scalar(precond.sigma_data as f32);
    (predicted - velocity).square().mean()
}
