//! Sample quality for low-dimensional data: the energy distance.

/// Squared energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between two point sets (V-statistic,
/// f64). Zero only for equal distributions; for two finite samples of one distribution it is a
/// small positive floor that shrinks with the sample size.
pub fn energy_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let mean_dist = |p: &[f32], q: &[f32]| -> f64 {
        let mut total = 0.0;
        for u in p.chunks_exact(dim) {
            for v in q.chunks_exact(dim) {
                total += u.iter().zip(v).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
            }
        }
        total / ((p.len() / dim) * (q.len() / dim)) as f64
    };
    2.0 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn energy_distance_separates_and_vanishes() {
        let mut rng = Rng::new(3);
        let a = rng.normal_vec(1000, 1.0);
        let b = rng.normal_vec(1000, 1.0);
        let shifted: Vec<f32> = rng.normal_vec(1000, 1.0).iter().map(|v| v + 1.0).collect();
        assert_eq!(energy_distance(&a, &a, 2), 0.0);
        let same = energy_distance(&a, &b, 2);
        let far = energy_distance(&a, &shifted, 2);
        assert!(same > 0.0 && same < 0.01, "{same}");
        assert!(far > 20.0 * same, "{far} vs {same}");
        assert!((energy_distance(&a, &b, 2) - energy_distance(&b, &a, 2)).abs() < 1e-12);
    }
}
