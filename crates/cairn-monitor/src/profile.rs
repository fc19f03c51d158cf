//! Streaming, mergeable profiles of features (model inputs and outputs) over a time window.
//!
//! Per feature: count, missing, type errors (a value of the other kind than the feature's),
//! and either
//! - numeric: min, max, mean and variance (Welford, merged with Chan's formula), a DDSketch
//!   quantile sketch (1% relative accuracy, `sketches-ddsketch`), and a uniform reservoir
//!   sample of up to [`RESERVOIR`] values for the two-sample tests; or
//! - categorical: counts of up to [`MAX_CATEGORIES`] values (the rest counted as `other`) and
//!   a HyperLogLog++ distinct-count estimate (`hyperloglogplus`, precision 14).
//!
//! Profiles serialize with serde (JSON), and two profiles of the same features — two
//! windows, or two replicas' — merge into the profile of their union.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// Values kept per numeric feature for the two-sample tests.
pub const RESERVOIR: usize = 10_000;
/// Distinct categorical values counted one by one; the rest count as `other`.
pub const MAX_CATEGORIES: usize = 1_000;

/// One cell of input or output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Num(f64),
    Text(&'a str),
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Numeric,
    Categorical,
}

/// A deterministic hasher (SipHash with fixed keys), so sketches from different processes
/// merge.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FixedHasher;

impl BuildHasher for FixedHasher {
    type Hasher = std::hash::DefaultHasher;
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::DefaultHasher::new()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Numeric {
    /// `+inf` while empty (`null` in JSON).
    #[serde(deserialize_with = "or_infinity")]
    pub min: f64,
    /// `-inf` while empty (`null` in JSON).
    #[serde(deserialize_with = "or_neg_infinity")]
    pub max: f64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    pub count: u64,
    /// `null` in JSON while empty (an empty sketch's bounds are infinite, which JSON lacks).
    #[serde(with = "empty_sketch")]
    pub sketch: DDSketch,
    pub sample: Vec<f64>,
}

mod empty_sketch {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use sketches_ddsketch::{Config, DDSketch};

    pub fn serialize<S: Serializer>(sketch: &DDSketch, s: S) -> Result<S::Ok, S::Error> {
        (sketch.count() > 0).then_some(sketch).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DDSketch, D::Error> {
        Ok(Option::<DDSketch>::deserialize(d)?.unwrap_or_else(|| DDSketch::new(Config::defaults())))
    }
}

fn or_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

fn or_neg_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

impl Default for Numeric {
    fn default() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            count: 0,
            sketch: DDSketch::new(SketchConfig::defaults()),
            sample: Vec::new(),
        }
    }
}

impl Numeric {
    #[inline]
    fn add(&mut self, x: f64) {
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.sketch.add(x);
        if self.sample.len() < RESERVOIR {
            self.sample.push(x);
        } else {
            let j = fastrand::u64(..self.count) as usize;
            if j < RESERVOIR {
                self.sample[j] = x;
            }
        }
    }

    pub fn std(&self) -> f64 {
        if self.count == 0 { 0.0 } else { (self.m2 / self.count as f64).sqrt() }
    }

    fn merge(&mut self, other: &Numeric) {
        if other.count == 0 {
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let n = n1 + n2;
        let delta = other.mean - self.mean;
        self.mean += delta * n2 / n;
        self.m2 += other.m2 + delta * delta * n1 * n2 / n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        let _ = self.sketch.merge(&other.sketch);
        // A uniform sample of the union: each side's share in proportion to its count.
        let take_other = ((RESERVOIR as f64) * n2 / n).round() as usize;
        let take_self = RESERVOIR - take_other.min(RESERVOIR);
        let mut mine = std::mem::take(&mut self.sample);
        fastrand::shuffle(&mut mine);
        mine.truncate(take_self);
        let mut theirs = other.sample.clone();
        fastrand::shuffle(&mut theirs);
        theirs.truncate(take_other);
        mine.extend(theirs);
        self.sample = mine;
        self.count += other.count;
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Categorical {
    pub counts: BTreeMap<String, u64>,
    pub other: u64,
    pub distinct: HyperLogLogPlus<String, FixedHasher>,
}

impl Default for Categorical {
    fn default() -> Self {
        Self {
            counts: BTreeMap::new(),
            other: 0,
            distinct: HyperLogLogPlus::new(14, FixedHasher)
                .unwrap_or_else(|_| unreachable!("14 is a valid precision")),
        }
    }
}

impl Categorical {
    #[inline]
    fn add(&mut self, value: &str) {
        self.distinct.insert(value);
        if let Some(c) = self.counts.get_mut(value) {
            *c += 1;
        } else if self.counts.len() < MAX_CATEGORIES {
            self.counts.insert(value.to_owned(), 1);
        } else {
            self.other += 1;
        }
    }

    fn merge(&mut self, other: &Categorical) {
        for (k, v) in &other.counts {
            if let Some(c) = self.counts.get_mut(k) {
                *c += v;
            } else if self.counts.len() < MAX_CATEGORIES {
                self.counts.insert(k.clone(), *v);
            } else {
                self.other += v;
            }
        }
        self.other += other.other;
        let _ = self.distinct.merge(&other.distinct);
    }

    /// The estimated number of distinct values.
    pub fn distinct(&mut self) -> u64 {
        self.distinct.count().round() as u64
    }

    /// The most frequent values, most frequent first.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Feature {
    pub kind: Kind,
    /// Cells seen, missing ones included.
    pub count: u64,
    pub missing: u64,
    /// Values of the other kind (a string for a numeric feature, a number for a
    /// categorical one), also NaN/infinity where numbers are expected.
    pub type_errors: u64,
    pub numeric: Numeric,
    pub categorical: Categorical,
}

impl Feature {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            count: 0,
            missing: 0,
            type_errors: 0,
            numeric: Numeric::default(),
            categorical: Categorical::default(),
        }
    }

    #[inline]
    pub fn add(&mut self, cell: Cell) {
        self.count += 1;
        match (self.kind, cell) {
            (_, Cell::Missing) => self.missing += 1,
            (Kind::Numeric, Cell::Num(x)) if x.is_finite() => self.numeric.add(x),
            (Kind::Numeric, Cell::Num(x)) if x.is_nan() => self.missing += 1,
            (Kind::Categorical, Cell::Text(s)) => self.categorical.add(s),
            // A categorical feature given numbers (an id sent as an integer) still counts
            // them by value, as a type error.
            (Kind::Categorical, Cell::Num(x)) => {
                self.type_errors += 1;
                self.categorical.add(&x.to_string());
            }
            _ => self.type_errors += 1,
        }
    }

    pub fn merge(&mut self, other: &Feature) {
        self.count += other.count;
        self.missing += other.missing;
        self.type_errors += other.type_errors;
        self.numeric.merge(&other.numeric);
        self.categorical.merge(&other.categorical);
    }

    /// Values present and of the feature's kind.
    pub fn valid(&self) -> u64 {
        match self.kind {
            Kind::Numeric => self.numeric.count,
            Kind::Categorical => self.categorical.counts.values().sum::<u64>() + self.categorical.other,
        }
    }
}

/// Requests over a window, successful or not: how many, how many failed, and a DDSketch of
/// their latency in milliseconds.
#[derive(Clone, Serialize, Deserialize)]
pub struct Traffic {
    pub requests: u64,
    pub failed: u64,
    #[serde(with = "empty_sketch")]
    pub latency_ms: DDSketch,
}

impl Default for Traffic {
    fn default() -> Self {
        Self { requests: 0, failed: 0, latency_ms: DDSketch::new(SketchConfig::defaults()) }
    }
}

impl Traffic {
    pub fn add(&mut self, failed: bool, latency_ms: f64) {
        self.requests += 1;
        self.failed += u64::from(failed);
        if latency_ms.is_finite() && latency_ms >= 0.0 {
            self.latency_ms.add(latency_ms);
        }
    }

    pub fn merge(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.failed += other.failed;
        let _ = self.latency_ms.merge(&other.latency_ms);
    }

    /// The latency quantile `q` (0..=1) in milliseconds, when any request was timed.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        self.latency_ms.quantile(q).ok().flatten()
    }
}

/// Every feature's profile over one window.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    pub start_ms: i64,
    pub end_ms: i64,
    /// Rows predicted (successful requests only).
    pub rows: u64,
    pub features: BTreeMap<String, Feature>,
    /// Every request, failed ones included (absent from profiles written before it existed).
    #[serde(default)]
    pub traffic: Traffic,
}

impl Profile {
    /// The feature's profile, created with `kind` the first time it is seen.
    pub fn feature(&mut self, name: &str, kind: Kind) -> &mut Feature {
        // No allocation for a feature already there (this runs per value of every request).
        if !self.features.contains_key(name) {
            self.features.insert(name.to_owned(), Feature::new(kind));
        }
        self.features.get_mut(name).expect("inserted above")
    }

    pub fn merge(&mut self, other: &Profile) {
        if self.rows == 0 && self.features.is_empty() {
            self.start_ms = other.start_ms;
            self.end_ms = other.end_ms;
        } else {
            self.start_ms = self.start_ms.min(other.start_ms);
            self.end_ms = self.end_ms.max(other.end_ms);
        }
        self.rows += other.rows;
        self.traffic.merge(&other.traffic);
        for (name, feature) in &other.features {
            match self.features.get_mut(name) {
                Some(mine) => mine.merge(feature),
                None => {
                    self.features.insert(name.clone(), feature.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_summary_and_merge_match_one_pass() {
        let values: Vec<f64> = (0..50_000).map(|i| ((i * 7919) % 1000) as f64 / 10.0).collect();
        let mut whole = Feature::new(Kind::Numeric);
        let (mut left, mut right) = (Feature::new(Kind::Numeric), Feature::new(Kind::Numeric));
        for (i, &x) in values.iter().enumerate() {
            whole.add(Cell::Num(x));
            if i % 3 == 0 { left.add(Cell::Num(x)) } else { right.add(Cell::Num(x)) }
        }
        left.add(Cell::Missing);
        left.add(Cell::Text("oops"));
        left.merge(&right);
        let (a, b) = (&whole.numeric, &left.numeric);
        assert_eq!((a.count, b.count), (50_000, 50_000));
        assert!((a.mean - b.mean).abs() < 1e-9 && (a.std() - b.std()).abs() < 1e-9);
        assert_eq!((a.min, a.max), (b.min, b.max));
        assert_eq!((left.missing, left.type_errors), (1, 1));
        assert_eq!(b.sample.len(), RESERVOIR);
        let median = b.sketch.quantile(0.5).unwrap().unwrap();
        assert!((median - 50.0).abs() < 1.0, "{median}");
    }

    #[test]
    fn categorical_counts_distinct_and_serde() {
        let mut f = Feature::new(Kind::Categorical);
        for i in 0..5000 {
            f.add(Cell::Text(&format!("user{}", i % 2000)));
        }
        f.add(Cell::Num(3.0));
        assert_eq!(f.type_errors, 1);
        assert_eq!(f.categorical.counts.len(), MAX_CATEGORIES);
        let distinct = f.categorical.distinct();
        assert!((1950..=2050).contains(&distinct), "{distinct}");
        let json = serde_json::to_string(&f).unwrap();
        let mut back: Feature = serde_json::from_str(&json).unwrap();
        assert_eq!(back.categorical.distinct(), distinct);
        assert_eq!(back.count, f.count);
    }
}
