//! The drift statistics, on samples (a reference and a current window).
//!
//! Each follows what Evidently and scipy compute, so scores can be checked against them:
//!
//! - [`ks_2samp`]: the two-sample Kolmogorov–Smirnov statistic (as `scipy.stats.ks_2samp`)
//!   and its p-value from the asymptotic Kolmogorov distribution at `sqrt(n·m/(n+m))·D`
//!   (as `scipy.stats.kstwobign.sf`; scipy's default `method="auto"` uses exact p-values for
//!   small samples, which differ slightly).
//! - [`chi_squared`]: Pearson's test of the current counts against the reference proportions
//!   scaled to the current total, over the union of categories (Evidently's `chisquare`); a
//!   category the reference never saw makes the p-value 0.
//! - [`wasserstein`]: the 1-D earth mover's distance (as `scipy.stats.wasserstein_distance`);
//!   Evidently's "normed" score divides it by the reference's standard deviation.
//! - [`jensen_shannon`]: the Jensen–Shannon *distance* (square root of the divergence, natural
//!   log, as `scipy.spatial.distance.jensenshannon`) between two frequency vectors.
//! - [`psi`]: the population stability index, `Σ (c − r)·ln(c / r)` over shares.

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Sorts a copy, dropping NaN.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The largest distance between the two empirical CDFs, and its p-value. `a` and `b` sorted.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return (0.0, 1.0);
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < n && j < m {
        let x = a[i].min(b[j]);
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    let en = (n as f64 * m as f64 / (n + m) as f64).sqrt();
    (d, kolmogorov_sf(en * d))
}

/// P(K > x) for the Kolmogorov distribution.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // The other series converges fast here: P(K ≤ x) = √(2π)/x Σ e^{−(2k−1)²π²/(8x²)}.
        let mut cdf = 0.0;
        for k in 1..=50 {
            let t = (2 * k - 1) as f64;
            cdf += (-(t * t) * std::f64::consts::PI.powi(2) / (8.0 * x * x)).exp();
        }
        return (1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * cdf).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * x * x).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-17 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Pearson's chi-squared test of `current` counts against `reference` counts (aligned by
/// category): the statistic and its p-value.
pub fn chi_squared(reference: &[f64], current: &[f64]) -> (f64, f64) {
    let (ref_total, cur_total) = (reference.iter().sum::<f64>(), current.iter().sum::<f64>());
    if ref_total <= 0.0 || cur_total <= 0.0 || reference.len() < 2 {
        return (0.0, 1.0);
    }
    let scale = cur_total / ref_total;
    let mut stat = 0.0;
    for (r, c) in reference.iter().zip(current) {
        let expected = r * scale;
        if expected == 0.0 {
            if *c > 0.0 {
                return (f64::INFINITY, 0.0);
            }
            continue;
        }
        stat += (c - expected).powi(2) / expected;
    }
    let df = (reference.len() - 1) as f64;
    let p = ChiSquared::new(df).map_or(1.0, |d| d.sf(stat));
    (stat, p)
}

/// The 1-D Wasserstein (earth mover's) distance between two samples, both sorted.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    // ∫ |F_a − F_b| over the merged support.
    let (mut i, mut j) = (0usize, 0usize);
    let mut previous = a[0].min(b[0]);
    let mut total = 0.0;
    while i < n || j < m {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        total += (i as f64 / n as f64 - j as f64 / m as f64).abs() * (x - previous);
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        previous = x;
    }
    total
}

/// The population standard deviation.
pub fn std_dev(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
}

fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|c| c / total).collect()
}

/// The Jensen–Shannon distance between two frequency vectors (normalized here).
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (p, q) = (shares(p), shares(q));
    let kl = |x: &[f64], m: &[f64]| -> f64 {
        x.iter().zip(m).filter(|(xi, _)| **xi > 0.0).map(|(xi, mi)| xi * (xi / mi).ln()).sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// The population stability index between two frequency vectors; empty bins count as
/// 0.0001 of the total, as Evidently does.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = (shares(reference), shares(current));
    r.iter()
        .zip(&c)
        .map(|(r, c)| {
            let (r, c) = (r.max(0.0001), c.max(0.0001));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Counts of `values` (sorted) in the bins between `edges` (the last bin closed).
pub fn histogram(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0.0; bins];
    if bins == 0 {
        return counts;
    }
    for &x in values {
        let i = edges.partition_point(|e| *e <= x);
        counts[i.saturating_sub(1).min(bins - 1)] += 1.0;
    }
    counts
}

/// `bins` equal-width bin edges over both samples' range (as `numpy.histogram_bin_edges`).
pub fn shared_edges(a: &[f64], b: &[f64], bins: usize) -> Vec<f64> {
    let lo = a.first().copied().unwrap_or(0.0).min(b.first().copied().unwrap_or(0.0));
    let hi = a.last().copied().unwrap_or(0.0).max(b.last().copied().unwrap_or(0.0));
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
    (0..=bins).map(|i| lo + (hi - lo) * i as f64 / bins as f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_do_not_drift_and_shifted_ones_do() {
        let a: Vec<f64> = (0..500).map(|i| i as f64 / 10.0).collect();
        let (d, p) = ks_2samp(&a, &a);
        assert_eq!(d, 0.0);
        assert!(p > 0.99);
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        let (d, p) = ks_2samp(&a, &b);
        assert!((d - 0.2).abs() < 1e-9, "{d}");
        assert!(p < 0.05);
        assert!((wasserstein(&a, &b) - 10.0).abs() < 1e-9);
        assert_eq!(wasserstein(&a, &a), 0.0);
    }

    #[test]
    fn kolmogorov_tail_values() {
        // scipy.stats.kstwobign.sf at 1.0, 0.5 and 1.36.
        assert!((kolmogorov_sf(1.0) - 0.269999671677).abs() < 1e-9);
        assert!((kolmogorov_sf(0.5) - 0.963945243665).abs() < 1e-9);
        assert!((kolmogorov_sf(1.36) - 0.049485876755).abs() < 1e-9);
    }

    #[test]
    fn categorical_tests() {
        let (_, p) = chi_squared(&[50.0, 30.0, 20.0], &[500.0, 300.0, 200.0]);
        assert!(p > 0.99);
        let (_, p) = chi_squared(&[50.0, 30.0, 20.0], &[20.0, 30.0, 50.0]);
        assert!(p < 0.001);
        assert_eq!(chi_squared(&[1.0, 0.0], &[1.0, 1.0]).1, 0.0, "a category the reference never saw");
        assert_eq!(jensen_shannon(&[1.0, 1.0], &[2.0, 2.0]), 0.0);
        assert!((jensen_shannon(&[1.0, 0.0], &[0.0, 1.0]) - std::f64::consts::LN_2.sqrt()).abs() < 1e-12);
        assert!(psi(&[1.0, 1.0], &[1.0, 1.0]).abs() < 1e-12);
    }
}
