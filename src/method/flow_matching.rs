//! Conditional flow matching with Euler or Heun steps: the baseline the trainer runs beside IMM.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::loss::fm_loss;
use crate::method::precond::{Condition, Precond};
use crate::method::sampler::{Grid, Sampler, pushforward};
use crate::method::{Method, gaussian};
use crate::networks::Network;
use crate::{Error, Labels, Rng};

/// Conditional flow matching: the baseline, same network and time range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowMatching {
    pub precond: Precond,
    pub eps: f64,
    #[serde(rename = "T")]
    pub t_max: f64,
    pub grid: Grid,
    /// Euler steps (pushforward, the default of cards written before Heun) or Heun's.
    #[serde(default = "euler")]
    pub sampler: Sampler,
}

fn euler() -> Sampler {
    Sampler::Pushforward
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
        if self.sampler == Sampler::Restart {
            return Err(Error::new("flow matching samples with euler (pushforward) or heun steps, not restart"));
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

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let t: Vec<f64> = (0..x.dims()[0]).map(|_| rng.uniform_in(self.eps, self.t_max)).collect();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        fm_loss(net, &self.precond, x, eps, y, &t)
    }

    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, _rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        let ts = self.grid.timesteps(self.precond.schedule, self.eps, self.t_max, steps)?;
        let sigma_data = self.precond.sigma_data as f32;
        let mut path = vec![z.clone()];
        let velocity = |x: Tensor<2>, t: f64| {
            let b = x.dims()[0];
            self.precond.g(net, x, &vec![t; b], &vec![t; b], condition).mul_scalar(sigma_data)
        };
        pushforward(z, &ts, |x, s, t| {
            let v = velocity(x.clone(), t);
            let euler = x.clone() + v.clone().mul_scalar((s - t) as f32);
            let y = match self.sampler {
                Sampler::Heun => x + (v + velocity(euler, s)).mul_scalar(((s - t) / 2.0) as f32),
                _ => euler,
            };
            path.push(y.clone());
            y
        });
        Ok(path)
    }
}
