//! Monitoring served models: profiles of what they see and answer, and drift against the
//! profile of their training data.
//!
//! - [`profile`]: streaming, mergeable per-feature profiles (sketches for quantiles and
//!   distinct counts, a reservoir sample for the tests).
//! - [`stats`]: Kolmogorov–Smirnov, chi-squared, Wasserstein, Jensen–Shannon, PSI.
//! - [`drift`]: per-feature and dataset drift with the common defaults.
//! - [`quality`]: live accuracy, precision and recall, or MAE and RMSE, from true labels.
//! - [`rules`]: `monitor.yaml` (rules over any metric, webhooks, drift settings per model),
//!   the metrics rules read from a window, and the open/resolve state machine.
//! - [`alerts`]: the alert log (opened, resolved, delivered) and the rules' saved state.
//!
//! [`profile_rows`] builds window profiles from prediction-log rows (their `inputs` and
//! `outputs` JSON, as `cairn serve` logs them).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alerts;
pub mod drift;
pub mod profile;
pub mod quality;
pub mod rules;
pub mod stats;

use std::collections::BTreeMap;

use serde_json::Value;

use profile::{Cell, Kind, Profile};

fn cell(value: &Value) -> Cell<'_> {
    match value {
        Value::Number(n) => n.as_f64().map_or(Cell::Missing, Cell::Num),
        Value::String(s) => Cell::Text(s),
        Value::Bool(b) => Cell::Num(if *b { 1.0 } else { 0.0 }),
        _ => Cell::Missing,
    }
}

/// The kind a feature is profiled as: the reference's, else what its first value looks like.
fn kind_of(reference: Option<&Value>, name: &str, first: &Value) -> Kind {
    let known = reference
        .and_then(|r| r.get("columns"))
        .and_then(Value::as_array)
        .and_then(|cols| cols.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name)))
        .and_then(|c| c.get("kind"))
        .and_then(Value::as_str);
    match known {
        Some("numeric") => Kind::Numeric,
        Some(_) => Kind::Categorical,
        None if first.is_string() => Kind::Categorical,
        None => Kind::Numeric,
    }
}

/// Adds one logged column (`{name: [rows]}`, each row a scalar or a one-element list; a row
/// that is an object — a classifier's `{class: probability}` — becomes one feature per key,
/// `name[class]`).
fn add_columns(profile: &mut Profile, reference: Option<&Value>, columns: &Value, prefix: &str) {
    let Some(columns) = columns.as_object() else { return };
    for (name, rows) in columns {
        let Some(rows) = rows.as_array() else { continue };
        for row in rows {
            let row = match row {
                Value::Array(items) if items.len() == 1 => &items[0],
                other => other,
            };
            match row {
                Value::Object(map) => {
                    for (key, v) in map {
                        let feature = format!("{prefix}{name}[{key}]");
                        let kind = kind_of(reference, &feature, v);
                        profile.feature(&feature, kind).add(cell(v));
                    }
                }
                // Rows of several values (a tensor input): one feature per position.
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        let feature = format!("{prefix}{name}[{i}]");
                        let kind = kind_of(reference, &feature, v);
                        profile.feature(&feature, kind).add(cell(v));
                    }
                }
                v => {
                    let feature = format!("{prefix}{name}");
                    let kind = kind_of(reference, &feature, v);
                    profile.feature(&feature, kind).add(cell(v));
                }
            }
        }
    }
}

/// One logged prediction: when, whether it failed, how long it took, and its inputs and
/// outputs as logged.
pub struct Row<'a> {
    pub time_ms: i64,
    pub failed: bool,
    pub latency_ms: f64,
    pub inputs: &'a str,
    pub outputs: &'a str,
}

/// Profiles of logged rows per window of `window_ms` (keyed by the window's start). Inputs
/// are profiled under their names, outputs as `output:NAME`.
pub fn profile_rows<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    reference: Option<&Value>,
    window_ms: i64,
) -> BTreeMap<i64, Profile> {
    let mut windows: BTreeMap<i64, Profile> = BTreeMap::new();
    let window_ms = window_ms.max(1);
    for row in rows {
        let start = row.time_ms - row.time_ms.rem_euclid(window_ms);
        let profile = windows.entry(start).or_insert_with(|| Profile {
            start_ms: start,
            end_ms: start + window_ms,
            ..Profile::default()
        });
        profile.traffic.add(row.failed, row.latency_ms);
        if row.failed {
            continue;
        }
        let inputs: Value = serde_json::from_str(row.inputs).unwrap_or(Value::Null);
        let outputs: Value = serde_json::from_str(row.outputs).unwrap_or(Value::Null);
        profile.rows += inputs
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(Value::as_array)
            .map_or(0, |rows| rows.len() as u64);
        add_columns(profile, reference, &inputs, "");
        add_columns(profile, reference, &outputs, "output:");
    }
    windows
}

/// The reference's column for a feature (`cairn-profile-v1`'s `columns[]` entry).
pub fn reference_column<'a>(reference: &'a Value, name: &str) -> Option<&'a Value> {
    reference.get("columns")?.as_array()?.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name))
}

/// What the training data saw of one feature, for telling which production values lie
/// outside it: below its minimum or above its maximum (numeric), or a category it never had
/// (only when its profile lists every category).
pub struct Seen<'a> {
    min: Option<f64>,
    max: Option<f64>,
    categories: Vec<&'a str>,
    complete: bool,
}

impl<'a> Seen<'a> {
    pub fn new(column: &'a Value) -> Self {
        Self {
            min: column.get("min").and_then(Value::as_f64),
            max: column.get("max").and_then(Value::as_f64),
            categories: column
                .get("top")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(|p| p.get(0).and_then(Value::as_str)).collect())
                .unwrap_or_default(),
            complete: column.get("other").and_then(Value::as_u64) == Some(0),
        }
    }

    pub fn outside(&self, value: &Value) -> bool {
        match (value, self.min, self.max) {
            (Value::Number(n), Some(lo), Some(hi)) => n.as_f64().is_some_and(|x| x < lo || x > hi),
            (Value::String(s), _, _) => self.complete && !self.categories.contains(&s.as_str()),
            _ => false,
        }
    }
}
