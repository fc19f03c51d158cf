//! Downsampling metric histories for charts: Largest-Triangle-Three-Buckets (Steinarsson,
//! 2013) keeps the visual shape of a series in a fixed number of points, and the true minimum
//! and maximum are always among them, so a spike never disappears from a chart.
//!
//! A history of 10,000 steps becomes about `target` points; one of `target` points or fewer is
//! returned as it is.

/// One point of a series: `(x, y)`, `x` increasing (the step).
pub type Point = (f64, f64);

/// About `target` points of `points` (at least 3 when downsampling): the first, the last,
/// the largest-triangle point of each bucket between, and the minimum and maximum values.
/// `points` must be sorted by `x`.
pub fn lttb(points: &[Point], target: usize) -> Vec<Point> {
    let n = points.len();
    if target >= n || n <= 3 {
        return points.to_vec();
    }
    let target = target.max(3);
    let mut chosen: Vec<usize> = Vec::with_capacity(target + 2);
    chosen.push(0);
    // `target - 2` buckets between the first and the last point; each contributes the point
    // that makes the largest triangle with the point chosen before it and the average of the
    // next bucket.
    let every = (n - 2) as f64 / (target - 2) as f64;
    let bound = |i: usize| ((i as f64 * every) as usize + 1).min(n - 1);
    let mut previous = 0usize;
    for bucket in 0..target - 2 {
        let (start, end) = (bound(bucket), bound(bucket + 1).max(bound(bucket) + 1));
        let next = &points[end.min(n - 1)..bound(bucket + 2).max(end + 1).min(n)];
        let count = next.len() as f64;
        let avg = next.iter().fold((0.0, 0.0), |(x, y), p| (x + p.0 / count, y + p.1 / count));
        let a = points[previous];
        let mut best = start;
        let mut best_area = -1.0;
        for (i, p) in points.iter().enumerate().take(end).skip(start) {
            let area = ((a.0 - avg.0) * (p.1 - a.1) - (a.0 - p.0) * (avg.1 - a.1)).abs();
            if area > best_area {
                best_area = area;
                best = i;
            }
        }
        chosen.push(best);
        previous = best;
    }
    chosen.push(n - 1);
    // The true extremes: a chart must show the worst loss even if no triangle picked it.
    let finite = || points.iter().enumerate().filter(|(_, p)| p.1.is_finite());
    if let Some((i, _)) = finite().min_by(|a, b| a.1.1.total_cmp(&b.1.1)) {
        chosen.push(i);
    }
    if let Some((i, _)) = finite().max_by(|a, b| a.1.1.total_cmp(&b.1.1)) {
        chosen.push(i);
    }
    chosen.sort_unstable();
    chosen.dedup();
    chosen.into_iter().map(|i| points[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_series_are_kept_whole() {
        let points: Vec<Point> = (0..10).map(|i| (f64::from(i), f64::from(i * i))).collect();
        assert_eq!(lttb(&points, 1000), points);
    }

    #[test]
    fn long_series_keep_ends_and_extremes() {
        let mut points: Vec<Point> =
            (0..10_000).map(|i| (f64::from(i), (f64::from(i) / 300.0).sin())).collect();
        points[4321].1 = -50.0; // a one-step spike down
        points[777].1 = 80.0; // and up
        let out = lttb(&points, 1000);
        assert!(out.len() <= 1002 && out.len() >= 990, "{} points", out.len());
        assert_eq!(out.first(), points.first());
        assert_eq!(out.last(), points.last());
        assert!(out.contains(&(4321.0, -50.0)));
        assert!(out.contains(&(777.0, 80.0)));
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "x stays increasing");
    }
}
