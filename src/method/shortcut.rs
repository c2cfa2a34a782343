//! Shortcut models (Frans et al. 2024, few-step-methods.md §2) on the IMM network: the Euler-FM
//! velocity u(x_t, t - d, t) of a step of size d (the network's second input is the stride d), trained
//! by flow matching at d = 0 and, on one row in `bootstrap_every`, by self-consistency: one step of
//! size d matches two of size d/2. Time runs as in IMM (t = 1 is noise).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::precond::{Condition, Parameterization, Precond, TimeInput};
use crate::method::sampler::uniform_from_one;
use crate::method::{Method, gaussian};
use crate::networks::Network;
use crate::{Error, Labels, Rng, column};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shortcut {
    /// Euler-FM with the stride input: f(x; s, t) = x - (t - s) u, u conditioned on t and d = t - s.
    pub precond: Precond,
    /// One row in this many trains self-consistency (the official 8); the others flow matching.
    pub bootstrap_every: usize,
    /// Self-consistency trains the step sizes 1, 1/2, ..., 2^-(levels - 1) (the official 7 levels:
    /// down to 1/64, whose halves are the 1/128 of 128-step sampling).
    pub levels: u32,
}

impl Shortcut {
    /// The official settings on `precond`'s network, with the stride as its second input.
    pub fn on(precond: &Precond) -> Self {
        let precond = Precond { parameterization: Parameterization::EulerFm, time_input: TimeInput::Stride, ..precond.clone() };
        Self { precond, bootstrap_every: 8, levels: 7 }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.precond.validate()?;
        if self.precond.parameterization != Parameterization::EulerFm || self.precond.time_input != TimeInput::Stride {
            return Err(Error::new("shortcut models need the euler_fm parameterization with the stride as the second time input"));
        }
        if self.bootstrap_every < 2 || !(1..=16).contains(&self.levels) {
            return Err(Error::new("shortcut models need bootstrap_every >= 2 and 1 to 16 step-size levels"));
        }
        Ok(())
    }

    /// u(x, s, t) = sigma_d G(c_in(t) x, c_noise(t), c_noise(t - s)).
    ///
    /// # Shapes
    /// - x: [B, D]; s, t, y: B values
    /// - output: [B, D]
    fn velocity<N: Network>(&self, net: &N, x: Tensor<2>, s: &[f64], t: &[f64], y: Option<&Labels>) -> Tensor<2> {
        self.precond.g_raw(net, x, s, t, y).mul_scalar(self.precond.sigma_data as f32)
    }

    /// The self-consistency target of steps of size `d` from `t`: the mean velocity of two half
    /// steps of the stop-gradient network `net`.
    ///
    /// # Shapes
    /// - x_t: [B, D]; d, t, y: B values
    /// - output: [B, D]
    fn two_halves<N: Network>(&self, net: &N, x_t: Tensor<2>, d: &[f64], t: &[f64], y: Option<&Labels>) -> Tensor<2> {
        let mid: Vec<f64> = t.iter().zip(d).map(|(t, d)| t - d / 2.0).collect();
        let end: Vec<f64> = t.iter().zip(d).map(|(t, d)| t - d).collect();
        let first = self.velocity(net, x_t.clone(), &mid, t, y);
        let half: Vec<f64> = d.iter().map(|d| d / 2.0).collect();
        let x_mid = x_t - first.clone() * column(&half, &first.device());
        let second = self.velocity(net, x_mid, &end, &mid, y);
        (first + second).mul_scalar(0.5)
    }
}

impl Method for Shortcut {
    fn name(&self) -> &'static str {
        "shortcut"
    }

    fn check_batch(&self, batch: usize) -> Result<(), Error> {
        if batch < self.bootstrap_every {
            return Err(Error::new(format!("shortcut models need a batch of at least {} (one self-consistency row per {})", self.bootstrap_every, self.bootstrap_every)));
        }
        Ok(())
    }

    /// Only the trained step sizes: powers of two up to 2^levels steps.
    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        if !steps.is_power_of_two() || steps > 1 << self.levels {
            return Err(Error::new(format!("a shortcut model samples in 1, 2, 4, ... or {} steps (its trained step sizes), not {steps}", 1 << self.levels)));
        }
        Ok(())
    }

    fn sigma_data(&self) -> f64 {
        self.precond.sigma_data
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let b = x.dims()[0];
        let bootstrap = b / self.bootstrap_every;
        let flow = b - bootstrap;
        // Flow matching rows first, at d = 0 (s = t); then self-consistency rows, the levels spread
        // evenly over them, each t a multiple of its d.
        let mut t: Vec<f64> = (0..flow).map(|_| rng.uniform_in(0.0, 1.0)).collect();
        let d: Vec<f64> = (0..bootstrap).map(|i| 0.5f64.powi((i % self.levels as usize) as i32)).collect();
        t.extend(d.iter().map(|&d| d * (1 + rng.below((1.0 / d).round() as usize)) as f64));
        let s: Vec<f64> = t.iter().enumerate().map(|(i, &t)| if i < flow { t } else { t - d[i - flow] }).collect();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        let x_t = self.precond.schedule.interpolate(x.clone(), eps.clone(), &t);
        let v = (eps - x).narrow(0, 0, flow).inner();
        let mut targets = vec![v];
        if bootstrap > 0 {
            let y = y.map(|y| y.slice(flow, b));
            targets.push(self.two_halves(&net.target(), x_t.clone().narrow(0, flow, bootstrap).inner(), &d, &t[flow..], y.as_ref()));
        }
        let target = Tensor::cat(targets, 0);
        (self.velocity(net, x_t, &s, &t, y) - target.detach()).square().mean()
    }

    /// 2^k uniform steps from t = 1 to 0: x <- x - d u(x, t - d, t).
    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, _rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        self.check_steps(steps)?;
        uniform_from_one(&self.precond, net, z, condition, steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::schedule::Schedule;

    #[test]
    fn only_trained_step_sizes_sample() {
        let precond = Precond { schedule: Schedule::OtFm, parameterization: Parameterization::EulerFm, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 };
        let method = Shortcut::on(&precond);
        assert_eq!(method.precond.time_input, TimeInput::Stride);
        assert!([1, 2, 4, 8, 128].iter().all(|&k| method.check_steps(k).is_ok()));
        assert!([3, 6, 256].iter().all(|&k| method.check_steps(k).is_err()));
        assert!(method.check_batch(7).is_err() && method.check_batch(8).is_ok());
    }
}
