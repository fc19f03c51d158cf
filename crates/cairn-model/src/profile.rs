//! A profile of a model's training data (`cairn model register --training-data FILE`): what
//! each column looked like, so monitoring can later compare live inputs with it.
//!
//! Format `cairn-profile-v1` (JSON, stored as a cache object; the version records its digest):
//!
//! ```json
//! {"format": "cairn-profile-v1", "source": "data/train.csv", "rows": 1000, "columns": [
//!   {"name": "age", "kind": "numeric", "count": 990, "missing": 10,
//!    "min": 18, "max": 90, "mean": 41.2, "std": 12.9,
//!    "quantiles": {"0.01": 19, "0.05": 22, "0.25": 31, "0.5": 40, "0.75": 50, "0.95": 65, "0.99": 80},
//!    "histogram": {"edges": [18, 25.2, ..., 90], "counts": [120, ...]},
//!    "sample": [18, 18, 19, ...]},
//!   {"name": "plan", "kind": "categorical", "count": 1000, "missing": 0, "distinct": 3,
//!    "top": [["basic", 600], ["pro", 300], ["team", 100]], "other": 0}
//! ]}
//! ```
//!
//! A column is numeric when every present value parses as a number. Missing values are empty
//! fields and `NA`, `null`, `NULL`, `NaN`, `nan`. Histograms have ten equal-width bins over
//! `[min, max]`; categorical columns keep the 50 most frequent values (`other` counts the
//! rest). Quantiles are exact (the column is sorted). `sample` is what drift tests compare
//! live values with: every value, sorted, when the column has at most 1,000; otherwise its
//! 1,001 quantiles at 0, 0.001, ..., 1 (a sample of equal-weight points that follows the
//! distribution). CSV and TSV files are read.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::ModelError;

const TOP: usize = 50;
const BINS: usize = 10;
/// Columns of at most this many values keep them all as their drift sample.
const SAMPLE: usize = 1000;
const QUANTILES: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];

fn missing(field: &str) -> bool {
    matches!(field.trim(), "" | "NA" | "null" | "NULL" | "NaN" | "nan")
}

/// Profiles the CSV (or `.tsv`) file at `path`; `source` is how the profile names it.
pub fn profile_file(path: &Path, source: &str) -> Result<Value, ModelError> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let delimiter = match extension.as_str() {
        "csv" => b',',
        "tsv" => b'\t',
        _ => {
            return Err(ModelError::BadSpec {
                path: path.to_path_buf(),
                message: "training data profiles are made from .csv or .tsv files".into(),
            });
        }
    };
    let bad = |message: String| ModelError::BadSpec { path: path.to_path_buf(), message };
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter).from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers: Vec<String> =
        reader.headers().map_err(|e| bad(e.to_string()))?.iter().map(str::to_owned).collect();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    let mut missing_counts = vec![0u64; headers.len()];
    let mut rows = 0u64;
    for record in reader.records() {
        let record = record.map_err(|e| bad(format!("row {}: {e}", rows + 1)))?;
        rows += 1;
        for (i, column) in columns.iter_mut().enumerate() {
            match record.get(i) {
                Some(field) if !missing(field) => column.push(field.to_owned()),
                _ => missing_counts[i] += 1,
            }
        }
    }
    let profiles: Vec<Value> = headers
        .iter()
        .zip(columns)
        .zip(missing_counts)
        .map(|((name, values), missing)| column_profile(name, values, missing))
        .collect();
    Ok(json!({"format": "cairn-profile-v1", "source": source, "rows": rows, "columns": profiles}))
}

fn column_profile(name: &str, values: Vec<String>, missing: u64) -> Value {
    let numbers: Option<Vec<f64>> =
        values.iter().map(|v| v.trim().parse::<f64>().ok().filter(|f| f.is_finite())).collect();
    match numbers {
        Some(mut numbers) if !numbers.is_empty() => {
            numbers.sort_by(f64::total_cmp);
            let n = numbers.len() as f64;
            let mean = numbers.iter().sum::<f64>() / n;
            let std = (numbers.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let (min, max) = (numbers[0], numbers[numbers.len() - 1]);
            // Linear interpolation between order statistics (numpy's default).
            let quantile = |q: f64| {
                let at = q * (n - 1.0);
                let (lo, frac) = (at.floor() as usize, at - at.floor());
                let hi = (lo + 1).min(numbers.len() - 1);
                numbers[lo] + (numbers[hi] - numbers[lo]) * frac
            };
            let width = (max - min) / BINS as f64;
            let mut counts = [0u64; BINS];
            for x in &numbers {
                let bin = if width > 0.0 { (((x - min) / width) as usize).min(BINS - 1) } else { 0 };
                counts[bin] += 1;
            }
            let edges: Vec<f64> = (0..=BINS).map(|i| min + width * i as f64).collect();
            let quantiles: serde_json::Map<String, Value> =
                QUANTILES.iter().map(|q| (q.to_string(), json!(quantile(*q)))).collect();
            let sample: Vec<f64> = if numbers.len() <= SAMPLE {
                numbers.clone()
            } else {
                (0..=SAMPLE).map(|i| quantile(i as f64 / SAMPLE as f64)).collect()
            };
            json!({
                "name": name, "kind": "numeric", "count": numbers.len(), "missing": missing,
                "min": min, "max": max, "mean": mean, "std": std, "quantiles": quantiles,
                "histogram": {"edges": edges, "counts": counts}, "sample": sample,
            })
        }
        _ => {
            let mut frequencies: HashMap<&str, u64> = HashMap::new();
            for v in &values {
                *frequencies.entry(v.as_str()).or_default() += 1;
            }
            let mut top: Vec<(&str, u64)> = frequencies.iter().map(|(k, v)| (*k, *v)).collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let other: u64 = top.iter().skip(TOP).map(|(_, c)| c).sum();
            top.truncate(TOP);
            json!({
                "name": name, "kind": "categorical", "count": values.len(), "missing": missing,
                "distinct": frequencies.len(), "top": top, "other": other,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_categorical_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.csv");
        let mut text = String::from("age,plan\n");
        for i in 0..100 {
            text.push_str(&format!(
                "{},{}\n",
                if i == 7 { "NA".to_owned() } else { i.to_string() },
                if i % 4 == 0 { "pro" } else { "basic" }
            ));
        }
        std::fs::write(&path, text).unwrap();
        let p = profile_file(&path, "train.csv").unwrap();
        assert_eq!(p["rows"], 100);
        let age = &p["columns"][0];
        assert_eq!(
            (age["kind"].as_str(), age["count"].as_u64(), age["missing"].as_u64()),
            (Some("numeric"), Some(99), Some(1))
        );
        assert_eq!((age["min"].as_f64(), age["max"].as_f64()), (Some(0.0), Some(99.0)));
        assert_eq!(age["quantiles"]["0.5"], 50.0);
        assert_eq!(
            age["histogram"]["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
            99
        );
        let plan = &p["columns"][1];
        assert_eq!(plan["kind"], "categorical");
        assert_eq!(plan["top"], json!([["basic", 75], ["pro", 25]]));
        let err = profile_file(&dir.path().join("x.parquet"), "x").unwrap_err().to_string();
        assert!(err.contains(".csv or .tsv"), "{err}");
    }
}
