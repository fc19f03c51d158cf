//! The tracking endpoints under `/api/2.0/mlflow/`.
//!
//! Every endpoint takes its fields from the query string (GET) or a JSON body (POST), runs
//! on the blocking pool (the store's backends are synchronous), and answers JSON.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State as Extract};
use axum::http::Method;
use axum::routing::{delete, get, patch, post};
use cairn_meta::{Metric, NewRun, RunUpdate, View, now_ms};
use serde_json::{Value, json};

use crate::search::{Filter, OrderBy};
use crate::wire::{self, Request, RunWire, experiment_json, metric_json, run_json};
use crate::{ApiError, State};
use crate::{logged_models, registry};

/// MLflow's limits on one `log-batch` request.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
pub const MAX_BATCH_BYTES: usize = 1_000_000;
const MAX_PARAM_VALUE: usize = 6000;
const MAX_TAG_VALUE: usize = 8000;
const MAX_KEY: usize = 250;
const MAX_EXPERIMENT_NAME: usize = 500;
const MAX_RESULTS: i64 = 50_000;

/// What an endpoint answers: a JSON value, or JSON already written ([`JsonBytes`], for large
/// answers serialized straight from the records).
pub(crate) trait Reply: Send + 'static {
    fn into_response(self) -> axum::response::Response;
}

impl Reply for Value {
    fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        axum::Json(self).into_response()
    }
}

pub(crate) struct JsonBytes(pub Vec<u8>);

impl Reply for JsonBytes {
    fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        ([(axum::http::header::CONTENT_TYPE, "application/json")], self.0).into_response()
    }
}

/// Reads the request (query for GET, body otherwise, and the path's parameters over both) and
/// runs `endpoint` on the blocking pool.
async fn dispatch<T: Reply>(
    state: State,
    method: Method,
    path: Vec<(String, String)>,
    query: Option<String>,
    body: Bytes,
    endpoint: fn(&State, &Request, usize) -> Result<T, ApiError>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let size = body.len();
    let result = tokio::task::spawn_blocking(move || {
        let mut request = if method == Method::GET {
            Request::from_query(query.as_deref())?
        } else {
            Request::from_body(&body)?
        };
        for (name, value) in path {
            request.set(&name, value);
        }
        endpoint(&state, &request, size)
    })
    .await
    .unwrap_or_else(|e| Err(ApiError::internal(format!("the request handler failed: {e}"))));
    match result {
        Ok(reply) => reply.into_response(),
        Err(error) => error.into_response(),
    }
}

macro_rules! endpoint {
    ($f:path) => {
        |Extract(state): Extract<State>, method: Method, RawQuery(query): RawQuery, body: Bytes| {
            dispatch(state, method, Vec::new(), query, body, $f)
        }
    };
}

/// An endpoint with parameters in its path (`/logged-models/{model_id}`).
macro_rules! endpoint_with_path {
    ($f:path) => {
        |Extract(state): Extract<State>,
         method: Method,
         Path(path): Path<Vec<(String, String)>>,
         RawQuery(query): RawQuery,
         body: Bytes| { dispatch(state, method, path, query, body, $f) }
    };
}

pub(crate) fn routes() -> Router<State> {
    let api = Router::new()
        .route("/experiments/create", post(endpoint!(create_experiment)))
        .route("/experiments/get", get(endpoint!(get_experiment)))
        .route("/experiments/get-by-name", get(endpoint!(get_experiment_by_name)))
        .route("/experiments/search", post(endpoint!(search_experiments)).get(endpoint!(search_experiments)))
        .route("/experiments/update", post(endpoint!(update_experiment)))
        .route("/experiments/delete", post(endpoint!(delete_experiment)))
        .route("/experiments/restore", post(endpoint!(restore_experiment)))
        .route("/experiments/set-experiment-tag", post(endpoint!(set_experiment_tag)))
        .route("/experiments/delete-experiment-tag", post(endpoint!(delete_experiment_tag)))
        .route("/runs/create", post(endpoint!(create_run)))
        .route("/runs/update", post(endpoint!(update_run)))
        .route("/runs/get", get(endpoint!(get_run)))
        .route("/runs/search", post(endpoint!(search_runs)).get(endpoint!(search_runs)))
        .route("/runs/delete", post(endpoint!(delete_run)))
        .route("/runs/restore", post(endpoint!(restore_run)))
        .route("/runs/set-tag", post(endpoint!(set_tag)))
        .route("/runs/delete-tag", post(endpoint!(delete_tag)))
        .route("/runs/log-metric", post(endpoint!(log_metric)))
        .route("/runs/log-parameter", post(endpoint!(log_parameter)))
        .route("/runs/log-batch", post(endpoint!(log_batch)))
        .route("/runs/log-inputs", post(endpoint!(log_inputs)))
        .route("/runs/outputs", post(endpoint!(log_outputs)))
        .route("/runs/log-model", post(endpoint!(log_model)))
        .route("/metrics/get-history", get(endpoint!(metric_history)))
        .route("/artifacts/list", get(endpoint!(list_artifacts)))
        .route("/logged-models", post(endpoint!(logged_models::create)))
        .route("/logged-models/search", post(endpoint!(logged_models::search)))
        .route(
            "/logged-models/{model_id}",
            get(endpoint_with_path!(logged_models::get))
                .patch(endpoint_with_path!(logged_models::finalize))
                .delete(endpoint_with_path!(logged_models::delete)),
        )
        .route("/logged-models/{model_id}/tags", patch(endpoint_with_path!(logged_models::set_tags)))
        .route(
            "/logged-models/{model_id}/tags/{tag_key}",
            delete(endpoint_with_path!(logged_models::delete_tag)),
        )
        .route("/logged-models/{model_id}/params", post(endpoint_with_path!(logged_models::log_params)))
        .route(
            "/logged-models/{model_id}/artifacts/directories",
            get(endpoint_with_path!(logged_models::list_artifacts)),
        )
        .route("/registered-models/create", post(endpoint!(registry::create_model)))
        .route("/registered-models/get", get(endpoint!(registry::get_model)))
        .route("/registered-models/rename", post(endpoint!(registry::rename_model)))
        .route("/registered-models/update", patch(endpoint!(registry::update_model)))
        .route("/registered-models/delete", delete(endpoint!(registry::delete_model)))
        .route("/registered-models/search", get(endpoint!(registry::search_models)))
        .route(
            "/registered-models/get-latest-versions",
            post(endpoint!(registry::latest_versions)).get(endpoint!(registry::latest_versions)),
        )
        .route(
            "/registered-models/alias",
            post(endpoint!(registry::set_alias))
                .delete(endpoint!(registry::delete_alias))
                .get(endpoint!(registry::get_by_alias)),
        )
        .route("/model-versions/create", post(endpoint!(registry::create_version)))
        .route("/model-versions/get", get(endpoint!(registry::get_version)))
        .route("/model-versions/update", patch(endpoint!(registry::update_version)))
        .route("/model-versions/delete", delete(endpoint!(registry::delete_version)))
        .route("/model-versions/search", get(endpoint!(registry::search_versions)))
        .route("/model-versions/get-download-uri", get(endpoint!(registry::download_uri)))
        .route("/model-versions/transition-stage", post(endpoint!(registry::transition_stage)))
        .route("/registered-models/set-tag", post(endpoint!(registry::set_tag)))
        .route("/registered-models/delete-tag", delete(endpoint!(registry::delete_tag)))
        .route("/model-versions/set-tag", post(endpoint!(registry::set_tag)))
        .route("/model-versions/delete-tag", delete(endpoint!(registry::delete_tag)))
        .fallback(|method: Method, uri: axum::http::Uri| async move {
            ApiError {
                code: "ENDPOINT_NOT_FOUND",
                message: format!(
                    "no endpoint {method} {uri}; see the MLflow REST API reference for the tracking API"
                ),
            }
        })
        // A batch over MLflow's 1 MB limit gets MLflow's error, not a bare 413.
        .layer(DefaultBodyLimit::max(16 << 20));
    Router::new().nest("/api/2.0/mlflow", api.clone()).nest("/ajax-api/2.0/mlflow", api)
}

// ------------------------------------------------------------------ validation

pub(crate) fn check_key(what: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::invalid(format!("{what} name must not be empty")));
    }
    if key.len() > MAX_KEY {
        return Err(ApiError::invalid(format!(
            "{what} name `{key}` is {} characters; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    let path_safe = !key.starts_with('/') && !key.split('/').any(|part| part == "..");
    if !path_safe
        || !key.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/' | ':'))
    {
        return Err(ApiError::invalid(format!(
            "invalid {what} name `{key}`: names may contain letters, digits, underscores, dashes, periods, spaces, colons and slashes, and may not climb out of their directory"
        )));
    }
    Ok(())
}

pub(crate) fn check_value(what: &str, key: &str, value: &str, limit: usize) -> Result<(), ApiError> {
    if value.len() > limit {
        return Err(ApiError::invalid(format!(
            "{what} `{key}` has a value of {} characters; the limit is {limit}",
            value.len()
        )));
    }
    Ok(())
}

fn experiment_id(request: &Request) -> Result<i64, ApiError> {
    let text = request.required("experiment_id")?;
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no experiment with id `{text}` (ids are whole numbers)")))
}

fn page(request: &Request, default: i64) -> Result<(usize, usize), ApiError> {
    let max = request.int("max_results")?.unwrap_or(default);
    if !(1..=MAX_RESULTS).contains(&max) {
        return Err(ApiError::invalid(format!("max_results must be between 1 and {MAX_RESULTS}, not {max}")));
    }
    let offset = match request.string("page_token")? {
        None => 0,
        Some(token) if token.is_empty() => 0,
        Some(token) => {
            token.parse().map_err(|_| ApiError::invalid(format!("invalid page_token `{token}`")))?
        }
    };
    Ok((offset, max as usize))
}

fn view(request: &Request, field: &str) -> Result<View, ApiError> {
    Ok(match request.string(field)?.as_deref() {
        None | Some("ACTIVE_ONLY") | Some("1") => View::Active,
        Some("DELETED_ONLY") | Some("2") => View::Deleted,
        Some("ALL") | Some("3") => View::All,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "{field} must be ACTIVE_ONLY, DELETED_ONLY or ALL, not `{other}`"
            )));
        }
    })
}

/// One page of `items` and the token for the next.
fn paginate<T>(items: Vec<T>, offset: usize, max: usize) -> (Vec<T>, Option<String>) {
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(max).collect();
    let next = (offset + max < total).then(|| (offset + max).to_string());
    (page, next)
}

// ------------------------------------------------------------------ experiments

fn create_experiment(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid("experiment name must not be empty"));
    }
    if name.len() > MAX_EXPERIMENT_NAME {
        return Err(ApiError::invalid(format!(
            "experiment name is {} characters; the limit is {MAX_EXPERIMENT_NAME}",
            name.len()
        )));
    }
    let location = request.string("artifact_location")?.unwrap_or_default();
    let tags = request.pairs("tags")?;
    let id = state.meta.create_experiment_with_tags(&name, &location, &tags)?;
    Ok(json!({"experiment_id": id.to_string()}))
}

fn get_experiment(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let id = experiment_id(request)?;
    let experiment = state
        .meta
        .experiment(id)?
        .ok_or_else(|| ApiError::not_found(format!("no experiment with id `{id}`")))?;
    Ok(json!({"experiment": experiment_json(&experiment)}))
}

fn get_experiment_by_name(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("experiment_name")?;
    let experiment = state
        .meta
        .experiment_by_name(&name)?
        .ok_or_else(|| ApiError::not_found(format!("Could not find experiment with name '{name}'")))?;
    Ok(json!({"experiment": experiment_json(&experiment)}))
}

fn search_experiments(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let (offset, max) = page(request, 1000)?;
    let filter = Filter::parse(&request.string("filter")?.unwrap_or_default())
        .map_err(|e| ApiError::invalid(format!("invalid filter: {e}")))?;
    let order: Vec<OrderBy> = request
        .list("order_by")?
        .iter()
        .filter_map(Value::as_str)
        .map(|o| {
            OrderBy::parse(&experiment_order(o))
                .map_err(|e| ApiError::invalid(format!("invalid order_by `{o}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let experiments = state.meta.search_experiments(view(request, "view_type")?)?;
    // Experiments are searched as runs with the experiment's name, tags and creation time.
    let mut as_runs: Vec<(cairn_meta::Run, cairn_meta::Experiment)> = experiments
        .into_iter()
        .map(|e| {
            let mut run = crate::search::record(&e.id.to_string(), &e.name, e.creation_time, e.tags.clone());
            run.info.experiment_id = e.id;
            run.info.end_time = Some(e.last_update_time);
            run.info.artifact_uri = e.artifact_location.clone();
            run.info.lifecycle_stage = e.lifecycle_stage.clone();
            (run, e)
        })
        .filter(|(run, _)| filter.matches(run))
        .collect();
    if order.is_empty() {
        as_runs.sort_by(|a, b| b.1.last_update_time.cmp(&a.1.last_update_time).then(b.1.id.cmp(&a.1.id)));
    } else {
        let mut runs: Vec<cairn_meta::Run> = as_runs.iter().map(|(r, _)| r.clone()).collect();
        crate::search::sort(&mut runs, &order);
        let by_id: std::collections::HashMap<i64, cairn_meta::Experiment> =
            as_runs.into_iter().map(|(_, e)| (e.id, e)).collect();
        as_runs = runs
            .into_iter()
            .filter_map(|r| by_id.get(&r.info.experiment_id).map(|e| (r, e.clone())))
            .collect();
    }
    let (page, next) = paginate(as_runs, offset, max);
    let mut out = json!({"experiments": page.iter().map(|(_, e)| experiment_json(e)).collect::<Vec<_>>()});
    if let Some(next) = next {
        out["next_page_token"] = json!(next);
    }
    Ok(out)
}

/// MLflow orders experiments by their own attributes (`name`, `creation_time`,
/// `last_update_time`, with or without `attributes.`). Experiments are searched as runs here
/// (see [`search_experiments`]), so those keys become the run attributes that hold them.
fn experiment_order(text: &str) -> String {
    let trimmed = text.trim();
    let (key, rest) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
    let bare = key.strip_prefix("attributes.").or_else(|| key.strip_prefix("attribute.")).unwrap_or(key);
    let run_key = match bare {
        "name" => "attributes.run_name",
        "creation_time" => "attributes.start_time",
        "last_update_time" => "attributes.end_time",
        _ => return text.to_owned(),
    };
    format!("{run_key} {rest}")
}

fn update_experiment(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let id = experiment_id(request)?;
    if let Some(name) = request.string("new_name")? {
        if name.trim().is_empty() {
            return Err(ApiError::invalid("new_name must not be empty"));
        }
        state.meta.rename_experiment(id, &name)?;
    }
    Ok(json!({}))
}

fn delete_experiment(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let id = experiment_id(request)?;
    if id == 0 {
        return Err(ApiError::invalid("the Default experiment (id 0) cannot be deleted"));
    }
    state.meta.set_experiment_stage(id, "deleted")?;
    Ok(json!({}))
}

fn restore_experiment(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    state.meta.set_experiment_stage(experiment_id(request)?, "active")?;
    Ok(json!({}))
}

fn set_experiment_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let id = experiment_id(request)?;
    let key = request.required("key")?;
    check_key("tag", &key)?;
    let value = request.string("value")?.unwrap_or_default();
    check_value("tag", &key, &value, 5000)?;
    state.meta.set_experiment_tag(id, &key, &value)?;
    Ok(json!({}))
}

fn delete_experiment_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let id = experiment_id(request)?;
    let key = request.required("key")?;
    state.meta.delete_experiment_tag(id, &key)?;
    Ok(json!({}))
}

// ------------------------------------------------------------------ runs

fn create_run(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let experiment = match request.string("experiment_id")? {
        None => 0,
        Some(text) if text.is_empty() => 0,
        Some(text) => text.parse().map_err(|_| {
            ApiError::not_found(format!("no experiment with id `{text}` (ids are whole numbers)"))
        })?,
    };
    let mut tags = request.pairs("tags")?;
    for (key, value) in &tags {
        check_key("tag", key)?;
        check_value("tag", key, value, MAX_TAG_VALUE)?;
    }
    let tag = |key: &str| tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let name = match request.string("run_name")?.filter(|n| !n.is_empty()).or_else(|| tag("mlflow.runName")) {
        Some(name) => name,
        None => format!("run-{:06x}", now_ms() as u64 & 0xff_ffff),
    };
    let user = request
        .string("user_id")?
        .filter(|u| !u.is_empty())
        .or_else(|| tag("mlflow.user"))
        .unwrap_or_default();
    let run = NewRun {
        experiment_id: experiment,
        name: name.clone(),
        parent_run_id: tag("mlflow.parentRunId"),
        user,
        git_commit: tag("mlflow.source.git.commit"),
        git_dirty: false,
        start_time: request.int("start_time")?.unwrap_or_else(now_ms),
        source: tag("mlflow.source.name").unwrap_or_else(|| "mlflow".into()),
        artifact_uri: String::new(),
        // An MLflow client's run has no process Cairn could watch.
        owner: None,
    };
    if tag("mlflow.runName").is_none() {
        tags.push(("mlflow.runName".into(), name));
    }
    let id = state.meta.create_run_with_tags(&run, &tags)?;
    let run = state
        .meta
        .run(&id)?
        .ok_or_else(|| ApiError::internal(format!("run {id} vanished after creation")))?;
    Ok(json!({"run": run_json(&run)}))
}

fn find_run(state: &State, run_id: &str) -> Result<cairn_meta::Run, ApiError> {
    state.meta.run(run_id)?.ok_or_else(|| ApiError::not_found(format!("Run with id={run_id} not found")))
}

fn update_run(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let status = match request.string("status")? {
        Some(s) => Some(cairn_meta::RunStatus::parse(&s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status must be RUNNING, SCHEDULED, FINISHED, FAILED or KILLED, not `{s}`"
            ))
        })?),
        None => None,
    };
    let update = RunUpdate {
        status,
        end_time: request.int("end_time")?,
        name: request.string("run_name")?.filter(|n| !n.is_empty()),
    };
    state.meta.update_run(&run_id, &update)?;
    let run = find_run(state, &run_id)?;
    Ok(json!({"run_info": run_json(&run)["info"]}))
}

fn get_run(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run = find_run(state, &request.run_id()?)?;
    Ok(json!({"run": run_json(&run)}))
}

fn delete_run(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    state.meta.delete_run(&request.run_id()?)?;
    Ok(json!({}))
}

fn restore_run(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    state.meta.restore_run(&request.run_id()?)?;
    Ok(json!({}))
}

fn search_runs(state: &State, request: &Request, _: usize) -> Result<JsonBytes, ApiError> {
    let (offset, max) = page(request, 1000)?;
    let mut experiments = Vec::new();
    for id in request.list("experiment_ids")? {
        let parsed = wire::int64(&id)
            .ok_or_else(|| ApiError::invalid(format!("experiment id {id} is not a whole number")))?;
        experiments.push(parsed);
    }
    let filter_text = request.string("filter")?.unwrap_or_default();
    let filter = Filter::parse(&filter_text)
        .map_err(|e| ApiError::invalid(format!("invalid filter `{filter_text}`: {e}")))?;
    let order: Vec<OrderBy> = request
        .list("order_by")?
        .iter()
        .filter_map(Value::as_str)
        .map(|o| OrderBy::parse(o).map_err(|e| ApiError::invalid(format!("invalid order_by `{o}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let mut runs = state.meta.runs(&experiments, view(request, "run_view_type")?)?;
    runs.retain(|r| filter.matches(r));
    if !order.is_empty() {
        crate::search::sort(&mut runs, &order);
    }
    let (page, next) = paginate(runs, offset, max);
    let answer = SearchRunsWire { runs: page.iter().map(RunWire).collect(), next_page_token: next };
    serde_json::to_vec(&answer)
        .map(JsonBytes)
        .map_err(|e| ApiError::internal(format!("cannot write the search's answer: {e}")))
}

#[derive(serde::Serialize)]
struct SearchRunsWire<'a> {
    runs: Vec<RunWire<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

fn set_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let key = request.required("key")?;
    check_key("tag", &key)?;
    let value = request.string("value")?.unwrap_or_default();
    check_value("tag", &key, &value, MAX_TAG_VALUE)?;
    state.meta.log_batch(&run_id, &[], &[], &[(key.clone(), value.clone())])?;
    if key == "mlflow.runName" {
        state.meta.update_run(&run_id, &RunUpdate { name: Some(value), ..RunUpdate::default() })?;
    }
    Ok(json!({}))
}

fn delete_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    state.meta.delete_tag(&request.run_id()?, &request.required("key")?)?;
    Ok(json!({}))
}

fn metric(item: &Value, now: i64) -> Result<Metric, ApiError> {
    let key = match item.get("key") {
        Some(Value::String(k)) => k.clone(),
        _ => return Err(ApiError::invalid("a metric needs a string `key`")),
    };
    check_key("metric", &key)?;
    let value = item
        .get("value")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::invalid(format!("metric `{key}` has no value")))?;
    let value = wire::double(value)
        .ok_or_else(|| ApiError::invalid(format!("metric `{key}` has value {value}, not a number")))?;
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        item.get(name)
            .filter(|v| !v.is_null())
            .map(|v| {
                wire::int64(v).ok_or_else(|| {
                    ApiError::invalid(format!("metric `{key}`: `{name}` {v} is not a whole number"))
                })
            })
            .transpose()
    };
    Ok(Metric { timestamp: int("timestamp")?.unwrap_or(now), step: int("step")?.unwrap_or(0), key, value })
}

/// The logged model a metric point is measured for (MLflow 3's `model_id`), with the dataset
/// it was measured on.
struct ModelLink {
    model_id: String,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

fn model_link(item: &Value) -> Result<Option<ModelLink>, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match item.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(ApiError::invalid(format!("a metric's `{name}` must be a string, not {other}")))
            }
        }
    };
    let Some(model_id) = text("model_id")? else { return Ok(None) };
    Ok(Some(ModelLink {
        model_id,
        dataset_name: text("dataset_name")?,
        dataset_digest: text("dataset_digest")?,
    }))
}

/// Logs metric points (and params and tags) to a run; points that name a logged model are
/// also linked to it. Every named model is checked first, so an unknown one changes nothing.
fn log_linked(
    state: &State,
    run_id: &str,
    items: &[Value],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<(), ApiError> {
    let now = now_ms();
    let mut plain = Vec::new();
    let mut linked: Vec<(String, Vec<cairn_meta::ModelMetric>)> = Vec::new();
    for item in items {
        let metric = metric(item, now)?;
        match model_link(item)? {
            None => plain.push(metric),
            Some(link) => {
                let point = cairn_meta::ModelMetric {
                    metric,
                    run_id: Some(run_id.to_owned()),
                    dataset_name: link.dataset_name,
                    dataset_digest: link.dataset_digest,
                };
                match linked.iter_mut().find(|(m, _)| *m == link.model_id) {
                    Some((_, points)) => points.push(point),
                    None => linked.push((link.model_id, vec![point])),
                }
            }
        }
    }
    for (model, _) in &linked {
        logged_models::find(state, model)?;
    }
    state.meta.log_batch(run_id, &plain, params, tags)?;
    for (model, points) in &linked {
        state.meta.log_model_metrics(Some(run_id), model, points)?;
    }
    Ok(())
}

fn log_metric(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let mut item = serde_json::Map::new();
    for field in ["key", "value", "timestamp", "step", "model_id", "dataset_name", "dataset_digest"] {
        if let Some(v) = request.get(field) {
            item.insert(field.into(), v.clone());
        }
    }
    if !item.contains_key("key") {
        return Err(wire::missing("key"));
    }
    log_linked(state, &run_id, &[Value::Object(item)], &[], &[])?;
    Ok(json!({}))
}

fn log_parameter(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let key = request.required("key")?;
    check_key("param", &key)?;
    let value = request.string("value")?.unwrap_or_default();
    check_value("param", &key, &value, MAX_PARAM_VALUE)?;
    state.meta.log_batch(&run_id, &[], &[(key, value)], &[])?;
    Ok(json!({}))
}

fn log_batch(state: &State, request: &Request, size: usize) -> Result<Value, ApiError> {
    if size > MAX_BATCH_BYTES {
        return Err(ApiError::invalid(format!(
            "the batch is {size} bytes; the limit is {MAX_BATCH_BYTES}: split it into several log-batch calls"
        )));
    }
    let run_id = request.run_id()?;
    let metrics = request.list("metrics")?;
    let params = request.pairs("params")?;
    let tags = request.pairs("tags")?;
    if metrics.len() > MAX_METRICS_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "a batch may hold at most {MAX_METRICS_PER_BATCH} metrics; this one has {}",
            metrics.len()
        )));
    }
    if params.len() + tags.len() > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "a batch may hold at most {MAX_PARAMS_TAGS_PER_BATCH} params and tags together; this one has {}",
            params.len() + tags.len()
        )));
    }
    for (key, value) in &params {
        check_key("param", key)?;
        check_value("param", key, value, MAX_PARAM_VALUE)?;
    }
    let mut seen = std::collections::HashMap::new();
    for (key, value) in &params {
        if let Some(old) = seen.insert(key.as_str(), value.as_str())
            && old != value
        {
            return Err(ApiError::invalid(format!(
                "param `{key}` appears twice in the batch with different values"
            )));
        }
    }
    for (key, value) in &tags {
        check_key("tag", key)?;
        check_value("tag", key, value, MAX_TAG_VALUE)?;
    }
    log_linked(state, &run_id, &metrics, &params, &tags)?;
    if let Some((_, name)) = tags.iter().rev().find(|(k, _)| k == "mlflow.runName") {
        state.meta.update_run(&run_id, &RunUpdate { name: Some(name.clone()), ..RunUpdate::default() })?;
    }
    Ok(json!({}))
}

fn log_inputs(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let mut inputs = Vec::new();
    for input in request.list("datasets")? {
        let dataset =
            input.get("dataset").ok_or_else(|| ApiError::invalid("a dataset input needs `dataset`"))?;
        let field = |name: &str| dataset.get(name).and_then(Value::as_str).map(str::to_owned);
        let name = field("name").ok_or_else(|| ApiError::invalid("a dataset needs a `name`"))?;
        let digest =
            field("digest").ok_or_else(|| ApiError::invalid(format!("dataset `{name}` needs a `digest`")))?;
        inputs.push((name, digest, input.to_string()));
    }
    let models = model_ids(request, "models")?;
    for (model, _) in &models {
        logged_models::find(state, model)?;
    }
    state.meta.log_inputs(&run_id, &inputs)?;
    if !models.is_empty() {
        state.meta.log_run_models(&run_id, cairn_meta::ModelDirection::Input, &models)?;
    }
    Ok(json!({}))
}

/// `[{"model_id": ..., "step": ...}]` as `(model id, step)` pairs.
fn model_ids(request: &Request, field: &str) -> Result<Vec<(String, i64)>, ApiError> {
    let mut out = Vec::new();
    for item in request.list(field)? {
        let model = item
            .get("model_id")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::invalid(format!("an entry of `{field}` needs a `model_id`")))?;
        let step = match item.get("step") {
            None | Some(Value::Null) => 0,
            Some(v) => wire::int64(v).ok_or_else(|| {
                ApiError::invalid(format!("model `{model}`: `step` {v} is not a whole number"))
            })?,
        };
        out.push((model.to_owned(), step));
    }
    Ok(out)
}

/// `runs/outputs`: the logged models a run produced, each at a step.
fn log_outputs(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let models = model_ids(request, "models")?;
    state.meta.log_run_models(&run_id, cairn_meta::ModelDirection::Output, &models)?;
    Ok(json!({}))
}

/// The run tag MLflow keeps the history of `log_model` calls in.
const LOGGED_MODELS_TAG: &str = "mlflow.log-model.history";

/// `runs/log-model`: appends the model's description (its MLmodel as JSON) to the run's
/// `mlflow.log-model.history` tag, as `mlflow server` does.
fn log_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let text = request.required("model_json")?;
    let model: Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::invalid(format!("`model_json` is not valid JSON: {e}")))?;
    for field in ["artifact_path", "flavors", "utc_time_created", "run_id"] {
        if model.get(field).is_none() {
            return Err(ApiError::invalid(format!("Model json is missing mandatory fields: ['{field}']")));
        }
    }
    let run = find_run(state, &run_id)?;
    let mut history: Vec<Value> = run
        .tags
        .iter()
        .find(|(k, _)| k == LOGGED_MODELS_TAG)
        .and_then(|(_, v)| serde_json::from_str(v).ok())
        .unwrap_or_default();
    history.push(model);
    let value = Value::Array(history).to_string();
    check_value("tag", LOGGED_MODELS_TAG, &value, MAX_TAG_VALUE)?;
    state.meta.log_batch(&run_id, &[], &[], &[(LOGGED_MODELS_TAG.to_owned(), value)])?;
    Ok(json!({}))
}

fn metric_history(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run_id = request.run_id()?;
    let key = request.required("metric_key")?;
    find_run(state, &run_id)?;
    let (offset, max) = page(request, 25_000)?;
    let history = state.meta.metric_history(&run_id, &key)?;
    let (page, next) = paginate(history, offset, max);
    let mut out = json!({"metrics": page.iter().map(metric_json).collect::<Vec<_>>()});
    if let Some(next) = next {
        out["next_page_token"] = json!(next);
    }
    Ok(out)
}

fn list_artifacts(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let run = find_run(state, &request.run_id()?)?;
    let path = request.string("path")?.unwrap_or_default();
    crate::artifacts::listing(state, &run.info.artifact_uri, &path)
}
