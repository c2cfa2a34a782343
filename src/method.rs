//! The two methods the trainer runs: IMM and the flow-matching baseline, each a loss plus a sampler.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::loss::{GroupTimes, fm_loss, imm_loss};
use crate::network::Network;
use crate::precond::Precond;
use crate::sampler::{Grid, Sampler, pushforward, restart};
use crate::schedule::Times;
use crate::trainer::Method;
use crate::{Error, Rng};

/// `n` draws of N(0, std^2 I) shaped like `like`, on its device.
fn gaussian(like: &Tensor<2>, std: f64, rng: &mut Rng) -> Tensor<2> {
    let [b, d] = like.dims();
    Tensor::from_data(TensorData::new(rng.normal_vec(b * d, std), [b, d]), &like.device())
}

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
        Ok(())
    }

    /// One jump of the model from t to s for every row.
    ///
    /// # Shapes
    /// - x_t: [B, D]
    /// - output: [B, D]
    pub fn jump<N: Network>(&self, net: &N, x_t: Tensor<2>, s: f64, t: f64) -> Tensor<2> {
        let b = x_t.dims()[0];
        self.precond.f(net, x_t, &vec![s; b], &vec![t; b])
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

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, rng: &mut Rng) -> Tensor<1> {
        let groups: Vec<GroupTimes> = (0..x.dims()[0] / self.particles)
            .map(|_| {
                let (s, r, t) = self.times.sample(rng);
                GroupTimes { s, r, t }
            })
            .collect();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        imm_loss(net, &self.precond, x, eps, &groups, (self.a, self.b)).loss
    }

    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        let ts = self.timesteps(steps)?;
        let mut path = vec![z.clone()];
        let jump = |x, s, t| {
            let y = self.jump(net, x, s, t);
            path.push(y.clone());
            y
        };
        match self.sampler {
            Sampler::Pushforward => drop(pushforward(z, &ts, jump)),
            Sampler::Restart => {
                let like = z.clone();
                drop(restart(z, &ts, self.precond.schedule, jump, |_| gaussian(&like, self.precond.sigma_data, rng)));
            }
        }
        Ok(path)
    }
}

/// Conditional flow matching with an Euler sampler: the baseline, same network and time range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowMatching {
    pub precond: Precond,
    pub eps: f64,
    #[serde(rename = "T")]
    pub t_max: f64,
    pub grid: Grid,
}

impl FlowMatching {
    pub fn validate(&self) -> Result<(), Error> {
        self.precond.validate()?;
        if !(self.eps >= 0.0 && self.eps < self.t_max && self.t_max <= 1.0) {
            return Err(Error::new(format!(
                "times must satisfy 0 <= eps < T <= 1, got eps = {} and T = {}",
                self.eps, self.t_max
            )));
        }
        Ok(())
    }
}

impl Method for FlowMatching {
    fn name(&self) -> &'static str {
        "fm"
    }

    fn check_batch(&self, _batch: usize) -> Result<(), Error> {
        Ok(())
    }

    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        self.grid.timesteps(self.precond.schedule, self.eps, self.t_max, steps).map(drop)
    }

    fn sigma_data(&self) -> f64 {
        self.precond.sigma_data
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, rng: &mut Rng) -> Tensor<1> {
        let t: Vec<f64> = (0..x.dims()[0]).map(|_| rng.uniform_in(self.eps, self.t_max)).collect();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        fm_loss(net, &self.precond, x, eps, &t)
    }

    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, steps: usize, _rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        let ts = self.grid.timesteps(self.precond.schedule, self.eps, self.t_max, steps)?;
        let sigma_data = self.precond.sigma_data as f32;
        let mut path = vec![z.clone()];
        pushforward(z, &ts, |x, s, t| {
            let b = x.dims()[0];
            let velocity = self.precond.g_raw(net, x.clone(), &vec![t; b], &vec![t; b]).mul_scalar(sigma_data);
            let y = x + velocity.mul_scalar((s - t) as f32);
            path.push(y.clone());
            y
        });
        Ok(path)
    }
}
