//! Consistency training (ECT, Geng et al. 2024; iCT, Song & Dhariwal 2024; few-step-methods.md §3)
//! on the IMM network: the one-step map g(x_t, t) = f(x_t; s = 0, t) at two times of one
//! trajectory (the same noise), the nearer one under stop-gradient with the current weights,
//! compared with iCT's pseudo-Huber distance weighted by 1 / (sigma_t - sigma_r). It is IMM with one
//! particle, a distance for the MMD and s = 0 ([IMM] §5, Lemma 1), which loses the MMD's repulsion
//! between particles and, with a squared distance, all but the first moment.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::precond::{Condition, Precond};
use crate::method::sampler::{Grid, restart};
use crate::method::{Method, gaussian};
use crate::networks::Network;
use crate::{Error, Labels, Rng, column};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Consistency {
    pub precond: Precond,
    /// Largest time T, where sampling starts.
    #[serde(rename = "T")]
    pub t_max: f64,
    /// Sampling times of the multistep sampler (jump to the data, re-noise to the next time).
    pub grid: Grid,
    /// EDM noise levels sigma = sigma_d eta_t are log-normal with this mean and std (ECT, iCT).
    pub p_mean: f64,
    pub p_std: f64,
    /// ECT's map to the nearer level: sigma_r = sigma_t (1 - q^-(stage + 1) (1 + 8 sigmoid(-sigma_t))),
    /// the stage counting up every `double_nimg` images, so that the gap halves (q = 2) as training goes.
    pub q: f64,
    pub double_nimg: u64,
    /// The pseudo-Huber constant per square root of the dimension (iCT: 0.00054).
    pub huber: f64,
    /// Images trained so far, which set the stage.
    #[serde(skip)]
    pub nimg: u64,
}

impl Consistency {
    /// ECT's and iCT's settings on `precond` and flow matching's times, with the gap halving eight
    /// times over `total_nimg` (ECT's 3.2 of 25.6 Mimg).
    pub fn on(precond: &Precond, t_max: f64, grid: Grid, total_nimg: u64) -> Self {
        let double_nimg = (total_nimg / 8).max(1);
        Self { precond: precond.clone(), t_max, grid, p_mean: -1.1, p_std: 2.0, q: 2.0, double_nimg, huber: 0.00054, nimg: 0 }
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.precond.validate()?;
        if !(self.t_max > 0.0 && self.t_max < 1.0) {
            return Err(Error::new(format!("consistency training's T must be in (0, 1), got {}", self.t_max)));
        }
        if !(self.p_std > 0.0 && self.p_mean.is_finite() && self.q > 1.0 && self.double_nimg > 0 && self.huber >= 0.0) {
            return Err(Error::new("consistency training needs p_std > 0, a finite p_mean, q > 1, double_nimg > 0 and huber >= 0"));
        }
        Ok(())
    }

    /// sigma = sigma_d eta_t, the EDM noise level of time t.
    fn sigma(&self, t: f64) -> f64 {
        self.precond.sigma_data * self.precond.schedule.eta(t)
    }

    fn time(&self, sigma: f64) -> f64 {
        self.precond.schedule.eta_inv(sigma / self.precond.sigma_data)
    }

    /// (t, r) of one sample: t from the log-normal noise level (at most T), r from ECT's map at
    /// this stage (0 where the map goes below it: the target is then the data itself).
    pub fn sample_times(&self, rng: &mut Rng) -> (f64, f64) {
        let t = self.time((self.p_mean + self.p_std * rng.normal()).exp()).min(self.t_max);
        let sigma_t = self.sigma(t);
        let stage = (self.nimg / self.double_nimg) as i32;
        let shrink = self.q.powi(-(stage + 1)) * (1.0 + 8.0 / (1.0 + sigma_t.exp()));
        (t, self.time((sigma_t * (1.0 - shrink)).max(0.0)))
    }
}

impl Method for Consistency {
    fn name(&self) -> &'static str {
        "ct"
    }

    fn check_batch(&self, _batch: usize) -> Result<(), Error> {
        Ok(())
    }

    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        self.grid.timesteps(self.precond.schedule, 0.0, self.t_max, steps).map(drop)
    }

    fn sigma_data(&self) -> f64 {
        self.precond.sigma_data
    }

    fn at_nimg(&mut self, nimg: u64) {
        self.nimg = nimg;
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let [b, d] = x.dims();
        let (t, r): (Vec<f64>, Vec<f64>) = (0..b).map(|_| self.sample_times(rng)).unzip();
        let eps = gaussian(&x, self.precond.sigma_data, rng);
        let schedule = self.precond.schedule;
        let (x_t, x_r) = (schedule.interpolate(x.clone(), eps.clone(), &t), schedule.interpolate(x, eps, &r));
        let condition = Condition::labels(y.cloned());
        let zero = vec![0.0; b];
        let g_t = self.precond.f(net, x_t, &zero, &t, &condition);
        // At r = 0, f(x_0; 0, 0) is x_0 itself: the boundary condition holds by construction.
        let g_r = self.precond.f(&net.target(), x_r.inner(), &zero, &r, &condition);
        let c = self.huber * (d as f64).sqrt();
        let distance = ((g_t - g_r.detach()).square().sum_dim(1).add_scalar((c * c) as f32)).sqrt().sub_scalar(c as f32);
        let weight: Vec<f64> = t.iter().zip(&r).map(|(&t, &r)| 1.0 / (self.sigma(t) - self.sigma(r))).collect();
        let device = distance.device();
        (distance * column(&weight, &device)).mean()
    }

    /// Jumps to the data from each time and re-noises to the next (the consistency models'
    /// multistep sampler, which is IMM's restart sampler with s = 0).
    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        let ts = self.grid.timesteps(self.precond.schedule, 0.0, self.t_max, steps)?;
        let mut path = vec![z.clone()];
        let like = z.clone();
        let jump = |x: Tensor<2>, s: f64, t: f64| {
            let b = x.dims()[0];
            let y = self.precond.f(net, x, &vec![s; b], &vec![t; b], condition);
            path.push(y.clone());
            y
        };
        drop(restart(z, &ts, self.precond.schedule, jump, |_| gaussian(&like, self.precond.sigma_data, rng)));
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::precond::{Parameterization, TimeInput};
    use crate::method::schedule::Schedule;

    /// ECT's gap: at the first stage small noise levels map to r = 0 (the data), and each stage
    /// halves the gap.
    #[test]
    fn the_gap_halves_stage_by_stage() {
        let precond = Precond { schedule: Schedule::OtFm, parameterization: Parameterization::EulerFm, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 };
        let mut method = Consistency::on(&precond, 0.994, Grid::Uniform, 8000);
        let gaps = |method: &Consistency| -> Vec<f64> {
            let mut rng = Rng::new(2);
            (0..2000).map(|_| method.sample_times(&mut rng)).map(|(t, r)| (method.sigma(t) - method.sigma(r)) / method.sigma(t)).collect()
        };
        let first = gaps(&method);
        assert!(first.iter().all(|&g| g > 0.0 && g <= 1.0));
        assert!(first.iter().filter(|&&g| g == 1.0).count() > 100, "small levels target the data");
        method.at_nimg(3000);
        let later = gaps(&method);
        let (mean_first, mean_later) = (first.iter().sum::<f64>(), later.iter().sum::<f64>());
        assert!(mean_later < 0.3 * mean_first && later.iter().all(|&g| g > 0.0), "three stages on: {mean_first} -> {mean_later}");
    }
}
