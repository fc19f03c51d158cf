//! Reports over a served model's prediction log: what it saw and answered, profiled, and its
//! drift against the training data's profile recorded at registration (`monitor MODEL`); the
//! logged requests behind a drifted feature or an alert (`monitor requests`); and the logged
//! inputs (and labels) as a CSV or Parquet dataset, added to the cache for retraining
//! (`monitor export`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_monitor::drift::{DatasetDrift, DriftConfig, dataset_drift};
use cairn_monitor::profile::{Kind, Profile};
use cairn_monitor::quality::{Quality, predicted, quality};
use cairn_monitor::stats;
use cairn_monitor::{Row, profile_rows};
use cairn_repo::Repo;
use cairn_serve::predlog::{self, Entry};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Result, Workspace};

/// `30m`, `2h`, `7d`, `90s` → milliseconds.
fn parse_duration(text: &str) -> Result<i64> {
    cairn_monitor::rules::parse_duration(text).map_err(Error::Usage)
}

fn log_error(e: predlog::LogError) -> Error {
    Error::refused(e.to_string(), None)
}

/// Which logged predictions a `cairn monitor` command reads.
pub struct Selection {
    pub model: String,
    pub version: Option<i64>,
    pub since: Option<String>,
    pub log_dir: Option<PathBuf>,
}

/// `monitor requests MODEL (--feature F | --alert ID)`.
pub struct RequestsRequest {
    pub select: Selection,
    pub feature: Option<String>,
    pub alert: Option<String>,
}

/// The logged requests behind something (`monitor requests --json` prints `requests`).
#[derive(Debug, Serialize)]
pub struct FoundRequests {
    /// What they are behind: a feature, or `alert ID`.
    #[serde(skip)]
    pub what: String,
    /// Each as `{trace_id, time_ms, version, [status,] values}`.
    pub requests: Vec<Value>,
}

/// `monitor export MODEL --out PATH`.
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

/// What `monitor export` wrote.
#[derive(Debug, Serialize)]
pub struct Exported {
    pub rows: usize,
    /// Rows with a label, when there is a label column.
    pub labelled: Option<usize>,
    /// The file written.
    pub file: PathBuf,
    /// The path added to the cache (the file, or the directory holding it).
    pub added: PathBuf,
}

/// The training-data profile of a version, when it was registered with one.
fn reference(repo: &Repo, digest: Option<&cairn_hash::Digest>) -> Result<Option<Value>> {
    digest.map(|d| crate::monitoring::read_reference(repo.store(), d)).transpose()
}

/// One version's logged predictions, reference and profile.
pub struct VersionReport {
    pub version: i64,
    pub reference: Option<Value>,
    pub profile: Profile,
    pub drift: Option<DatasetDrift>,
    pub entries: Vec<Entry>,
    pub errors: usize,
    /// Live quality from `POST /feedback` labels, when there are any.
    pub quality: Option<Quality>,
    /// ... per window of prediction time.
    pub quality_windows: Vec<(i64, Quality)>,
    /// Failed requests' reasons, most frequent first.
    pub failures: Vec<(String, usize)>,
    /// Labels by trace id.
    pub labels: std::sync::Arc<std::collections::HashMap<String, Value>>,
    /// Per-minute windows the server profiled: (start, rows, share of features drifted).
    pub windows: Vec<(i64, u64, Option<f64>)>,
    /// Every request (answered or not): when, how long, whether it failed, and its role.
    pub requests: Vec<RequestTiming>,
}

/// One logged request's time, latency and outcome.
#[derive(Debug, Clone)]
pub struct RequestTiming {
    pub time_ms: i64,
    pub latency_us: i64,
    pub failed: bool,
    pub role: String,
}

/// What `monitor` reads: each version's logged predictions, reference and profile.
fn load(ws: &Workspace, select: &Selection, config: &DriftConfig) -> Result<Vec<VersionReport>> {
    let repo = ws.repo();
    let Selection { model, version, since, log_dir } = select;
    let (model, version, since) = (model.as_str(), *version, since.as_deref());
    let store = ws.meta()?;
    if store.model(model)?.is_none() {
        return Err(Error::refused(
            format!("no model named `{model}`"),
            Some("list models with `cairn model list`"),
        ));
    }
    let since_ms = match since {
        Some(text) => predlog::now_ms() - parse_duration(text)?,
        None => 0,
    };
    let dir = log_dir.clone().unwrap_or_else(|| repo.root().join(crate::serving::PREDICTIONS_DIR));
    let all = predlog::scan(&dir, since_ms).map_err(log_error)?;
    let labels = std::sync::Arc::new(predlog::feedback(&dir).map_err(log_error)?);
    let mut reports: Vec<VersionReport> = Vec::new();
    let mut failures: Vec<BTreeMap<String, usize>> = Vec::new();
    for entry in all.into_iter().filter(|e| e.model == model && version.is_none_or(|v| v == e.version)) {
        let at = match reports.iter().position(|r| r.version == entry.version) {
            Some(i) => i,
            None => {
                let record = store.model_version(model, entry.version)?;
                let reference = reference(repo, record.as_ref().and_then(|r| r.profile.as_ref()))?;
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
                    requests: Vec::new(),
                });
                failures.push(Default::default());
                reports.len() - 1
            }
        };
        reports[at].requests.push(RequestTiming {
            time_ms: entry.time_ms,
            latency_us: entry.latency_us,
            failed: entry.status != 200,
            role: entry.role.clone(),
        });
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
        return Err(Error::refused(
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
fn drift_config(repo: &Repo, model: &str) -> Result<DriftConfig> {
    Ok(crate::monitoring::load_config(repo, None)?
        .and_then(|c| c.models.get(model).map(|m| m.drift.config()))
        .unwrap_or_default())
}

/// What `monitor` reports on.
pub struct ReportRequest {
    pub select: Selection,
    /// Buckets for live quality (labels per window of prediction time), e.g. `1h`.
    pub window: Option<String>,
}

/// `monitor MODEL`: each version's logged predictions profiled, with drift against the
/// training data's profile, live quality from labels, failures and per-minute windows.
pub fn reports(ws: &Workspace, request: &ReportRequest) -> Result<Vec<VersionReport>> {
    let config = drift_config(ws.repo(), &request.select.model)?;
    let mut reports = load(ws, &request.select, &config)?;
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
    Ok(reports)
}

/// A version's report as `monitor --json` prints it (and an API returns it).
pub fn report_document(model: &str, report: &mut VersionReport) -> MonitorReport {
    let reference = report.reference.as_ref();
    let features = report
        .profile
        .features
        .iter_mut()
        .map(|(name, f)| {
            let numeric = f.numeric.count > 0;
            let categorical = f.kind == Kind::Categorical;
            FeatureSummary {
                feature: name.clone(),
                kind: f.kind,
                count: f.count,
                missing: f.missing,
                type_errors: f.type_errors,
                mean: numeric.then_some(f.numeric.mean),
                std: numeric.then(|| f.numeric.std()),
                min: numeric.then_some(f.numeric.min),
                max: numeric.then_some(f.numeric.max),
                distinct: categorical.then(|| f.categorical.distinct()),
                top: categorical.then(|| f.categorical.top(10)),
                histogram: histograms(reference, name, f),
            }
        })
        .collect();
    MonitorReport {
        model: model.to_owned(),
        version: report.version,
        predictions: report.entries.len(),
        rows: report.profile.rows,
        failed_requests: report.errors,
        reference: report.reference.as_ref().map(|r| ReferenceSummary {
            source: r.get("source").cloned().unwrap_or(Value::Null),
            rows: r.get("rows").cloned().unwrap_or(Value::Null),
        }),
        features,
        drift: report.drift.clone(),
        quality: report.quality.clone(),
        quality_windows: report
            .quality_windows
            .iter()
            .map(|(start, q)| QualityWindow { start_ms: *start, quality: q.clone() })
            .collect(),
        failures: report
            .failures
            .iter()
            .map(|(reason, n)| FailureCount { reason: reason.clone(), requests: *n })
            .collect(),
        windows: report
            .windows
            .iter()
            .map(|&(start_ms, rows, drifted_share)| DriftWindow { start_ms, rows, drifted_share })
            .collect(),
        traffic: traffic(&report.requests),
        roles: report.requests.iter().fold(BTreeMap::new(), |mut roles, r| {
            *roles.entry(r.role.clone()).or_default() += 1;
            roles
        }),
    }
}

/// `cairn monitor MODEL --json`: one served version's report.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorReport {
    pub model: String,
    pub version: i64,
    /// Logged predictions (requests answered).
    pub predictions: usize,
    /// Rows profiled across them.
    pub rows: u64,
    pub failed_requests: usize,
    /// The training data's profile it is compared with: where it came from, its rows.
    pub reference: Option<ReferenceSummary>,
    pub features: Vec<FeatureSummary>,
    pub drift: Option<DatasetDrift>,
    pub quality: Option<Quality>,
    pub quality_windows: Vec<QualityWindow>,
    pub failures: Vec<FailureCount>,
    pub windows: Vec<DriftWindow>,
    /// Requests, errors and latency percentiles over time (at most about 120 windows).
    pub traffic: Vec<TrafficWindow>,
    /// Requests by the role the version answered them in (`primary`, `canary`, `shadow`,
    /// `direct`).
    pub roles: BTreeMap<String, usize>,
}

/// Requests in one window of time: how many, how many failed, and latency percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct TrafficWindow {
    pub start_ms: i64,
    pub width_ms: i64,
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// The most windows a traffic series has: a minute each, or wider for a long span.
const TRAFFIC_WINDOWS: i64 = 120;

/// Buckets requests into windows of whole minutes, at most about [`TRAFFIC_WINDOWS`] of them.
pub fn traffic(requests: &[RequestTiming]) -> Vec<TrafficWindow> {
    let (Some(first), Some(last)) =
        (requests.iter().map(|r| r.time_ms).min(), requests.iter().map(|r| r.time_ms).max())
    else {
        return Vec::new();
    };
    const MINUTE: i64 = 60_000;
    let width = ((last - first) / TRAFFIC_WINDOWS / MINUTE + 1) * MINUTE;
    let mut buckets: BTreeMap<i64, Vec<&RequestTiming>> = BTreeMap::new();
    for r in requests {
        buckets.entry(r.time_ms - r.time_ms.rem_euclid(width)).or_default().push(r);
    }
    buckets
        .into_iter()
        .map(|(start_ms, rs)| {
            let mut latencies: Vec<f64> = rs.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
            latencies.sort_by(f64::total_cmp);
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
            TrafficWindow {
                start_ms,
                width_ms: width,
                requests: rs.len(),
                errors: rs.iter().filter(|r| r.failed).count(),
                p50_ms: at(0.5),
                p95_ms: at(0.95),
                p99_ms: at(0.99),
            }
        })
        .collect()
}

/// A feature's distribution in the training data and in production over the same bins
/// (numeric: shared edges; categorical: the reference's top categories, then new ones).
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Reference and current histograms over shared bins (numeric) or the reference's top
/// categories plus the rest.
pub fn histograms(
    reference: Option<&Value>,
    name: &str,
    feature: &cairn_monitor::profile::Feature,
) -> Histogram {
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
            Histogram {
                labels,
                reference: stats::histogram(&reference, &edges),
                current: stats::histogram(&current, &edges),
            }
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
            Histogram { labels, reference: reference_counts, current }
        }
    }
}

/// Where a reference profile came from, as recorded at registration.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceSummary {
    pub source: Value,
    pub rows: Value,
}

/// One input feature as the served version saw it.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureSummary {
    pub feature: String,
    pub kind: Kind,
    pub count: u64,
    pub missing: u64,
    pub type_errors: u64,
    /// Numeric features' statistics (`None` without a valid number).
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Categorical features' distinct values and the ten most frequent.
    pub distinct: Option<u64>,
    pub top: Option<Vec<(String, u64)>>,
    /// Reference and current distributions side by side.
    pub histogram: Histogram,
}

/// Live quality from labels in one window of prediction time.
#[derive(Debug, Clone, Serialize)]
pub struct QualityWindow {
    pub start_ms: i64,
    pub quality: Quality,
}

/// How many requests failed for one reason.
#[derive(Debug, Clone, Serialize)]
pub struct FailureCount {
    pub reason: String,
    pub requests: usize,
}

/// One per-minute window the server profiled, with the share of features that drifted.
#[derive(Debug, Clone, Serialize)]
pub struct DriftWindow {
    pub start_ms: i64,
    pub rows: u64,
    pub drifted_share: Option<f64>,
}

/// Logged requests whose `feature` lies outside the reference: below its minimum or above its
/// maximum (numeric), or a category it never saw. Each as `{trace_id, time_ms, version, values}`.
fn outside(reports: &[VersionReport], feature: &str) -> Result<Vec<Value>> {
    let mut found = Vec::new();
    for report in reports {
        let column =
            report.reference.as_ref().and_then(|r| cairn_monitor::reference_column(r, feature)).ok_or_else(
                || {
                    Error::refused(
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

/// `cairn monitor requests`: the logged requests behind a drifted feature or an alert.
pub fn requests(ws: &Workspace, request: &RequestsRequest) -> Result<FoundRequests> {
    let repo = ws.repo();
    let dir =
        request.select.log_dir.clone().unwrap_or_else(|| repo.root().join(crate::serving::PREDICTIONS_DIR));
    if let Some(id) = &request.alert {
        let log = cairn_monitor::alerts::AlertLog::new(&dir);
        let view = log.get(id).map_err(|e| Error::refused(e.to_string(), None))?.ok_or_else(|| {
            Error::refused(format!("no alert `{id}`"), Some("list them with `cairn alerts --all`"))
        })?;
        let alert = view.alert;
        if alert.model != request.select.model {
            return Err(Error::Usage(format!(
                "alert {id} is about `{}`, not `{}`",
                alert.model, request.select.model
            )));
        }
        let rule = cairn_monitor::rules::Rule {
            name: alert.rule.clone(),
            metric: alert.metric.parse().map_err(|e: String| Error::refused(e, None))?,
            op: cairn_monitor::rules::Op::parse(&alert.op).ok_or_else(|| {
                Error::refused(format!("alert {id} has an unknown operator `{}`", alert.op), None)
            })?,
            threshold: alert.threshold,
            window: alert.window_end_ms - alert.window_start_ms,
            hold: 0,
            cooldown: 0,
            min_rows: 0,
            retrain: None,
        };
        let store = ws.meta()?;
        let record = store.model_version(&alert.model, alert.version)?;
        let reference = reference(repo, record.as_ref().and_then(|r| r.profile.as_ref()))?;
        let entries: Vec<Entry> = predlog::scan(&dir, alert.window_start_ms)
            .map_err(log_error)?
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
        return Ok(FoundRequests { what: format!("alert {}", alert.id), requests: found });
    }
    let Some(feature) = &request.feature else {
        return Err(Error::Usage("name what to list: --feature FEATURE or --alert ID".into()));
    };
    let config = drift_config(repo, &request.select.model)?;
    let reports = load(ws, &request.select, &config)?;
    Ok(FoundRequests { what: feature.clone(), requests: outside(&reports, feature)? })
}

fn csv_field(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

/// `monitor export`: the logged inputs of successful predictions, one row per
/// predicted row with its trace id, time and version (and the true label with
/// `--with-labels`), written as CSV or Parquet and `cairn add`ed, so a pipeline stage can
/// retrain on production data.
pub fn export(
    ws: &Workspace,
    request: &ExportRequest,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<Exported> {
    let repo = ws.repo();
    let extension = request.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let format = match (request.format.as_deref(), extension.as_deref()) {
        (Some(f @ ("csv" | "parquet")), _) => f.to_owned(),
        (Some(other), _) => return Err(Error::Usage(format!("--format {other}: use csv or parquet"))),
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
    let reports = load(ws, &request.select, &config)?;
    // Requests to keep: all, or those with a drifted feature outside the reference.
    let keep = if request.drifted_only { Some(drifted_requests(&reports)?) } else { None };
    let (columns, mut rows) = export_rows(&reports, request, keep.as_ref());
    if rows.is_empty() {
        return Err(Error::refused(
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
    .map_err(|e| Error::refused(format!("cannot write {}: {e}", file.display()), None))?;
    let added = if file == request.out { file.clone() } else { request.out.clone() };
    let rel = repo.rel_path(&added)?;
    let _lock = repo.lock(reporter)?;
    repo.add(&[rel], reporter)?;
    let labelled = header
        .last()
        .is_some_and(|h| h == "label")
        .then(|| rows.iter().filter(|r| r.last().is_some_and(|l| !l.is_null())).count());
    Ok(Exported { rows: rows.len(), labelled, file, added })
}

/// The trace ids of requests with a drifted feature outside what the reference saw.
fn drifted_requests(reports: &[VersionReport]) -> Result<std::collections::HashSet<String>> {
    let mut ids = std::collections::HashSet::new();
    for report in reports {
        let drifted = report.drift.iter().flat_map(|d| &d.features);
        for f in drifted.filter(|f| f.drifted && !f.feature.starts_with("output:")) {
            for r in outside(std::slice::from_ref(report), &f.feature)? {
                ids.insert(r["trace_id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    Ok(ids)
}

/// One row per predicted row of the kept requests: trace id, time, version, each input
/// column (in the order first seen), and the label with `with_labels`; returns the input
/// columns and the rows.
fn export_rows(
    reports: &[VersionReport],
    request: &ExportRequest,
    keep: Option<&std::collections::HashSet<String>>,
) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for report in reports {
        for entry in &report.entries {
            if keep.is_some_and(|k| !k.contains(&entry.trace_id)) {
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
    (columns, rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(time_ms: i64, latency_us: i64, failed: bool) -> RequestTiming {
        RequestTiming { time_ms, latency_us, failed, role: "primary".into() }
    }

    #[test]
    fn traffic_is_bucketed_by_minute_with_errors_and_percentiles() {
        let mut requests: Vec<RequestTiming> =
            (0..100).map(|i| timing(60_000 + i * 100, (i + 1) * 1000, false)).collect();
        requests.push(timing(125_000, 500, true));
        let windows = traffic(&requests);
        assert_eq!(windows.len(), 2);
        assert_eq!((windows[0].start_ms, windows[0].requests, windows[0].errors), (60_000, 100, 0));
        assert_eq!((windows[0].p50_ms, windows[0].p99_ms), (51.0, 99.0));
        assert_eq!((windows[1].start_ms, windows[1].requests, windows[1].errors), (120_000, 1, 1));
        // A day of traffic still makes at most about 120 windows.
        let day: Vec<RequestTiming> = (0..1440).map(|m| timing(m * 60_000, 1000, false)).collect();
        assert!(traffic(&day).len() <= 121);
    }
}
