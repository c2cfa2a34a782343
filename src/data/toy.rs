//! 2D toy distributions, standardised to zero mean and a per-coordinate std of sigma_data = 0.5.

use std::f64::consts::{PI, TAU};

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::{Error, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Toy {
    Checkerboard,
    #[serde(rename = "8gaussians")]
    EightGaussians,
    Moons,
    #[serde(rename = "swissroll")]
    SwissRoll,
    Spirals,
}

pub const SIGMA_DATA: f64 = 0.5;

impl Toy {
    pub const ALL: [Toy; 5] = [Toy::Checkerboard, Toy::EightGaussians, Toy::Moons, Toy::SwissRoll, Toy::Spirals];

    pub fn name(self) -> &'static str {
        match self {
            Toy::Checkerboard => "checkerboard",
            Toy::EightGaussians => "8gaussians",
            Toy::Moons => "moons",
            Toy::SwissRoll => "swissroll",
            Toy::Spirals => "spirals",
        }
    }

    pub fn from_name(name: &str) -> Option<Toy> {
        Toy::ALL.into_iter().find(|t| t.name() == name)
    }

    /// One point before standardisation.
    fn raw(self, rng: &mut Rng) -> [f64; 2] {
        match self {
            Toy::Checkerboard => {
                // 8 of the 16 unit cells of [-2, 2]^2, those with an even index sum.
                let cell = rng.below(8);
                let (row, col) = (cell / 2, 2 * (cell % 2) + (cell / 2) % 2);
                [col as f64 - 2.0 + rng.uniform(), row as f64 - 2.0 + rng.uniform()]
            }
            Toy::EightGaussians => {
                let angle = TAU * rng.below(8) as f64 / 8.0;
                [2.0 * angle.cos() + 0.15 * rng.normal(), 2.0 * angle.sin() + 0.15 * rng.normal()]
            }
            Toy::Moons => {
                let theta = PI * rng.uniform();
                let (x, y) = if rng.uniform() < 0.5 {
                    (theta.cos(), theta.sin())
                } else {
                    (1.0 - theta.cos(), 0.5 - theta.sin())
                };
                [x + 0.06 * rng.normal(), y + 0.06 * rng.normal()]
            }
            Toy::SwissRoll => {
                let theta = 1.5 * PI * (1.0 + 2.0 * rng.uniform());
                [theta * theta.cos() + 0.3 * rng.normal(), theta * theta.sin() + 0.3 * rng.normal()]
            }
            Toy::Spirals => {
                let n = rng.uniform().sqrt() * 3.0 * PI;
                let sign = if rng.uniform() < 0.5 { 1.0 } else { -1.0 };
                [sign * -n.cos() * n + 0.25 * rng.normal(), sign * n.sin() * n + 0.25 * rng.normal()]
            }
        }
    }
}

/// An endless stream from one toy distribution, standardised with statistics of a fixed sample.
#[derive(Clone, Debug)]
pub struct ToyData {
    pub toy: Toy,
    mean: [f64; 2],
    scale: f64,
    rng: Rng,
}

impl ToyData {
    pub fn new(toy: Toy, seed: u64) -> Self {
        let mut probe = Rng::new(0x5eed);
        let points: Vec<[f64; 2]> = (0..1 << 16).map(|_| toy.raw(&mut probe)).collect();
        let n = points.len() as f64;
        let mean = [0, 1].map(|i| points.iter().map(|p| p[i]).sum::<f64>() / n);
        let var = points.iter().map(|p| (p[0] - mean[0]).powi(2) + (p[1] - mean[1]).powi(2)).sum::<f64>() / (2.0 * n);
        Self { toy, mean, scale: SIGMA_DATA / var.sqrt(), rng: Rng::new(seed) }
    }
}

impl Dataset for ToyData {
    fn dim(&self) -> usize {
        2
    }

    fn sample(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                let p = self.toy.raw(&mut self.rng);
                [((p[0] - self.mean[0]) * self.scale) as f32, ((p[1] - self.mean[1]) * self.scale) as f32]
            })
            .collect()
    }
}

/// Points a person drew, standardised like the toys, sampled with replacement and jittered by a
/// little Gaussian noise so that the model learns a density rather than a list of points.
#[derive(Clone, Debug)]
pub struct DrawnData {
    points: Vec<[f64; 2]>,
    jitter: f64,
    rng: Rng,
}

impl DrawnData {
    /// `raw`: x, y pairs in any units.
    pub fn new(raw: &[f32], seed: u64) -> Result<Self, Error> {
        let points: Vec<[f64; 2]> = raw.chunks_exact(2).map(|p| [p[0] as f64, p[1] as f64]).collect();
        let n = points.len() as f64;
        let mean = [0, 1].map(|i| points.iter().map(|p| p[i]).sum::<f64>() / n);
        let var = points.iter().map(|p| (p[0] - mean[0]).powi(2) + (p[1] - mean[1]).powi(2)).sum::<f64>() / (2.0 * n);
        if points.len() < 8 || !(var > 0.0) {
            return Err(Error::new("draw at least 8 points, not all in one place"));
        }
        let scale = SIGMA_DATA / var.sqrt();
        let points = points.iter().map(|p| [(p[0] - mean[0]) * scale, (p[1] - mean[1]) * scale]).collect();
        Ok(Self { points, jitter: 0.03, rng: Rng::new(seed) })
    }
}

impl Dataset for DrawnData {
    fn dim(&self) -> usize {
        2
    }

    fn sample(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                let p = self.points[self.rng.below(self.points.len())];
                [p[0] + self.jitter * self.rng.normal(), p[1] + self.jitter * self.rng.normal()].map(|v| v as f32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_toy_is_centred_with_std_sigma_data() {
        for toy in Toy::ALL {
            let x = ToyData::new(toy, 1).sample(20_000);
            let n = (x.len() / 2) as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / (2.0 * n);
            let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (2.0 * n)).sqrt();
            assert!(mean.abs() < 0.02, "{toy:?} mean {mean}");
            assert!((std - SIGMA_DATA).abs() < 0.02, "{toy:?} std {std}");
            assert_eq!(Toy::from_name(toy.name()), Some(toy));
        }
    }

    #[test]
    fn checkerboard_fills_only_the_dark_cells() {
        let mut probe = Rng::new(9);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4000 {
            let [x, y] = Toy::Checkerboard.raw(&mut probe);
            let (cx, cy) = ((x + 2.0).floor() as i32, (y + 2.0).floor() as i32);
            assert!((0..4).contains(&cx) && (0..4).contains(&cy));
            assert_eq!((cx + cy) % 2, 0, "point in a light cell: {x} {y}");
            seen.insert((cx, cy));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn drawn_points_are_standardised_and_refused_when_degenerate() {
        let raw: Vec<f32> = (0..40).flat_map(|i| [100.0 + (i % 8) as f32 * 10.0, 50.0 + (i / 8) as f32 * 3.0]).collect();
        let x = DrawnData::new(&raw, 3).unwrap().sample(10_000);
        let n = (x.len() / 2) as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / (2.0 * n);
        let std = (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (2.0 * n)).sqrt();
        assert!(mean.abs() < 0.05 && (std - SIGMA_DATA).abs() < 0.05, "mean {mean} std {std}");
        assert!(DrawnData::new(&[1.0; 40], 3).is_err());
        assert!(DrawnData::new(&raw[..10], 3).is_err());
    }
}
