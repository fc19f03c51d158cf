//! `cairn monitor MODEL`: what a served model saw and answered, profiled from its prediction
//! log, and its drift against the training data's profile recorded at registration; a
//! terminal report, `--json`, and a self-contained HTML report with reference and current
//! histograms per feature. `--requests FEATURE` lists the logged requests whose value of that
//! feature lies outside what the reference saw.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;

use cairn_monitor::drift::{DatasetDrift, DriftConfig, dataset_drift};
use cairn_monitor::profile::{Kind, Profile};
use cairn_monitor::{Row, profile_rows, stats};
use cairn_repo::Repo;
use cairn_serve::predlog::{self, Entry};
use serde_json::{Value, json};

use crate::exp::open_store;
use crate::failure::Failure;
use crate::output::out;
use crate::plots::{escape, sparkline};

pub struct MonitorRequest {
    pub model: String,
    pub version: Option<i64>,
    pub since: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub requests: Option<String>,
    /// Write the logged inputs to this CSV file and `cairn add` it.
    pub export: Option<PathBuf>,
    /// With `export`: only requests with a drifted feature outside the reference.
    pub drifted_only: bool,
    pub json: bool,
}

/// `30m`, `2h`, `7d`, `90s` → milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, Failure> {
    let bad = || {
        Failure::usage(format!(
            "invalid duration `{text}`: write a number and s, m, h or d (e.g. 30m, 2h, 7d)"
        ))
    };
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n = i64::from_str(number).map_err(|_| bad())?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    Ok(n * ms)
}

fn meta(e: cairn_meta::MetaError) -> Failure {
    Failure::user(e.to_string(), None)
}

/// The training-data profile of a version, when it was registered with one.
fn reference(repo: &Repo, digest: Option<&str>) -> Result<Option<Value>, Failure> {
    let Some(digest) = digest else { return Ok(None) };
    let parsed = cairn_hash::Digest::from_str(digest)
        .map_err(|_| Failure::user(format!("bad profile digest `{digest}`"), None))?;
    let bytes = repo.store().read_verified(&parsed).map_err(|e| {
        Failure::user(
            format!("the reference profile {digest} cannot be read: {e}"),
            Some("run `cairn pull` (or `cairn fetch`) to get it from the remote"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Failure::user(format!("the reference profile {digest} is not valid JSON: {e}"), None))
}

struct VersionReport {
    version: i64,
    reference: Option<Value>,
    profile: Profile,
    drift: Option<DatasetDrift>,
    entries: Vec<Entry>,
    errors: usize,
    /// Live quality from `POST /feedback` labels, when there are any.
    quality: Option<Value>,
    /// Per-minute windows the server profiled: (start, rows, share of features drifted).
    windows: Vec<(i64, u64, Option<f64>)>,
}

/// The predicted value a label is compared with: the output named like `label`, else the
/// first output; its first row.
fn predicted(outputs: &str) -> Option<Value> {
    let outputs: Value = serde_json::from_str(outputs).ok()?;
    let map = outputs.as_object()?;
    let (_, rows) = map.iter().find(|(k, _)| k.contains("label")).or_else(|| map.iter().next())?;
    let mut first = rows.as_array()?.first()?.clone();
    while let Value::Array(items) = first {
        first = items.first()?.clone();
    }
    Some(first)
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => {
            a.as_str().map(str::to_owned).unwrap_or_else(|| a.to_string())
                == b.as_str().map(str::to_owned).unwrap_or_else(|| b.to_string())
        }
    }
}

/// Accuracy, precision and recall (classes; the positive class is 1/true when labels are
/// binary), or MAE and RMSE (numbers that are not all integers).
fn quality(pairs: &[(Value, Value)]) -> Option<Value> {
    if pairs.is_empty() {
        return None;
    }
    let numeric = pairs.iter().all(|(p, l)| p.is_number() && l.is_number());
    let integral =
        pairs.iter().all(|(p, l)| [p, l].iter().all(|v| v.as_f64().is_some_and(|x| x.fract() == 0.0)));
    if numeric && !integral {
        let errors: Vec<f64> = pairs.iter().filter_map(|(p, l)| Some(p.as_f64()? - l.as_f64()?)).collect();
        let n = errors.len() as f64;
        return Some(json!({
            "labelled": pairs.len(), "task": "regression",
            "mae": errors.iter().map(|e| e.abs()).sum::<f64>() / n,
            "rmse": (errors.iter().map(|e| e * e).sum::<f64>() / n).sqrt(),
        }));
    }
    let correct = pairs.iter().filter(|(p, l)| same(p, l)).count();
    let positive =
        |v: &Value| v.as_f64() == Some(1.0) || v.as_bool() == Some(true) || v.as_str() == Some("1");
    let tp = pairs.iter().filter(|(p, l)| positive(p) && positive(l)).count() as f64;
    let predicted_positive = pairs.iter().filter(|(p, _)| positive(p)).count() as f64;
    let actual_positive = pairs.iter().filter(|(_, l)| positive(l)).count() as f64;
    Some(json!({
        "labelled": pairs.len(), "task": "classification",
        "accuracy": correct as f64 / pairs.len() as f64,
        "precision": (predicted_positive > 0.0).then(|| tp / predicted_positive),
        "recall": (actual_positive > 0.0).then(|| tp / actual_positive),
    }))
}

pub fn monitor(
    repo: &Repo,
    request: &MonitorRequest,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    let store = open_store(repo)?;
    if store.model(&request.model).map_err(meta)?.is_none() {
        return Err(Failure::user(
            format!("no model named `{}`", request.model),
            Some("list models with `cairn model list`"),
        ));
    }
    let since_ms = match &request.since {
        Some(text) => predlog::now_ms() - parse_duration(text)?,
        None => 0,
    };
    let dir = request.log_dir.clone().unwrap_or_else(|| repo.root().join(crate::serve::PREDICTIONS_DIR));
    let all = predlog::scan(&dir, since_ms).map_err(|e| Failure::user(e.to_string(), None))?;
    let mut reports: Vec<VersionReport> = Vec::new();
    for entry in
        all.into_iter().filter(|e| e.model == request.model && request.version.is_none_or(|v| v == e.version))
    {
        let at = match reports.iter().position(|r| r.version == entry.version) {
            Some(i) => i,
            None => {
                let record = store.model_version(&request.model, entry.version).map_err(meta)?;
                let reference = reference(repo, record.as_ref().and_then(|r| r.profile.as_deref()))?;
                reports.push(VersionReport {
                    version: entry.version,
                    reference,
                    profile: Profile::default(),
                    drift: None,
                    entries: Vec::new(),
                    errors: 0,
                    quality: None,
                    windows: Vec::new(),
                });
                reports.len() - 1
            }
        };
        if entry.status == 200 {
            reports[at].entries.push(entry);
        } else {
            reports[at].errors += 1;
        }
    }
    if reports.is_empty() {
        return Err(Failure::user(
            format!(
                "no logged predictions of `{}`{} in {}",
                request.model,
                request.since.as_ref().map(|s| format!(" in the last {s}")).unwrap_or_default(),
                dir.display()
            ),
            Some("serve it with `cairn serve` (which logs every prediction) and send it requests"),
        ));
    }
    reports.sort_by_key(|r| r.version);
    let labels = predlog::feedback(&dir).map_err(|e| Failure::user(e.to_string(), None))?;
    for report in &mut reports {
        let pairs: Vec<(Value, Value)> = report
            .entries
            .iter()
            .filter_map(|e| Some((predicted(&e.outputs)?, labels.get(&e.trace_id)?.clone())))
            .collect();
        report.quality = quality(&pairs);
    }
    let config = DriftConfig::default();
    for report in &mut reports {
        let rows =
            report.entries.iter().map(|e| Row { time_ms: e.time_ms, inputs: &e.inputs, outputs: &e.outputs });
        for (_, window) in profile_rows(rows, report.reference.as_ref(), i64::MAX / 4) {
            report.profile.merge(&window);
        }
        report.drift = report.reference.as_ref().map(|r| dataset_drift(r, &report.profile, &config));
        for (start, window) in cairn_serve::profiles::read(&dir, &request.model, report.version, since_ms) {
            let share = report.reference.as_ref().map(|r| dataset_drift(r, &window, &config).share);
            report.windows.push((start, window.rows, share));
        }
    }
    if let Some(feature) = &request.requests {
        let found = outside(&reports, feature)?;
        return list_requests(&found, feature, request.json);
    }
    if let Some(path) = &request.export {
        return export(repo, &reports, path, request.drifted_only, reporter);
    }
    if let Some(path) = &request.html {
        std::fs::write(path, html(&request.model, &reports))
            .map_err(|e| Failure::user(format!("cannot write {}: {e}", path.display()), None))?;
    }
    if request.json {
        return crate::output::json(&Value::Array(
            reports.iter_mut().map(|r| report_json(&request.model, r)).collect(),
        ));
    }
    for report in &mut reports {
        print_report(&request.model, report)?;
    }
    if let Some(path) = &request.html {
        out(format!("wrote {}", path.display()))?;
    }
    Ok(())
}

fn summary(feature: &mut cairn_monitor::profile::Feature) -> String {
    match feature.kind {
        Kind::Numeric => {
            let n = &feature.numeric;
            if n.count == 0 {
                "-".into()
            } else {
                format!("mean {:.3} sd {:.3} [{:.3}, {:.3}]", n.mean, n.std(), n.min, n.max)
            }
        }
        Kind::Categorical => {
            let total = feature.valid().max(1) as f64;
            let top: Vec<String> = feature
                .categorical
                .top(3)
                .into_iter()
                .map(|(k, c)| format!("{k} {:.0}%", 100.0 * c as f64 / total))
                .collect();
            format!("{} distinct: {}", feature.categorical.distinct(), top.join(" "))
        }
    }
}

/// Reference and current histograms over shared bins (numeric) or the reference's top
/// categories plus the rest.
fn histograms(
    reference: Option<&Value>,
    name: &str,
    feature: &cairn_monitor::profile::Feature,
) -> (Vec<String>, Vec<f64>, Vec<f64>) {
    let column = reference
        .and_then(|r| r.get("columns"))
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name)));
    match feature.kind {
        Kind::Numeric => {
            let reference: Vec<f64> = stats::sorted(
                &column
                    .and_then(|c| c.get("sample"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
            let current = stats::sorted(&feature.numeric.sample);
            let edges = stats::shared_edges(&reference, &current, 12);
            let labels = edges.windows(2).map(|w| format!("{:.3}–{:.3}", w[0], w[1])).collect();
            (labels, stats::histogram(&reference, &edges), stats::histogram(&current, &edges))
        }
        Kind::Categorical => {
            let mut labels: Vec<String> = Vec::new();
            let mut reference_counts = Vec::new();
            for pair in
                column.and_then(|c| c.get("top")).and_then(Value::as_array).into_iter().flatten().take(12)
            {
                if let (Some(k), Some(c)) =
                    (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_f64))
                {
                    labels.push(k.to_owned());
                    reference_counts.push(c);
                }
            }
            for (k, _) in feature.categorical.top(12) {
                if !labels.contains(&k) && labels.len() < 16 {
                    labels.push(k);
                    reference_counts.push(0.0);
                }
            }
            let current = labels
                .iter()
                .map(|k| feature.categorical.counts.get(k).copied().unwrap_or(0) as f64)
                .collect();
            (labels, reference_counts, current)
        }
    }
}

fn print_report(model: &str, report: &mut VersionReport) -> Result<(), Failure> {
    let first = report.entries.first().map_or(0, |e| e.time_ms);
    let last = report.entries.last().map_or(0, |e| e.time_ms);
    out(format!(
        "{model}@{}: {} predictions ({} rows), {} failed requests, {} to {}",
        report.version,
        report.entries.len(),
        report.profile.rows,
        report.errors,
        crate::output::format_time(first),
        crate::output::format_time(last)
    ))?;
    match &report.reference {
        Some(r) => out(format!(
            "  reference: {} ({} rows)",
            r.get("source").and_then(Value::as_str).unwrap_or("?"),
            r.get("rows").and_then(Value::as_u64).unwrap_or(0)
        ))?,
        None => out("  reference: none (register with --training-data to measure drift)")?,
    }
    out(format!(
        "  {:<24} {:<11} {:>7} {:>7} {:>6}  {:<24} {:<40} {:>8}  {:<5} {}",
        "feature",
        "kind",
        "count",
        "missing",
        "type!",
        "method",
        "summary",
        "score",
        "drift",
        "current | reference"
    ))?;
    let names: Vec<String> = report.profile.features.keys().cloned().collect();
    for name in names {
        let drift =
            report.drift.as_ref().and_then(|d| d.features.iter().find(|f| f.feature == name)).cloned();
        let feature =
            report.profile.features.get_mut(&name).ok_or_else(|| Failure::user("vanished", None))?;
        let (_, reference_hist, current_hist) = histograms(report.reference.as_ref(), &name, feature);
        let (method, score, drifted) = match &drift {
            Some(d) if d.skipped.is_none() => {
                (d.method.name().to_owned(), format!("{:.4}", d.score), if d.drifted { "YES" } else { "no" })
            }
            Some(_) => ("-".into(), "-".into(), "-"),
            None => ("-".into(), "-".into(), "-"),
        };
        let text = summary(feature);
        out(format!(
            "  {:<24} {:<11} {:>7} {:>7} {:>6}  {:<24} {:<40} {:>8}  {:<5} {} | {}",
            name,
            match feature.kind {
                Kind::Numeric => "numeric",
                Kind::Categorical => "categorical",
            },
            feature.count,
            feature.missing,
            feature.type_errors,
            method,
            text,
            score,
            drifted,
            sparkline(&current_hist, 16),
            if reference_hist.iter().sum::<f64>() > 0.0 {
                sparkline(&reference_hist, 16)
            } else {
                "(no reference)".into()
            },
        ))?;
    }
    if !report.windows.is_empty() {
        let shares: Vec<f64> = report.windows.iter().map(|w| w.2.unwrap_or(0.0)).collect();
        let rows: Vec<f64> = report.windows.iter().map(|w| w.1 as f64).collect();
        out(format!(
            "  by minute ({} windows): rows {}  drifted share {}",
            report.windows.len(),
            sparkline(&rows, 60),
            sparkline(&shares, 60)
        ))?;
    }
    if let Some(q) = &report.quality {
        let metric = |k: &str| q.get(k).and_then(Value::as_f64).map(|v| format!("{k} {v:.4}"));
        let parts: Vec<String> =
            ["accuracy", "precision", "recall", "mae", "rmse"].iter().filter_map(|k| metric(k)).collect();
        out(format!("  live quality ({} labelled): {}", q["labelled"], parts.join(", ")))?;
    }
    if let Some(d) = &report.drift {
        let scored = d.features.iter().filter(|f| f.skipped.is_none()).count();
        out(format!(
            "  dataset drift: {} of {scored} features drifted ({:.0}%): {}",
            d.drifted_features,
            d.share * 100.0,
            if d.drifted { "DRIFTED (at least half of the features)" } else { "not drifted" }
        ))?;
    }
    Ok(())
}

fn report_json(model: &str, report: &mut VersionReport) -> Value {
    let features: Vec<Value> = report
        .profile
        .features
        .iter_mut()
        .map(|(name, f)| {
            let distinct = f.categorical.distinct();
            json!({
                "feature": name,
                "kind": f.kind,
                "count": f.count,
                "missing": f.missing,
                "type_errors": f.type_errors,
                "mean": (f.numeric.count > 0).then_some(f.numeric.mean),
                "std": (f.numeric.count > 0).then(|| f.numeric.std()),
                "min": (f.numeric.count > 0).then_some(f.numeric.min),
                "max": (f.numeric.count > 0).then_some(f.numeric.max),
                "distinct": (f.kind == Kind::Categorical).then_some(distinct),
                "top": (f.kind == Kind::Categorical).then(|| f.categorical.top(10)),
            })
        })
        .collect();
    json!({
        "model": model,
        "version": report.version,
        "predictions": report.entries.len(),
        "rows": report.profile.rows,
        "failed_requests": report.errors,
        "reference": report.reference.as_ref().map(|r| json!({"source": r.get("source"), "rows": r.get("rows")})),
        "features": features,
        "drift": report.drift,
        "quality": report.quality,
        "windows": report.windows.iter().map(|(start, rows, share)| json!({"start_ms": start, "rows": rows, "drifted_share": share})).collect::<Vec<_>>(),
    })
}

/// Logged requests whose `feature` lies outside the reference: below its minimum or above its
/// maximum (numeric), or a category it never saw. Each as `{trace_id, time_ms, version, values}`.
fn outside(reports: &[VersionReport], feature: &str) -> Result<Vec<Value>, Failure> {
    let mut found = Vec::new();
    for report in reports {
        let column = report
            .reference
            .as_ref()
            .and_then(|r| r.get("columns"))
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(feature)))
            .ok_or_else(|| {
                Failure::user(
                    format!("version {}'s reference has no feature `{feature}`", report.version),
                    Some("features are the model's input names (see `cairn model show`)"),
                )
            })?;
        let (min, max) =
            (column.get("min").and_then(Value::as_f64), column.get("max").and_then(Value::as_f64));
        let seen: Vec<&str> = column
            .get("top")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(|p| p.get(0).and_then(Value::as_str)).collect())
            .unwrap_or_default();
        let complete = column.get("other").and_then(Value::as_u64) == Some(0);
        for entry in &report.entries {
            let inputs: Value = serde_json::from_str(&entry.inputs).unwrap_or(Value::Null);
            let mut values = Vec::new();
            for row in inputs.get(feature).and_then(Value::as_array).into_iter().flatten() {
                let mut leaves = Vec::new();
                cairn_serve::tensor::flatten(row, &mut leaves);
                values.extend(leaves.into_iter().cloned());
            }
            let out: Vec<&Value> = values
                .iter()
                .filter(|v| match (v, min, max) {
                    (Value::Number(n), Some(lo), Some(hi)) => n.as_f64().is_some_and(|x| x < lo || x > hi),
                    (Value::String(s), _, _) => complete && !seen.contains(&s.as_str()),
                    _ => false,
                })
                .collect();
            if !out.is_empty() {
                found.push(json!({
                    "trace_id": entry.trace_id, "time_ms": entry.time_ms, "version": entry.version,
                    "values": out,
                }));
            }
        }
    }
    Ok(found)
}

fn list_requests(found: &[Value], feature: &str, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return crate::output::json(&found);
    }
    if found.is_empty() {
        return out(format!("no logged request has `{feature}` outside what the reference saw"));
    }
    for r in found {
        out(format!(
            "{}  {}  v{}  {feature} = {}",
            r["trace_id"].as_str().unwrap_or(""),
            crate::output::format_time(r["time_ms"].as_i64().unwrap_or(0)),
            r["version"],
            r["values"]
        ))?;
    }
    out(format!("{} request(s); `cairn trace ID` shows one with its lineage", found.len()))
}

fn csv_field(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// Writes the logged inputs (one CSV row per predicted row, with its trace id) to `path` and
/// `cairn add`s it, so a pipeline stage can retrain on production data.
fn export(
    repo: &Repo,
    reports: &[VersionReport],
    path: &std::path::Path,
    drifted_only: bool,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    if path.extension().and_then(|e| e.to_str()) != Some("csv") {
        return Err(Failure::usage(format!("--export {}: give a .csv file", path.display())));
    }
    // Requests to keep: all, or those with a drifted feature outside the reference.
    let mut keep: Option<std::collections::HashSet<String>> = None;
    if drifted_only {
        let mut ids = std::collections::HashSet::new();
        for report in reports {
            for f in report
                .drift
                .iter()
                .flat_map(|d| &d.features)
                .filter(|f| f.drifted && !f.feature.starts_with("output:"))
            {
                for r in outside(std::slice::from_ref(report), &f.feature)? {
                    ids.insert(r["trace_id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        keep = Some(ids);
    }
    let mut columns: Vec<String> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for report in reports {
        for entry in &report.entries {
            if keep.as_ref().is_some_and(|k| !k.contains(&entry.trace_id)) {
                continue;
            }
            let inputs: Value = serde_json::from_str(&entry.inputs).unwrap_or(Value::Null);
            let Some(map) = inputs.as_object() else { continue };
            if columns.is_empty() {
                columns = map.keys().cloned().collect();
            }
            let rows = map.values().next().and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..rows {
                let mut fields = vec![entry.trace_id.clone()];
                for c in &columns {
                    let cell = map
                        .get(c)
                        .and_then(Value::as_array)
                        .and_then(|r| r.get(i))
                        .cloned()
                        .unwrap_or(Value::Null);
                    let cell = match cell {
                        Value::Array(items) if items.len() == 1 => items[0].clone(),
                        other => other,
                    };
                    fields.push(csv_field(&cell));
                }
                lines.push(fields.join(","));
            }
        }
    }
    if lines.is_empty() {
        return Err(Failure::user(
            "no logged predictions to export",
            Some("widen --since, or drop --drifted-only"),
        ));
    }
    let mut text = std::iter::once("trace_id".to_owned())
        .chain(columns.iter().map(|c| csv_field(&Value::from(c.as_str()))))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure::user(format!("cannot create {}: {e}", parent.display()), None))?;
    }
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Failure::user(format!("cannot write {}: {e}", path.display()), None))?;
    let rel = repo.rel_path(path)?;
    let _lock = repo.lock(reporter)?;
    repo.add(&[rel], reporter)?;
    out(format!(
        "exported {} row(s) to {} and added it (commit {}.cairn to version it)",
        lines.len(),
        path.display(),
        path.display()
    ))
}

/// A self-contained HTML report: per feature, reference and current histograms as SVG bars.
fn html(model: &str, reports: &[VersionReport]) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><meta charset=utf-8><title>cairn monitor {m}</title><style>body{{font:14px system-ui;margin:2em}}table{{border-collapse:collapse}}td,th{{padding:2px 8px;text-align:left}}.d{{color:#D55E00;font-weight:bold}}</style><h1>cairn monitor {m}</h1>",
        m = escape(model)
    );
    for report in reports {
        let mut profile = report.profile.clone();
        let _ = write!(
            page,
            "<h2>{}@{}: {} predictions</h2>",
            escape(model),
            report.version,
            report.entries.len()
        );
        if let Some(d) = &report.drift {
            let _ = write!(
                page,
                "<p>Dataset drift: {} of {} features ({:.0}%) — <b>{}</b></p>",
                d.drifted_features,
                d.features.iter().filter(|f| f.skipped.is_none()).count(),
                d.share * 100.0,
                if d.drifted { "drifted" } else { "not drifted" }
            );
        }
        for (name, feature) in profile.features.iter_mut() {
            let drift = report.drift.as_ref().and_then(|d| d.features.iter().find(|f| &f.feature == name));
            let (labels, reference, current) = histograms(report.reference.as_ref(), name, feature);
            let verdict = match drift {
                Some(d) if d.skipped.is_none() => format!(
                    "{}: {:.4} (threshold {}) — <span class={}>{}</span>",
                    d.method.name(),
                    d.score,
                    d.threshold,
                    if d.drifted { "d" } else { "n" },
                    if d.drifted { "drifted" } else { "no drift" }
                ),
                _ => "no reference".into(),
            };
            let _ = write!(
                page,
                "<h3>{}</h3><p>{} · {}</p>{}",
                escape(name),
                escape(&summary(feature)),
                verdict,
                bars(&labels, &reference, &current)
            );
        }
    }
    page
}

fn bars(labels: &[String], reference: &[f64], current: &[f64]) -> String {
    let share = |v: &[f64]| {
        let t: f64 = v.iter().sum();
        v.iter().map(|x| if t > 0.0 { x / t } else { 0.0 }).collect::<Vec<f64>>()
    };
    let (r, c) = (share(reference), share(current));
    let top = r.iter().chain(&c).fold(0.0f64, |a, &b| a.max(b)).max(1e-9);
    let (w, h, n) = (640.0, 180.0, labels.len().max(1) as f64);
    let slot = w / n;
    let mut svg = format!("<svg width={w} height={} viewBox='0 0 {w} {}'>", h + 40.0, h + 40.0);
    for (i, label) in labels.iter().enumerate() {
        let x = i as f64 * slot;
        for (j, (values, colour)) in [(&r, "#999"), (&c, "#0072B2")].iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0);
            let bh = v / top * h;
            let _ = write!(
                svg,
                "<rect x={:.1} y={:.1} width={:.1} height={:.1} fill='{colour}'><title>{}: {:.1}%</title></rect>",
                x + 2.0 + j as f64 * (slot - 4.0) / 2.0,
                h - bh,
                (slot - 4.0) / 2.0,
                bh,
                escape(label),
                v * 100.0
            );
        }
        let _ = write!(
            svg,
            "<text x={:.1} y={} font-size=10 text-anchor=middle>{}</text>",
            x + slot / 2.0,
            h + 14.0,
            escape(&label.chars().take(14).collect::<String>())
        );
    }
    svg.push_str("<text x=0 y=214 font-size=11 fill='#999'>■ reference</text><text x=90 y=214 font-size=11 fill='#0072B2'>■ current</text></svg>");
    svg
}
