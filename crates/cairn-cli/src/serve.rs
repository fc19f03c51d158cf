//! `cairn serve`, `cairn model rollout` and `cairn trace`.
//!
//! The server serves registered models (`churn@production`, `churn@3`, `churn`) and follows
//! the registry: alias moves and rollouts (canary weight, shadows) take effect within a
//! second, without a restart. Every prediction is logged under `.cairn/predictions/` with a
//! trace id that `cairn trace` walks back to the model version, its run, params, metrics,
//! training data and commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_app::Workspace;
use cairn_repo::Repo;
use cairn_serve::batch::BatchConfig;
use cairn_serve::predlog::{LogConfig, PredictionLog, SegmentSink};
use cairn_serve::python::{EnvManager, PythonRuntime};
use cairn_serve::routing::{Catalog, Routes, Target};
use cairn_serve::runtime::{OnnxRuntime, locate_onnxruntime};
use cairn_serve::server::App;
use cairn_serve::tensor::Strictness;
use serde_json::Value;

use crate::failure::Failure;
use crate::output::out;
use crate::runs::open_store;

/// Where MLflow models' directories are laid out for their Python workers, by content.
const MODEL_DIRS: &str = ".cairn/serve/models";

/// Where MLflow models' Python environments are kept, by requirements: `$CAIRN_PYTHON_ENVS`,
/// else `$XDG_CACHE_HOME/cairn/python-envs`, else `~/.cache/cairn/python-envs`.
fn python_envs() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAIRN_PYTHON_ENVS") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("cairn/python-envs")
}

use cairn_app::serving::{PREDICTIONS_DIR, REMOTE_PREDICTIONS};

/// Ships sealed prediction-log segments to a remote.
struct RemoteSink(cairn_remote::Remote);

impl SegmentSink for RemoteSink {
    fn ship(&self, path: &std::path::Path) -> Result<(), String> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or("a segment without a name")?.to_owned();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        self.0.put_documents(REMOTE_PREDICTIONS, vec![(name, bytes)]).map_err(|e| e.to_string())
    }
}

pub struct ServeRequest {
    pub targets: Vec<String>,
    pub host: String,
    pub port: u16,
    /// The Open Inference Protocol over gRPC listens here.
    pub grpc_port: u16,
    pub onnxruntime: Option<PathBuf>,
    pub sessions: usize,
    /// Run MLflow models in `python` as it is, instead of an environment built per model.
    pub local_python: bool,
    pub python: PathBuf,
    pub batch_max: Option<usize>,
    pub batch_wait: Duration,
    pub max_body: usize,
    pub allow_nan: bool,
    pub log: bool,
    pub log_dir: Option<PathBuf>,
    /// Also copy sealed segments to this remote.
    pub log_remote: Option<String>,
    pub segment_bytes: u64,
    /// Keep per-minute profiles for monitoring.
    pub profiles: bool,
    pub segment_age: Duration,
    /// Monitoring rules from this file (default: monitor.yaml, when there is one).
    pub monitor: Option<PathBuf>,
    /// Evaluate monitoring rules.
    pub alerts: bool,
}

fn meta(e: cairn_meta::MetaError) -> Failure {
    Failure::user(e.to_string(), None)
}

/// Where ONNX Runtime's library may be, in the order tried: `$CAIRN_ONNXRUNTIME`,
/// `$ORT_DYLIB_PATH`, the `onnxruntime` wheel in `$VIRTUAL_ENV`, in the project's `.venv`, and
/// in the user's site-packages (`~/.local/lib/python3.X`).
fn onnxruntime_candidates(repo: &Repo) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["CAIRN_ONNXRUNTIME", "ORT_DYLIB_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        out.extend(cairn_serve::runtime::wheel_locations(std::path::Path::new(&venv)));
    }
    out.extend(cairn_serve::runtime::wheel_locations(&repo.root().join(".venv")));
    if let Some(home) = std::env::var_os("HOME") {
        out.extend(cairn_serve::runtime::wheel_locations(&std::path::Path::new(&home).join(".local")));
    }
    out
}

/// `cairn serve TARGET...` until Ctrl-C or SIGTERM; in-flight requests finish and the
/// prediction log is sealed before it exits.
pub fn serve(repo: &Repo, request: ServeRequest, quiet: bool) -> Result<(), Failure> {
    if request.targets.is_empty() {
        return Err(Failure::usage(
            "name the models to serve: `cairn serve churn@production` (see `cairn model list`)",
        ));
    }
    let targets: Vec<Target> = request
        .targets
        .iter()
        .map(|t| t.parse::<Target>().map_err(Failure::usage))
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for t in &targets {
        if !seen.insert(t.model.clone()) {
            return Err(Failure::usage(format!(
                "`{}` is named twice; serve one reference per model (its other versions are reachable by number while served as canary or shadow)",
                t.model
            )));
        }
    }
    // ONNX Runtime first: a missing library is one clear error before anything else.
    let library = match &request.onnxruntime {
        Some(path) => path.clone(),
        None => locate_onnxruntime(&onnxruntime_candidates(repo))
            .map_err(|e| Failure::user(e.to_string(), Some("or pass --onnxruntime PATH")))?,
    };
    let runtime =
        OnnxRuntime::init(&library, request.sessions).map_err(|e| Failure::user(e.to_string(), None))?;
    let runtime_version = runtime.version();
    let store = Arc::new(open_store(repo)?);
    for t in &targets {
        if store.model(&t.model).map_err(meta)?.is_none() {
            return Err(Failure::user(
                format!("no model named `{}` in the registry", t.model),
                Some(
                    "register it with `cairn model register NAME PATH`; list models with `cairn model list`",
                ),
            ));
        }
    }
    let workers = if request.sessions == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        request.sessions
    };
    let batching =
        request.batch_max.map(|max_batch| BatchConfig { max_batch, max_wait: request.batch_wait, workers });
    let env = if request.local_python {
        EnvManager::Local(request.python.clone())
    } else {
        EnvManager::Virtualenv { python: request.python.clone(), cache: python_envs() }
    };
    let runtimes: Vec<Arc<dyn cairn_serve::runtime::Runtime>> =
        vec![Arc::new(runtime), Arc::new(PythonRuntime::new(env, workers))];
    let scratch = repo.root().join(MODEL_DIRS);
    // Laid-out copies of cache objects: derived, never committed; and made of real
    // directories, so a link a clone planted there cannot carry the files elsewhere.
    repo.ignore_local("/serve/")?;
    repo.confinement().create_dir_all(&scratch)?;
    let catalog = Arc::new(Catalog::new(store.clone(), repo.store().clone(), runtimes, scratch, batching));
    let snapshot = store.routing_snapshot().map_err(meta)?;
    let table = catalog.table(&targets, &snapshot);
    // A model this server can never run is refused now, not answered with 503s.
    if let Some(v) = table.refused() {
        return Err(Failure::user(
            format!("{} cannot be served: {}", v.label(), v.problem().unwrap_or_default()),
            Some(
                "register a model this server can run (an ONNX file, or an MLflow model with a python_function flavor and a signature), or point the alias elsewhere",
            ),
        ));
    }
    if !quiet {
        for route in table.routes.values() {
            let mut line = format!("  {}", route.target);
            match &route.primary {
                Some(v) => line.push_str(&format!(" → version {}", v.version)),
                None => line.push_str(" → nothing"),
            }
            if let Some((c, w)) = &route.canary {
                line.push_str(&format!(", canary {} at {w}%", c.version));
            }
            for s in &route.shadows {
                line.push_str(&format!(", shadow {}", s.version));
            }
            match route.reason() {
                None => line.push_str(" (ready)"),
                Some(reason) => line.push_str(&format!(" (NOT READY: {reason})")),
            }
            eprintln!("{line}");
        }
    }
    let routes = Arc::new(Routes::new(table));
    // Monitoring rules: evaluated continuously over the profiles the log writer keeps.
    let evaluate = request.alerts && request.log && request.profiles;
    let monitor = if evaluate { crate::alerts::load_config(repo, request.monitor.as_deref())? } else { None };
    if let Some(path) = &request.monitor
        && request.alerts
        && monitor.is_none()
    {
        return Err(Failure::user(
            format!("no monitoring rules to evaluate from {}", path.display()),
            Some("the file must exist, and the prediction log and its profiles must be on"),
        ));
    }
    if request.alerts && !evaluate && !quiet && repo.root().join(cairn_monitor::rules::CONFIG_FILE).exists() {
        eprintln!(
            "warning: monitor.yaml's rules are not evaluated: they need the prediction log and its profiles (drop --no-log / --no-profile)"
        );
    }
    let log_dir =
        request.log.then(|| request.log_dir.clone().unwrap_or_else(|| repo.root().join(PREDICTIONS_DIR)));
    if request.log && request.log_dir.is_none() {
        // The log holds production data: it stays out of Git.
        repo.ignore_local("/predictions/")?;
    }
    let log = if let Some(dir) = &log_dir {
        let sink: Option<Box<dyn SegmentSink>> = match &request.log_remote {
            Some(name) => Some(Box::new(RemoteSink(repo.open_remote(
                Some(name),
                &crate::env::aws_environment(),
                None,
            )?))),
            None => None,
        };
        Some(
            PredictionLog::start(
                LogConfig {
                    dir: dir.clone(),
                    segment_bytes: request.segment_bytes,
                    segment_age: request.segment_age,
                    profiles: request.profiles,
                    // Rules see the current minute as of the last checkpoint.
                    profile_checkpoint: monitor.as_ref().map_or(Duration::from_secs(5), |m| {
                        Duration::from_millis(m.evaluate_every.clamp(500, 5_000) as u64 / 2)
                    }),
                },
                sink,
            )
            .map_err(|e| Failure::user(e.to_string(), Some("choose another --log-dir, or --no-log")))?,
        )
    } else {
        None
    };
    let evaluator = match (&monitor, &log_dir) {
        (Some(config), Some(dir)) => {
            let rules: usize = config.models.values().map(|m| m.rules.len()).sum();
            if !quiet {
                eprintln!(
                    "  monitoring: {rules} rule(s) for {} model(s), evaluated every {} s; {} webhook(s)",
                    config.models.len(),
                    config.evaluate_every as f64 / 1000.0,
                    config.webhooks.len()
                );
            }
            Some(Arc::new(crate::alerts::evaluator(repo, config.clone(), dir.clone())?))
        }
        _ => None,
    };
    let action = match &evaluator {
        Some(_) => Some(crate::alerts::retrain_action(repo)?),
        None => None,
    };
    let app = Arc::new(App {
        routes: routes.clone(),
        metrics: cairn_serve::metrics::Metrics::new(),
        log,
        log_dir,
        strict: Strictness { allow_nan: request.allow_nan },
        max_body: request.max_body,
        runtime_version,
    });
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::user(format!("cannot start the server's runtime: {e}"), None))?;
    let result = tokio.block_on(async {
        let (host, port) = (request.host.as_str(), request.port);
        let listener = tokio::net::TcpListener::bind((host, port)).await.map_err(|e| {
            Failure::user(
                format!("cannot listen on {host}:{port}: {e}"),
                Some("choose another port with --port (0 picks a free one), or stop what holds this one"),
            )
        })?;
        let address =
            listener.local_addr().map_err(|e| Failure::user(format!("cannot read the listening address: {e}"), None))?;
        let grpc_listener = tokio::net::TcpListener::bind((host, request.grpc_port)).await.map_err(|e| {
            Failure::user(
                format!("cannot listen for gRPC on {host}:{}: {e}", request.grpc_port),
                Some("choose another port with --grpc-port (0 picks a free one), or stop what holds this one"),
            )
        })?;
        let grpc_address = grpc_listener
            .local_addr()
            .map_err(|e| Failure::user(format!("cannot read the listening address: {e}"), None))?;
        crate::tracking::warn_if_exposed(&address);
        if !quiet {
            eprintln!(
                "cairn model server on http://{address} and gRPC {grpc_address} (ONNX Runtime from {}); Ctrl-C stops it\n  native: POST /models/NAME/predict · KServe v2: /v2/models/NAME/infer, gRPC inference.GRPCInferenceService · KServe v1: /v1/models/NAME:predict · MLflow: POST /invocations · /metrics",
                library.display()
            );
        }
        let shutdown = shutdown_signal()?;
        // Stdout carries only the addresses, for scripts that start the server on port 0: the
        // HTTP URL first, then the gRPC address.
        // One write, so a reader that takes the first line and goes cannot break the second.
        println!("http://{address}\ngrpc://{grpc_address}");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let alerting = evaluator.map(|evaluator| {
            // Alerts go to stderr (the log), `cairn alerts` and the webhooks.
            let notify: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line| eprintln!("{line}"));
            tokio::spawn(cairn_serve::alerting::run(evaluator, action, stop_rx.clone(), notify))
        });
        let watcher = tokio::spawn(cairn_serve::routing::watch(catalog, routes, targets, snapshot, stop_rx));
        // One signal stops both transports, and so does either one stopping on its own;
        // each lets its requests in flight finish.
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
                let served = cairn_http::serve(
                    listener,
                    cairn_serve::server::router(app.clone()),
                    cairn_http::Limits::default(),
                    stopped(signal_rx.clone()),
                )
                .await;
                let _ = signal_tx.send(true);
                served
            },
            async {
                let served = cairn_serve::grpc::serve(grpc_listener, app.clone(), stopped(signal_rx.clone())).await;
                let _ = signal_tx.send(true);
                served
            },
        );
        relay.abort();
        let served = served.and_then(|()| {
            grpc.map_err(|e| std::io::Error::other(format!("the gRPC server failed: {e}")))
        });
        let _ = stop_tx.send(true);
        let _ = watcher.await;
        if let Some(alerting) = alerting {
            let _ = alerting.await;
        }
        served.map_err(|e| Failure::user(format!("the server stopped: {e}"), None))
    });
    // Requests have finished; seal the prediction log.
    if let Some(log) = &app.log {
        log.close()
            .map_err(|e| Failure::user(format!("the prediction log could not be sealed: {e}"), None))?;
        if !quiet {
            eprintln!("prediction log sealed");
        }
    }
    result
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, so a signal
/// that arrives before the server is polled still stops it gracefully.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind| {
        signal(kind)
            .map_err(|e| Failure::user(format!("cannot install the shutdown signal handler: {e}"), None))
    };
    let (mut interrupt, mut terminate) =
        (install(SignalKind::interrupt())?, install(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

pub struct RolloutRequest<'a> {
    /// `NAME@ALIAS`.
    pub target: &'a str,
    pub canary: Option<i64>,
    pub weight: Option<i64>,
    pub shadows: &'a [i64],
    pub clear: bool,
    pub json: bool,
}

/// `cairn model rollout NAME@ALIAS [--canary V --weight P] [--shadow V]... [--clear]`.
pub fn rollout(ws: &Workspace, request: &RolloutRequest) -> Result<(), Failure> {
    let change = cairn_app::serving::RolloutChange {
        target: request.target.to_owned(),
        canary: request.canary,
        weight: request.weight,
        shadows: request.shadows.to_vec(),
        clear: request.clear,
    };
    let state = cairn_app::serving::rollout(ws, &change)?;
    if request.json {
        return crate::output::json(&state);
    }
    let (name, alias, current) = (&state.name, &state.alias, state.version);
    let mut line = match state.canary {
        Some(c) => {
            format!("{name}@{alias}: version {current} {}%, canary {c} {}%", 100 - state.weight, state.weight)
        }
        None => format!("{name}@{alias}: version {current} takes all traffic"),
    };
    if !state.shadows.is_empty() {
        line.push_str(&format!(
            "; shadows {}",
            state.shadows.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    out(line)
}

/// `cairn trace ID`: a logged prediction, walked back to its model version, run, params,
/// metrics, training data and commit.
pub fn trace(
    ws: &Workspace,
    request: &cairn_app::serving::TraceRequest,
    as_json: bool,
) -> Result<(), Failure> {
    let trace = cairn_app::serving::trace(ws, request)?;
    if as_json {
        return crate::output::json(&trace);
    }
    out(format!("prediction {}", trace.trace_id))?;
    out(format!(
        "  at        {} ({} protocol, HTTP {}, {:.2} ms)",
        crate::output::format_time(trace.time_ms),
        trace.protocol,
        trace.status,
        trace.latency_us as f64 / 1000.0
    ))?;
    out(format!(
        "  model     {}@{} ({}; endpoint `{}`)",
        trace.model, trace.version, trace.role, trace.endpoint
    ))?;
    let (inputs, outputs) = &trace.raw;
    out(format!("  inputs    {inputs}"))?;
    match &trace.error {
        Some(e) => out(format!("  error     {e}"))?,
        None => out(format!("  outputs   {outputs}"))?,
    }
    for shadow in &trace.shadows {
        out(format!(
            "  shadow    {}@{}: {}",
            shadow.model,
            shadow.version,
            shadow.error.clone().unwrap_or_else(|| shadow.raw_outputs.clone())
        ))?;
    }
    let Some(v) = &trace.model_version else {
        return out(format!("  version   {}@{} is no longer in the registry", trace.model, trace.version));
    };
    out(format!(
        "  version   {}@{}: {} ({}, registered from {})",
        trace.model, trace.version, v.digest, v.kind, v.source
    ))?;
    let Some(run_id) = &v.run_id else {
        return out(
            "  run       none recorded (registered without --run, and no recorded run wrote this content)",
        );
    };
    out(format!("  run       {run_id}"))?;
    let lineage = &trace.lineage;
    if let Some(params) = lineage.get("params").and_then(Value::as_object).filter(|p| !p.is_empty()) {
        let text: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned)))
            .collect();
        out(format!("  params    {}", text.join(" ")))?;
    }
    if let Some(metrics) = lineage.get("metrics").and_then(Value::as_object).filter(|m| !m.is_empty()) {
        let text: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out(format!("  metrics   {}", text.join(" ")))?;
    }
    for input in lineage.get("inputs").and_then(Value::as_array).into_iter().flatten() {
        out(format!(
            "  data      {} {}",
            input.get("path").and_then(Value::as_str).unwrap_or("?"),
            input.get("digest").and_then(Value::as_str).unwrap_or("?")
        ))?;
    }
    match lineage.get("commit").and_then(Value::as_str).filter(|c| !c.is_empty()) {
        Some(commit) => {
            let dirty = lineage.get("dirty").and_then(Value::as_bool).unwrap_or(false);
            out(format!("  commit    {commit}{}", if dirty { " (with uncommitted changes)" } else { "" }))
        }
        None => out("  commit    none recorded"),
    }
}
