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
//! distribution). CSV, TSV and Parquet files are read; in Parquet, integer, float, boolean
//! and string (plain or dictionary-encoded) columns are profiled, nulls and NaN count as
//! missing.

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
        "parquet" | "pq" => return profile_parquet(path, source),
        _ => {
            return Err(ModelError::BadSpec {
                path: path.to_path_buf(),
                message: "training data profiles are made from .csv, .tsv or .parquet files".into(),
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
    Ok(assemble(source, rows, &headers, columns, missing_counts))
}

/// A Parquet file's columns as text cells (numbers formatted so they parse back exactly).
fn profile_parquet(path: &Path, source: &str) -> Result<Value, ModelError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_array::{Array, RecordBatchReader};
    use arrow_schema::DataType;
    let bad = |message: String| ModelError::BadSpec { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let schema = reader.schema();
    let headers: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    let mut missing_counts = vec![0u64; headers.len()];
    let mut rows = 0u64;
    fn push<T: ToString>(column: &mut Vec<String>, missing: &mut u64, value: Option<T>) {
        match value.map(|v| v.to_string()) {
            Some(text) if !super::profile::missing(&text) => column.push(text),
            _ => *missing += 1,
        }
    }
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        rows += batch.num_rows() as u64;
        for (i, array) in batch.columns().iter().enumerate() {
            let (column, missing) = (&mut columns[i], &mut missing_counts[i]);
            macro_rules! each {
                ($t:ty) => {
                    for v in array.as_primitive::<$t>().iter() {
                        push(column, missing, v);
                    }
                };
            }
            match array.data_type() {
                DataType::Int8 => each!(Int8Type),
                DataType::Int16 => each!(Int16Type),
                DataType::Int32 => each!(Int32Type),
                DataType::Int64 => each!(Int64Type),
                DataType::UInt8 => each!(UInt8Type),
                DataType::UInt16 => each!(UInt16Type),
                DataType::UInt32 => each!(UInt32Type),
                DataType::UInt64 => each!(UInt64Type),
                DataType::Float32 => each!(Float32Type),
                DataType::Float64 => each!(Float64Type),
                DataType::Boolean => {
                    for v in array.as_boolean().iter() {
                        push(column, missing, v);
                    }
                }
                DataType::Utf8 => {
                    for v in array.as_string::<i32>().iter() {
                        push(column, missing, v);
                    }
                }
                DataType::LargeUtf8 => {
                    for v in array.as_string::<i64>().iter() {
                        push(column, missing, v);
                    }
                }
                DataType::Dictionary(_, value) if matches!(**value, DataType::Utf8) => {
                    let dictionary = array.as_any_dictionary();
                    let values = dictionary.values().as_string::<i32>();
                    for (row, key) in dictionary.normalized_keys().into_iter().enumerate() {
                        push(column, missing, (!array.is_null(row)).then(|| values.value(key)));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "column `{}` has type {other}, which is not profiled (use numbers, booleans or strings)",
                        headers[i]
                    )));
                }
            }
        }
    }
    Ok(assemble(source, rows, &headers, columns, missing_counts))
}

/// The profile document of a table read as text cells per column.
fn assemble(
    source: &str,
    rows: u64,
    headers: &[String],
    columns: Vec<Vec<String>>,
    missing: Vec<u64>,
) -> Value {
    let profiles: Vec<Value> = headers
        .iter()
        .zip(columns)
        .zip(missing)
        .map(|((name, values), missing)| column_profile(name, values, missing))
        .collect();
    json!({"format": "cairn-profile-v1", "source": source, "rows": rows, "columns": profiles})
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
        let err = profile_file(&dir.path().join("x.json"), "x").unwrap_err().to_string();
        assert!(err.contains(".csv, .tsv or .parquet"), "{err}");
    }

    #[test]
    fn parquet_profiles_like_the_same_csv() {
        use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let ages: Vec<Option<i64>> = (0..100).map(|i| (i != 7).then_some(i)).collect();
        let scores: Vec<Option<f64>> =
            (0..100).map(|i| Some(if i == 3 { f64::NAN } else { i as f64 / 4.0 })).collect();
        let plans: Vec<Option<&str>> =
            (0..100).map(|i| Some(if i % 4 == 0 { "pro" } else { "basic" })).collect();
        let batch = RecordBatch::try_from_iter([
            ("age", Arc::new(Int64Array::from(ages.clone())) as ArrayRef),
            ("score", Arc::new(Float64Array::from(scores.clone())) as ArrayRef),
            ("plan", Arc::new(StringArray::from(plans.clone())) as ArrayRef),
        ])
        .unwrap();
        let path = dir.path().join("train.parquet");
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let mut csv = String::from("age,score,plan\n");
        for i in 0..100 {
            let age = ages[i].map(|a| a.to_string()).unwrap_or_default();
            csv.push_str(&format!("{age},{},{}\n", scores[i].unwrap(), plans[i].unwrap()));
        }
        std::fs::write(dir.path().join("train.csv"), csv).unwrap();
        let from_parquet = profile_file(&path, "train").unwrap();
        let from_csv = profile_file(&dir.path().join("train.csv"), "train").unwrap();
        assert_eq!(from_parquet, from_csv);
        assert_eq!(from_parquet["columns"][1]["missing"], 1, "NaN is missing");
        assert_eq!(from_parquet["columns"][0]["missing"], 1, "null is missing");
    }
}
