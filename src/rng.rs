//! The host-side random generator: xoshiro256++ seeded through splitmix64 (`rand_xoshiro`), with
//! `rand_distr`'s normal draws.
//!
//! Times, data, noise and initial weights come from here, so that a run is reproducible from its
//! seed on every backend and in the browser, independent of backend RNGs whose state is global.

use rand::RngExt;
use rand::SeedableRng;
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// Saved as `{"s": [4 words]}`, the layout of the generator's state in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rng(Xoshiro256PlusPlus);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(Xoshiro256PlusPlus::seed_from_u64(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        rand::Rng::next_u64(&mut self.0)
    }

    /// An independent generator, for a consumer that must not shift this stream.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    /// Uniform in [0, 1), 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        self.0.random()
    }

    /// Uniform in [lo, hi).
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.0.random_range(0..n) }
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        self.0.sample(StandardNormal)
    }

    /// `n` draws of N(0, std^2) as f32.
    pub fn normal_vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.normal() * std) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_moments_are_right() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        let n = 200_000;
        let x: Vec<f64> = (0..n).map(|_| a.normal()).collect();
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let u: Vec<f64> = (0..n).map(|_| a.uniform()).collect();
        assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
        assert!((u.iter().sum::<f64>() / n as f64 - 0.5).abs() < 0.005);
        let counts = (0..n).fold([0usize; 3], |mut c, _| {
            c[a.below(3)] += 1;
            c
        });
        assert!(counts.iter().all(|&c| (c as f64 / n as f64 - 1.0 / 3.0).abs() < 0.01), "{counts:?}");
    }

    /// Checkpoints keep the state as `{"s": [...]}`: one saved mid-stream continues it exactly,
    /// and the seeding is xoshiro256++'s splitmix64 (the state words of seed 0 are splitmix64's
    /// first outputs).
    #[test]
    fn saved_state_resumes_the_stream() {
        let mut a = Rng::new(0);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"s":[16294208416658607535,7960286522194355700,487617019471545679,17909611376780542444]}"#);
        a.normal_vec(5, 1.0);
        let saved = serde_json::to_string(&a).unwrap();
        let mut back: Rng = serde_json::from_str(&saved).unwrap();
        assert_eq!(back.next_u64(), a.next_u64());
        assert!(serde_json::from_str::<Rng>(r#"{"s":[1,2]}"#).is_err());
    }
}
