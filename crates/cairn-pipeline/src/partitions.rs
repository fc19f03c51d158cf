//! Partitions: a stage that runs once per key of one or more dimensions — static keys, time
//! windows (hourly, daily, weekly, monthly from a start), or dynamic keys added with
//! `cairn partitions add` — each partition writing its own files into the stage's output
//! directory.
//!
//! ```yaml
//! stages:
//!   ingest:
//!     partitions:
//!       date: {daily: {start: 2026-01-01}}      # end: defaults to today (UTC)
//!       region: {static: [us, eu]}
//!     cmd: python ingest.py ${partition.date} ${partition.region} ${out}/${partition.date}/${partition.region}
//!     outs: [data/ingested]
//!   features:
//!     partitions:                               # the same dimensions: one run per partition,
//!       date: {daily: {start: 2026-01-01}}      # reading the same partition upstream
//!       region: {static: [us, eu]}
//!     deps: ["data/ingested/${partition.date}/${partition.region}"]
//!     cmd: python features.py ${partition.date} ${partition.region} ${out}
//!     outs: [data/features]
//!   report:                                     # not partitioned: depends on all partitions
//!     deps: [data/features]
//!     cmd: python report.py
//! ```
//!
//! A key is the dimension values joined by `|` in the order declared
//! (`2026-01-05|us`); `${partition}` is the key, `${partition.NAME}` one value. Time keys
//! are `2026-01-05T07` (hourly), `2026-01-05` (daily), the Monday starting the week
//! (weekly), `2026-01` (monthly). Dynamic keys live in `.cairn/partitions/<stage>.txt`, one
//! per line, committed to Git with the rest of `.cairn/`.

use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Utc};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;

/// One dimension as written in cairn.yaml.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum RawDimension {
    /// Fixed keys.
    Static(Vec<String>),
    Hourly(TimeRange),
    Daily(TimeRange),
    Weekly(TimeRange),
    Monthly(TimeRange),
    /// Keys added with `cairn partitions add STAGE KEY`.
    Dynamic(bool),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// The first window: `2026-01-01` (or `2026-01-01T00` for hourly).
    pub start: String,
    /// The last window (default: the current one, in UTC).
    #[serde(default)]
    pub end: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Static(Vec<String>),
    Time { unit: Unit, start: NaiveDateTime, end: Option<NaiveDateTime> },
    Dynamic,
}

/// A stage's partition dimensions, by name, in declaration order.
pub type Dimensions = Vec<(String, Dimension)>;

pub fn parse_dimensions(raw: &IndexMap<String, RawDimension>) -> Result<Dimensions, String> {
    if raw.is_empty() {
        return Err("`partitions` needs at least one dimension".into());
    }
    let mut out = Vec::new();
    for (name, dim) in raw {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("partition dimension `{name}`: use letters, digits and `_`"));
        }
        let time = |unit: Unit, range: &TimeRange| -> Result<Dimension, String> {
            let start =
                parse_time(&range.start, unit).map_err(|e| format!("partition dimension `{name}`: {e}"))?;
            let end = range
                .end
                .as_deref()
                .map(|e| parse_time(e, unit))
                .transpose()
                .map_err(|e| format!("partition dimension `{name}`: {e}"))?;
            if end.is_some_and(|e| e < start) {
                return Err(format!("partition dimension `{name}`: `end` is before `start`"));
            }
            Ok(Dimension::Time { unit, start: align(start, unit), end: end.map(|e| align(e, unit)) })
        };
        out.push((
            name.clone(),
            match dim {
                RawDimension::Static(keys) => {
                    if keys.is_empty() {
                        return Err(format!("partition dimension `{name}` has no keys"));
                    }
                    if let Some(bad) = keys.iter().find(|k| !valid_key(k)) {
                        return Err(format!("partition key `{bad}` of `{name}`: {KEY_RULE}"));
                    }
                    Dimension::Static(keys.clone())
                }
                RawDimension::Hourly(r) => time(Unit::Hour, r)?,
                RawDimension::Daily(r) => time(Unit::Day, r)?,
                RawDimension::Weekly(r) => time(Unit::Week, r)?,
                RawDimension::Monthly(r) => time(Unit::Month, r)?,
                RawDimension::Dynamic(true) => Dimension::Dynamic,
                RawDimension::Dynamic(false) => {
                    return Err(format!("partition dimension `{name}`: `dynamic: false` declares nothing"));
                }
            },
        ));
    }
    Ok(out)
}

pub const KEY_RULE: &str = "keys use letters, digits, `-`, `_`, `.`, `:` and `T` (no `|`, `/` or spaces)";

pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn parse_time(text: &str, unit: Unit) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    if let Some((date, hour)) = text.split_once('T')
        && let (Ok(date), Ok(hour)) = (NaiveDate::parse_from_str(date, "%Y-%m-%d"), hour.parse::<u32>())
        && let Some(t) = date.and_hms_opt(hour, 0, 0)
    {
        return Ok(t);
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    }
    if unit == Unit::Month
        && let Ok(d) = NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
    {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    }
    Err(format!("`{text}` is not a date like 2026-01-31 (or 2026-01-31T05 for hours)"))
}

/// The start of the window containing `t`.
fn align(t: NaiveDateTime, unit: Unit) -> NaiveDateTime {
    let date = t.date();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight exists");
    match unit {
        Unit::Hour => date.and_hms_opt(t.hour(), 0, 0).expect("an hour exists"),
        Unit::Day => midnight(date),
        Unit::Week => midnight(date - Duration::days(date.weekday().num_days_from_monday() as i64)),
        Unit::Month => midnight(date.with_day(1).expect("day 1 exists")),
    }
}

fn next(t: NaiveDateTime, unit: Unit) -> NaiveDateTime {
    match unit {
        Unit::Hour => t + Duration::hours(1),
        Unit::Day => t + Duration::days(1),
        Unit::Week => t + Duration::days(7),
        Unit::Month => {
            let (y, m) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
            NaiveDate::from_ymd_opt(y, m, 1)
                .expect("a valid month")
                .and_hms_opt(0, 0, 0)
                .expect("midnight exists")
        }
    }
}

fn format(t: NaiveDateTime, unit: Unit) -> String {
    match unit {
        Unit::Hour => t.format("%Y-%m-%dT%H").to_string(),
        Unit::Day | Unit::Week => t.format("%Y-%m-%d").to_string(),
        Unit::Month => t.format("%Y-%m").to_string(),
    }
}

/// The values of one dimension, in order. `dynamic` holds the stage's added keys.
fn values(dim: &Dimension, dynamic: &[String], now: NaiveDateTime) -> Vec<String> {
    match dim {
        Dimension::Static(keys) => keys.clone(),
        Dimension::Dynamic => dynamic.to_vec(),
        Dimension::Time { unit, start, end } => {
            let last = end.unwrap_or_else(|| align(now, *unit));
            let mut out = Vec::new();
            let mut t = *start;
            while t <= last {
                out.push(format(t, *unit));
                t = next(t, *unit);
            }
            out
        }
    }
}

/// Every partition key of a stage, in order (the first dimension varies slowest).
pub fn keys(dims: &Dimensions, dynamic: &[String]) -> Vec<String> {
    let now = Utc::now().naive_utc();
    let mut keys = vec![String::new()];
    for (i, (_, dim)) in dims.iter().enumerate() {
        let vals = values(dim, dynamic, now);
        let mut next = Vec::with_capacity(keys.len() * vals.len());
        for prefix in &keys {
            for v in &vals {
                next.push(if i == 0 { v.clone() } else { format!("{prefix}|{v}") });
            }
        }
        keys = next;
    }
    keys
}

/// Replaces `${partition}` and `${partition.NAME}`.
pub fn render(text: &str, dims: &Dimensions, key: &str) -> String {
    let mut out = text.to_owned();
    for ((name, _), value) in dims.iter().zip(key.split('|')) {
        out = out.replace(&format!("${{partition.{name}}}"), value);
    }
    out.replace("${partition}", key)
}

/// Keys selected by `--partition KEY` and `--partitions A..B` / `--partitions DIM=A..B`.
pub fn select(
    all: &[String],
    dims: &Dimensions,
    exact: &[String],
    ranges: &[String],
) -> Result<Vec<String>, String> {
    let mut chosen = vec![false; all.len()];
    for key in exact {
        match all.iter().position(|k| k == key) {
            Some(i) => chosen[i] = true,
            None => {
                let hint = crate::closest(key, all.iter().map(String::as_str))
                    .map(|b| format!(" (did you mean `{b}`?)"))
                    .unwrap_or_default();
                return Err(format!("`{key}` is not a partition of this stage{hint}"));
            }
        }
    }
    for range in ranges {
        let (dim, span) = match range.split_once('=') {
            Some((d, s)) => (Some(d), s),
            None => (None, range.as_str()),
        };
        let (from, to) =
            span.split_once("..").ok_or_else(|| format!("`{range}` is not a range like A..B"))?;
        match dim {
            None => {
                let find = |k: &str| {
                    all.iter()
                        .position(|x| x == k)
                        .ok_or_else(|| format!("`{k}` is not a partition of this stage"))
                };
                let (a, b) = (find(from)?, find(to)?);
                for c in chosen.iter_mut().take(b.max(a) + 1).skip(a.min(b)) {
                    *c = true;
                }
            }
            Some(dim) => {
                let index = dims
                    .iter()
                    .position(|(n, _)| n == dim)
                    .ok_or_else(|| format!("no partition dimension `{dim}`"))?;
                for (i, key) in all.iter().enumerate() {
                    let value = key.split('|').nth(index).unwrap_or_default();
                    if value >= from && value <= to {
                        chosen[i] = true;
                    }
                }
            }
        }
    }
    Ok(all.iter().zip(chosen).filter(|(_, c)| *c).map(|(k, _)| k.clone()).collect())
}

/// The dynamic keys of `stage`, from `.cairn/partitions/<stage>.txt`.
pub fn dynamic_keys(root: &Path, stage: &str) -> Vec<String> {
    std::fs::read_to_string(dynamic_file(root, stage))
        .map(|text| text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

pub fn dynamic_file(root: &Path, stage: &str) -> std::path::PathBuf {
    root.join(".cairn/partitions").join(format!("{stage}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(yaml: &str) -> Dimensions {
        let raw: IndexMap<String, RawDimension> = serde_saphyr::from_str(yaml).unwrap();
        parse_dimensions(&raw).unwrap()
    }

    #[test]
    fn time_windows_and_products() {
        let d = dims("date: {daily: {start: 2026-01-30, end: 2026-02-02}}\nregion: {static: [us, eu]}\n");
        let all = keys(&d, &[]);
        assert_eq!(all.len(), 8);
        assert_eq!(all[0], "2026-01-30|us");
        assert_eq!(all[7], "2026-02-02|eu");
        assert_eq!(
            render("${partition.date}/${partition.region} ${partition}", &d, "2026-01-31|eu"),
            "2026-01-31/eu 2026-01-31|eu"
        );
        let sel = select(&all, &d, &[], &["date=2026-01-31..2026-02-01".into()]).unwrap();
        assert_eq!(sel.len(), 4);
        let sel =
            select(&all, &d, &["2026-02-02|us".into()], &["2026-01-30|us..2026-01-30|eu".into()]).unwrap();
        assert_eq!(sel, vec!["2026-01-30|us", "2026-01-30|eu", "2026-02-02|us"]);
        assert!(select(&all, &d, &["2026-03-01|us".into()], &[]).is_err());

        let m = dims("month: {monthly: {start: 2025-11, end: 2026-02}}\n");
        assert_eq!(keys(&m, &[]), vec!["2025-11", "2025-12", "2026-01", "2026-02"]);
        let w = dims("week: {weekly: {start: 2026-01-07, end: 2026-01-20}}\n");
        assert_eq!(keys(&w, &[]), vec!["2026-01-05", "2026-01-12", "2026-01-19"]);
        let h = dims("hour: {hourly: {start: 2026-01-01T22, end: 2026-01-02T01}}\n");
        assert_eq!(keys(&h, &[]), vec!["2026-01-01T22", "2026-01-01T23", "2026-01-02T00", "2026-01-02T01"]);
        let dynamic = dims("customer: {dynamic: true}\n");
        assert_eq!(keys(&dynamic, &["acme".into(), "globex".into()]), vec!["acme", "globex"]);
    }
}
