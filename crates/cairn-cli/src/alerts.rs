//! `cairn alerts`: what `monitor.yaml`'s rules opened and resolved, `cairn alerts show ID`,
//! and `cairn alerts check` (one evaluation now, as `cairn serve` runs every
//! `evaluate_every`). Also the pieces `cairn serve` uses to evaluate continuously: the
//! config, the evaluator with its reference profiles, and the `retrain` action.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_monitor::alerts::{AlertLog, AlertView, Event};
use cairn_monitor::rules::{CONFIG_FILE, MonitorConfig, Retrain};
use cairn_repo::Repo;
use cairn_serve::alerting::{Action, Evaluator};

use crate::failure::Failure;
use crate::output::{format_time, out};

/// `monitor.yaml` (or `path`), if there is one.
pub fn load_config(repo: &Repo, path: Option<&Path>) -> Result<Option<MonitorConfig>, Failure> {
    let path = path.map_or_else(|| repo.root().join(CONFIG_FILE), Path::to_path_buf);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::user(format!("cannot read {}: {e}", path.display()), None)),
    };
    MonitorConfig::parse(&text, &path.display().to_string()).map(Some).map_err(|e| {
        Failure::user(e.to_string(), Some("the format is in `cairn alerts --help` and ARCHITECTURE.md"))
    })
}

/// The training-data profile of a version, read from the registry and the cache.
pub fn reference_loader(repo: &Repo) -> Result<cairn_serve::alerting::References, Failure> {
    let meta = crate::runs::open_store(repo)?;
    let cache = repo.store().clone();
    Ok(Box::new(move |model: &str, version: i64| {
        let record = meta.model_version(model, version).ok().flatten()?;
        crate::monitor::read_reference(&cache, record.profile.as_deref()?).ok()
    }))
}

pub fn evaluator(repo: &Repo, config: MonitorConfig, log_dir: PathBuf) -> Result<Evaluator, Failure> {
    Ok(Evaluator { log_dir, config, references: reference_loader(repo)? })
}

/// A rule's `retrain`: `cairn run STAGES...`, then `cairn model register MODEL PATH`, as child
/// processes of this binary in the repository (the new version is a candidate: moving an
/// alias to it still needs the alias's policy).
pub fn retrain_action(repo: &Repo) -> Result<Action, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::user(format!("cannot find the cairn binary to retrain with: {e}"), None))?;
    let root = repo.root().to_path_buf();
    Ok(Arc::new(move |alert: &cairn_monitor::alerts::Alert, retrain: &Retrain| {
        let logs = root.join(".cairn/state/logs");
        let _ = std::fs::create_dir_all(&logs);
        let log_path = logs.join(format!("retrain-{}.log", alert.id));
        let mut commands: Vec<Vec<String>> = Vec::new();
        if !retrain.stages.is_empty() {
            let mut c = vec!["run".to_owned()];
            c.extend(retrain.stages.iter().cloned());
            commands.push(c);
        }
        if let Some(path) = &retrain.model_path {
            let mut c = vec!["model".into(), "register".into(), alert.model.clone(), path.clone()];
            if let Some(data) = &retrain.training_data {
                c.extend(["--training-data".into(), data.clone()]);
            }
            c.extend([
                "--description".into(),
                format!("retrained after alert {} ({})", alert.id, alert.rule),
            ]);
            commands.push(c);
        }
        let shown =
            commands.iter().map(|c| format!("cairn {}", c.join(" "))).collect::<Vec<_>>().join(" && ");
        let mut detail = format!("log in {}", log_path.display());
        let mut ok = true;
        for args in &commands {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path);
            let (stdout, stderr) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
                Ok((a, b)) => (std::process::Stdio::from(a), std::process::Stdio::from(b)),
                Err(_) => (std::process::Stdio::null(), std::process::Stdio::null()),
            };
            let status = std::process::Command::new(&exe)
                .args(["-q"])
                .args(args)
                .current_dir(&root)
                .stdin(std::process::Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    ok = false;
                    detail = format!("`cairn {}` exited with {s}; {detail}", args.join(" "));
                    break;
                }
                Err(e) => {
                    ok = false;
                    detail = format!("cannot start `cairn {}`: {e}", args.join(" "));
                    break;
                }
            }
        }
        if ok && retrain.model_path.is_some() {
            detail = format!(
                "registered a candidate version of {} (see `cairn model versions {}`); {detail}",
                alert.model, alert.model
            );
        }
        Event::Action {
            alert_id: alert.id.clone(),
            time_ms: cairn_serve::predlog::now_ms(),
            command: shown,
            ok,
            detail,
        }
    }))
}

fn log_dir(repo: &Repo, dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| repo.root().join(cairn_app::serving::PREDICTIONS_DIR))
}

fn alerts_error(e: cairn_monitor::alerts::AlertError) -> Failure {
    Failure::user(e.to_string(), None)
}

pub struct ListRequest {
    pub all: bool,
    pub model: Option<String>,
    pub log_dir: Option<PathBuf>,
    pub json: bool,
}

/// `cairn alerts`: open alerts (with `--all`, resolved ones too), newest first.
pub fn list(repo: &Repo, request: &ListRequest) -> Result<(), Failure> {
    let log = AlertLog::new(&log_dir(repo, request.log_dir.clone()));
    let mut views: Vec<AlertView> = log
        .read()
        .map_err(alerts_error)?
        .into_iter()
        .filter(|v| request.all || v.resolved_ms.is_none())
        .filter(|v| request.model.as_ref().is_none_or(|m| &v.alert.model == m))
        .collect();
    views.reverse();
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
pub fn show(repo: &Repo, id: &str, dir: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let log = AlertLog::new(&log_dir(repo, dir));
    let Some(view) = log.get(id).map_err(alerts_error)? else {
        return Err(Failure::user(
            format!("no alert `{id}` (or the prefix names several)"),
            Some("list them with `cairn alerts --all`"),
        ));
    };
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
pub fn check(repo: &Repo, config: Option<PathBuf>, dir: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let Some(config) = load_config(repo, config.as_deref())? else {
        return Err(Failure::user(
            format!("no {CONFIG_FILE} in {}", repo.root().display()),
            Some("write rules in monitor.yaml (see `cairn alerts --help`)"),
        ));
    };
    let evaluator = evaluator(repo, config, log_dir(repo, dir))?;
    let now = cairn_serve::predlog::now_ms();
    let mut outcome = evaluator
        .evaluate(now)
        .map_err(|e| Failure::user(format!("evaluating the rules failed: {e}"), None))?;
    // Also what an earlier process recorded but did not finish delivering.
    let events = AlertLog::new(&evaluator.log_dir).events().map_err(alerts_error)?;
    outcome.undelivered = cairn_serve::alerting::undelivered(
        &events,
        &evaluator.config.webhooks,
        now - cairn_serve::alerting::REDELIVER_WITHIN_MS,
    )
    .into_iter()
    // Not the alerts this evaluation just opened or resolved: they are being delivered.
    .filter(|n| {
        !outcome.opened.iter().any(|(a, _)| a.id == n.alert.id)
            && !outcome.resolved.iter().any(|(a, _)| a.id == n.alert.id)
    })
    .collect();
    let evaluated = outcome.evaluated;
    for warning in &outcome.warnings {
        crate::output::warn(warning);
    }
    let opened: Vec<_> = outcome.opened.iter().map(|(a, _)| a.clone()).collect();
    let resolved: Vec<_> = outcome.resolved.iter().map(|(a, _)| a.clone()).collect();
    let action = retrain_action(repo)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::user(format!("cannot start a runtime to deliver alerts: {e}"), None))?;
    let client = cairn_serve::alerting::client().map_err(|e| Failure::user(e, None))?;
    let events =
        runtime.block_on(cairn_serve::alerting::dispatch(&evaluator, &client, outcome, Some(&action)));
    if json {
        return crate::output::json(&serde_json::json!({
            "evaluated": evaluated, "opened": opened, "resolved": resolved, "events": events,
        }));
    }
    for a in &opened {
        out(format!("opened   {}  {}", a.id, a.summary()))?;
    }
    for a in &resolved {
        out(format!("resolved {}  {}", a.id, a.summary()))?;
    }
    for e in &events {
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
