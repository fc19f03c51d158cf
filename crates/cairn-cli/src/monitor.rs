//! `cairn monitor MODEL`: what a served model saw and answered, profiled from its prediction
//! log, and its drift against the training data's profile recorded at registration; a
//! terminal report, `--json`, and a self-contained HTML report with reference and current
//! histograms per feature. `cairn monitor requests` lists the logged requests behind a
//! drifted feature or an alert; `cairn monitor export` writes logged inputs (and labels) as a
//! CSV or Parquet dataset and `cairn add`s it, for retraining.

use std::fmt::Write as _;
use std::path::PathBuf;

use cairn_monitor::drift::{DatasetDrift, DriftConfig, dataset_drift};
use cairn_monitor::profile::{Kind, Profile};
use cairn_monitor::quality::{Quality, predicted, quality};
use cairn_monitor::{Row, profile_rows, stats};
use cairn_repo::Repo;
use cairn_serve::predlog::{self, Entry};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::out;
use crate::plots::{escape, sparkline};
use crate::runs::open_store;

/// Which logged predictions a `cairn monitor` command reads.
pub struct Selection {
    pub model: String,
    pub version: Option<i64>,
    pub since: Option<String>,
    pub log_dir: Option<PathBuf>,
}

pub struct MonitorRequest {
    pub select: Selection,
    pub html: Option<PathBuf>,
    /// Buckets for live quality (labels per window of prediction time).
    pub window: Option<String>,
    pub json: bool,
}

/// `cairn monitor requests MODEL (--feature F | --alert ID)`.
pub struct RequestsRequest {
    pub select: Selection,
    pub feature: Option<String>,
    pub alert: Option<String>,
    pub json: bool,
}

/// `cairn monitor export MODEL --out PATH`.
pub struct ExportRequest {
    pub select: Selection,
    pub out: PathBuf,
    /// `csv` or `parquet` (default: from the extension; a directory gets Parquet).
    pub format: Option<String>,
    /// Only requests with a drifted feature outside what the reference had.
    pub drifted_only: bool,
    /// Add a `label` column from `POST /feedback` (empty where none arrived).
    pub with_labels: bool,
    /// Only rows with a label.
    pub labelled_only: bool,
}

/// `30m`, `2h`, `7d`, `90s` → milliseconds (the grammar is `cairn_units`').
pub fn parse_duration(text: &str) -> Result<i64, Failure> {
    text.parse::<cairn_units::Duration>().map(cairn_units::Duration::as_millis_i64).map_err(Failure::usage)
}

fn meta(e: cairn_meta::MetaError) -> Failure {
    Failure::user(e.to_string(), None)
}

/// The training-data profile of a version, when it was registered with one.
fn reference(repo: &Repo, digest: Option<&str>) -> Result<Option<Value>, Failure> {
    Ok(digest.map(|d| cairn_app::monitoring::read_reference(repo.store(), d)).transpose()?)
}

struct VersionReport {
    version: i64,
    reference: Option<Value>,
    profile: Profile,
    drift: Option<DatasetDrift>,
    entries: Vec<Entry>,
    errors: usize,
    /// Live quality from `POST /feedback` labels, when there are any.
    quality: Option<Quality>,
    /// ... per window of prediction time.
    quality_windows: Vec<(i64, Quality)>,
    /// Failed requests' reasons, most frequent first.
    failures: Vec<(String, usize)>,
    /// Labels by trace id.
    labels: std::sync::Arc<std::collections::HashMap<String, Value>>,
    /// Per-minute windows the server profiled: (start, rows, share of features drifted).
    windows: Vec<(i64, u64, Option<f64>)>,
}

/// What `cairn monitor` reads: each version's logged predictions, reference and profile.
fn load(repo: &Repo, select: &Selection, config: &DriftConfig) -> Result<Vec<VersionReport>, Failure> {
    let Selection { model, version, since, log_dir } = select;
    let (model, version, since) = (model.as_str(), *version, since.as_deref());
    let store = open_store(repo)?;
    if store.model(model).map_err(meta)?.is_none() {
        return Err(Failure::user(
            format!("no model named `{model}`"),
            Some("list models with `cairn model list`"),
        ));
    }
    let since_ms = match since {
        Some(text) => predlog::now_ms() - parse_duration(text)?,
        None => 0,
    };
    let dir = log_dir.clone().unwrap_or_else(|| repo.root().join(cairn_app::serving::PREDICTIONS_DIR));
    let all = predlog::scan(&dir, since_ms).map_err(|e| Failure::user(e.to_string(), None))?;
    let labels =
        std::sync::Arc::new(predlog::feedback(&dir).map_err(|e| Failure::user(e.to_string(), None))?);
    let mut reports: Vec<VersionReport> = Vec::new();
    let mut failures: Vec<std::collections::BTreeMap<String, usize>> = Vec::new();
    for entry in all.into_iter().filter(|e| e.model == model && version.is_none_or(|v| v == e.version)) {
        let at = match reports.iter().position(|r| r.version == entry.version) {
            Some(i) => i,
            None => {
                let record = store.model_version(model, entry.version).map_err(meta)?;
                let reference = reference(repo, record.as_ref().and_then(|r| r.profile.as_deref()))?;
                reports.push(VersionReport {
                    version: entry.version,
                    reference,
                    profile: Profile::default(),
                    drift: None,
                    entries: Vec::new(),
                    errors: 0,
                    quality: None,
                    quality_windows: Vec::new(),
                    failures: Vec::new(),
                    labels: labels.clone(),
                    windows: Vec::new(),
                });
                failures.push(Default::default());
                reports.len() - 1
            }
        };
        if entry.status == 200 {
            reports[at].entries.push(entry);
        } else {
            reports[at].errors += 1;
            *failures[at]
                .entry(entry.error.clone().unwrap_or_else(|| format!("HTTP {}", entry.status)))
                .or_default() += 1;
        }
    }
    if reports.is_empty() {
        return Err(Failure::user(
            format!(
                "no logged predictions of `{model}`{} in {}",
                since.map(|s| format!(" in the last {s}")).unwrap_or_default(),
                dir.display()
            ),
            Some("serve it with `cairn serve` (which logs every prediction) and send it requests"),
        ));
    }
    for (report, failures) in reports.iter_mut().zip(failures) {
        let mut f: Vec<(String, usize)> = failures.into_iter().collect();
        f.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        report.failures = f;
    }
    reports.sort_by_key(|r| r.version);
    for report in &mut reports {
        let pairs: Vec<(Value, Value)> = report
            .entries
            .iter()
            .filter_map(|e| Some((predicted(&e.outputs)?, report.labels.get(&e.trace_id)?.clone())))
            .collect();
        report.quality = quality(&pairs);
        let rows = report.entries.iter().map(|e| Row {
            time_ms: e.time_ms,
            failed: false,
            latency_ms: e.latency_us as f64 / 1000.0,
            inputs: &e.inputs,
            outputs: &e.outputs,
        });
        for (_, window) in profile_rows(rows, report.reference.as_ref(), i64::MAX / 4) {
            report.profile.merge(&window);
        }
        report.drift = report.reference.as_ref().map(|r| dataset_drift(r, &report.profile, config));
        for (start, window) in cairn_serve::profiles::read(&dir, model, report.version, since_ms) {
            let share = report.reference.as_ref().map(|r| dataset_drift(r, &window, config).share);
            report.windows.push((start, window.rows, share));
        }
    }
    Ok(reports)
}

/// The drift settings `monitor.yaml` gives the model (the defaults without one).
fn drift_config(repo: &Repo, model: &str) -> Result<DriftConfig, Failure> {
    Ok(cairn_app::monitoring::load_config(repo, None)?
        .and_then(|c| c.models.get(model).map(|m| m.drift.config()))
        .unwrap_or_default())
}

pub fn monitor(repo: &Repo, request: &MonitorRequest) -> Result<(), Failure> {
    let config = drift_config(repo, &request.select.model)?;
    let mut reports = load(repo, &request.select, &config)?;
    if let Some(window) = &request.window {
        let window = parse_duration(window)?.max(1);
        for report in &mut reports {
            let mut buckets: std::collections::BTreeMap<i64, Vec<(Value, Value)>> = Default::default();
            for e in &report.entries {
                if let (Some(p), Some(l)) = (predicted(&e.outputs), report.labels.get(&e.trace_id)) {
                    buckets.entry(e.time_ms - e.time_ms.rem_euclid(window)).or_default().push((p, l.clone()));
                }
            }
            report.quality_windows =
                buckets.into_iter().filter_map(|(start, pairs)| Some((start, quality(&pairs)?))).collect();
        }
    }
    if let Some(path) = &request.html {
        cairn_fs::write(path, html(&request.select.model, &reports).as_bytes())
            .map_err(|e| Failure::user(format!("cannot write {}: {e}", path.display()), None))?;
    }
    if request.json {
        return crate::output::json(&Value::Array(
            reports.iter_mut().map(|r| report_json(&request.select.model, r)).collect(),
        ));
    }
    for report in &mut reports {
        print_report(&request.select.model, report)?;
    }
    if let Some(path) = &request.html {
        out(format!("wrote {}", path.display()))?;
    }
    Ok(())
}

/// `cairn monitor requests`: the logged requests behind a drifted feature or an alert.
pub fn requests(repo: &Repo, request: &RequestsRequest) -> Result<(), Failure> {
    let dir = request
        .select
        .log_dir
        .clone()
        .unwrap_or_else(|| repo.root().join(cairn_app::serving::PREDICTIONS_DIR));
    if let Some(id) = &request.alert {
        let log = cairn_monitor::alerts::AlertLog::new(&dir);
        let view = log.get(id).map_err(|e| Failure::user(e.to_string(), None))?.ok_or_else(|| {
            Failure::user(format!("no alert `{id}`"), Some("list them with `cairn alerts --all`"))
        })?;
        let alert = view.alert;
        if alert.model != request.select.model {
            return Err(Failure::usage(format!(
                "alert {id} is about `{}`, not `{}`",
                alert.model, request.select.model
            )));
        }
        let rule = cairn_monitor::rules::Rule {
            name: alert.rule.clone(),
            metric: alert.metric.parse().map_err(|e: String| Failure::user(e, None))?,
            op: cairn_monitor::rules::Op::parse(&alert.op).ok_or_else(|| {
                Failure::user(format!("alert {id} has an unknown operator `{}`", alert.op), None)
            })?,
            threshold: alert.threshold,
            window: alert.window_end_ms - alert.window_start_ms,
            hold: 0,
            cooldown: 0,
            min_rows: 0,
            retrain: None,
        };
        let store = open_store(repo)?;
        let record = store.model_version(&alert.model, alert.version).map_err(meta)?;
        let reference = reference(repo, record.as_ref().and_then(|r| r.profile.as_deref()))?;
        let entries: Vec<Entry> = predlog::scan(&dir, alert.window_start_ms)
            .map_err(|e| Failure::user(e.to_string(), None))?
            .into_iter()
            .filter(|e| {
                e.model == alert.model && e.version == alert.version && e.time_ms <= alert.window_end_ms
            })
            .collect();
        let behind =
            cairn_serve::alerting::requests_behind(&rule, &alert.features, reference.as_ref(), &entries);
        let found: Vec<Value> = behind
            .iter()
            .map(|e| json!({"trace_id": e.trace_id, "time_ms": e.time_ms, "version": e.version, "status": e.status, "values": serde_json::from_str::<Value>(&e.inputs).unwrap_or(Value::Null)}))
            .collect();
        return list_requests(&found, &format!("alert {}", alert.id), request.json);
    }
    let Some(feature) = &request.feature else {
        return Err(Failure::usage("name what to list: --feature FEATURE or --alert ID"));
    };
    let config = drift_config(repo, &request.select.model)?;
    let reports = load(repo, &request.select, &config)?;
    let found = outside(&reports, feature)?;
    list_requests(&found, feature, request.json)
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
    let describe = |q: &Quality| {
        ["accuracy", "precision", "recall", "mae", "rmse"]
            .iter()
            .filter_map(|k| q.metric(k).map(|v| format!("{k} {v:.4}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(q) = &report.quality {
        out(format!("  live quality ({} labelled): {}", q.labelled, describe(q)))?;
    }
    for (start, q) in &report.quality_windows {
        out(format!(
            "    from {} ({} labelled): {}",
            crate::output::format_time(*start),
            q.labelled,
            describe(q)
        ))?;
    }
    if !report.failures.is_empty() {
        out(format!("  failed requests by reason ({}):", report.errors))?;
        for (reason, n) in report.failures.iter().take(10) {
            out(format!("    {n:>6}  {reason}"))?;
        }
    }
    if let Some(r) = &report.reference {
        let missing: Vec<&str> = r
            .get("columns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str))
            .filter(|n| !report.profile.features.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            out(format!(
                "  in the training data but never seen in production: {} (not model inputs, or always refused)",
                missing.join(", ")
            ))?;
        }
        let new: Vec<&String> = report
            .profile
            .features
            .keys()
            .filter(|n| !n.starts_with("output:") && cairn_monitor::reference_column(r, n).is_none())
            .collect();
        if !new.is_empty() {
            out(format!(
                "  in production but not in the training data (no drift measured): {}",
                new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ))?;
        }
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
        "quality_windows": report.quality_windows.iter().map(|(start, q)| json!({"start_ms": start, "quality": q})).collect::<Vec<_>>(),
        "failures": report.failures.iter().map(|(reason, n)| json!({"reason": reason, "requests": n})).collect::<Vec<_>>(),
        "windows": report.windows.iter().map(|(start, rows, share)| json!({"start_ms": start, "rows": rows, "drifted_share": share})).collect::<Vec<_>>(),
    })
}

/// Logged requests whose `feature` lies outside the reference: below its minimum or above its
/// maximum (numeric), or a category it never saw. Each as `{trace_id, time_ms, version, values}`.
fn outside(reports: &[VersionReport], feature: &str) -> Result<Vec<Value>, Failure> {
    let mut found = Vec::new();
    for report in reports {
        let column =
            report.reference.as_ref().and_then(|r| cairn_monitor::reference_column(r, feature)).ok_or_else(
                || {
                    Failure::user(
                        format!("version {}'s reference has no feature `{feature}`", report.version),
                        Some("features are the model's input names (see `cairn model show`)"),
                    )
                },
            )?;
        let seen = cairn_monitor::Seen::new(column);
        for entry in &report.entries {
            let inputs: Value = serde_json::from_str(&entry.inputs).unwrap_or(Value::Null);
            let mut values = Vec::new();
            for row in inputs.get(feature).and_then(Value::as_array).into_iter().flatten() {
                let mut leaves = Vec::new();
                cairn_serve::tensor::flatten(row, &mut leaves);
                values.extend(leaves.into_iter().cloned());
            }
            let out: Vec<&Value> = values.iter().filter(|v| seen.outside(v)).collect();
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

fn list_requests(found: &[Value], what: &str, as_json: bool) -> Result<(), Failure> {
    if as_json {
        return crate::output::json(&found);
    }
    if found.is_empty() {
        return out(format!("no logged request is behind {what} (outside what the reference saw)"));
    }
    for r in found {
        out(format!(
            "{}  {}  v{}  {what}: {}",
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

/// `cairn monitor export`: the logged inputs of successful predictions, one row per
/// predicted row with its trace id, time and version (and the true label with
/// `--with-labels`), written as CSV or Parquet and `cairn add`ed, so a pipeline stage can
/// retrain on production data.
pub fn export(
    repo: &Repo,
    request: &ExportRequest,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    let extension = request.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let format = match (request.format.as_deref(), extension.as_deref()) {
        (Some(f @ ("csv" | "parquet")), _) => f.to_owned(),
        (Some(other), _) => return Err(Failure::usage(format!("--format {other}: use csv or parquet"))),
        (None, Some(e @ ("csv" | "parquet"))) => e.to_owned(),
        (None, _) => "parquet".to_owned(),
    };
    // A path without a file extension is a directory holding one file.
    let file = if matches!(extension.as_deref(), Some("csv" | "parquet")) {
        request.out.clone()
    } else {
        request.out.join(format!("production.{format}"))
    };
    let config = drift_config(repo, &request.select.model)?;
    let reports = load(repo, &request.select, &config)?;
    // Requests to keep: all, or those with a drifted feature outside the reference.
    let mut keep: Option<std::collections::HashSet<String>> = None;
    if request.drifted_only {
        let mut ids = std::collections::HashSet::new();
        for report in &reports {
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
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for report in &reports {
        for entry in &report.entries {
            if keep.as_ref().is_some_and(|k| !k.contains(&entry.trace_id)) {
                continue;
            }
            let label = report.labels.get(&entry.trace_id);
            if request.labelled_only && label.is_none() {
                continue;
            }
            let inputs: Value = serde_json::from_str(&entry.inputs).unwrap_or(Value::Null);
            let Some(map) = inputs.as_object() else { continue };
            for name in map.keys() {
                if !columns.contains(name) {
                    columns.push(name.clone());
                }
            }
            let n = map.values().next().and_then(Value::as_array).map_or(0, Vec::len);
            for i in 0..n {
                let mut row = vec![json!(entry.trace_id), json!(entry.time_ms), json!(entry.version)];
                for c in &columns {
                    let cell = map.get(c).and_then(Value::as_array).and_then(|r| r.get(i)).cloned();
                    row.push(match cell {
                        Some(Value::Array(items)) if items.len() == 1 => items[0].clone(),
                        Some(other) => other,
                        None => Value::Null,
                    });
                }
                if request.with_labels || request.labelled_only {
                    // One label per request: it labels the request's (first) row.
                    row.push(if i == 0 { label.cloned().unwrap_or(Value::Null) } else { Value::Null });
                }
                rows.push(row);
            }
        }
    }
    if rows.is_empty() {
        return Err(Failure::user(
            "no logged predictions to export",
            Some("widen --since, or drop --drifted-only / --labelled-only"),
        ));
    }
    let mut header: Vec<String> = ["trace_id", "time_ms", "version"].map(str::to_owned).to_vec();
    header.extend(columns.iter().cloned());
    if request.with_labels || request.labelled_only {
        header.push("label".into());
    }
    // Rows from before a column first appeared lack it.
    for row in &mut rows {
        row.resize(header.len(), Value::Null);
    }
    // Inside the repository (it is added as a dataset below), through no link leading out.
    repo.prepare_write(&repo.rel_path(&file)?)?;
    cairn_fs::write_with(&file, cairn_fs::Options::default(), |out| {
        if format == "csv" { write_csv(out, &header, &rows) } else { write_parquet(out, &header, &rows) }
    })
    .map_err(|e| Failure::user(format!("cannot write {}: {e}", file.display()), None))?;
    let added = if file == request.out { file.clone() } else { request.out.clone() };
    let rel = repo.rel_path(&added)?;
    let _lock = repo.lock(reporter)?;
    repo.add(&[rel], reporter)?;
    let labelled = if header.last().is_some_and(|h| h == "label") {
        format!(", {} labelled", rows.iter().filter(|r| r.last().is_some_and(|l| !l.is_null())).count())
    } else {
        String::new()
    };
    out(format!(
        "exported {} row(s){labelled} to {} and added it (commit {}.cairn to version it)",
        rows.len(),
        file.display(),
        added.display()
    ))
}

fn write_csv(out: &mut std::fs::File, header: &[String], rows: &[Vec<Value>]) -> std::io::Result<()> {
    let mut text = header.iter().map(|c| csv_field(&Value::from(c.as_str()))).collect::<Vec<_>>().join(",");
    text.push('\n');
    for row in rows {
        text.push_str(&row.iter().map(csv_field).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    std::io::Write::write_all(out, text.as_bytes())
}

/// Columns whose values are all numbers (or null) become Float64 (Int64 when all are
/// integers); the rest Utf8. Every column is nullable.
fn write_parquet(out: &mut std::fs::File, header: &[String], rows: &[Vec<Value>]) -> std::io::Result<()> {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let cells = rows.iter().map(|r| &r[i]);
        let numeric = cells.clone().all(|v| v.is_number() || v.is_null());
        let integral = numeric && cells.clone().all(|v| v.is_null() || v.is_i64());
        if integral {
            fields.push(Field::new(name, DataType::Int64, true));
            arrays.push(std::sync::Arc::new(cells.map(Value::as_i64).collect::<Int64Array>()));
        } else if numeric {
            fields.push(Field::new(name, DataType::Float64, true));
            arrays.push(std::sync::Arc::new(cells.map(Value::as_f64).collect::<Float64Array>()));
        } else {
            fields.push(Field::new(name, DataType::Utf8, true));
            let text = cells.map(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            });
            arrays.push(std::sync::Arc::new(text.collect::<StringArray>()));
        }
    }
    let schema = std::sync::Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(std::io::Error::other)?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(out, schema, None).map_err(std::io::Error::other)?;
    writer.write(&batch).map_err(std::io::Error::other)?;
    writer.close().map(drop).map_err(std::io::Error::other)
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
/// `cairn monitor requests|export ...`.
pub fn command(
    context: &crate::context::Context,
    action: crate::args::MonitorCommand,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    use crate::args::MonitorCommand;
    let repo = context.open()?;
    match action {
        MonitorCommand::Requests { model, feature, alert, select, output } => requests(
            &repo,
            &RequestsRequest {
                select: select.resolve(model, &context.cwd),
                feature,
                alert,
                json: output.json,
            },
        ),
        MonitorCommand::Export { model, out, format, drifted_only, with_labels, labelled_only, select } => {
            export(
                &repo,
                &ExportRequest {
                    select: select.resolve(model, &context.cwd),
                    out: context.cwd.join(out),
                    format,
                    drifted_only,
                    with_labels,
                    labelled_only,
                },
                reporter,
            )
        }
    }
}
