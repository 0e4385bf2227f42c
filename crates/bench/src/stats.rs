//! Summary statistics for repeated runs: mean, sample standard deviation, percentiles.
//!
//! Design choice: like llama-bench, a figure is reported as mean ± *sample* stddev
//! (n - 1 in the denominator) over the measured runs; one run gives stddev 0 rather than
//! an undefined value, and an empty set gives `None` rather than NaN (NaN does not
//! survive JSON).

use serde::{Deserialize, Serialize};

/// One figure summarised over runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for a single value.
    pub stddev: f64,
    pub min: f64,
    pub max: f64,
    /// How many values went in.
    pub n: usize,
}

impl Stat {
    /// Summarise `values`; `None` when empty or when any value is not finite.
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Some(Stat { mean: mean(values), stddev: sample_stddev(values), min, max, n: values.len() })
    }

    /// Summarise the `Some` values of an iterator (missing figures are skipped).
    pub fn of_present(values: impl IntoIterator<Item = Option<f64>>) -> Option<Stat> {
        let v: Vec<f64> = values.into_iter().flatten().collect();
        Stat::of(&v)
    }
}

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (Bessel's correction); 0 for fewer than two values.
pub fn sample_stddev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (values.len() - 1) as f64).sqrt()
}

/// The `q`-th percentile (q in [0, 100]) by linear interpolation between order
/// statistics (numpy's default); `None` for an empty slice.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = (q.clamp(0.0, 100.0) / 100.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact arithmetic on small integers; only rounding of the sqrt remains.
    const TOL: f64 = 1e-12;

    #[test]
    fn mean_and_sample_stddev_match_hand_values() {
        // values 2,4,4,4,5,5,7,9: mean 5, sum of squares 32, sample var 32/7.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let s = Stat::of(&v).unwrap();
        assert!((s.mean - 5.0).abs() < TOL);
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < TOL);
        assert_eq!((s.min, s.max, s.n), (2.0, 9.0, 8));
    }

    #[test]
    fn one_value_has_zero_stddev_and_empty_has_none() {
        let s = Stat::of(&[3.5]).unwrap();
        assert_eq!((s.mean, s.stddev, s.n), (3.5, 0.0, 1));
        assert!(Stat::of(&[]).is_none());
        assert!(Stat::of(&[1.0, f64::NAN]).is_none());
        assert_eq!(Stat::of_present([None, Some(2.0), None]).unwrap().n, 1);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(5.0));
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        // numpy.percentile([1..5], 99) = 4.96
        assert!((percentile(&v, 99.0).unwrap() - 4.96).abs() < TOL);
        assert_eq!(percentile(&[], 50.0), None);
    }
}
