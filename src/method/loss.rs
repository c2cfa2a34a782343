//! Training losses: IMM's loss, a weighted grouped Laplace-kernel MMD ([P] §4.1, Eq. 12, App.
//! C.4/C.8/C.9; the MMD itself is [`crate::kernels::mmd::mmd`]), and the conditional
//! flow-matching baseline.

use burn::tensor::Tensor;

use crate::kernels::mmd::mmd;
use crate::method::precond::{Condition, Precond};
use crate::method::schedule::weight;
use crate::networks::Network;
use crate::{Labels, column, row};

/// One group's times, shared by its M particles: s <= r < t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupTimes {
    pub s: f64,
    pub r: f64,
    pub t: f64,
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
/// under stop-gradient ([P] §4.1, Alg. 1). Both passes see the same labels y.
///
/// # Shapes
/// - x, eps: [B, D] with B a multiple of groups.len(); y: B labels
pub fn imm_loss<N: Network>(
    net: &N,
    precond: &Precond,
    x: Tensor<2>,
    eps: Tensor<2>,
    y: Option<&Labels>,
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

    let condition = Condition::labels(y.cloned());
    let y_t = precond.f(net, x_t, &s, &t, &condition);
    let y_r = precond.f(&net.target(), x_r.inner(), &s, &r, &condition);

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
/// - x, eps: [B, D]; t, y: B values
/// - output: [1]
pub fn fm_loss<N: Network>(net: &N, precond: &Precond, x: Tensor<2>, eps: Tensor<2>, y: Option<&Labels>, t: &[f64]) -> Tensor<1> {
    let schedule = precond.schedule;
    let device = x.device();
    let (d_alpha, d_sigma): (Vec<f64>, Vec<f64>) = t.iter().map(|&t| schedule.d_alpha_sigma(t)).unzip();
    let velocity = x.clone() * column(&d_alpha, &device) + eps.clone() * column(&d_sigma, &device);
    let x_t = schedule.interpolate(x, eps, t);
    let predicted = precond.g_raw(net, x_t, t, t, y).mul_scalar(precond.sigma_data as f32);
    (predicted - velocity).square().mean()
}
