//! `cairn monitor MODEL`: what a served model saw and answered, profiled from its prediction
//! log, and its drift against the training data's profile recorded at registration; a
//! terminal report, `--json`, and a self-contained HTML report with reference and current
//! histograms per feature. `cairn monitor requests` lists the logged requests behind a
//! drifted feature or an alert; `cairn monitor export` writes logged inputs (and labels) as a
//! CSV or Parquet dataset and `cairn add`s it, for retraining.

use std::path::PathBuf;

use cairn_app::Workspace;
use cairn_app::reports::{self, Selection, VersionReport};
use cairn_monitor::profile::Kind;
use cairn_monitor::quality::Quality;
use serde_json::Value;

use crate::failure::Failure;
use crate::output::out;
use crate::plots::sparkline;

/// `cairn monitor MODEL`'s options.
pub struct MonitorRequest {
    pub select: Selection,
    pub html: Option<PathBuf>,
    /// Buckets for live quality (labels per window of prediction time).
    pub window: Option<String>,
    pub json: bool,
}

/// `cairn monitor MODEL`.
pub fn monitor(ws: &Workspace, request: MonitorRequest) -> Result<(), Failure> {
    let MonitorRequest { select, html: html_path, window, json: as_json } = request;
    let model = &select.model.clone();
    let mut reports = reports::reports(ws, &reports::ReportRequest { select, window })?;
    if let Some(path) = &html_path {
        cairn_fs::write(path, html(model, &mut reports).as_bytes())
            .map_err(|e| Failure::user(format!("cannot write {}: {e}", path.display()), None))?;
    }
    if as_json {
        let documents: Vec<reports::MonitorReport> =
            reports.iter_mut().map(|r| reports::report_document(model, r)).collect();
        return crate::output::json(&documents);
    }
    for report in &mut reports {
        print_report(model, report)?;
    }
    if let Some(path) = &html_path {
        out(format!("wrote {}", path.display()))?;
    }
    Ok(())
}

/// `cairn monitor requests`: the logged requests behind a drifted feature or an alert.
pub fn requests(ws: &Workspace, request: &reports::RequestsRequest, as_json: bool) -> Result<(), Failure> {
    let found = reports::requests(ws, request)?;
    list_requests(&found.requests, &found.what, as_json)
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

/// One version's report on the terminal: what it saw, each feature, quality, coverage, drift.
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
    print_features(report)?;
    print_quality(report)?;
    print_coverage(report)?;
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

/// Each feature: kind, counts, drift method and score, and histograms (current | reference).
fn print_features(report: &mut VersionReport) -> Result<(), Failure> {
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
        let reports::Histogram { reference: reference_hist, current: current_hist, .. } =
            reports::histograms(report.reference.as_ref(), &name, feature);
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
    Ok(())
}

/// Rows and drift per minute, live quality from labels, and failures by reason.
fn print_quality(report: &VersionReport) -> Result<(), Failure> {
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
    Ok(())
}

/// Columns seen only in training, or only in production.
fn print_coverage(report: &VersionReport) -> Result<(), Failure> {
    let Some(r) = &report.reference else { return Ok(()) };
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
    Ok(())
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

/// `cairn monitor export`: the logged inputs as a dataset, added to the cache.
pub fn export(
    ws: &Workspace,
    request: &reports::ExportRequest,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    let exported = reports::export(ws, request, reporter)?;
    let labelled = exported.labelled.map(|n| format!(", {n} labelled")).unwrap_or_default();
    out(format!(
        "exported {} row(s){labelled} to {} and added it (commit {}.cairn to version it)",
        exported.rows,
        exported.file.display(),
        exported.added.display()
    ))
}

/// A self-contained HTML report: per feature, reference and current histograms as SVG bars
/// (the UI's drift panels are the same rendering).
fn html(model: &str, reports: &mut [VersionReport]) -> String {
    let documents: Vec<reports::MonitorReport> =
        reports.iter_mut().map(|r| reports::report_document(model, r)).collect();
    cairn_ui::render::page(
        &format!("cairn monitor {model}"),
        &cairn_ui::render::monitor_sections(model, &documents),
    )
}
/// `cairn monitor requests|export ...`.
pub fn command(
    context: &crate::context::Context,
    action: crate::args::MonitorCommand,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    use crate::args::MonitorCommand;
    let ws = context.workspace()?;
    match action {
        MonitorCommand::Requests { model, feature, alert, select, output } => {
            let request =
                reports::RequestsRequest { select: select.resolve(model, &context.cwd), feature, alert };
            requests(&ws, &request, output.json)
        }
        MonitorCommand::Export { model, out, format, drifted_only, with_labels, labelled_only, select } => {
            let request = reports::ExportRequest {
                select: select.resolve(model, &context.cwd),
                out: context.cwd.join(out),
                format,
                drifted_only,
                with_labels,
                labelled_only,
            };
            export(&ws, &request, reporter)
        }
    }
}
