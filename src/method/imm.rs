//! The two methods the trainer runs: IMM and the flow-matching baseline, each a loss plus a sampler.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::gaussian;
use crate::method::loss::{GroupTimes, imm_loss};
use crate::method::Method;
use crate::method::precond::{Condition, Precond};
use crate::method::sampler::{Grid, Sampler, pushforward, restart};
use crate::method::schedule::Times;
use crate::networks::Network;
use crate::{Error, Labels, Rng};

/// Inductive Moment Matching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Imm {
    pub precond: Precond,
    pub times: Times,
    /// Particles per group, M.
    pub particles: usize,
    /// Weighting exponent a and logSNR shift b of w(s, t).
    pub a: f64,
    pub b: f64,
    pub sampler: Sampler,
    pub grid: Grid,
}

impl Imm {
    pub fn validate(&self) -> Result<(), Error> {
        self.precond.validate()?;
        self.times.validate()?;
        if self.particles == 0 {
            return Err(Error::new("the number of particles M must be at least 1"));
        }
        if !(self.a.is_finite() && self.b.is_finite()) {
            return Err(Error::new(format!("the weighting's a and b must be finite, got a = {} and b = {}", self.a, self.b)));
        }
        if self.sampler == Sampler::Heun {
            return Err(Error::new("IMM samples with pushforward or restart jumps; heun is flow matching's"));
        }
        Ok(())
    }

    /// One jump of the model from t to s for every row.
    ///
    /// # Shapes
    /// - x_t: [B, D]
    /// - output: [B, D]
    pub fn jump<N: Network>(&self, net: &N, x_t: Tensor<2>, s: f64, t: f64, condition: &Condition) -> Tensor<2> {
        let b = x_t.dims()[0];
        self.precond.f(net, x_t, &vec![s; b], &vec![t; b], condition)
    }

    pub fn timesteps(&self, steps: usize) -> Result<Vec<f64>, Error> {
        self.grid.timesteps(self.precond.schedule, self.times.eps, self.times.t_max, steps)
    }
}

impl Method for Imm {
    fn name(&self) -> &'static str {
        "imm"
    }

    fn check_batch(&self, batch: usize) -> Result<(), Error> {
        if batch % self.particles != 0 {
            return Err(Error::new(format!(
                "the batch ({batch}) must be a multiple of the number of particles M ({})",
                self.particles
            )));
        }
        Ok(())
    }

    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        self.timesteps(steps).map(drop)
    }

    fn sigma_data(&self) -> f64 {
        self.precond.sigma_data
    }

    fn group(&self) -> usize {
        self.particles
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let groups: Vec<GroupTimes> = (0..x.dims()[0] / self.particles)
            .map(|_| {
                let (s, r, t) = self.times.sample(rng);
                GroupTimes { s, r, t }
            })
            .collect();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        imm_loss(net, &self.precond, x, eps, y, &groups, (self.a, self.b)).loss
    }

    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        let ts = self.timesteps(steps)?;
        let mut path = vec![z.clone()];
        let jump = |x, s, t| {
            let y = self.jump(net, x, s, t, condition);
            path.push(y.clone());
            y
        };
        match self.sampler {
            Sampler::Pushforward | Sampler::Heun => drop(pushforward(z, &ts, jump)),
            Sampler::Restart => {
                let like = z.clone();
                drop(restart(z, &ts, self.precond.schedule, jump, |_| gaussian(&like, self.precond.sigma_data, rng)));
            }
        }
        Ok(path)
    }
}
