//! Serving: the model server's assembly ([`Server`]: runtimes, routes that follow the
//! registry, the prediction log, the rule evaluator), rollouts (canary weight and shadows behind
//! an alias) and tracing a logged prediction back to its model version, run, params,
//! metrics, training data and commit.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_meta::registry::Rollout;
use cairn_monitor::rules::MonitorConfig;
use cairn_serve::alerting::{Action, Evaluator};
use cairn_serve::batch::BatchConfig;
use cairn_serve::predlog::{self, Entry, LogConfig, PredictionLog, SegmentSink};
use cairn_serve::python::PythonRuntime;
use cairn_serve::routing::{Catalog, Routes, Target};
use cairn_serve::server::App;
use cairn_serve::tensor::Strictness;
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result, Workspace};

/// Where a server logs predictions, under the repository root.
pub const PREDICTIONS_DIR: &str = ".cairn/predictions";
/// Where servers ship prediction-log segments on a remote.
pub const REMOTE_PREDICTIONS: &str = "predictions-v1";

/// How to change an alias's rollout; nothing set only reads it.
#[derive(Debug, Default)]
pub struct RolloutChange {
    /// `NAME@ALIAS`.
    pub target: String,
    pub canary: Option<i64>,
    /// Percent of requests the canary answers.
    pub weight: Option<i64>,
    pub shadows: Vec<i64>,
    /// Start from no rollout.
    pub clear: bool,
}

/// An alias's traffic (`model rollout --json`).
#[derive(Debug, Serialize)]
pub struct RolloutState {
    pub name: String,
    pub alias: String,
    /// The version the alias points at.
    pub version: i64,
    pub canary: Option<i64>,
    pub weight: i64,
    pub shadows: Vec<i64>,
}

/// `model rollout NAME@ALIAS`: changes the rollout (a canary must meet the alias's policy)
/// and returns the alias's traffic.
pub fn rollout(ws: &Workspace, change: &RolloutChange) -> Result<RolloutState> {
    let target = &change.target;
    let Some((name, alias)) = target.split_once('@').filter(|(n, a)| !n.is_empty() && !a.is_empty()) else {
        return Err(Error::Usage(format!("`{target}`: give NAME@ALIAS, e.g. churn@production")));
    };
    let store = ws.meta()?;
    let Some(current) = store.resolve_alias(name, alias)? else {
        return Err(Error::refused(
            format!("`{name}` has no alias `{alias}`"),
            Some("point it at a version first: `cairn model alias NAME@VERSION ALIAS`"),
        ));
    };
    let changing =
        change.canary.is_some() || change.weight.is_some() || !change.shadows.is_empty() || change.clear;
    if changing {
        let mut rollout =
            if change.clear { Rollout::default() } else { store.rollout(name, alias)?.unwrap_or_default() };
        if let Some(v) = change.canary {
            if v == current {
                return Err(Error::Usage(format!(
                    "version {v} already is `{alias}`; a canary must be another version"
                )));
            }
            // The canary answers real traffic for the alias: it must meet the alias's policy.
            let problems = store.policy_violations(name, alias, v)?;
            if !problems.is_empty() {
                return Err(Error::refused(
                    format!("{name}@{v} may not take `{alias}` traffic:\n  {}", problems.join("\n  ")),
                    Some("the rollout did not change; see `cairn model policy NAME ALIAS`"),
                ));
            }
            rollout.canary = Some(v);
            if change.weight.is_none() && rollout.weight == 0 {
                rollout.weight = 10;
            }
        }
        if let Some(w) = change.weight {
            if !(0..=100).contains(&w) {
                return Err(Error::Usage(format!("--weight {w}: give a percentage from 0 to 100")));
            }
            if rollout.canary.is_none() {
                return Err(Error::Usage("--weight needs a canary: add --canary VERSION".into()));
            }
            rollout.weight = w;
        }
        for &s in &change.shadows {
            if !rollout.shadows.contains(&s) {
                rollout.shadows.push(s);
            }
        }
        rollout.user = ws.user();
        let empty = rollout.canary.is_none() && rollout.shadows.is_empty();
        store.set_rollout(name, alias, if empty { None } else { Some(&rollout) }).map_err(|e| match e {
            cairn_meta::MetaError::NoModelVersion(v) => {
                Error::refused(format!("no version {v}"), Some("see `cairn model versions NAME`"))
            }
            other => other.into(),
        })?;
    }
    let rollout = store.rollout(name, alias)?;
    Ok(RolloutState {
        name: name.to_owned(),
        alias: alias.to_owned(),
        version: current,
        canary: rollout.as_ref().and_then(|r| r.canary),
        weight: rollout.as_ref().map_or(0, |r| r.weight),
        shadows: rollout.map(|r| r.shadows).unwrap_or_default(),
    })
}

/// How recent a trace id may be for [`trace`] to wait for its log line (the server writes
/// within about a second; a little more allows for a loaded machine).
const RECENT_TRACE_MS: i64 = 10_000;

/// Where to look for a prediction.
#[derive(Debug, Default)]
pub struct TraceRequest {
    pub trace_id: String,
    /// The server's log directory (default: `.cairn/predictions`).
    pub log_dir: Option<PathBuf>,
    /// A remote servers ship their logs to, searched when the local log lacks the id.
    pub remote: Option<String>,
}

/// A shadow's answer to the same request.
#[derive(Debug, Serialize)]
pub struct ShadowAnswer {
    pub version: i64,
    pub status: i32,
    pub outputs: Value,
    pub error: Option<String>,
    #[serde(skip)]
    pub model: String,
    #[serde(skip)]
    pub raw_outputs: String,
}

/// The registered version that answered.
#[derive(Debug, Serialize)]
pub struct TracedVersion {
    pub digest: cairn_hash::Digest,
    pub source: String,
    pub run_id: Option<String>,
    pub creation_time: i64,
    pub profile: Option<cairn_hash::Digest>,
    #[serde(skip)]
    pub kind: cairn_meta::registry::VersionKind,
}

/// A logged prediction walked back to where it came from (`trace --json`).
#[derive(Debug, Serialize)]
pub struct Trace {
    pub trace_id: String,
    pub time_ms: i64,
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub role: String,
    pub protocol: String,
    pub status: i32,
    pub latency_us: i64,
    pub inputs: Value,
    pub outputs: Value,
    pub error: Option<String>,
    pub shadows: Vec<ShadowAnswer>,
    /// `None`: the version is no longer in the registry.
    pub model_version: Option<TracedVersion>,
    /// The version's lineage: run, params, metrics, inputs, commit.
    pub lineage: Value,
    /// The inputs and outputs as logged (JSON text).
    #[serde(skip)]
    pub raw: (String, String),
}

fn log_error(e: predlog::LogError) -> Error {
    Error::refused(e.to_string(), None)
}

/// Copies the remote's log segments whose time range covers `id` into the state directory;
/// returns that directory.
fn fetch_segments(ws: &Workspace, remote: &str, id: &str) -> Result<PathBuf> {
    let remote = ws.remote(Some(remote), None)?;
    let at = predlog::trace_time(id);
    // A name from the remote becomes a file name here: only a plain one (no `/`, no `..`).
    let plain = |n: &str| std::path::Path::new(n).file_name().is_some_and(|f| f == n);
    let wanted: Vec<String> = remote
        .list_documents(REMOTE_PREDICTIONS)?
        .into_iter()
        .filter(|n| plain(n))
        .filter(|n| predlog::segment_range(n).is_some_and(|(a, b)| at.is_none_or(|t| a <= t && t <= b)))
        .collect();
    let fetched = ws.repo().root().join(".cairn/state/predictions-remote");
    std::fs::create_dir_all(&fetched).map_err(|e| Error::io("create", &fetched, e))?;
    for (name, bytes) in remote.get_documents(REMOTE_PREDICTIONS, &wanted)? {
        let path = fetched.join(&name);
        cairn_fs::write(&path, &bytes).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(fetched)
}

/// `trace ID`: a logged prediction, walked back to its model version, run, params, metrics,
/// training data and commit. A very recent id is waited for briefly (a server writes its log
/// within about a second).
pub fn trace(ws: &Workspace, request: &TraceRequest) -> Result<Trace> {
    let id = request.trace_id.trim();
    let dir = request.log_dir.clone().unwrap_or_else(|| ws.repo().root().join(PREDICTIONS_DIR));
    let mut entries = predlog::find(&dir, id).map_err(log_error)?;
    let recent = |id: &str| {
        predlog::trace_time(id).is_some_and(|t| (0..RECENT_TRACE_MS).contains(&(predlog::now_ms() - t)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while entries.is_empty() && recent(id) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        entries = predlog::find(&dir, id).map_err(log_error)?;
    }
    if entries.is_empty()
        && let Some(remote) = &request.remote
    {
        entries = predlog::find(&fetch_segments(ws, remote, id)?, id).map_err(log_error)?;
    }
    let Some(answer) = entries.iter().find(|e| e.role != "shadow").or(entries.first()).cloned() else {
        if recent(id) {
            return Err(Error::refused(
                format!("prediction `{id}` is not written to {} yet", dir.display()),
                Some("the server writes its log within a second or two of answering; retry in a second"),
            ));
        }
        return Err(Error::refused(
            format!("no prediction with trace id `{id}` in {}", dir.display()),
            Some(
                "trace ids come from the x-cairn-trace-id response header; a server started elsewhere logs under its own --log-dir",
            ),
        ));
    };
    let store = ws.meta()?;
    let version = store.model_version(&answer.model, answer.version)?;
    let lineage: Value =
        version.as_ref().and_then(|v| serde_json::from_str(&v.lineage).ok()).unwrap_or(Value::Null);
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let shadows = entries
        .iter()
        .filter(|e| e.role == "shadow")
        .map(|e: &Entry| ShadowAnswer {
            version: e.version,
            status: e.status,
            outputs: parse(&e.outputs),
            error: e.error.clone(),
            model: e.model.clone(),
            raw_outputs: e.outputs.clone(),
        })
        .collect();
    Ok(Trace {
        inputs: parse(&answer.inputs),
        outputs: parse(&answer.outputs),
        raw: (answer.inputs, answer.outputs),
        trace_id: answer.trace_id,
        time_ms: answer.time_ms,
        endpoint: answer.endpoint,
        model: answer.model,
        version: answer.version,
        role: answer.role,
        protocol: answer.protocol,
        status: answer.status,
        latency_us: answer.latency_us,
        error: answer.error,
        shadows,
        model_version: version.map(|v| TracedVersion {
            digest: v.digest,
            source: v.source,
            run_id: v.run_id,
            creation_time: v.creation_time,
            profile: v.profile,
            kind: v.kind,
        }),
        lineage,
    })
}

/// Where MLflow models' directories are laid out for their Python workers, by content.
const MODEL_DIRS: &str = ".cairn/serve/models";

/// Everything a model server is started with, resolved by the front end.
pub struct ServeSettings {
    /// `NAME`, `NAME@ALIAS` or `NAME@VERSION`, one per model.
    pub targets: Vec<String>,
    /// ONNX Runtime's shared library (unused without the `onnx` feature).
    pub onnxruntime: PathBuf,
    /// Sessions (and workers) per model; 0: one per CPU.
    pub sessions: usize,
    /// How MLflow models get their Python.
    pub python: cairn_serve::python::EnvManager,
    /// Adaptive batching up to this many rows (`None`: none).
    pub batch_max: Option<usize>,
    pub batch_wait: std::time::Duration,
    pub max_body: usize,
    pub allow_nan: bool,
    /// Log predictions (to `log_dir`, default `.cairn/predictions`).
    pub log: bool,
    pub log_dir: Option<PathBuf>,
    /// Also ship sealed log segments to this remote.
    pub log_remote: Option<String>,
    pub segment_bytes: u64,
    pub segment_age: std::time::Duration,
    /// Keep per-minute profiles for monitoring.
    pub profiles: bool,
    /// Monitoring rules from this file (default: monitor.yaml, when there is one).
    pub monitor: Option<PathBuf>,
    /// Evaluate monitoring rules.
    pub alerts: bool,
    /// The `cairn` binary a rule's `retrain` runs.
    pub cairn: PathBuf,
}

/// What the rule evaluator watches.
#[derive(Debug, Serialize)]
pub struct MonitoringSummary {
    pub rules: usize,
    pub models: usize,
    pub every_ms: i64,
    pub webhooks: usize,
}

/// A model server ready to listen: the application, the registry watcher's state and the
/// rule evaluator.
pub struct Server {
    pub app: Arc<App>,
    catalog: Arc<Catalog>,
    targets: Vec<Target>,
    snapshot: cairn_meta::registry::RoutingSnapshot,
    alerting: Option<(Arc<Evaluator>, Option<Action>)>,
    /// What the evaluator watches, when rules are evaluated.
    pub monitoring: Option<MonitoringSummary>,
    /// Things the user should know (rules that are not evaluated, and why).
    pub warnings: Vec<String>,
}

/// Ships sealed prediction-log segments to a remote.
struct RemoteSink(cairn_remote::Remote);

impl SegmentSink for RemoteSink {
    fn ship(&self, path: &std::path::Path) -> std::result::Result<(), String> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or("a segment without a name")?.to_owned();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.0.put_documents(REMOTE_PREDICTIONS, vec![(name, bytes)]).map_err(|e| e.to_string())
    }
}

fn parse_targets(texts: &[String]) -> Result<Vec<Target>> {
    if texts.is_empty() {
        return Err(Error::Usage(
            "name the models to serve: `cairn serve churn@production` (see `cairn model list`)".into(),
        ));
    }
    let targets: Vec<Target> =
        texts.iter().map(|t| t.parse::<Target>().map_err(Error::Usage)).collect::<Result<_>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for t in &targets {
        if !seen.insert(t.model.clone()) {
            return Err(Error::Usage(format!(
                "`{}` is named twice; serve one reference per model (its other versions are reachable by number while served as canary or shadow)",
                t.model
            )));
        }
    }
    Ok(targets)
}

/// The prediction log, when logging is on.
fn prediction_log(
    ws: &Workspace,
    settings: &ServeSettings,
    log_dir: &std::path::Path,
    monitor: Option<&MonitorConfig>,
) -> Result<PredictionLog> {
    let sink: Option<Box<dyn SegmentSink>> = match &settings.log_remote {
        Some(name) => Some(Box::new(RemoteSink(ws.remote(Some(name), None)?))),
        None => None,
    };
    let config = LogConfig {
        dir: log_dir.to_path_buf(),
        segment_bytes: settings.segment_bytes,
        segment_age: settings.segment_age,
        profiles: settings.profiles,
        // Rules see the current minute as of the last checkpoint.
        profile_checkpoint: monitor.map_or(std::time::Duration::from_secs(5), |m| {
            std::time::Duration::from_millis(m.evaluate_every.clamp(500, 5_000) as u64 / 2)
        }),
    };
    PredictionLog::start(config, sink)
        .map_err(|e| Error::refused(e.to_string(), Some("choose another --log-dir, or --no-log")))
}

/// The rules to evaluate: `None` when alerts are off, or the log or its profiles are (with a
/// warning when monitor.yaml has rules that then go unevaluated).
fn monitoring_rules(
    ws: &Workspace,
    settings: &ServeSettings,
    warnings: &mut Vec<String>,
) -> Result<Option<MonitorConfig>> {
    let evaluate = settings.alerts && settings.log && settings.profiles;
    let monitor =
        if evaluate { crate::monitoring::load_config(ws.repo(), settings.monitor.as_deref())? } else { None };
    if let Some(path) = &settings.monitor
        && settings.alerts
        && monitor.is_none()
    {
        return Err(Error::refused(
            format!("no monitoring rules to evaluate from {}", path.display()),
            Some("the file must exist, and the prediction log and its profiles must be on"),
        ));
    }
    if settings.alerts && !evaluate && ws.repo().root().join(cairn_monitor::rules::CONFIG_FILE).exists() {
        warnings.push(
            "monitor.yaml's rules are not evaluated: they need the prediction log and its profiles (drop --no-log / --no-profile)".into(),
        );
    }
    Ok(monitor)
}

/// ONNX Runtime, loaded first: a missing library is one clear error before anything else.
/// Returns the runtime and the version `/version` reports.
#[cfg(feature = "onnx")]
fn onnx_runtime(
    settings: &ServeSettings,
) -> Result<(Option<Arc<dyn cairn_serve::runtime::Runtime>>, String)> {
    let runtime = cairn_serve::runtime::OnnxRuntime::init(&settings.onnxruntime, settings.sessions)
        .map_err(|e| Error::refused(e.to_string(), None))?;
    let version = runtime.version();
    Ok((Some(Arc::new(runtime)), version))
}

/// Without the `onnx` feature there is no ONNX runtime: ONNX versions are refused as
/// unservable at startup.
#[cfg(not(feature = "onnx"))]
fn onnx_runtime(_: &ServeSettings) -> Result<(Option<Arc<dyn cairn_serve::runtime::Runtime>>, String)> {
    Ok((None, "none".into()))
}

impl Server {
    /// Builds the server: loads the runtimes, lays out the registry's models, opens the
    /// prediction log and the rule evaluator. A model this server can never run is refused
    /// now, not answered with 503s.
    pub fn assemble(ws: &Workspace, settings: ServeSettings) -> Result<Server> {
        let repo = ws.repo();
        let targets = parse_targets(&settings.targets)?;
        let (onnx, runtime_version) = onnx_runtime(&settings)?;
        let store = Arc::new(ws.meta()?);
        for t in &targets {
            if store.model(&t.model)?.is_none() {
                return Err(Error::refused(
                    format!("no model named `{}` in the registry", t.model),
                    Some(
                        "register it with `cairn model register NAME PATH`; list models with `cairn model list`",
                    ),
                ));
            }
        }
        let workers = match settings.sessions {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        let batching = settings.batch_max.map(|max_batch| BatchConfig {
            max_batch,
            max_wait: settings.batch_wait,
            workers,
        });
        let mut runtimes: Vec<Arc<dyn cairn_serve::runtime::Runtime>> = onnx.into_iter().collect();
        runtimes.push(Arc::new(PythonRuntime::new(settings.python.clone(), workers)));
        let scratch = repo.root().join(MODEL_DIRS);
        // Laid-out copies of cache objects: derived, never committed; and made of real
        // directories, so a link a clone planted there cannot carry the files elsewhere.
        repo.ignore_local("/serve/")?;
        repo.confinement().create_dir_all(&scratch)?;
        let catalog =
            Arc::new(Catalog::new(store.clone(), repo.store().clone(), runtimes, scratch, batching));
        let snapshot = store.routing_snapshot()?;
        let table = catalog.table(&targets, &snapshot);
        if let Some(v) = table.refused() {
            return Err(Error::refused(
                format!("{} cannot be served: {}", v.label(), v.problem().unwrap_or_default()),
                Some(
                    "register a model this server can run (an ONNX file, or an MLflow model with a python_function flavor and a signature), or point the alias elsewhere",
                ),
            ));
        }
        let mut warnings = Vec::new();
        let monitor = monitoring_rules(ws, &settings, &mut warnings)?;
        let log_dir = settings
            .log
            .then(|| settings.log_dir.clone().unwrap_or_else(|| repo.root().join(PREDICTIONS_DIR)));
        if settings.log && settings.log_dir.is_none() {
            // The log holds production data: it stays out of Git.
            repo.ignore_local("/predictions/")?;
        }
        let log =
            log_dir.as_deref().map(|dir| prediction_log(ws, &settings, dir, monitor.as_ref())).transpose()?;
        let (alerting, monitoring) = match (monitor, &log_dir) {
            (Some(config), Some(dir)) => {
                let summary = MonitoringSummary {
                    rules: config.models.values().map(|m| m.rules.len()).sum(),
                    models: config.models.len(),
                    every_ms: config.evaluate_every,
                    webhooks: config.webhooks.len(),
                };
                let evaluator = Arc::new(crate::monitoring::evaluator(ws, config, dir.clone())?);
                let action = crate::monitoring::retrain_action(repo, settings.cairn.clone());
                (Some((evaluator, Some(action))), Some(summary))
            }
            _ => (None, None),
        };
        let app = Arc::new(App {
            routes: Arc::new(Routes::new(table)),
            metrics: cairn_serve::metrics::Metrics::new(),
            log,
            log_dir,
            strict: Strictness { allow_nan: settings.allow_nan },
            max_body: settings.max_body,
            runtime_version,
        });
        Ok(Server { app, catalog, targets, snapshot, alerting, monitoring, warnings })
    }

    /// The routes as they are now: each target's versions and whether they are ready.
    pub fn routes(&self) -> Arc<cairn_serve::routing::Table> {
        self.app.routes.get()
    }

    /// Serves HTTP on `listener` and gRPC on `grpc` until `shutdown` resolves (or either
    /// transport stops), following the registry and evaluating the rules meanwhile; requests
    /// in flight finish. `notify` hears each alert line. The prediction log is sealed after.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        grpc: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        notify: Arc<dyn Fn(String) + Send + Sync>,
    ) -> Result<()> {
        let Server { app, catalog, targets, snapshot, alerting, .. } = self;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let alerting = alerting.map(|(evaluator, action)| {
            tokio::spawn(cairn_serve::alerting::run(evaluator, action, stop_rx.clone(), notify))
        });
        let watcher = tokio::spawn(cairn_serve::routing::watch(
            catalog,
            app.routes.clone(),
            targets,
            snapshot,
            stop_rx,
        ));
        // One signal stops both transports, and so does either one stopping on its own.
        let (signal_tx, signal_rx) = tokio::sync::watch::channel(false);
        let signal_tx = Arc::new(signal_tx);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let relay = {
            let signal_tx = signal_tx.clone();
            tokio::spawn(async move {
                shutdown.await;
                let _ = signal_tx.send(true);
            })
        };
        let (served, grpc) = tokio::join!(
            async {
                let router = cairn_serve::server::router(app.clone());
                let served = cairn_http::serve(
                    listener,
                    router,
                    cairn_http::Limits::default(),
                    stopped(signal_rx.clone()),
                )
                .await;
                let _ = signal_tx.send(true);
                served
            },
            async {
                let served = cairn_serve::grpc::serve(grpc, app.clone(), stopped(signal_rx.clone())).await;
                let _ = signal_tx.send(true);
                served
            },
        );
        relay.abort();
        let served = served
            .and_then(|()| grpc.map_err(|e| std::io::Error::other(format!("the gRPC server failed: {e}"))));
        let _ = stop_tx.send(true);
        let _ = watcher.await;
        if let Some(alerting) = alerting {
            let _ = alerting.await;
        }
        // Requests have finished; seal the prediction log.
        let sealed = match &app.log {
            Some(log) => log
                .close()
                .map_err(|e| Error::refused(format!("the prediction log could not be sealed: {e}"), None)),
            None => Ok(()),
        };
        served.map_err(|e| Error::refused(format!("the server stopped: {e}"), None))?;
        sealed
    }
}
