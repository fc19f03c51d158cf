//! Profiling and drift speed, for `bench/monitor.py` (which runs whylogs and Evidently on the
//! same files):
//!
//!     cargo run --release -p cairn-monitor --example bench -- profile data.csv
//!     cargo run --release -p cairn-monitor --example bench -- drift reference.csv current.csv
//!
//! `profile`: reads the CSV into memory (not timed), then profiles every value on one thread
//! (columns whose first value parses as a number are numeric). `drift`: profiles both files,
//! then times the drift computation for all columns (median of 5). Prints JSON.

use std::time::Instant;

use cairn_monitor::drift::{DriftConfig, dataset_drift};
use cairn_monitor::profile::{Cell, Feature, Kind, Profile};
use serde_json::{Value, json};

enum Column {
    Num(Vec<f64>),
    Text(Vec<String>),
}

fn read(path: &str) -> (Vec<String>, Vec<Column>) {
    let text = std::fs::read_to_string(path).expect("read the CSV");
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("a header").split(',').map(str::to_owned).collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let columns = (0..header.len())
        .map(|j| {
            if rows[0][j].parse::<f64>().is_ok() {
                Column::Num(rows.iter().map(|r| r[j].parse().unwrap_or(f64::NAN)).collect())
            } else {
                Column::Text(rows.iter().map(|r| r[j].to_owned()).collect())
            }
        })
        .collect();
    (header, columns)
}

fn profile(header: &[String], columns: &[Column]) -> Profile {
    let mut p = Profile::default();
    for (name, column) in header.iter().zip(columns) {
        let f: &mut Feature = match column {
            Column::Num(_) => p.feature(name, Kind::Numeric),
            Column::Text(_) => p.feature(name, Kind::Categorical),
        };
        match column {
            Column::Num(v) => v.iter().for_each(|x| f.add(Cell::Num(*x))),
            Column::Text(v) => v.iter().for_each(|s| f.add(Cell::Text(s))),
        }
    }
    p.rows = match columns.first() {
        Some(Column::Num(v)) => v.len() as u64,
        Some(Column::Text(v)) => v.len() as u64,
        None => 0,
    };
    p
}

/// A training-data profile (`cairn-profile-v1`) of the reference, as registration makes it.
fn reference(header: &[String], columns: &[Column]) -> Value {
    let cols: Vec<Value> = header
        .iter()
        .zip(columns)
        .map(|(name, c)| match c {
            Column::Num(v) => {
                let mut s = v.clone();
                s.sort_by(f64::total_cmp);
                let n = s.len();
                let sample: Vec<f64> =
                    if n <= 1000 { s.clone() } else { (0..=1000).map(|i| s[(i * (n - 1)) / 1000]).collect() };
                let mean = s.iter().sum::<f64>() / n as f64;
                let std = (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
                json!({"name": name, "kind": "numeric", "count": n, "std": std, "sample": sample})
            }
            Column::Text(v) => {
                let mut counts = std::collections::BTreeMap::<&str, u64>::new();
                for s in v {
                    *counts.entry(s).or_default() += 1;
                }
                let top: Vec<Value> = counts.iter().map(|(k, c)| json!([k, c])).collect();
                json!({"name": name, "kind": "categorical", "count": v.len(), "top": top, "other": 0})
            }
        })
        .collect();
    json!({"format": "cairn-profile-v1", "columns": cols})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("profile") => {
            let (header, columns) = read(&args[2]);
            let values: usize = columns
                .iter()
                .map(|c| match c {
                    Column::Num(v) => v.len(),
                    Column::Text(v) => v.len(),
                })
                .sum();
            let mut times = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let p = profile(&header, &columns);
                times.push(started.elapsed().as_secs_f64());
                std::hint::black_box(p);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{}",
                json!({"values": values, "seconds": times[1], "values_per_second": values as f64 / times[1]})
            );
        }
        Some("drift") => {
            let (header, ref_columns) = read(&args[2]);
            let (_, cur_columns) = read(&args[3]);
            let reference = reference(&header, &ref_columns);
            let current = profile(&header, &cur_columns);
            let mut times = Vec::new();
            let mut drifted = 0;
            for _ in 0..5 {
                let started = Instant::now();
                let d = dataset_drift(&reference, &current, &DriftConfig::default());
                times.push(started.elapsed().as_secs_f64());
                drifted = d.drifted_features;
            }
            times.sort_by(f64::total_cmp);
            println!("{}", json!({"features": header.len(), "drifted": drifted, "seconds": times[2]}));
        }
        _ => eprintln!("usage: bench profile FILE.csv | bench drift REFERENCE.csv CURRENT.csv"),
    }
}
