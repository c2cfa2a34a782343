//! Few-step samplers ([P] §4.3, Alg. 2 and 5) and their time grids.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::method::precond::{Condition, Precond};
use crate::method::schedule::Schedule;
use crate::networks::Network;

/// Which few-step sampler a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_family = "wasm"), derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Deterministic chain of jumps t_i -> t_{i+1} ([P] Alg. 2); for flow matching, Euler steps.
    #[cfg_attr(not(target_family = "wasm"), value(alias = "euler"))]
    #[serde(alias = "euler")]
    Pushforward,
    /// IMM: jump to the end, re-noise to the next time ([P] Alg. 5).
    Restart,
    /// Flow matching: Heun's second-order steps, two network evaluations per step.
    Heun,
}

/// How the sampling times between T and eps are spaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grid {
    /// Uniform in t.
    Uniform,
    /// EDM's spacing in eta ([P] Eq. 118): eta_i = (eta_max^(1/rho) + i/N (eta_min^(1/rho) - eta_max^(1/rho)))^rho.
    Edm { rho: f64 },
    /// Explicit intermediate etas, highest first: N - 1 values for N steps (CIFAR-10's 2 steps: [1.4]).
    Eta(Vec<f64>),
}

impl Grid {
    /// Parses `uniform`, `edm` (rho = 7) or `eta:1.4,0.5` (explicit intermediate etas).
    pub fn parse(text: &str) -> Result<Grid, Error> {
        match text {
            "uniform" => Ok(Grid::Uniform),
            "edm" => Ok(Grid::Edm { rho: 7.0 }),
            _ => match text.strip_prefix("eta:") {
                Some(list) => list
                    .split(',')
                    .map(|v| v.trim().parse::<f64>().ok().filter(|v| *v > 0.0))
                    .collect::<Option<Vec<f64>>>()
                    .map(Grid::Eta)
                    .ok_or_else(|| Error::new(format!("'{list}' is not a list of positive etas"))),
                None => Err(Error::new(format!("unknown grid '{text}'; use uniform, edm or eta:V1,V2,..."))),
            },
        }
    }

    /// The N + 1 times T = t_0 > t_1 > ... > t_N = eps of an N-step sampler.
    pub fn timesteps(&self, schedule: Schedule, eps: f64, t_max: f64, steps: usize) -> Result<Vec<f64>, Error> {
        if steps == 0 {
            return Err(Error::new("the number of sampling steps must be at least 1"));
        }
        let n = steps as f64;
        let inner: Vec<f64> = match self {
            Grid::Uniform => (1..steps).map(|i| t_max + (eps - t_max) * i as f64 / n).collect(),
            Grid::Edm { rho } => {
                let (lo, hi) = (schedule.eta(eps).powf(1.0 / rho), schedule.eta(t_max).powf(1.0 / rho));
                (1..steps).map(|i| schedule.eta_inv((hi + i as f64 / n * (lo - hi)).powf(*rho))).collect()
            }
            Grid::Eta(etas) => {
                if etas.len() + 1 != steps {
                    return Err(Error::new(format!(
                        "the eta grid {etas:?} gives {} steps, not {steps}",
                        etas.len() + 1
                    )));
                }
                etas.iter().map(|&eta| schedule.eta_inv(eta)).collect()
            }
        };
        let ts: Vec<f64> = std::iter::once(t_max).chain(inner).chain(std::iter::once(eps)).collect();
        if ts.windows(2).any(|w| !(w[0] > w[1])) {
            return Err(Error::new(format!("sampling times must decrease strictly from T to eps, got {ts:?}")));
        }
        Ok(ts)
    }
}

/// Pushforward sampling: x_{t_{i+1}} = jump(x_{t_i}, s = t_{i+1}, t = t_i) along decreasing `ts`.
///
/// # Shapes
/// - z: [B, D] at time ts[0]
/// - output: [B, D] at time ts[N]
pub fn pushforward(z: Tensor<2>, ts: &[f64], mut jump: impl FnMut(Tensor<2>, f64, f64) -> Tensor<2>) -> Tensor<2> {
    ts.windows(2).fold(z, |x, w| jump(x, w[1], w[0]))
}

/// Pushforward with `precond`'s map f along `steps` uniform steps from t = 1 to 0 (MeanFlow's and
/// shortcut models' sampler): z and the state after each step.
///
/// # Shapes
/// - z: [B, D]; condition: B labels or none
/// - output: N + 1 of [B, D]
pub fn uniform_from_one<N: Network>(precond: &Precond, net: &N, z: Tensor<2>, condition: &Condition, steps: usize) -> Result<Vec<Tensor<2>>, Error> {
    let ts = Grid::Uniform.timesteps(precond.schedule, 0.0, 1.0, steps)?;
    let mut path = vec![z.clone()];
    pushforward(z, &ts, |x, s, t| {
        let b = x.dims()[0];
        let y = precond.f(net, x, &vec![s; b], &vec![t; b], condition);
        path.push(y.clone());
        y
    });
    Ok(path)
}

/// Restart sampling: from each t_i jump straight to the last time, then re-noise to t_{i+1} with
/// fresh noise `noise(i)` ~ N(0, sigma_d^2 I), through the interpolant.
///
/// # Shapes
/// - z: [B, D] at time ts[0]; noise(i): [B, D]
/// - output: [B, D] at time ts[N]
pub fn restart(
    z: Tensor<2>,
    ts: &[f64],
    schedule: Schedule,
    mut jump: impl FnMut(Tensor<2>, f64, f64) -> Tensor<2>,
    mut noise: impl FnMut(usize) -> Tensor<2>,
) -> Tensor<2> {
    let (end, steps) = (ts[ts.len() - 1], ts.len() - 1);
    let mut x = z;
    for i in 0..steps {
        let x_end = jump(x, end, ts[i]);
        if i + 1 == steps {
            return x_end;
        }
        let t = ts[i + 1];
        x = x_end.mul_scalar(schedule.alpha(t) as f32) + noise(i).mul_scalar(schedule.sigma(t) as f32);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn restart_jumps_to_the_end_and_renoises_through_the_interpolant() {
        // A perfect model of a single point x0: every jump is the DDIM interpolant towards x0.
        let device = Device::flex();
        let col = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [3, 1]), &device);
        let (x0, z) = (vec![0.3f32, -0.2, 0.7], vec![1.0f32, -0.5, 0.25]);
        let schedule = Schedule::OtFm;
        let ts = [0.9, 0.6, 0.3, 0.0];
        let mut seen = Vec::new();
        let out = restart(
            col(z.clone()),
            &ts,
            schedule,
            |x, s, t| {
                seen.push((t, x.clone().into_data().try_to_vec::<f32>().unwrap()));
                schedule.ddim(x, col(x0.clone()), &[t; 3], &[s; 3])
            },
            |i| col(vec![i as f32 + 1.0; 3]),
        );
        let values = out.into_data().try_to_vec::<f32>().unwrap();
        assert!(values.iter().zip(&x0).all(|(a, b)| (a - b).abs() < 1e-6), "{values:?}");
        assert_eq!(seen.len(), 3, "one network call per step");
        for (i, (t, x)) in seen.iter().enumerate().skip(1) {
            assert_eq!(*t, ts[i]);
            let noise = i as f32;
            for (xv, x0v) in x.iter().zip(&x0) {
                let want = schedule.alpha(ts[i]) as f32 * x0v + schedule.sigma(ts[i]) as f32 * noise;
                assert!((xv - want).abs() < 1e-6, "re-noised state at t_{i}");
            }
        }
        let chain = pushforward(col(z), &ts, |x, s, t| schedule.ddim(x, col(x0.clone()), &[t; 3], &[s; 3]));
        let chain = chain.into_data().try_to_vec::<f32>().unwrap();
        assert!(chain.iter().zip(&x0).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn grids_match_the_notes() {
        let fm = Schedule::OtFm;
        let close = |a: &[f64], b: &[f64], tol: f64| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol);
        let u = Grid::Uniform.timesteps(fm, 0.0, 0.994, 4).unwrap();
        assert!(close(&u, &[0.994, 0.7455, 0.497, 0.2485, 0.0], 1e-12), "{u:?}");
        let e = Grid::Edm { rho: 7.0 }.timesteps(fm, 0.0, 0.994, 4).unwrap();
        assert!(close(&e, &[0.994, 0.9567, 0.5641, 0.0100, 0.0], 1e-4), "{e:?}");
        let e8 = Grid::Edm { rho: 7.0 }.timesteps(fm, 0.0, 0.994, 8).unwrap();
        let want = [0.994, 0.9849, 0.9567, 0.8606, 0.5641, 0.1473, 0.0100, 8e-5, 0.0];
        assert!(close(&e8, &want, 1e-4), "{e8:?}");
        let c = Grid::Eta(vec![1.4]).timesteps(fm, 0.006, 0.994, 2).unwrap();
        assert!(close(&c, &[0.994, 1.4 / 2.4, 0.006], 1e-12));
        assert!(Grid::Eta(vec![1.4]).timesteps(fm, 0.006, 0.994, 4).is_err());
        assert!(Grid::Uniform.timesteps(fm, 0.006, 0.994, 0).is_err());
        assert_eq!(Grid::Uniform.timesteps(fm, 0.006, 0.994, 1).unwrap(), vec![0.994, 0.006]);
        assert_eq!(Grid::parse("eta:1.4, 0.5").unwrap(), Grid::Eta(vec![1.4, 0.5]));
        assert_eq!(Grid::parse("edm").unwrap(), Grid::Edm { rho: 7.0 });
        assert!(Grid::parse("eta:-1").is_err() && Grid::parse("cosine").is_err());
    }
}
