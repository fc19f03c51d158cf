//! Monitoring's wiring: `monitor.yaml`, the rule evaluator with its reference profiles (the
//! training data's, recorded at registration), the `retrain` action, and the alert log read
//! back (`alerts`, `alerts show`, `alerts check`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_monitor::alerts::{Alert, AlertLog, AlertView, Event};
use cairn_monitor::rules::{CONFIG_FILE, MonitorConfig, Retrain};
use cairn_repo::Repo;
use cairn_serve::alerting::{Action, Evaluator};
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result, Workspace};

/// `monitor.yaml` (or `path`), if there is one.
pub fn load_config(repo: &Repo, path: Option<&Path>) -> Result<Option<MonitorConfig>> {
    let path = path.map_or_else(|| repo.root().join(CONFIG_FILE), Path::to_path_buf);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    MonitorConfig::parse(&text, &path.display().to_string()).map(Some).map_err(|e| {
        Error::refused(e.to_string(), Some("the format is in `cairn alerts --help` and ARCHITECTURE.md"))
    })
}

/// A training-data profile from the cache.
pub fn read_reference(cache: &cairn_store::Store, digest: &cairn_hash::Digest) -> Result<Value> {
    let bytes = cache.read_verified(digest).map_err(|e| {
        Error::refused(
            format!("the reference profile {digest} cannot be read: {e}"),
            Some("run `cairn pull` (or `cairn fetch`) to get it from the remote"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::refused(format!("the reference profile {digest} is not valid JSON: {e}"), None))
}

/// The rule evaluator over the prediction log in `log_dir`, with each version's reference
/// profile read from the registry and the cache.
pub fn evaluator(ws: &Workspace, config: MonitorConfig, log_dir: PathBuf) -> Result<Evaluator> {
    let meta = ws.meta()?;
    let cache = ws.repo().store().clone();
    let references: cairn_serve::alerting::References = Box::new(move |model: &str, version: i64| {
        let record = meta.model_version(model, version).ok().flatten()?;
        read_reference(&cache, record.profile.as_ref()?).ok()
    });
    Ok(Evaluator { log_dir, config, references })
}

/// A rule's `retrain`: `cairn run STAGES...`, then `cairn model register MODEL PATH`, as child
/// processes of this binary in the repository (the new version is a candidate: moving an
/// alias to it still needs the alias's policy).
pub fn retrain_action(repo: &Repo, cairn: PathBuf) -> Action {
    let exe = cairn;
    let root = repo.root().to_path_buf();
    Arc::new(move |alert: &cairn_monitor::alerts::Alert, retrain: &Retrain| {
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
    })
}

fn log_dir(repo: &Repo, dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| repo.root().join(crate::serving::PREDICTIONS_DIR))
}

fn alert_error(e: cairn_monitor::alerts::AlertError) -> Error {
    Error::refused(e.to_string(), None)
}

/// Which alerts to list.
#[derive(Debug, Default)]
pub struct AlertsQuery {
    /// Resolved ones too.
    pub all: bool,
    pub model: Option<String>,
    /// The server's log directory (default: `.cairn/predictions`).
    pub log_dir: Option<PathBuf>,
}

/// `alerts`: open alerts (with `all`, resolved ones too), newest first.
pub fn alerts(ws: &Workspace, query: &AlertsQuery) -> Result<Vec<AlertView>> {
    let log = AlertLog::new(&log_dir(ws.repo(), query.log_dir.clone()));
    let mut views: Vec<AlertView> = log
        .read()
        .map_err(alert_error)?
        .into_iter()
        .filter(|v| query.all || v.resolved_ms.is_none())
        .filter(|v| query.model.as_ref().is_none_or(|m| &v.alert.model == m))
        .collect();
    views.reverse();
    Ok(views)
}

/// `alerts show ID`: the alert, the requests behind it, its deliveries and actions.
pub fn alert(ws: &Workspace, id: &str, dir: Option<PathBuf>) -> Result<AlertView> {
    AlertLog::new(&log_dir(ws.repo(), dir)).get(id).map_err(alert_error)?.ok_or_else(|| {
        Error::refused(
            format!("no alert `{id}` (or the prefix names several)"),
            Some("list them with `cairn alerts --all`"),
        )
    })
}

/// What `alerts check` did (`--json`).
#[derive(Debug, Serialize)]
pub struct Checked {
    /// Rule evaluations (one per rule and served version).
    pub evaluated: usize,
    pub opened: Vec<Alert>,
    pub resolved: Vec<Alert>,
    /// Deliveries and actions, as recorded in the alert log.
    pub events: Vec<Event>,
    /// What the evaluation could not judge (a rule without data, a missing reference).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// How `alerts check` evaluates.
#[derive(Debug)]
pub struct CheckRequest {
    /// The rules (default: `monitor.yaml`).
    pub config: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    /// The `cairn` binary a rule's `retrain` runs.
    pub cairn: PathBuf,
}

/// `alerts check`: evaluates every rule once now, records what changed, delivers it (and
/// what an earlier process recorded but did not deliver) to the webhooks, and runs retrain
/// actions.
pub fn check(ws: &Workspace, request: &CheckRequest) -> Result<Checked> {
    let repo = ws.repo();
    let Some(config) = load_config(repo, request.config.as_deref())? else {
        return Err(Error::refused(
            format!("no {CONFIG_FILE} in {}", repo.root().display()),
            Some("write rules in monitor.yaml (see `cairn alerts --help`)"),
        ));
    };
    let evaluator = evaluator(ws, config, log_dir(repo, request.log_dir.clone()))?;
    let now = cairn_serve::predlog::now_ms();
    let mut outcome = evaluator
        .evaluate(now)
        .map_err(|e| Error::refused(format!("evaluating the rules failed: {e}"), None))?;
    let events = AlertLog::new(&evaluator.log_dir).events().map_err(alert_error)?;
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
    let warnings = outcome.warnings.clone();
    let opened: Vec<Alert> = outcome.opened.iter().map(|(a, _)| a.clone()).collect();
    let resolved: Vec<Alert> = outcome.resolved.iter().map(|(a, _)| a.clone()).collect();
    let action = retrain_action(repo, request.cairn.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::refused(format!("cannot start a runtime to deliver alerts: {e}"), None))?;
    let client = cairn_serve::alerting::client().map_err(|e| Error::refused(e, None))?;
    let events =
        runtime.block_on(cairn_serve::alerting::dispatch(&evaluator, &client, outcome, Some(&action)));
    Ok(Checked { evaluated, opened, resolved, events, warnings })
}
