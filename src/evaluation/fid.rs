//! The Fréchet distance between Gaussians fitted to features (FID, Heusel et al. 2017):
//! |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), in f64.
//!
//! Tr (S_1 S_2)^(1/2) is the sum of square roots of the eigenvalues of S_1 S_2, which equal those of
//! the symmetric L^T S_2 L for any factor S_1 = L L^T; so one (semi-definite) Cholesky factor and
//! one symmetric eigenvalue problem replace scipy's general matrix square root.

use std::collections::BTreeMap;

use crate::Error;
use crate::io::safetensors::{Stored, Tensors};

/// Running sums of feature vectors and their outer products.
#[derive(Clone, Debug)]
pub struct Moments {
    dim: usize,
    count: u64,
    sum: Vec<f64>,
    outer: Vec<f64>,
}

impl Moments {
    pub fn new(dim: usize) -> Self {
        Self { dim, count: 0, sum: vec![0.0; dim], outer: vec![0.0; dim * dim] }
    }

    /// Adds feature vectors, `dim` values each, row after row.
    pub fn add(&mut self, features: &[f32]) {
        let d = self.dim;
        assert_eq!(features.len() % d, 0, "features come in rows of {d}");
        let rows = features.len() / d;
        let x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        for row in x.chunks_exact(d) {
            for (s, v) in self.sum.iter_mut().zip(row) {
                *s += v;
            }
        }
        // outer += X^T X
        gemm(d, rows, d, &x, (1, d), &x, (d, 1), 1.0, &mut self.outer);
        self.count += rows as u64;
    }

    /// The fitted Gaussian: mean and unbiased covariance (divisor n - 1, as numpy's `cov`).
    pub fn gaussian(&self) -> Result<Gaussian, Error> {
        if self.count < 2 {
            return Err(Error::new(format!("FID needs at least 2 feature vectors, got {}", self.count)));
        }
        let n = self.count as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let d = self.dim;
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = (self.outer[i * d + j] - n * mean[i] * mean[j]) / (n - 1.0);
            }
        }
        Ok(Gaussian { mean, cov, count: self.count })
    }
}

/// The quality numbers of a set of samples: what `imm eval` reports per step count and the page
/// shows live.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// The Fréchet distance of the samples' features to the reference's.
    pub fid: f64,
    /// For samples of chosen classes, the share that the features' classifier puts in them.
    pub accuracy: Option<f64>,
}

/// The [`Quality`] of samples whose features summed to `moments`, against `reference`; with the
/// classes they were drawn for (`wanted`) and those a classifier predicted for them, the share
/// that agree.
pub fn quality(moments: &Moments, reference: &Gaussian, classes: Option<(&[usize], &[usize])>) -> Result<Quality, Error> {
    let fid = moments.gaussian()?.frechet_distance(reference)?;
    let accuracy = classes.map(|(wanted, predicted)| {
        let right = wanted.iter().zip(predicted).filter(|(w, p)| w == p).count();
        right as f64 / wanted.len().max(1) as f64
    });
    Ok(Quality { fid, accuracy })
}

/// A Gaussian fitted to `count` feature vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Gaussian {
    pub mean: Vec<f64>,
    /// Row-major [dim, dim].
    pub cov: Vec<f64>,
    pub count: u64,
}

impl Gaussian {
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The squared Fréchet distance to `other` (what is reported as FID).
    pub fn frechet_distance(&self, other: &Gaussian) -> Result<f64, Error> {
        let n = self.dim();
        if other.dim() != n {
            return Err(Error::new(format!("feature sizes differ: {n} and {}", other.dim())));
        }
        let mean_term: f64 = self.mean.iter().zip(&other.mean).map(|(a, b)| (a - b) * (a - b)).sum();
        let trace = |c: &[f64]| (0..n).map(|i| c[i * n + i]).sum::<f64>();
        let l = psd_factor(&self.cov, n);
        let mut sl = vec![0.0; n * n];
        gemm(n, n, n, &other.cov, (n, 1), &l, (n, 1), 0.0, &mut sl);
        let mut m = vec![0.0; n * n];
        gemm(n, n, n, &l, (1, n), &sl, (n, 1), 0.0, &mut m);
        let root_trace: f64 = symmetric_eigenvalues(m, n)?.iter().map(|&v| v.max(0.0).sqrt()).sum();
        Ok((mean_term + trace(&self.cov) + trace(&other.cov) - 2.0 * root_trace).max(0.0))
    }

    /// For caching: mean and covariance as F32 tensors, the count and `about` in the metadata.
    pub fn to_tensors(&self, about: &str) -> Tensors {
        let n = self.dim();
        let mut t = Tensors::default();
        t.tensors.insert("mean".into(), Stored { shape: vec![n], values: self.mean.iter().map(|&v| v as f32).collect() });
        t.tensors.insert("cov".into(), Stored { shape: vec![n, n], values: self.cov.iter().map(|&v| v as f32).collect() });
        t.metadata = BTreeMap::from([("count".into(), self.count.to_string()), ("about".into(), about.into())]);
        t
    }

    pub fn from_tensors(t: &Tensors, what: &str) -> Result<Self, Error> {
        let bad = || Error::new(format!("{what} is not a statistics file of `imm eval` (delete it to recompute)"));
        let (mean, cov) = (t.get("mean").ok_or_else(bad)?, t.get("cov").ok_or_else(bad)?);
        let n = mean.values.len();
        if cov.shape != [n, n] {
            return Err(bad());
        }
        let count = t.metadata.get("count").and_then(|c| c.parse().ok()).ok_or_else(bad)?;
        let wide = |v: &[f32]| v.iter().map(|&x| x as f64).collect();
        Ok(Self { mean: wide(&mean.values), cov: wide(&cov.values), count })
    }
}

/// c = a b + beta c for row-major c [m, n]; a [m, k] and b [k, n] are given by (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn gemm(m: usize, k: usize, n: usize, a: &[f64], sa: (usize, usize), b: &[f64], sb: (usize, usize), beta: f64, c: &mut [f64]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the asserts above and the strides keep every access inside a, b and c.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa.0 as isize,
            sa.1 as isize,
            b.as_ptr(),
            sb.0 as isize,
            sb.1 as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// A lower-triangular L with L L^T = a for a symmetric positive semi-definite a (row-major [n, n]).
/// Columns whose pivot is at rounding level stay zero, which is exact for a singular covariance
/// (fewer samples than features) up to that level.
fn psd_factor(a: &[f64], n: usize) -> Vec<f64> {
    let max_diag = (0..n).map(|i| a[i * n + i]).fold(0.0f64, f64::max);
    let tol = 1e-10 * max_diag;
    let mut l = vec![0.0; n * n];
    for j in 0..n {
        let (done, rest) = l.split_at_mut(j * n + j);
        let row_j = &done[j * n..];
        let pivot = a[j * n + j] - row_j.iter().map(|v| v * v).sum::<f64>();
        if pivot <= tol {
            continue;
        }
        let root = pivot.sqrt();
        rest[0] = root;
        for i in j + 1..n {
            let dot: f64 = row_j.iter().zip(&rest[(i - j) * n - j..(i - j) * n]).map(|(x, y)| x * y).sum();
            rest[(i - j) * n] = (a[i * n + j] - dot) / root;
        }
    }
    l
}

/// Eigenvalues of a symmetric matrix (row-major [n, n]), by nalgebra; its iteration runs until it
/// converges, which finite values guarantee.
fn symmetric_eigenvalues(a: Vec<f64>, n: usize) -> Result<Vec<f64>, Error> {
    if !a.iter().all(|v| v.is_finite()) {
        return Err(Error::new("the features hold non-finite values (NaN or infinite samples?); no FID"));
    }
    Ok(nalgebra::DMatrix::from_row_slice(n, n, &a).symmetric_eigenvalues().iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn random_spd(n: usize, rank: usize, rng: &mut Rng) -> Vec<f64> {
        let x: Vec<f64> = rng.normal_vec(n * rank, 1.0).iter().map(|&v| v as f64).collect();
        let mut c = vec![0.0; n * n];
        gemm(n, rank, n, &x, (rank, 1), &x, (1, rank), 0.0, &mut c);
        c
    }

    #[test]
    fn eigenvalues_keep_the_trace_and_the_trace_of_the_square() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 3, 7, 40, 129] {
            let a = random_spd(n, n, &mut rng);
            let eig = symmetric_eigenvalues(a.clone(), n).unwrap();
            let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
            let frob: f64 = a.iter().map(|v| v * v).sum();
            let sum: f64 = eig.iter().sum();
            let squares: f64 = eig.iter().map(|v| v * v).sum();
            assert!((sum - trace).abs() <= 1e-9 * trace, "n {n}: {sum} vs {trace}");
            assert!((squares - frob).abs() <= 1e-9 * frob, "n {n}: {squares} vs {frob}");
            assert!(eig.iter().all(|&v| v > -1e-9 * trace), "n {n}: negative eigenvalue of an SPD matrix");
        }
    }

    /// The quality of samples: their FID against the reference, and the share of predicted
    /// classes that are the wanted ones.
    #[test]
    fn quality_is_the_fid_and_the_share_of_right_classes() {
        let mut moments = Moments::new(2);
        moments.add(&[0.0, 1.0, 1.0, 0.0, 2.0, 2.0, -1.0, 0.5]);
        let reference = Gaussian { mean: vec![0.5, 0.5], cov: vec![1.0, 0.0, 0.0, 1.0], count: 100 };
        let fid = moments.gaussian().unwrap().frechet_distance(&reference).unwrap();
        let plain = quality(&moments, &reference, None).unwrap();
        assert_eq!(plain, Quality { fid, accuracy: None });
        let labelled = quality(&moments, &reference, Some((&[1, 2, 3, 4], &[1, 0, 3, 3]))).unwrap();
        assert_eq!(labelled, Quality { fid, accuracy: Some(0.5) });
    }

    #[test]
    fn two_by_two_matches_the_closed_form() {
        // For 2 x 2 matrices with non-negative eigenvalues, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)).
        let s1: Vec<f64> = vec![2.0, 0.7, 0.7, 1.0];
        let s2: Vec<f64> = vec![0.5, -0.2, -0.2, 1.5];
        let m = [
            s1[0] * s2[0] + s1[1] * s2[2],
            s1[0] * s2[1] + s1[1] * s2[3],
            s1[2] * s2[0] + s1[3] * s2[2],
            s1[2] * s2[1] + s1[3] * s2[3],
        ];
        let root_trace = (m[0] + m[3] + 2.0 * (m[0] * m[3] - m[1] * m[2]).sqrt()).sqrt();
        let expected = 0.3f64.powi(2) + 0.4f64.powi(2) + 3.0 + 2.0 - 2.0 * root_trace;
        let a = Gaussian { mean: vec![0.1, -0.2], cov: s1, count: 10 };
        let b = Gaussian { mean: vec![-0.2, 0.2], cov: s2, count: 10 };
        let got = a.frechet_distance(&b).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        assert!((b.frechet_distance(&a).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn same_set_gives_zero_and_moments_match_a_direct_covariance() {
        let mut rng = Rng::new(2);
        let (dim, rows) = (24, 300);
        let features: Vec<f32> = rng.normal_vec(dim * rows, 1.0).iter().enumerate().map(|(i, v)| v * (1.0 + (i % dim) as f32)).collect();
        let mut moments = Moments::new(dim);
        moments.add(&features[..dim * 100]);
        moments.add(&features[dim * 100..]);
        let g = moments.gaussian().unwrap();
        let mean: Vec<f64> = (0..dim).map(|j| (0..rows).map(|r| features[r * dim + j] as f64).sum::<f64>() / rows as f64).collect();
        for i in 0..dim {
            for j in 0..dim {
                let direct: f64 = (0..rows)
                    .map(|r| (features[r * dim + i] as f64 - mean[i]) * (features[r * dim + j] as f64 - mean[j]))
                    .sum::<f64>()
                    / (rows - 1) as f64;
                assert!((g.cov[i * dim + j] - direct).abs() < 1e-9 * (1.0 + direct.abs()));
            }
        }
        assert!(g.frechet_distance(&g).unwrap() < 1e-9);
        // Fewer samples than features: a singular covariance, still zero against itself.
        let mut few = Moments::new(dim);
        few.add(&features[..dim * 10]);
        let few = few.gaussian().unwrap();
        assert!(few.frechet_distance(&few).unwrap() < 1e-8);
        let shifted = Gaussian { mean: g.mean.iter().map(|m| m + 0.5).collect(), ..g.clone() };
        let fid = g.frechet_distance(&shifted).unwrap();
        assert!((fid - 0.25 * dim as f64).abs() < 1e-6, "{fid}");
    }

    #[test]
    fn statistics_survive_a_round_trip() {
        let g = Gaussian { mean: vec![0.5, -1.0], cov: vec![2.0, 0.25, 0.25, 1.0], count: 7 };
        let back = Gaussian::from_tensors(&Tensors::parse(&g.to_tensors("x").to_bytes(), "x").unwrap(), "x").unwrap();
        assert_eq!(back, g);
        assert!(Gaussian::from_tensors(&Tensors::default(), "stats.safetensors").unwrap_err().0.contains("delete it"));
    }
}
