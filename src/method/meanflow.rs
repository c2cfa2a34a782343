//! MeanFlow (Geng et al. 2025, few-step-methods.md §1): the network's Euler-FM velocity head read
//! as the mean velocity u(z, r, t) over [r, t], so that z_r = z_t - (t - r) u, regressed per sample
//! onto v - (t - r) du/dt. burn has no forward-mode autodiff; du/dt sits under stop-gradient, so a
//! central difference along the tangent (v, 0, 1) is enough (two more passes, without gradient).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::precond::{Condition, Parameterization, Precond, TimeInput};
use crate::method::sampler::{Grid, uniform_from_one};
use crate::method::{Method, gaussian};
use crate::networks::Network;
use crate::{Error, Labels, Rng, column};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanFlow {
    /// Euler-FM on OT-FM: f(z; s = r, t) = z - (t - r) u.
    pub precond: Precond,
    /// Share of samples with r < t; the others take r = t, which is flow matching.
    pub ratio: f64,
    /// t and r are logit-normal with this mean and std, drawn apart and ordered (the paper's
    /// CIFAR-10 configuration).
    pub time_mu: f64,
    pub time_sigma: f64,
    /// The adaptive weight 1 / (L + c)^p of a sample's summed squared error L.
    pub norm_p: f64,
    pub norm_c: f64,
    /// Step in t of the central difference for du/dt.
    pub fd_step: f64,
}

impl MeanFlow {
    /// The paper's CIFAR-10 settings on a network with `precond`'s sigma_d: time fed unscaled with
    /// the official (t, t - r) pairing. With IMM's 1000 t the time embedding turns a step in t into
    /// a 1000x larger phase step, and a float32 difference cannot be both accurate and free of
    /// round-off (golden README: 2-point at 3e-3 gives du/dt within 1e-4 at scale 1, but no float32
    /// step better than 2e-3 at 1000).
    pub fn on(precond: &Precond) -> Self {
        let precond = Precond { parameterization: Parameterization::EulerFm, time_input: TimeInput::Stride, time_scale: 1.0, ..precond.clone() };
        Self { precond, ratio: 0.75, time_mu: -2.0, time_sigma: 2.0, norm_p: 0.75, norm_c: 1e-3, fd_step: 3e-3 }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.precond.validate()?;
        if self.precond.parameterization != Parameterization::EulerFm {
            return Err(Error::new("MeanFlow reads the network as a velocity: it needs the euler_fm parameterization"));
        }
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(Error::new(format!("MeanFlow's share of r < t samples must be in [0, 1], got {}", self.ratio)));
        }
        let finite = [self.time_mu, self.time_sigma, self.norm_p, self.norm_c].iter().all(|v| v.is_finite());
        if !(finite && self.time_sigma > 0.0 && self.norm_c > 0.0 && self.fd_step > 0.0 && self.fd_step < 0.1) {
            return Err(Error::new("MeanFlow's time std, weight constant c and difference step (below 0.1) must be finite and > 0"));
        }
        Ok(())
    }

    /// (t, r) for one sample: both logit-normal, ordered, and r = t with probability 1 - ratio.
    pub fn sample_times(&self, rng: &mut Rng) -> (f64, f64) {
        let mut draw = || 1.0 / (1.0 + (-(self.time_mu + self.time_sigma * rng.normal())).exp());
        let (a, b) = (draw(), draw());
        let (t, r) = (a.max(b), a.min(b));
        if rng.uniform() < self.ratio { (t, r) } else { (t, t) }
    }
}

/// u(z, r, t) = sigma_d G(c_in(t) z, c_noise(t), c_noise(r or t - r), y).
///
/// # Shapes
/// - z: [B, D]; r, t: B values; y: B labels
/// - output: [B, D]
pub fn mean_velocity<N: Network>(net: &N, precond: &Precond, z: Tensor<2>, r: &[f64], t: &[f64], y: Option<&Labels>) -> Tensor<2> {
    precond.g_raw(net, z, r, t, y).mul_scalar(precond.sigma_data as f32)
}

/// MeanFlow's target v - (t - r) du/dt and du/dt itself, with du/dt the central difference of u
/// along (dz, dr, dt) = (v, 0, 1) with step `h`: both points in one pass of `net` (the
/// stop-gradient network).
///
/// # Shapes
/// - z_t, v: [B, D]; r, t: B values; y: B labels
/// - output: ([B, D], [B, D])
pub fn meanflow_target<N: Network>(net: &N, precond: &Precond, z_t: Tensor<2>, v: Tensor<2>, r: &[f64], t: &[f64], y: Option<&Labels>, h: f64) -> (Tensor<2>, Tensor<2>) {
    let step = v.clone().mul_scalar(h as f32);
    let z = Tensor::cat(vec![z_t.clone() + step.clone(), z_t - step], 0);
    let times: Vec<f64> = t.iter().map(|t| t + h).chain(t.iter().map(|t| t - h)).collect();
    let both = y.map(|y| y.concat(y));
    let u = mean_velocity(net, precond, z, &[r, r].concat(), &times, both.as_ref());
    let [up, down]: [Tensor<2>; 2] = u.chunk(2, 0).try_into().expect("two halves");
    let dudt = (up - down).div_scalar((2.0 * h) as f32);
    let gap: Vec<f64> = t.iter().zip(r).map(|(t, r)| t - r).collect();
    let u_tgt = v - dudt.clone() * column(&gap, &dudt.device());
    (dudt, u_tgt)
}

/// The MeanFlow loss and its parts.
pub struct MeanFlowTerms {
    /// mean over samples of w_i L_i: [1]
    pub loss: Tensor<1>,
    /// L_i, the sum over a sample's values of (u - u_tgt)^2: [B]
    pub per_sample: Tensor<1>,
    /// w_i = 1 / (L_i + c)^p, under stop-gradient: [B]
    pub weight: Tensor<1>,
}

/// The adaptively weighted regression of u(z_t, r, t) onto a target under stop-gradient.
///
/// # Shapes
/// - z_t, u_tgt: [B, D]; r, t: B values; y: B labels
pub fn meanflow_loss<N: Network>(net: &N, precond: &Precond, z_t: Tensor<2>, r: &[f64], t: &[f64], y: Option<&Labels>, u_tgt: Tensor<2>, (p, c): (f64, f64)) -> MeanFlowTerms {
    let u = mean_velocity(net, precond, z_t, r, t, y);
    let b = u.dims()[0];
    let per_sample = (u - u_tgt.detach()).square().sum_dim(1).reshape([b]);
    let weight = per_sample.clone().detach().add_scalar(c as f32).powf_scalar(-p as f32);
    let loss = (per_sample.clone() * weight.clone()).mean();
    MeanFlowTerms { loss, per_sample, weight }
}

impl Method for MeanFlow {
    fn name(&self) -> &'static str {
        "meanflow"
    }

    fn check_batch(&self, _batch: usize) -> Result<(), Error> {
        Ok(())
    }

    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        Grid::Uniform.timesteps(self.precond.schedule, 0.0, 1.0, steps).map(drop)
    }

    fn sigma_data(&self) -> f64 {
        self.precond.sigma_data
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let (t, r): (Vec<f64>, Vec<f64>) = (0..x.dims()[0]).map(|_| self.sample_times(rng)).unzip();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        let schedule = self.precond.schedule;
        let z_t = schedule.interpolate(x.clone(), eps.clone(), &t);
        let target = net.target();
        let (_, u_tgt) = meanflow_target(&target, &self.precond, z_t.clone().inner(), (eps - x).inner(), &r, &t, y, self.fd_step);
        meanflow_loss(net, &self.precond, z_t, &r, &t, y, u_tgt, (self.norm_p, self.norm_c)).loss
    }

    /// Uniform steps from t = 1 to 0: z <- z - (t_i - t_(i+1)) u(z, t_(i+1), t_i).
    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, _rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        uniform_from_one(&self.precond, net, z, condition, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::schedule::Schedule;

    #[test]
    fn times_are_ordered_and_a_quarter_are_flow_matching() {
        let precond = Precond { schedule: Schedule::OtFm, parameterization: Parameterization::EulerFm, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 };
        let method = MeanFlow::on(&precond);
        assert_eq!((method.precond.time_input, method.precond.time_scale), (TimeInput::Stride, 1.0));
        let mut rng = Rng::new(1);
        let times: Vec<(f64, f64)> = (0..4000).map(|_| method.sample_times(&mut rng)).collect();
        assert!(times.iter().all(|&(t, r)| 0.0 < r && r <= t && t < 1.0));
        let same = times.iter().filter(|(t, r)| t == r).count() as f64 / times.len() as f64;
        assert!((same - 0.25).abs() < 0.03, "share of r = t: {same}");
        let mut bad = method.clone();
        bad.precond.parameterization = Parameterization::SimpleEdm;
        assert!(bad.validate().unwrap_err().0.contains("euler_fm"));
    }
}
