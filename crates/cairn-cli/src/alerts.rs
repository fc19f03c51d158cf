//! `cairn alerts`: what `monitor.yaml`'s rules opened and resolved, `cairn alerts show ID`,
//! and `cairn alerts check` (one evaluation now, as `cairn serve` runs every
//! `evaluate_every`); the use cases are [`cairn_app::monitoring`]'s.

use std::path::PathBuf;

use cairn_app::Workspace;
use cairn_app::monitoring::{self, AlertsQuery, CheckRequest};
use cairn_monitor::alerts::{AlertView, Event};

use crate::failure::Failure;
use crate::output::{format_time, out};

pub struct ListRequest {
    pub all: bool,
    pub model: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub json: bool,
}

/// `cairn alerts`: open alerts (with `--all`, resolved ones too), newest first.
pub fn list(ws: &Workspace, request: &ListRequest) -> Result<(), Failure> {
    let query =
        AlertsQuery { all: request.all, model: request.model.clone(), log_dir: request.log_dir.clone() };
    let views = monitoring::alerts(ws, &query)?;
    if request.json {
        return crate::output::json(&views);
    }
    if views.is_empty() {
        return out(if request.all { "no alerts" } else { "no open alerts (--all lists resolved ones)" });
    }
    out(format!("{:<20} {:<9} {:<19} {:<19} {}", "id", "state", "opened", "resolved", "alert"))?;
    for v in &views {
        out(format!(
            "{:<20} {:<9} {:<19} {:<19} {}{}",
            v.alert.id,
            if v.resolved_ms.is_some() { "resolved" } else { "OPEN" },
            format_time(v.alert.opened_ms),
            v.resolved_ms.map(format_time).unwrap_or_else(|| "-".into()),
            v.alert.summary(),
            delivery_note(v),
        ))?;
    }
    Ok(())
}

/// `  (webhook failed)` when a delivery of the alert failed.
fn delivery_note(view: &AlertView) -> String {
    let failed = view.history.iter().filter(|e| matches!(e, Event::DeliveryFailed { .. })).count();
    if failed > 0 { format!("  ({failed} webhook deliveries failed)") } else { String::new() }
}

/// `cairn alerts show ID`: the alert, the requests behind it, its deliveries and actions.
pub fn show(ws: &Workspace, id: &str, dir: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let view = monitoring::alert(ws, id, dir)?;
    if json {
        return crate::output::json(&view);
    }
    let a = &view.alert;
    out(format!("alert {}: {}", a.id, a.summary()))?;
    out(format!(
        "  window {} to {}; opened {}; {}",
        format_time(a.window_start_ms),
        format_time(a.window_end_ms),
        format_time(a.opened_ms),
        view.resolved_ms.map_or("still open".to_owned(), |t| format!("resolved {}", format_time(t)))
    ))?;
    if !a.features.is_empty() {
        out(format!("  features: {}", a.features.join(", ")))?;
    }
    out(format!("  {} request(s) behind it; all of them: {}", a.requests_total, a.requests_command))?;
    for id in &a.requests {
        out(format!("    {id}   (cairn trace {id})"))?;
    }
    for event in &view.history {
        let line = match event {
            Event::Delivered { what, url, attempts, time_ms, .. } => {
                format!("{}  {what}: delivered to {url} (attempt {attempts})", format_time(*time_ms))
            }
            Event::DeliveryFailed { what, url, attempts, error, time_ms, .. } => format!(
                "{}  {what}: NOT delivered to {url} after {attempts} attempt(s): {error}",
                format_time(*time_ms)
            ),
            Event::Action { command, ok, detail, time_ms, .. } => format!(
                "{}  {command}: {} ({detail})",
                format_time(*time_ms),
                if *ok { "done" } else { "FAILED" }
            ),
            Event::Resolved { time_ms, value, .. } => format!(
                "{}  resolved (value {})",
                format_time(*time_ms),
                value.map_or("-".into(), |v| format!("{v:.4}"))
            ),
            Event::Opened { .. } => continue,
        };
        out(format!("  {line}"))?;
    }
    Ok(())
}

/// `cairn alerts check`: evaluates every rule once now, records and delivers what changed.
pub fn check(
    ws: &Workspace,
    config: Option<PathBuf>,
    dir: Option<PathBuf>,
    json: bool,
) -> Result<(), Failure> {
    let cairn = std::env::current_exe()
        .map_err(|e| Failure::user(format!("cannot find the cairn binary to retrain with: {e}"), None))?;
    let checked = monitoring::check(ws, &CheckRequest { config, log_dir: dir, cairn })?;
    for warning in &checked.warnings {
        crate::output::warn(warning);
    }
    if json {
        return crate::output::json(&checked);
    }
    let (evaluated, opened, resolved, events) =
        (checked.evaluated, &checked.opened, &checked.resolved, &checked.events);
    for a in opened {
        out(format!("opened   {}  {}", a.id, a.summary()))?;
    }
    for a in resolved {
        out(format!("resolved {}  {}", a.id, a.summary()))?;
    }
    for e in events {
        match e {
            Event::DeliveryFailed { url, error, .. } => out(format!("not delivered to {url}: {error}"))?,
            Event::Action { command, ok, detail, .. } => {
                out(format!("{command}: {} ({detail})", if *ok { "done" } else { "FAILED" }))?
            }
            _ => {}
        }
    }
    out(format!("{evaluated} rule evaluation(s): {} opened, {} resolved", opened.len(), resolved.len()))
}

/// `cairn alerts [show ID | check]`.
pub fn command(
    context: &crate::context::Context,
    action: Option<crate::args::AlertsCommand>,
    filter: ListFilter,
    output: crate::args::OutputArgs,
) -> Result<(), Failure> {
    use crate::args::AlertsCommand;
    let ListFilter { all, model, log_dir } = filter;
    let ws = context.workspace()?;
    let dir = |d: Option<PathBuf>| d.map(|d| context.cwd.join(d));
    match action {
        None => list(&ws, &ListRequest { all, model, log_dir: dir(log_dir), json: output.json }),
        Some(AlertsCommand::Show { id, log_dir, output }) => show(&ws, &id, dir(log_dir), output.json),
        Some(AlertsCommand::Check { config, log_dir, output }) => {
            check(&ws, config.map(|c| context.cwd.join(c)), dir(log_dir), output.json)
        }
    }
}

/// `cairn alerts`' own flags (for the list).
pub struct ListFilter {
    pub all: bool,
    pub model: Option<String>,
    pub log_dir: Option<PathBuf>,
}
