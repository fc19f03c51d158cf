//! Cairn's tracking server: MLflow's REST tracking and model registry API
//! (`/api/2.0/mlflow/...`) and its
//! artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/...`), backed by Cairn's metadata
//! store ([`cairn_meta`]) and content-addressed object store ([`cairn_store`]).
//!
//! Unmodified code using the `mlflow` Python client works against it: point
//! `MLFLOW_TRACKING_URI` at the server. `cairn run` starts one on a loopback port for the
//! duration of a run and sets `MLFLOW_RUN_ID`, so `mlflow` calls in a stage attach to the Cairn
//! run.
//!
//! Wire format: MLflow's protobuf messages as JSON (field names as in the `.proto` files,
//! int64 as JSON numbers, doubles that are not finite as `"NaN"`, `"Infinity"`,
//! `"-Infinity"`). Errors are `{"error_code": ..., "message": ...}` with MLflow's status for the
//! code; client mistakes are always 4xx, because the `mlflow` client retries 5xx for minutes.
//!
//! Artifacts are files in one tree whose top levels are `<experiment>/<run>/artifacts/`; each
//! file's bytes are a cache object (so identical artifacts are stored once and push with the
//! rest of the cache) and its path is a row in the metadata store's `artifacts` table.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
mod artifacts;
mod auth;
mod error;
mod logged_models;
mod registry;
pub use cairn_meta::search;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

pub use artifacts::tree_path;
pub use auth::{audited, authenticated};
pub use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub meta: Arc<cairn_meta::Store>,
    pub objects: cairn_store::Store,
    pub uploads: UploadLimits,
}

/// How much a client may upload: one artifact, and all the artifacts of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    pub max_artifact_bytes: u64,
    pub run_quota_bytes: u64,
}

impl Default for UploadLimits {
    /// 16 GiB per artifact (a large model), 64 GiB per run.
    fn default() -> Self {
        UploadLimits { max_artifact_bytes: 16 << 30, run_quota_bytes: 64 << 30 }
    }
}

/// What `GET /version` answers. The `mlflow` client reads it as a version of MLflow's server
/// to decide which features to use: it is the newest MLflow whose client-gated features this
/// server has (3.4 added OpenTelemetry spans, which Cairn does not serve, so a client says
/// "not supported" rather than failing on a missing endpoint), with Cairn's own version as
/// the local part (`3.3.0+cairn.0.1.0`).
pub const MLFLOW_VERSION: &str = concat!("3.3.0+cairn.", env!("CARGO_PKG_VERSION"));

/// The routes of the tracking API and the artifact proxy; `GET /health` (`OK`, as
/// `mlflow server` answers it, for load balancers and clients that wait for the server) and
/// `GET /version` ([`MLFLOW_VERSION`]).
pub fn router(state: State) -> axum::Router {
    api::routes()
        .merge(artifacts::routes())
        .route("/health", axum::routing::get(|| async { "OK" }))
        .route("/version", axum::routing::get(|| async { MLFLOW_VERSION }))
        .with_state(state)
}

/// Serves until `shutdown` completes, with the header and body timeouts and connection
/// limit of [`cairn_http::Limits::default`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    cairn_http::serve(listener, router(state), cairn_http::Limits::default(), shutdown).await
}

/// A server running on its own threads (for `cairn run`), stopped when dropped.
pub struct Background {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Binds `127.0.0.1` on a free port and serves `state` there.
    pub fn start(state: State) -> std::io::Result<Background> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-tracking")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("cairn-tracking".into()).spawn(move || {
            let _ = runtime.block_on(serve(listener, state, async {
                let _ = stopped.await;
            }));
        })?;
        Ok(Background { address, stop: Some(stop), thread: Some(thread) })
    }

    /// The URL to give `mlflow` as its tracking URI.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
