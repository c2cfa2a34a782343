//! Preconditioning: f_{s,t}(x_t) = c_skip(s,t) x_t + c_out(s,t) G(c_in(t) x_t, c_noise(t), c_noise(s), y)
//! ([P] §4.1-4.2, App. C.5), and classifier-free guidance of G. Coefficients are computed in f64
//! and cast only at the network input.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::method::schedule::Schedule;
use crate::networks::Network;
use crate::{Error, Labels, column, row};

/// How f is built from the raw network output G.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameterization {
    /// f = DDIM(x_t, G, t -> s): the network predicts the clean sample directly.
    Identity,
    /// f = DDIM(x_t, g, t -> s) with EDM-style g = c_skip(t) x_t + c_out(t) G.
    SimpleEdm,
    /// f = x_t - (t - s) sigma_d G: one Euler step with a velocity (OT-FM only).
    EulerFm,
}

/// The network's second time input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_family = "wasm"), derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum TimeInput {
    /// c_noise(s) = time_scale * s ([P] Table 5).
    S,
    /// time_scale * (t - s) (the paper's FP16 run).
    Stride,
}

/// What the network is conditioned on: class labels (None: the null label for all) and the scale w
/// of classifier-free guidance (1: none).
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub labels: Option<Labels>,
    pub guidance: f64,
}

impl Condition {
    /// No labels, no guidance.
    pub fn none() -> Self {
        Self { labels: None, guidance: 1.0 }
    }

    /// `labels` without guidance.
    pub fn labels(labels: Option<Labels>) -> Self {
        Self { labels, guidance: 1.0 }
    }

    /// `labels` guided with scale `guidance`; guidance other than 1 needs labels.
    pub fn guided(labels: Option<Labels>, guidance: f64) -> Result<Self, Error> {
        if !(guidance.is_finite() && guidance >= 0.0) {
            return Err(Error::new(format!("the guidance scale must be finite and >= 0, got {guidance}")));
        }
        if labels.is_none() && guidance != 1.0 {
            return Err(Error::new("guidance (--cfg other than 1) needs class labels: this model or data has none"));
        }
        Ok(Self { labels, guidance })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Precond {
    pub schedule: Schedule,
    pub parameterization: Parameterization,
    pub sigma_data: f64,
    pub time_input: TimeInput,
    /// c_noise(t) = time_scale * t.
    pub time_scale: f64,
}

impl Precond {
    pub fn validate(&self) -> Result<(), Error> {
        if self.parameterization == Parameterization::EulerFm && self.schedule != Schedule::OtFm {
            return Err(Error::new("the euler_fm parameterization needs the fm (OT-FM) schedule"));
        }
        if !(self.sigma_data > 0.0) {
            return Err(Error::new(format!("sigma_data must be > 0, got {}", self.sigma_data)));
        }
        Ok(())
    }

    /// c_in(t) = 1 / (sigma_d sqrt(alpha_t^2 + sigma_t^2)).
    pub fn c_in(&self, t: f64) -> f64 {
        let (a, s) = (self.schedule.alpha(t), self.schedule.sigma(t));
        1.0 / (self.sigma_data * (a * a + s * s).sqrt())
    }

    /// (c_skip(s, t), c_out(s, t)) of f; at s = t they are (1, 0) for Simple-EDM and Euler-FM.
    pub fn c_skip_out(&self, s: f64, t: f64) -> (f64, f64) {
        let sch = self.schedule;
        let (a_s, s_s, a_t, s_t) = (sch.alpha(s), sch.sigma(s), sch.alpha(t), sch.sigma(t));
        match self.parameterization {
            Parameterization::Identity => (s_s / s_t, a_s - s_s / s_t * a_t),
            Parameterization::SimpleEdm => {
                let norm2 = a_t * a_t + s_t * s_t;
                (
                    (a_s * a_t + s_s * s_t) / norm2,
                    -(a_s * s_t - s_s * a_t) * self.sigma_data / norm2.sqrt(),
                )
            }
            Parameterization::EulerFm => (1.0, -(t - s) * self.sigma_data),
        }
    }

    /// The Laplace kernel's scale 1/|c_out(s, t)| ([P] App. C.8): unit distances in G-space.
    pub fn kernel_scale(&self, s: f64, t: f64) -> f64 {
        1.0 / self.c_skip_out(s, t).1.abs()
    }

    /// The network's time inputs (c_noise(t), second input) for a step from t to s.
    pub fn noise_inputs(&self, s: f64, t: f64) -> (f64, f64) {
        let second = match self.time_input {
            TimeInput::S => s,
            TimeInput::Stride => t - s,
        };
        (self.time_scale * t, self.time_scale * second)
    }

    /// The raw network output G(c_in(t) x_t, c_noise(t), c_noise(s), y).
    ///
    /// # Shapes
    /// - x_t: [B, D]; s, t, y: B values
    /// - output: [B, D]
    pub fn g_raw<N: Network>(&self, net: &N, x_t: Tensor<2>, s: &[f64], t: &[f64], y: Option<&Labels>) -> Tensor<2> {
        let device = x_t.device();
        let c_in: Vec<f64> = t.iter().map(|&t| self.c_in(t)).collect();
        let (c_t, c_s): (Vec<f64>, Vec<f64>) =
            s.iter().zip(t).map(|(&s, &t)| self.noise_inputs(s, t)).unzip();
        let y = y.map(|y| y.one_hot(&device));
        net.forward(x_t * column(&c_in, &device), row(&c_t, &device), row(&c_s, &device), y)
    }

    /// G under `condition`: with guidance w, G_w = G(null) + w (G(y) - G(null)), both halves in
    /// one batched evaluation (the official `cfg_forward`).
    ///
    /// # Shapes
    /// - x_t: [B, D]; s, t: B values
    /// - output: [B, D]
    pub fn g<N: Network>(&self, net: &N, x_t: Tensor<2>, s: &[f64], t: &[f64], condition: &Condition) -> Tensor<2> {
        let y = condition.labels.as_ref();
        let (Some(y), true) = (y, condition.guidance != 1.0) else {
            return self.g_raw(net, x_t, s, t, y);
        };
        let b = x_t.dims()[0];
        let both = Tensor::cat(vec![x_t.clone(), x_t], 0);
        let twice = |v: &[f64]| [v, v].concat();
        let g = self.g_raw(net, both, &twice(s), &twice(t), Some(&y.concat(&Labels::null(b, y.classes()))));
        let [g_y, g_null]: [Tensor<2>; 2] = g.chunk(2, 0).try_into().expect("two halves");
        g_null.clone() + (g_y - g_null).mul_scalar(condition.guidance as f32)
    }

    /// f^theta_{s,t}(x_t): the model's jump from t to s.
    ///
    /// # Shapes
    /// - x_t: [B, D]; s, t: B values
    /// - output: [B, D]
    pub fn f<N: Network>(&self, net: &N, x_t: Tensor<2>, s: &[f64], t: &[f64], condition: &Condition) -> Tensor<2> {
        let device = x_t.device();
        let (c_skip, c_out): (Vec<f64>, Vec<f64>) =
            s.iter().zip(t).map(|(&s, &t)| self.c_skip_out(s, t)).unzip();
        let g = self.g(net, x_t.clone(), s, t, condition);
        x_t * column(&c_skip, &device) + g * column(&c_out, &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn precond(schedule: Schedule, parameterization: Parameterization) -> Precond {
        Precond { schedule, parameterization, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 }
    }

    #[test]
    fn boundary_condition_at_s_equals_t() {
        for (sch, p) in [
            (Schedule::OtFm, Parameterization::SimpleEdm),
            (Schedule::Cosine, Parameterization::SimpleEdm),
            (Schedule::OtFm, Parameterization::EulerFm),
            (Schedule::OtFm, Parameterization::Identity),
            (Schedule::Cosine, Parameterization::Identity),
        ] {
            for t in [0.01, 0.3, 0.7, 0.994] {
                let (skip, out) = precond(sch, p).c_skip_out(t, t);
                assert!((skip - 1.0).abs() < 1e-12 && out.abs() < 1e-12, "{sch:?} {p:?} {t}");
            }
        }
    }

    #[test]
    fn simple_edm_is_ddim_of_g() {
        // f = DDIM(x_t, g, t -> s) with g = c_skip(t) x_t + c_out(t) G, checked on scalars.
        for sch in [Schedule::OtFm, Schedule::Cosine] {
            let p = precond(sch, Parameterization::SimpleEdm);
            let (x_t, big_g) = (0.8, -0.4);
            for (s, t) in [(0.1, 0.9), (0.0, 0.5), (0.4, 0.45)] {
                let (a, sg) = (sch.alpha(t), sch.sigma(t));
                let g = a / (a * a + sg * sg) * x_t - 0.5 * sg / (a * a + sg * sg).sqrt() * big_g;
                let (c_x0, c_src) = sch.ddim_coefficients(t, s);
                let (skip, out) = p.c_skip_out(s, t);
                assert!((c_x0 * g + c_src * x_t - (skip * x_t + out * big_g)).abs() < 1e-12);
            }
        }
        let fm = precond(Schedule::OtFm, Parameterization::SimpleEdm);
        let (_, out) = fm.c_skip_out(0.2, 0.7);
        assert!((out + 0.5 * 0.5 / (0.3f64 * 0.3 + 0.7 * 0.7).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn euler_fm_needs_ot_fm() {
        assert!(precond(Schedule::Cosine, Parameterization::EulerFm).validate().is_err());
        assert!(precond(Schedule::OtFm, Parameterization::EulerFm).validate().is_ok());
    }
}
