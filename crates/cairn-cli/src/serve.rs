//! `cairn serve`, `cairn model rollout` and `cairn trace`.
//!
//! The server serves registered models (`churn@production`, `churn@3`, `churn`) and follows
//! the registry: alias moves and rollouts (canary weight, shadows) take effect within a
//! second, without a restart. Every prediction is logged under `.cairn/predictions/` with a
//! trace id that `cairn trace` walks back to the model version, its run, params, metrics,
//! training data and commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn_app::Workspace;
use cairn_app::serving::{ServeSettings, Server};
use cairn_repo::Repo;
use cairn_serve::python::EnvManager;
use cairn_serve::runtime::locate_onnxruntime;
use serde_json::Value;

use crate::failure::Failure;
use crate::output::out;

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

/// Where `cairn serve` listens.
pub struct Listen {
    pub host: String,
    pub port: u16,
    /// The Open Inference Protocol over gRPC listens here.
    pub grpc_port: u16,
    /// Listen where other machines can reach without authentication.
    pub insecure_no_auth: bool,
}

impl crate::args::ServeArgs {
    /// Where to listen, and the server's settings: paths relative to `cwd`, ONNX Runtime's
    /// library found (`--onnxruntime`, else `onnxruntime_candidates`), the Python
    /// interpreter resolved (`--python`, else `$CAIRN_PYTHON`, else `python3`).
    pub fn resolve(self, cwd: &Path, repo: &Repo) -> Result<(Listen, ServeSettings), Failure> {
        crate::tracking::guard_host(&self.host, self.port, false, self.insecure_no_auth)?;
        if self.targets.is_empty() {
            return Err(Failure::usage(
                "name the models to serve: `cairn serve churn@production` (see `cairn model list`)",
            ));
        }
        let onnxruntime = match self.onnxruntime {
            Some(path) => cwd.join(path),
            None => locate_onnxruntime(&onnxruntime_candidates(repo))
                .map_err(|e| Failure::user(e.to_string(), Some("or pass --onnxruntime PATH")))?,
        };
        let interpreter = self
            .python
            .map(|p| if p.components().count() > 1 { cwd.join(p) } else { p })
            .or_else(|| std::env::var_os("CAIRN_PYTHON").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("python3"));
        let python = if self.env_manager == "local" {
            EnvManager::Local(interpreter)
        } else {
            EnvManager::Virtualenv { python: interpreter, cache: python_envs() }
        };
        let cairn = std::env::current_exe()
            .map_err(|e| Failure::user(format!("cannot find the cairn binary to retrain with: {e}"), None))?;
        // With --port 0 (tests, scripts), gRPC takes a free port too unless told.
        let grpc_port = self.grpc_port.unwrap_or(if self.port == 0 { 0 } else { 8081 });
        let listen =
            Listen { host: self.host, port: self.port, grpc_port, insecure_no_auth: self.insecure_no_auth };
        let settings = ServeSettings {
            targets: self.targets,
            onnxruntime,
            sessions: self.sessions,
            python,
            batch_max: self.batch_max.filter(|&n| n > 1),
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            max_body: self.max_body,
            allow_nan: self.allow_nan,
            log: !self.no_log,
            log_dir: self.log_dir.map(|d| cwd.join(d)),
            log_remote: self.log_remote,
            segment_bytes: self.log_segment_mb.max(1) << 20,
            segment_age: Duration::from_secs(self.log_segment_secs.max(1)),
            profiles: !self.no_profile,
            monitor: self.monitor.map(|m| cwd.join(m)),
            alerts: !self.no_alerts,
            cairn,
        };
        Ok((listen, settings))
    }
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
pub fn serve(ws: &Workspace, listen: Listen, settings: ServeSettings, quiet: bool) -> Result<(), Failure> {
    let onnxruntime = settings.onnxruntime.clone();
    let server = Server::assemble(ws, settings)?;
    if !quiet {
        print_routes(&server.routes());
        for warning in &server.warnings {
            eprintln!("warning: {warning}");
        }
        if let Some(m) = &server.monitoring {
            eprintln!(
                "  monitoring: {} rule(s) for {} model(s), evaluated every {} s; {} webhook(s)",
                m.rules,
                m.models,
                m.every_ms as f64 / 1000.0,
                m.webhooks
            );
        }
    }
    let logging = server.app.log.is_some();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::user(format!("cannot start the server's runtime: {e}"), None))?;
    tokio.block_on(async {
        let (listener, grpc) = bind(&listen.host, listen.port, listen.grpc_port).await?;
        let (address, grpc_address) = (local_address(&listener)?, local_address(&grpc)?);
        crate::tracking::guard_exposure(&address, false, listen.insecure_no_auth)?;
        if !quiet {
            eprintln!(
                "cairn model server on http://{address} and gRPC {grpc_address} (ONNX Runtime from {}); Ctrl-C stops it\n  native: POST /models/NAME/predict · KServe v2: /v2/models/NAME/infer, gRPC inference.GRPCInferenceService · KServe v1: /v1/models/NAME:predict · MLflow: POST /invocations · /metrics",
                onnxruntime.display()
            );
        }
        let shutdown = shutdown_signal()?;
        // Stdout carries only the addresses, for scripts that start the server on port 0: the
        // HTTP URL first, then the gRPC address.
        // One write, so a reader that takes the first line and goes cannot break the second.
        println!("http://{address}\ngrpc://{grpc_address}");
        // Alerts go to stderr (the log), `cairn alerts` and the webhooks.
        let notify: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line| eprintln!("{line}"));
        Ok::<(), Failure>(server.run(listener, grpc, shutdown, notify).await?)
    })?;
    if logging && !quiet {
        eprintln!("prediction log sealed");
    }
    Ok(())
}

/// One line per served target on stderr: its versions and whether each is ready.
fn print_routes(table: &cairn_serve::routing::Table) {
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

/// The HTTP and gRPC listeners.
async fn bind(
    host: &str,
    port: u16,
    grpc_port: u16,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), Failure> {
    let listener = tokio::net::TcpListener::bind((host, port)).await.map_err(|e| {
        Failure::user(
            format!("cannot listen on {host}:{port}: {e}"),
            Some("choose another port with --port (0 picks a free one), or stop what holds this one"),
        )
    })?;
    let grpc = tokio::net::TcpListener::bind((host, grpc_port)).await.map_err(|e| {
        Failure::user(
            format!("cannot listen for gRPC on {host}:{grpc_port}: {e}"),
            Some("choose another port with --grpc-port (0 picks a free one), or stop what holds this one"),
        )
    })?;
    Ok((listener, grpc))
}

fn local_address(listener: &tokio::net::TcpListener) -> Result<std::net::SocketAddr, Failure> {
    listener.local_addr().map_err(|e| Failure::user(format!("cannot read the listening address: {e}"), None))
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
