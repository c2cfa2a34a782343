//! The interpolant x_t = alpha_t x + sigma_t eps and IMM's time maths ([P] §2.1, §4.2, App. C).
//!
//! Everything here is f64: near t = T the gap t - r is ~1e-7, below f32's resolution there.

use std::f64::consts::FRAC_PI_2;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, column};

/// The noise schedule (alpha_t, sigma_t); t = 0 is data, t = 1 is noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// OT-FM: alpha = 1 - t, sigma = t.
    #[serde(rename = "fm")]
    OtFm,
    /// Cosine (TrigFlow-like): alpha = cos(pi t / 2), sigma = sin(pi t / 2).
    Cosine,
}

impl Schedule {
    pub fn alpha(self, t: f64) -> f64 {
        match self {
            Schedule::OtFm => 1.0 - t,
            Schedule::Cosine => (FRAC_PI_2 * t).cos(),
        }
    }

    pub fn sigma(self, t: f64) -> f64 {
        match self {
            Schedule::OtFm => t,
            Schedule::Cosine => (FRAC_PI_2 * t).sin(),
        }
    }

    /// d alpha / dt and d sigma / dt: the flow-matching velocity is alpha' x + sigma' eps.
    pub fn d_alpha_sigma(self, t: f64) -> (f64, f64) {
        match self {
            Schedule::OtFm => (-1.0, 1.0),
            Schedule::Cosine => (
                -FRAC_PI_2 * (FRAC_PI_2 * t).sin(),
                FRAC_PI_2 * (FRAC_PI_2 * t).cos(),
            ),
        }
    }

    /// logSNR lambda_t = 2 ln(alpha_t / sigma_t).
    pub fn lambda(self, t: f64) -> f64 {
        -2.0 * self.eta(t).ln()
    }

    /// -d lambda / dt.
    pub fn neg_dlambda_dt(self, t: f64) -> f64 {
        match self {
            Schedule::OtFm => 2.0 / (t * (1.0 - t)),
            Schedule::Cosine => std::f64::consts::TAU / (std::f64::consts::PI * t).sin(),
        }
    }

    /// eta_t = sigma_t / alpha_t.
    pub fn eta(self, t: f64) -> f64 {
        match self {
            Schedule::OtFm => t / (1.0 - t),
            Schedule::Cosine => (FRAC_PI_2 * t).tan(),
        }
    }

    /// The t with eta(t) = eta; infinite eta maps to t = 1.
    pub fn eta_inv(self, eta: f64) -> f64 {
        if eta.is_infinite() {
            return 1.0;
        }
        match self {
            Schedule::OtFm => eta / (1.0 + eta),
            Schedule::Cosine => eta.atan() / FRAC_PI_2,
        }
    }

    /// Coefficients (on x0, on x_src) of the DDIM interpolant from t_src to t_dst ([P] Eq. 11):
    /// x_dst = (alpha_dst - sigma_dst / sigma_src alpha_src) x0 + sigma_dst / sigma_src x_src.
    pub fn ddim_coefficients(self, t_src: f64, t_dst: f64) -> (f64, f64) {
        let ratio = self.sigma(t_dst) / self.sigma(t_src);
        (self.alpha(t_dst) - ratio * self.alpha(t_src), ratio)
    }

    /// DDIM(x_src, x0) moving each row i from t_src[i] to t_dst[i]; the paper writes it
    /// DDIM(x_t, x, s, t) with the target first, the official code ddim(yt, y, t, s): names avoid both.
    ///
    /// # Shapes
    /// - x_src, x0: [B, D]; t_src, t_dst: B values
    /// - output: [B, D]
    pub fn ddim(self, x_src: Tensor<2>, x0: Tensor<2>, t_src: &[f64], t_dst: &[f64]) -> Tensor<2> {
        let (c_x0, c_src): (Vec<f64>, Vec<f64>) = t_src
            .iter()
            .zip(t_dst)
            .map(|(&a, &b)| self.ddim_coefficients(a, b))
            .unzip();
        let device = x_src.device();
        x0 * column(&c_x0, &device) + x_src * column(&c_src, &device)
    }

    /// x_t = alpha_t x + sigma_t eps per row.
    ///
    /// # Shapes
    /// - x, eps: [B, D]; t: B values
    /// - output: [B, D]
    pub fn interpolate(self, x: Tensor<2>, eps: Tensor<2>, t: &[f64]) -> Tensor<2> {
        let alpha: Vec<f64> = t.iter().map(|&t| self.alpha(t)).collect();
        let sigma: Vec<f64> = t.iter().map(|&t| self.sigma(t)).collect();
        let device = x.device();
        x * column(&alpha, &device) + eps * column(&sigma, &device)
    }
}

/// The training time range t in [eps, T] and the eta-decrement mapping r(s, t) ([P] §4.2, App. C.6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Times {
    pub schedule: Schedule,
    /// Smallest time.
    pub eps: f64,
    /// Largest time `T`: below 1 because eta explodes at t = 1.
    #[serde(rename = "T")]
    pub t_max: f64,
    /// r(s, t) steps back in eta by (eta(T) - eta(eps)) / 2^k.
    pub k: u32,
    /// If positive, t - r is at least this (the paper's FP16 variant uses 1e-4).
    pub min_gap: f64,
}

impl Times {
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.eps >= 0.0 && self.eps < self.t_max && self.t_max < 1.0) {
            return Err(Error::new(format!(
                "times must satisfy 0 <= eps < T < 1, got eps = {} and T = {}",
                self.eps, self.t_max
            )));
        }
        if self.k > 60 {
            return Err(Error::new(format!("k must be at most 60, got {}", self.k)));
        }
        if !(self.min_gap >= 0.0) {
            return Err(Error::new(format!("min_gap must be >= 0, got {}", self.min_gap)));
        }
        Ok(())
    }

    /// r(s, t) = max(s, eta^-1(clamp(eta_t - delta_eta, eta_min, eta_max))), optionally at most t - gap.
    pub fn r(&self, s: f64, t: f64) -> f64 {
        let sch = self.schedule;
        let (eta_min, eta_max) = (sch.eta(self.eps), sch.eta(self.t_max));
        let delta = (eta_max - eta_min) / 2f64.powi(self.k as i32);
        let mut r = sch.eta_inv((sch.eta(t) - delta).clamp(eta_min, eta_max));
        if self.min_gap > 0.0 {
            r = r.min(t - self.min_gap);
        }
        r.max(s)
    }

    /// t ~ U(eps, T), s ~ U(eps, t), r = r(s, t).
    pub fn sample(&self, rng: &mut crate::Rng) -> (f64, f64, f64) {
        let t = rng.uniform_in(self.eps, self.t_max);
        let s = rng.uniform_in(self.eps, t);
        (s, self.r(s, t), t)
    }
}

/// w(s, t) = 0.5 sigmoid(b - lambda_t) (-d lambda / dt) alpha_t^a / (alpha_t^2 + sigma_t^2) ([P] Eq. 13).
pub fn weight(schedule: Schedule, t: f64, a: f64, b: f64) -> f64 {
    let (alpha, sigma) = (schedule.alpha(t), schedule.sigma(t));
    let sigmoid = 1.0 / (1.0 + (schedule.lambda(t) - b).exp());
    0.5 * sigmoid * schedule.neg_dlambda_dt(t) * alpha.powf(a) / (alpha * alpha + sigma * sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULES: [Schedule; 2] = [Schedule::OtFm, Schedule::Cosine];

    #[test]
    fn endpoints_and_inverse() {
        for sch in SCHEDULES {
            assert!((sch.alpha(0.0) - 1.0).abs() < 1e-15 && sch.sigma(0.0).abs() < 1e-15);
            assert!(sch.alpha(1.0).abs() < 1e-15 && (sch.sigma(1.0) - 1.0).abs() < 1e-15);
            for t in [0.001, 0.1, 0.5, 0.9, 0.994] {
                assert!((sch.eta_inv(sch.eta(t)) - t).abs() < 1e-12, "{sch:?} {t}");
                let h = 1e-6;
                let num = -(sch.lambda(t + h) - sch.lambda(t - h)) / (2.0 * h);
                assert!((num / sch.neg_dlambda_dt(t) - 1.0).abs() < 1e-6, "{sch:?} {t}");
                let (da, ds) = sch.d_alpha_sigma(t);
                let na = (sch.alpha(t + h) - sch.alpha(t - h)) / (2.0 * h);
                let ns = (sch.sigma(t + h) - sch.sigma(t - h)) / (2.0 * h);
                assert!((da - na).abs() < 1e-8 && (ds - ns).abs() < 1e-8);
            }
            assert_eq!(sch.eta_inv(f64::INFINITY), 1.0);
        }
    }

    #[test]
    fn ddim_is_self_consistent_and_hits_the_interpolant() {
        // DDIM(DDIM(x_t, x, t -> r), x, r -> s) = DDIM(x_t, x, t -> s), with scalar x and eps.
        let (x, eps) = (0.7, -1.3);
        for sch in SCHEDULES {
            for (s, r, t) in [(0.1, 0.4, 0.9), (0.0, 0.5, 0.6), (0.3, 0.3, 0.8)] {
                let x_t = sch.alpha(t) * x + sch.sigma(t) * eps;
                let step = |x_src: f64, t_src, t_dst| {
                    let (a, b) = sch.ddim_coefficients(t_src, t_dst);
                    a * x + b * x_src
                };
                let via_r = step(step(x_t, t, r), r, s);
                let direct = step(x_t, t, s);
                assert!((via_r - direct).abs() < 1e-12);
                let x_s = sch.alpha(s) * x + sch.sigma(s) * eps;
                assert!((direct - x_s).abs() < 1e-12, "reusing x_t keeps the noise");
            }
        }
    }

    #[test]
    fn r_lies_between_s_and_t_and_grows_with_t() {
        for sch in SCHEDULES {
            for min_gap in [0.0, 1e-4] {
                let times = Times { schedule: sch, eps: 0.006, t_max: 0.994, k: 12, min_gap };
                let mut prev = 0.0;
                for i in 1..=999 {
                    let t = 0.006 + (0.994 - 0.006) * i as f64 / 1000.0;
                    for s in [0.006, t / 3.0, t * 0.999] {
                        let r = times.r(s.max(0.006), t);
                        assert!(r >= s.max(0.006) && r <= t, "{sch:?} s={s} r={r} t={t}");
                    }
                    let r = times.r(0.006, t);
                    assert!(r >= prev, "r must be monotone in t");
                    assert!(r < t, "with s = eps there is room for r < t");
                    if min_gap > 0.0 {
                        assert!(t - r >= min_gap - 1e-15 || r == 0.006);
                    }
                    prev = r;
                }
            }
        }
    }

    #[test]
    fn weight_matches_the_table_of_the_notes() {
        // imm-algorithm.md §3.6, OT-FM.
        let rows = [
            (1.0, 5.0, [0.907, 6.44, 7.89, 5.54, 3.97, 2.46, 1.35, 1.02]),
            (2.0, 4.0, [0.333, 2.76, 4.42, 3.66, 1.96, 0.74, 0.14, 0.006]),
        ];
        let ts = [0.006, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.994];
        for (a, b, expected) in rows {
            for (t, e) in ts.iter().zip(expected) {
                let w = weight(Schedule::OtFm, *t, a, b);
                assert!((w - e).abs() <= 0.006 * e.max(1.0), "a={a} b={b} t={t}: {w} vs {e}");
            }
        }
    }

    #[test]
    fn times_validation() {
        let ok = Times { schedule: Schedule::OtFm, eps: 0.0, t_max: 0.994, k: 12, min_gap: 0.0 };
        assert!(ok.validate().is_ok());
        assert!(Times { eps: 0.994, ..ok.clone() }.validate().is_err());
        assert!(Times { t_max: 1.0, ..ok.clone() }.validate().is_err());
        assert!(Times { eps: -0.1, ..ok }.validate().is_err());
    }
}
