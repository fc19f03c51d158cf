//! `/api/v1`: the application layer's use cases over HTTP, one handler each, every answer
//! a `cairn_app` result struct as JSON. Handlers run the (blocking) use case on the blocking
//! pool.

use axum::extract::{Path, Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_app::browse::PageRequest;
use cairn_app::reports::{self, RequestsRequest, Selection};
use cairn_app::{Workspace, asset_graph, browse, monitoring, pipeline, registry, serving};
use cairn_meta::MetaError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Mode, State};

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/whoami", get(whoami))
        .route("/runs", get(runs))
        .route("/runs/keys", get(run_keys))
        .route("/runs/{run}", get(run))
        .route("/runs/{run}/history", get(history))
        .route("/compare", get(compare))
        .route("/pipeline", get(graph))
        .route("/pipeline/stages/{stage}/log", get(stage_log))
        .route("/lineage", get(lineage))
        .route("/trace/{id}", get(trace))
        .route("/models", get(models))
        .route("/models/{name}/versions", get(versions))
        .route("/models/{name}/history", get(alias_history))
        .route("/models/{name}/aliases", get(aliases))
        .route("/models/{name}/aliases/{alias}", post(move_alias))
        .route("/models/{name}/rollouts/{alias}", post(change_rollout))
        .route("/models/{name}/versions/{version}/approve", post(approve))
        .route("/monitor/{model}", get(monitor))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/requests", get(alert_requests))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "no such API endpoint",
                Some("see /api/v1/openapi.json"),
            )
        })
}

/// The one error shape: `{"error": {"code", "message", "hint"}}`.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
    hint: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>, hint: Option<&str>) -> Self {
        ApiError { status, code, message: message.into(), hint: hint.map(str::to_owned) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self }))).into_response()
    }
}

impl From<cairn_app::Error> for ApiError {
    fn from(error: cairn_app::Error) -> Self {
        use cairn_app::Error as E;
        let message = error.to_string();
        let (status, code, hint) = match &error {
            E::Usage(_) => (StatusCode::BAD_REQUEST, "INVALID_REQUEST", None),
            E::Refused { hint, .. } => (StatusCode::UNPROCESSABLE_ENTITY, "REFUSED", hint.clone()),
            E::Meta(e) if matches!(e, MetaError::NoRun(_) | MetaError::NoModelVersion(_)) => {
                (StatusCode::NOT_FOUND, "NOT_FOUND", e.hint().map(str::to_owned))
            }
            E::Meta(e) => (StatusCode::UNPROCESSABLE_ENTITY, "REFUSED", e.hint().map(str::to_owned)),
            E::OpenMeta(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "METADATA_STORE",
                Some("check `meta.url` (`cairn config meta.url`)".to_owned()),
            ),
            E::Pipeline(_) | E::Repo(_) => (StatusCode::UNPROCESSABLE_ENTITY, "REFUSED", None),
            E::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "IO", None),
        };
        ApiError { status, code, message, hint }
    }
}

/// Runs a use case on the blocking pool and answers its result as JSON.
async fn answer<T, F>(state: &State, use_case: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Workspace) -> cairn_app::Result<T> + Send + 'static,
{
    answer_with(state, move |ws| use_case(ws).map(|value| Json(value).into_response())).await
}

/// Runs a use case on the blocking pool; its response as it made it, or the error's.
pub(crate) async fn answer_with<F>(state: &State, use_case: F) -> Response
where
    F: FnOnce(&Workspace) -> cairn_app::Result<Response> + Send + 'static,
{
    let workspace = state.workspace.clone();
    match tokio::task::spawn_blocking(move || use_case(&workspace)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => ApiError::from(error).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("the request failed: {e}"),
            None,
        )
        .into_response(),
    }
}

/// Refuses an action where the acting user is not known.
fn may_act(state: &State) -> Result<(), ApiError> {
    match state.mode {
        Mode::Local => Ok(()),
        Mode::ReadOnly => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "READ_ONLY",
            "this server does not know who you are, so it does not take actions",
            Some("act from a loopback `cairn ui` in the repository, or with the CLI"),
        )),
    }
}

#[derive(Serialize)]
struct WhoAmI {
    user: String,
    actions: bool,
}

async fn whoami(Shared(state): Shared<State>) -> Response {
    let actions = state.mode == Mode::Local;
    answer(&state, move |ws| Ok(WhoAmI { user: ws.user(), actions })).await
}

#[derive(Deserialize)]
struct RunsQuery {
    filter: Option<String>,
    order_by: Option<String>,
    page_token: Option<String>,
    max_results: Option<usize>,
}

async fn runs(Shared(state): Shared<State>, Query(q): Query<RunsQuery>) -> Response {
    let request = PageRequest {
        filter: q.filter,
        order_by: q.order_by,
        page_token: q.page_token,
        max_results: q.max_results.unwrap_or(100).min(crate::MAX_PAGE),
    };
    answer(&state, move |ws| browse::page(ws, &request)).await
}

async fn run_keys(Shared(state): Shared<State>) -> Response {
    answer(&state, browse::keys).await
}

async fn run(Shared(state): Shared<State>, Path(run): Path<String>) -> Response {
    answer(&state, move |ws| browse::run(ws, &run)).await
}

#[derive(Deserialize)]
struct HistoryQuery {
    key: String,
    points: Option<usize>,
}

async fn history(
    Shared(state): Shared<State>,
    Path(run): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    answer(&state, move |ws| browse::history(ws, &run, &q.key, q.points.unwrap_or(1000))).await
}

#[derive(Deserialize)]
struct CompareQuery {
    /// Comma-separated run ids or names.
    runs: String,
}

async fn compare(Shared(state): Shared<State>, Query(q): Query<CompareQuery>) -> Response {
    let runs: Vec<String> =
        q.runs.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect();
    answer(&state, move |ws| browse::compare(ws, &runs)).await
}

/// The graph with its layout: the same stages, and where each is drawn.
#[derive(Serialize)]
struct DrawnGraph {
    #[serde(flatten)]
    graph: asset_graph::AssetGraph,
    layout: crate::layout::Layout,
}

async fn graph(Shared(state): Shared<State>) -> Response {
    answer(&state, |ws| {
        let graph = asset_graph::graph(ws)?;
        let index: std::collections::HashMap<&str, usize> =
            graph.stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let edges: Vec<(usize, usize)> = graph
            .edges
            .iter()
            .filter_map(|(a, b)| Some((*index.get(a.as_str())?, *index.get(b.as_str())?)))
            .collect();
        let layout = crate::layout::layered(graph.stages.len(), &edges);
        Ok(DrawnGraph { graph, layout })
    })
    .await
}

#[derive(Serialize)]
struct StageLog {
    stage: String,
    log: String,
}

async fn stage_log(Shared(state): Shared<State>, Path(stage): Path<String>) -> Response {
    answer(&state, move |ws| {
        let log = asset_graph::stage_log(ws.repo(), &stage, 64 << 10)?;
        Ok(StageLog { stage, log })
    })
    .await
}

#[derive(Deserialize)]
struct LineageQuery {
    path: String,
}

async fn lineage(Shared(state): Shared<State>, Query(q): Query<LineageQuery>) -> Response {
    answer(&state, move |ws| pipeline::lineage(ws.repo(), &q.path)).await
}

async fn trace(Shared(state): Shared<State>, Path(id): Path<String>) -> Response {
    let request = serving::TraceRequest { trace_id: id, log_dir: None, remote: None };
    answer(&state, move |ws| serving::trace(ws, &request)).await
}

async fn models(Shared(state): Shared<State>) -> Response {
    answer(&state, registry::list).await
}

async fn versions(Shared(state): Shared<State>, Path(name): Path<String>) -> Response {
    answer(&state, move |ws| registry::versions(ws, &name)).await
}

async fn alias_history(Shared(state): Shared<State>, Path(name): Path<String>) -> Response {
    answer(&state, move |ws| registry::history(ws, &name, None)).await
}

async fn aliases(Shared(state): Shared<State>, Path(name): Path<String>) -> Response {
    answer(&state, move |ws| registry::aliases(ws, &name)).await
}

#[derive(Deserialize)]
struct RolloutBody {
    canary: Option<i64>,
    weight: Option<i64>,
    #[serde(default)]
    shadows: Vec<i64>,
    #[serde(default)]
    clear: bool,
}

async fn change_rollout(
    Shared(state): Shared<State>,
    Path((name, alias)): Path<(String, String)>,
    Json(body): Json<RolloutBody>,
) -> Response {
    if let Err(refused) = may_act(&state) {
        return refused.into_response();
    }
    let change = serving::RolloutChange {
        target: format!("{name}@{alias}"),
        canary: body.canary,
        weight: body.weight,
        shadows: body.shadows,
        clear: body.clear,
    };
    answer(&state, move |ws| serving::rollout(ws, &change)).await
}

#[derive(Deserialize)]
struct MoveAlias {
    version: i64,
    #[serde(default)]
    reason: String,
}

async fn move_alias(
    Shared(state): Shared<State>,
    Path((name, alias)): Path<(String, String)>,
    Json(body): Json<MoveAlias>,
) -> Response {
    if let Err(refused) = may_act(&state) {
        return refused.into_response();
    }
    let reference = format!("{name}@{}", body.version);
    answer(&state, move |ws| registry::alias(ws, &reference, &alias, &body.reason)).await
}

#[derive(Deserialize)]
struct Approve {
    comment: String,
}

#[derive(Serialize)]
struct Approved {
    name: String,
    version: i64,
    by: String,
}

async fn approve(
    Shared(state): Shared<State>,
    Path((name, version)): Path<(String, i64)>,
    Json(body): Json<Approve>,
) -> Response {
    if let Err(refused) = may_act(&state) {
        return refused.into_response();
    }
    answer(&state, move |ws| {
        let (name, version) = registry::approve(ws, &format!("{name}@{version}"), &body.comment)?;
        Ok(Approved { name, version, by: ws.user() })
    })
    .await
}

#[derive(Deserialize)]
struct MonitorQuery {
    version: Option<i64>,
    since: Option<String>,
    window: Option<String>,
}

async fn monitor(
    Shared(state): Shared<State>,
    Path(model): Path<String>,
    Query(q): Query<MonitorQuery>,
) -> Response {
    answer(&state, move |ws| {
        let select = Selection { model: model.clone(), version: q.version, since: q.since, log_dir: None };
        let mut found = reports::reports(ws, &reports::ReportRequest { select, window: q.window })?;
        Ok(found.iter_mut().map(|r| reports::report_document(&model, r)).collect::<Vec<_>>())
    })
    .await
}

#[derive(Deserialize)]
struct AlertsQuery {
    #[serde(default)]
    all: bool,
    model: Option<String>,
}

async fn alerts(Shared(state): Shared<State>, Query(q): Query<AlertsQuery>) -> Response {
    let query = monitoring::AlertsQuery { all: q.all, model: q.model, log_dir: None };
    answer(&state, move |ws| monitoring::alerts(ws, &query)).await
}

async fn alert_requests(Shared(state): Shared<State>, Path(id): Path<String>) -> Response {
    answer(&state, move |ws| {
        let view = monitoring::alert(ws, &id, None)?;
        let select = Selection { model: view.alert.model.clone(), version: None, since: None, log_dir: None };
        reports::requests(ws, &RequestsRequest { select, feature: None, alert: Some(view.alert.id.clone()) })
    })
    .await
}
