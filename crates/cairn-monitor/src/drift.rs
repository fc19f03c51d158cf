//! Drift of a window's profile against the reference (the training data's profile, recorded
//! when the version was registered: `cairn-profile-v1`).
//!
//! Defaults, as common practice (Evidently's) has them:
//!
//! | reference rows | numeric | categorical | drifted when |
//! |---|---|---|---|
//! | ≤ 1,000 | Kolmogorov–Smirnov | chi-squared | p < 0.05 |
//! | > 1,000 | Wasserstein distance / reference std ("normed") | Jensen–Shannon distance | ≥ 0.1 |
//!
//! PSI (≥ 0.1, ten bins at the reference's deciles... here: equal-width over both samples)
//! can be chosen instead ([`Method::Psi`]). The dataset counts as drifted when at least half
//! of its features drift ([`DriftConfig::share`]). Everything is configurable per model.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::profile::{Feature, Kind, Profile};
use crate::stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Ks,
    ChiSquared,
    Wasserstein,
    JensenShannon,
    Psi,
}

impl Method {
    /// Whether the score is a p-value (drift below the threshold) or a distance (at or above).
    pub fn is_p_value(self) -> bool {
        matches!(self, Self::Ks | Self::ChiSquared)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Ks => "K-S p-value",
            Self::ChiSquared => "chi-squared p-value",
            Self::Wasserstein => "Wasserstein (normed)",
            Self::JensenShannon => "Jensen-Shannon distance",
            Self::Psi => "PSI",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriftConfig {
    /// References with at most this many rows use the statistical tests.
    pub small_reference: u64,
    pub p_value: f64,
    pub distance: f64,
    /// The share of drifted features that makes the dataset drifted.
    pub share: f64,
    /// Use this method for numeric features instead of the default.
    pub numeric: Option<Method>,
    /// ... and this one for categorical features.
    pub categorical: Option<Method>,
    /// Bins for Jensen–Shannon and PSI on numeric features.
    pub bins: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            small_reference: 1000,
            p_value: 0.05,
            distance: 0.1,
            share: 0.5,
            numeric: None,
            categorical: None,
            bins: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub kind: Kind,
    pub method: Method,
    pub score: f64,
    pub threshold: f64,
    pub drifted: bool,
    pub reference_rows: u64,
    pub current_rows: u64,
    /// Why no score could be computed (no reference column, no current values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetDrift {
    pub features: Vec<FeatureDrift>,
    pub drifted_features: usize,
    pub share: f64,
    pub drifted: bool,
}

/// One reference column, from the training-data profile.
struct ReferenceColumn<'a> {
    kind: Kind,
    count: u64,
    json: &'a Value,
}

fn reference_column<'a>(reference: &'a Value, name: &str) -> Option<ReferenceColumn<'a>> {
    let column = reference
        .get("columns")?
        .as_array()?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))?;
    let kind = match column.get("kind")?.as_str()? {
        "numeric" => Kind::Numeric,
        _ => Kind::Categorical,
    };
    Some(ReferenceColumn {
        kind,
        count: column.get("count").and_then(Value::as_u64).unwrap_or(0),
        json: column,
    })
}

fn numbers(value: Option<&Value>) -> Vec<f64> {
    value.and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// Drift of every feature in `current` that the reference has a column for.
pub fn dataset_drift(reference: &Value, current: &Profile, config: &DriftConfig) -> DatasetDrift {
    let mut features = Vec::new();
    for (name, feature) in &current.features {
        features.push(feature_drift(reference, name, feature, config));
    }
    let scored: Vec<&FeatureDrift> = features.iter().filter(|f| f.skipped.is_none()).collect();
    let drifted_features = scored.iter().filter(|f| f.drifted).count();
    let share = if scored.is_empty() { 0.0 } else { drifted_features as f64 / scored.len() as f64 };
    DatasetDrift { drifted_features, share, drifted: !scored.is_empty() && share >= config.share, features }
}

pub fn feature_drift(reference: &Value, name: &str, feature: &Feature, config: &DriftConfig) -> FeatureDrift {
    let mut out = FeatureDrift {
        feature: name.to_owned(),
        kind: feature.kind,
        method: Method::Ks,
        score: f64::NAN,
        threshold: f64::NAN,
        drifted: false,
        reference_rows: 0,
        current_rows: feature.valid(),
        skipped: None,
    };
    let Some(column) = reference_column(reference, name) else {
        out.skipped = Some("the reference has no such column".into());
        return out;
    };
    out.reference_rows = column.count;
    out.kind = column.kind;
    let small = column.count <= config.small_reference;
    out.method = match column.kind {
        Kind::Numeric => config.numeric.unwrap_or(if small { Method::Ks } else { Method::Wasserstein }),
        Kind::Categorical => {
            config.categorical.unwrap_or(if small { Method::ChiSquared } else { Method::JensenShannon })
        }
    };
    out.threshold = if out.method.is_p_value() { config.p_value } else { config.distance };
    if feature.valid() == 0 || column.count == 0 {
        out.skipped = Some("no values to compare".into());
        return out;
    }
    out.score = match column.kind {
        Kind::Numeric => {
            let reference = stats::sorted(&numbers(column.json.get("sample")));
            let current = stats::sorted(&feature.numeric.sample);
            if reference.is_empty() || current.is_empty() || feature.kind != Kind::Numeric {
                out.skipped = Some(format!("{name} is numeric in the reference but not in production"));
                return out;
            }
            match out.method {
                Method::Ks => stats::ks_2samp(&reference, &current).1,
                Method::Wasserstein => {
                    let std = column
                        .json
                        .get("std")
                        .and_then(Value::as_f64)
                        .unwrap_or_else(|| stats::std_dev(&reference));
                    stats::wasserstein(&reference, &current) / if std > 0.0 { std } else { 1.0 }
                }
                method => {
                    let edges = stats::shared_edges(&reference, &current, config.bins);
                    let (r, c) = (stats::histogram(&reference, &edges), stats::histogram(&current, &edges));
                    match method {
                        Method::Psi => stats::psi(&r, &c),
                        _ => stats::jensen_shannon(&r, &c),
                    }
                }
            }
        }
        Kind::Categorical => {
            let mut keys: Vec<String> = Vec::new();
            let mut reference_counts: Vec<f64> = Vec::new();
            for pair in column.json.get("top").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(k), Some(c)) =
                    (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_f64))
                {
                    keys.push(k.to_owned());
                    reference_counts.push(c);
                }
            }
            let mut current_counts: Vec<f64> =
                keys.iter().map(|k| feature.categorical.counts.get(k).copied().unwrap_or(0) as f64).collect();
            // Values outside the reference's top ones: the reference's `other`, against
            // everything else seen now.
            let reference_other = column.json.get("other").and_then(Value::as_f64).unwrap_or(0.0);
            let current_other: f64 = feature
                .categorical
                .counts
                .iter()
                .filter(|(k, _)| !keys.contains(k))
                .map(|(_, c)| *c as f64)
                .sum::<f64>()
                + feature.categorical.other as f64;
            if reference_other > 0.0 || current_other > 0.0 {
                reference_counts.push(reference_other);
                current_counts.push(current_other);
            }
            match out.method {
                Method::ChiSquared | Method::Ks => stats::chi_squared(&reference_counts, &current_counts).1,
                Method::Psi => stats::psi(&reference_counts, &current_counts),
                _ => stats::jensen_shannon(&reference_counts, &current_counts),
            }
        }
    };
    out.drifted =
        if out.method.is_p_value() { out.score < out.threshold } else { out.score >= out.threshold };
    out
}
