//! The HTTP server: every protocol over one prediction path.
//!
//! | | |
//! |---|---|
//! | native | `POST /models/{name}[/versions/{v}]/predict` with `{"inputs": {feature: value}}` or `{"inputs": [records]}`; `GET /models`, `GET /models/{name}` |
//! | KServe v2 (Open Inference Protocol) | `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `GET /v2/models/{name}[/versions/{v}]`, `.../ready`, `POST .../infer` (JSON, or the binary tensor data extension both ways) |
//! | Triton's extensions | `GET|POST /v2/repository/index`, `GET /v2/models/{name}[/versions/{v}]/config`, `GET /v2/models[/{name}[/versions/{v}]]/stats` |
//! | KServe v1 | `GET /v1/models`, `GET /v1/models/{name}`, `POST /v1/models/{name}:predict` (`instances` or `inputs`; answers `predictions`) |
//! | MLflow scoring | `POST /invocations[?model=NAME]` (`dataframe_split`, `dataframe_records`, `instances`, `inputs`, or `text/csv`), `GET /ping`, `/health`, `/version` |
//! | operations | `GET /metrics` (Prometheus) |
//!
//! Bodies may be gzip- or deflate-compressed (see [`crate::encoding`]) and are read as JSON
//! whatever the Content-Type says (tritonclient sends none), except MLflow's `text/csv`.
//! Every answer carries `x-cairn-trace-id` and `x-cairn-model-version`; bad input is a 4xx in
//! the protocol's own error shape naming the field and the type it needs, and so is an
//! unknown endpoint. The same models also answer over gRPC ([`crate::grpc`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::metrics::{Metrics, RequestLabels, VersionLabels};
use crate::predlog::{PredictionLog, Record, now_ms, trace_id};
use crate::routing::{Route, Routes, Version};
use crate::runtime::RuntimeError;
use crate::tensor::{
    BadInput, DType, Data, InputSpec, Output, Strictness, Tensor, column, flatten, from_flat,
};

pub const TRACE_HEADER: &str = "x-cairn-trace-id";

/// Requests of at most this many rows run on the I/O thread that parsed them.
const INLINE_ROWS: usize = 8;
pub const VERSION_HEADER: &str = "x-cairn-model-version";

/// Everything the handlers share.
pub struct App {
    pub routes: Arc<Routes>,
    pub metrics: Metrics,
    pub log: Option<PredictionLog>,
    /// The prediction log's directory (where `POST /feedback` records labels).
    pub log_dir: Option<std::path::PathBuf>,
    pub strict: Strictness,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// What `/version` and `GET /v2` report about the runtime.
    pub runtime_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    KServe,
    /// KServe's first protocol (`/v1/models/NAME:predict`).
    KServeV1,
    /// The Open Inference Protocol over gRPC.
    Grpc,
    Mlflow,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::KServe => "kserve",
            Self::KServeV1 => "kserve-v1",
            Self::Grpc => "grpc",
            Self::Mlflow => "mlflow",
        }
    }
}

/// A failed request, rendered in its protocol's error shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub expected: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, expected: None }
    }

    fn bad(input: BadInput) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_INPUT",
            message: input.message,
            field: input.field,
            expected: input.expected,
        }
    }

    fn render(&self, protocol: Protocol) -> Response {
        let body = match protocol {
            Protocol::Native => {
                let mut error = Map::new();
                error.insert("code".into(), self.code.into());
                error.insert("message".into(), self.message.clone().into());
                if let Some(f) = &self.field {
                    error.insert("field".into(), f.clone().into());
                }
                if let Some(e) = &self.expected {
                    error.insert("expected".into(), e.clone().into());
                }
                json!({ "error": error })
            }
            Protocol::KServe | Protocol::KServeV1 | Protocol::Grpc => json!({ "error": self.message }),
            Protocol::Mlflow => {
                let code = if self.status.is_client_error() { "BAD_REQUEST" } else { "INTERNAL_ERROR" };
                json!({ "error_code": code, "message": self.message })
            }
        };
        (self.status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        // Native.
        .route("/models", get(native_list))
        .route("/models/{name}", get(native_model))
        .route("/models/{name}/predict", post(native_predict))
        .route("/models/{name}/versions/{version}/predict", post(native_predict_version))
        // KServe v2.
        .route("/v2", get(kserve_server))
        .route("/v2/health/live", get(|| async { (StatusCode::OK, json_body(&json!({"live": true}))) }))
        .route("/v2/health/ready", get(kserve_server_ready))
        .route("/v2/models/{name}", get(kserve_metadata))
        .route("/v2/models/{name}/versions/{version}", get(kserve_metadata_version))
        .route("/v2/models/{name}/ready", get(kserve_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(kserve_ready_version))
        .route("/v2/models/{name}/infer", post(kserve_infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(kserve_infer_version))
        // Triton's extensions that clients call.
        .route("/v2/repository/index", get(triton_index).post(triton_index))
        .route("/v2/models/{name}/config", get(triton_config))
        .route("/v2/models/{name}/versions/{version}/config", get(triton_config_version))
        .route("/v2/models/stats", get(triton_stats_all))
        .route("/v2/models/{name}/stats", get(triton_stats))
        .route("/v2/models/{name}/versions/{version}/stats", get(triton_stats_version))
        // KServe v1.
        .route("/v1/models", get(v1_list))
        .route("/v1/models/{name}", get(v1_model).post(v1_predict))
        // MLflow scoring.
        .route("/invocations", post(mlflow_invocations))
        .route("/ping", get(health))
        .route("/health", get(health))
        .route("/version", get(version))
        // Operations.
        .route("/metrics", get(metrics))
        // Ground truth.
        .route("/feedback", post(feedback))
        .fallback(|uri: axum::http::Uri| async move {
            // Each protocol's clients get its own error shape.
            let path = uri.path();
            let protocol = if path.starts_with("/v2") {
                Protocol::KServe
            } else if path.starts_with("/v1") {
                Protocol::KServeV1
            } else if path.starts_with("/invocations") {
                Protocol::Mlflow
            } else {
                Protocol::Native
            };
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!(
                    "no endpoint {path}; see /models (native), /v2/models/NAME (KServe v2), /v1/models/NAME:predict (KServe v1) or /invocations (MLflow)"
                ),
            )
            .render(protocol)
        })
        .layer(axum::middleware::from_fn(crate::encoding::compress_responses))
        .with_state(app)
}

fn json_body(value: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// Reads the body within the size limit, decompressed as its `Content-Encoding` says.
async fn read_body(app: &App, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use crate::encoding::BodyError;
    crate::encoding::read_body(headers, body, app.max_body).await.map_err(|e| match e {
        BodyError::TooLarge { limit, decompressed } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "the request body is larger{} than this server's limit of {limit} bytes (cairn serve --max-body)",
                if decompressed { " once decompressed" } else { "" }
            ),
        ),
        BodyError::Unsupported(coding) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_ENCODING",
            format!("Content-Encoding `{coding}` is not supported; send gzip, deflate or an uncompressed body"),
        ),
        BodyError::Corrupt { encoding, reason } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "BAD_BODY",
            format!("the request body is not valid {encoding} data: {reason}"),
        ),
    })
}

/// Parses a JSON document (a whole body, or the header of a binary request).
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

/// Reads the body as JSON (whatever the Content-Type), within the size limit.
async fn read_json(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    parse_json(&read_body(app, headers, body).await?)
}

/// A prediction request as a protocol read it: a JSON document and, with the Open Inference
/// Protocol's binary tensor data extension, the bytes that follow it.
pub struct Request {
    pub json: Value,
    pub binary: Bytes,
}

impl Request {
    fn json(json: Value) -> Self {
        Self { json, binary: Bytes::new() }
    }
}

/// Turns one parsed body into a version's inputs.
pub(crate) type Parse = fn(&Version, &Request, Strictness) -> Result<Vec<(String, Tensor)>, BadInput>;

/// What a successful prediction hands back to the protocol that formats it.
pub(crate) struct Answer {
    pub(crate) version: Arc<Version>,
    pub(crate) outputs: Vec<(String, Output)>,
    pub(crate) trace_id: String,
}

fn not_served(table_routes: &std::collections::BTreeMap<String, Route>, name: &str) -> ApiError {
    let served: Vec<&str> = table_routes.keys().map(String::as_str).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "MODEL_NOT_FOUND",
        format!(
            "model `{name}` is not served here (serving: {})",
            if served.is_empty() { "nothing".into() } else { served.join(", ") }
        ),
    )
}

/// The prediction path every protocol shares: route, parse, run, log, copy to shadows.
pub(crate) async fn predict(
    app: &Arc<App>,
    protocol: Protocol,
    endpoint: &str,
    number: Option<i64>,
    body: Arc<Request>,
    parse: Parse,
) -> Result<Answer, (ApiError, Option<String>)> {
    let started = Instant::now();
    let time_ms = now_ms();
    let trace = trace_id(time_ms);
    let Chosen { version, role, shadows } =
        choose(app, endpoint, number).map_err(|e| (e, Some(trace.clone())))?;
    // A version that is not ready answers 503 before anything is counted or logged.
    let model = match (&version.model, version.problem()) {
        (Ok(m), None) => m.clone(),
        (_, reason) => {
            let message = format!("model {} is not ready: {}", version.label(), reason.unwrap_or_default());
            return Err((ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", message), Some(trace)));
        }
    };
    let result = execute(app, &version, &model, &body, parse).await;
    let latency = started.elapsed();
    account(app, protocol, &version, &result, latency);
    if let Some(log) = &app.log {
        let (inputs, outputs, error) = match &result {
            Ok((inputs, outputs)) => (inputs.clone(), Some(outputs.clone()), None),
            Err(e) => (Arc::new(Vec::new()), None, Some(e.message.clone())),
        };
        log.log(Record {
            trace_id: trace.clone(),
            time_ms,
            endpoint: endpoint.to_owned(),
            model: version.name.clone(),
            version: version.version,
            role,
            protocol: protocol.name(),
            status: result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200),
            latency_us: latency.as_micros() as i64,
            inputs: version.logged_inputs(&inputs),
            outputs,
            error,
        });
    }
    for shadow in shadows {
        let (app, body, trace, endpoint) = (app.clone(), body.clone(), trace.clone(), endpoint.to_owned());
        tokio::spawn(async move {
            run_shadow(&app, protocol, &endpoint, &shadow, &body, parse, trace, time_ms).await
        });
    }
    match result {
        Ok((_, outputs)) => Ok(Answer { version, outputs, trace_id: trace }),
        Err(e) => Err((e, Some(trace))),
    }
}

/// The version a request goes to, in which role, and the shadows that get a copy.
struct Chosen {
    version: Arc<Version>,
    role: &'static str,
    shadows: Vec<Arc<Version>>,
}

/// Routes a request: the version it names, or the route's pick (primary or canary).
fn choose(app: &App, endpoint: &str, number: Option<i64>) -> Result<Chosen, ApiError> {
    let table = app.routes.get();
    let route = table.routes.get(endpoint).ok_or_else(|| not_served(&table.routes, endpoint))?;
    let Some(n) = number else {
        let picked = route.pick().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                route.reason().unwrap_or_else(|| format!("`{endpoint}` has no version to serve")),
            )
        })?;
        let canary = route.canary.as_ref().is_some_and(|(c, _)| Arc::ptr_eq(c, picked));
        return Ok(Chosen {
            version: picked.clone(),
            role: if canary { "canary" } else { "primary" },
            shadows: route.shadows.clone(),
        });
    };
    let version = route.version(n).ok_or_else(|| {
        let serving: Vec<String> = route.versions().map(|v| v.version.to_string()).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "VERSION_NOT_FOUND",
            format!("version {n} of `{endpoint}` is not served here (serving: {})", serving.join(", ")),
        )
    })?;
    // A request for one version by number is not copied to the shadows.
    Ok(Chosen { version: version.clone(), role: "direct", shadows: Vec::new() })
}

type Inputs = Arc<Vec<(String, Tensor)>>;

/// A request's parsed inputs and the model's outputs, or why it failed.
type Ran = Result<(Inputs, Vec<(String, Output)>), ApiError>;

/// Parses a request for `version` and runs it: through the batcher, inline, or on the
/// blocking pool.
async fn execute(
    app: &App,
    version: &Arc<Version>,
    model: &Arc<dyn crate::runtime::Model>,
    body: &Request,
    parse: Parse,
) -> Ran {
    let coming = version.batcher.as_ref().map(|b| b.announce());
    let inputs = Arc::new(parse(version, body, app.strict).map_err(ApiError::bad)?);
    let batched = match (&version.batcher, coming) {
        // A model behind another process always goes through the queue: a request
        // that runs directly would wait for a worker with one row while others
        // could have joined it (the queue's hop costs microseconds; the worker's
        // round trip milliseconds).
        (Some(batcher), Some(coming)) if model.blocks() || !batcher.alone() => {
            Some(batcher.run(coming, inputs.as_ref().clone()).await)
        }
        // Alone: withdraw the announcement before running, so no batch waits for it.
        (_, coming) => {
            drop(coming);
            None
        }
    };
    let ran = match batched {
        Some(answer) => answer,
        // Small requests run right here: a one-row prediction takes tens of
        // microseconds, less than handing it to another thread. Larger ones go to the
        // blocking pool so they never hold up the server's I/O threads.
        None if !model.blocks() && inputs.first().is_some_and(|(_, t)| t.rows() <= INLINE_ROWS) => {
            model.run(&inputs)
        }
        None => {
            let (m, i) = (model.clone(), inputs.clone());
            tokio::task::spawn_blocking(move || m.run(&i))
                .await
                .unwrap_or_else(|e| Err(RuntimeError::Run(format!("the model's thread failed: {e}"))))
        }
    };
    match ran {
        Ok(outputs) => Ok((inputs, outputs)),
        Err(RuntimeError::Run(message)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "MODEL_REJECTED_INPUT",
            format!("model {} failed on this input: {message}", version.label()),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "MODEL_ERROR",
            format!("model {}: {e}", version.label()),
        )),
    }
}

/// Counts one request in the live window and the Prometheus metrics.
fn account(app: &App, protocol: Protocol, version: &Version, result: &Ran, latency: std::time::Duration) {
    let status = result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200);
    let rows = result.as_ref().map_or(0, |(inputs, _)| inputs.first().map_or(0, |(_, t)| t.rows() as u64));
    app.metrics.record(&version.name, version.version, result.is_ok(), rows, latency, now_ms());
    app.metrics
        .requests
        .get_or_create(&RequestLabels {
            model: version.name.clone(),
            version: version.version.to_string(),
            protocol: protocol.name().into(),
            status: status.to_string(),
        })
        .inc();
    app.metrics
        .latency
        .get_or_create(&VersionLabels { model: version.name.clone(), version: version.version.to_string() })
        .observe(latency.as_secs_f64());
}

/// Runs a copy of a request on a shadow version and logs the answer; never returned.
#[allow(clippy::too_many_arguments)]
async fn run_shadow(
    app: &Arc<App>,
    protocol: Protocol,
    endpoint: &str,
    shadow: &Arc<Version>,
    body: &Request,
    parse: Parse,
    trace: String,
    time_ms: i64,
) {
    let started = Instant::now();
    // (`problem` covers a model that failed to load, and one still starting or without workers.)
    let outcome = match (shadow.problem(), &shadow.model, parse(shadow, body, app.strict)) {
        (Some(reason), _, _) => Err((503u16, format!("not ready: {reason}"), Vec::new())),
        (None, _, Err(bad)) => Err((400, bad.message, Vec::new())),
        (None, Err(reason), _) => Err((503, format!("not ready: {reason}"), Vec::new())),
        (None, Ok(model), Ok(inputs)) => {
            let inputs = Arc::new(inputs);
            let (m, i) = (model.clone(), inputs.clone());
            match tokio::task::spawn_blocking(move || m.run(&i)).await {
                Ok(Ok(outputs)) => Ok((inputs, outputs)),
                Ok(Err(e)) => Err((400, e.to_string(), inputs.to_vec())),
                Err(e) => Err((500, e.to_string(), inputs.to_vec())),
            }
        }
    };
    let status = outcome.as_ref().map_or_else(|e| e.0, |_| 200);
    app.metrics
        .shadow_requests
        .get_or_create(&RequestLabels {
            model: shadow.name.clone(),
            version: shadow.version.to_string(),
            protocol: protocol.name().into(),
            status: status.to_string(),
        })
        .inc();
    if let Some(log) = &app.log {
        let (inputs, outputs, error) = match outcome {
            Ok((inputs, outputs)) => (inputs, Some(outputs), None),
            Err((_, message, inputs)) => (Arc::new(inputs), None, Some(message)),
        };
        log.log(Record {
            trace_id: trace,
            time_ms,
            endpoint: endpoint.to_owned(),
            model: shadow.name.clone(),
            version: shadow.version,
            role: "shadow",
            protocol: protocol.name(),
            status,
            latency_us: started.elapsed().as_micros() as i64,
            inputs: shadow.logged_inputs(&inputs),
            outputs,
            error,
        });
    }
}

fn with_trace(mut response: Response, trace: Option<&str>, version: Option<&Version>) -> Response {
    if let Some(Ok(value)) = trace.map(HeaderValue::from_str) {
        response.headers_mut().insert(TRACE_HEADER, value);
    }
    if let Some(Ok(value)) = version.map(|v| HeaderValue::from_str(&v.label())) {
        response.headers_mut().insert(VERSION_HEADER, value);
    }
    response
}

/// A protocol's body reader, request parser and answer formatter.
#[derive(Clone, Copy)]
struct Codec {
    protocol: Protocol,
    read: fn(&HeaderMap, Bytes) -> Result<Request, ApiError>,
    parse: Parse,
    format: fn(&Answer, &Request) -> Response,
}

fn read_json_request(_headers: &HeaderMap, bytes: Bytes) -> Result<Request, ApiError> {
    Ok(Request::json(parse_json(&bytes)?))
}

fn native_answer(answer: &Answer, request: &Request) -> Response {
    json_body(&native_format(answer, &request.json))
}

fn mlflow_answer(answer: &Answer, request: &Request) -> Response {
    json_body(&mlflow_format(answer, &request.json))
}

fn v1_answer(answer: &Answer, _request: &Request) -> Response {
    json_body(&json!({ "predictions": predictions(&answer.outputs, false) }))
}

const NATIVE: Codec =
    Codec { protocol: Protocol::Native, read: read_json_request, parse: native_parse, format: native_answer };
const KSERVE: Codec =
    Codec { protocol: Protocol::KServe, read: kserve_read, parse: kserve_parse, format: kserve_format };
const MLFLOW: Codec =
    Codec { protocol: Protocol::Mlflow, read: mlflow_read, parse: mlflow_parse, format: mlflow_answer };
const KSERVE_V1: Codec =
    Codec { protocol: Protocol::KServeV1, read: read_json_request, parse: v1_parse, format: v1_answer };

/// Serves one prediction request; `version` is the path's version, when it names one.
async fn serve_prediction(
    app: Arc<App>,
    codec: Codec,
    endpoint: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Codec { protocol, read, parse, format } = codec;
    let number = match version.map(parse_version).transpose() {
        Ok(n) => n,
        Err(e) => return e.render(protocol),
    };
    let request = match read_body(&app, headers, body).await.and_then(|bytes| read(headers, bytes)) {
        Ok(r) => Arc::new(r),
        Err(e) => return e.render(protocol),
    };
    // Requested outputs (KServe) and the request id are read by `format` from the request.
    match predict(&app, protocol, endpoint, number, request.clone(), parse).await {
        Ok(answer) => with_trace(format(&answer, &request), Some(&answer.trace_id), Some(&answer.version)),
        Err((e, trace)) => with_trace(e.render(protocol), trace.as_deref(), None),
    }
}

pub(crate) fn parse_version(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_VERSION", format!("`{text}` is not a version number"))
    })
}

// ---------------------------------------------------------------- native

fn describe_inputs(version: &Version) -> String {
    version.inputs.iter().map(|s| format!("{} ({})", s.name, s.expected())).collect::<Vec<_>>().join(", ")
}

/// Records (`{feature: value}` objects) → one column per input.
fn records_to_inputs(
    version: &Version,
    records: &[&Map<String, Value>],
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    if records.is_empty() {
        return Err(BadInput::new("no rows: an empty batch has nothing to predict"));
    }
    for (i, record) in records.iter().enumerate() {
        if let Some(unknown) = record.keys().find(|k| !version.inputs.iter().any(|s| &s.name == *k)) {
            return Err(BadInput {
                field: Some(unknown.clone()),
                expected: None,
                message: format!(
                    "unknown feature `{unknown}` in row {i}; model {} takes: {}",
                    version.label(),
                    describe_inputs(version)
                ),
            });
        }
    }
    let mut out = Vec::with_capacity(version.inputs.len());
    let mut column_values: Vec<&Value> = Vec::with_capacity(records.len());
    for spec in &version.inputs {
        column_values.clear();
        for (i, record) in records.iter().enumerate() {
            let value = record.get(&spec.name).ok_or_else(|| {
                BadInput::field(
                    spec,
                    format!(
                        "missing from row {i} (model {} takes: {})",
                        version.label(),
                        describe_inputs(version)
                    ),
                )
            })?;
            column_values.push(value);
        }
        out.push((spec.name.clone(), column(spec, column_values.iter().copied(), strict)?));
    }
    Ok(out)
}

fn native_parse(
    version: &Version,
    request: &Request,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let body = &request.json;
    let inputs = body.get("inputs").ok_or_else(|| {
        BadInput::new(r#"the body needs "inputs": one record ({"feature": value, ...}) or a list of records"#)
    })?;
    let records: Vec<&Map<String, Value>> = match inputs {
        Value::Object(record) => vec![record],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object().ok_or_else(|| {
                    BadInput::new(format!("\"inputs\"[{i}] is not a record ({{\"feature\": value}})"))
                })
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(BadInput::new(r#""inputs" must be a record or a list of records"#)),
    };
    records_to_inputs(version, &records, strict)
}

fn row_records(outputs: &[(String, Output)]) -> Vec<Value> {
    let rows = outputs.first().map_or(0, |(_, o)| o.rows());
    (0..rows)
        .map(|i| Value::Object(outputs.iter().map(|(name, out)| (name.clone(), out.row_json(i))).collect()))
        .collect()
}

fn native_format(answer: &Answer, request: &Value) -> Value {
    let mut records = row_records(&answer.outputs);
    let outputs = if request.get("inputs").is_some_and(Value::is_object) && records.len() == 1 {
        records.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(records)
    };
    json!({
        "model": answer.version.name,
        "version": answer.version.version,
        "trace_id": answer.trace_id,
        "outputs": outputs,
    })
}

async fn native_predict(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_prediction(app, NATIVE, &name, None, &headers, body).await
}

async fn native_predict_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_prediction(app, NATIVE, &name, Some(&version), &headers, body).await
}

fn version_json(v: &Version, role: &str, weight: Option<u32>) -> Value {
    json!({
        "version": v.version,
        "role": role,
        "weight": weight,
        "ready": v.ready(),
        "error": v.problem(),
        "digest": v.digest,
        "run_id": v.run_id,
        "inputs": v.inputs.iter().map(|s| json!({"name": s.name, "type": s.expected()})).collect::<Vec<_>>(),
        "outputs": v.outputs.iter().map(|s| json!({"name": s.name, "type": s.dtype})).collect::<Vec<_>>(),
    })
}

fn route_json(route: &Route) -> Value {
    let mut versions = Vec::new();
    if let Some(p) = &route.primary {
        let weight = route.canary.as_ref().map(|(_, w)| 100 - w).unwrap_or(100);
        versions.push(version_json(p, "primary", Some(weight)));
    }
    if let Some((c, w)) = &route.canary {
        versions.push(version_json(c, "canary", Some(*w)));
    }
    for s in &route.shadows {
        versions.push(version_json(s, "shadow", None));
    }
    json!({
        "name": route.target.model,
        "reference": route.target.to_string(),
        "ready": route.ready(),
        "reason": route.reason(),
        "versions": versions,
    })
}

async fn native_list(State(app): State<Arc<App>>) -> Response {
    let table = app.routes.get();
    json_body(&json!({ "models": table.routes.values().map(route_json).collect::<Vec<_>>() }))
}

async fn native_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let table = app.routes.get();
    match table.routes.get(&name) {
        Some(route) => json_body(&route_json(route)),
        None => not_served(&table.routes, &name).render(Protocol::Native),
    }
}

// ---------------------------------------------------------------- KServe v2

fn kserve_datatype(dtype: &str) -> &'static str {
    match DType::from_name(dtype) {
        Some(d) => d.kserve(),
        // ZipMap's class maps go out as an FP32 matrix.
        None if dtype.starts_with("seq(map(") => "FP32",
        None => "BYTES",
    }
}

fn kserve_shape(spec: &cairn_model::TensorSpec) -> Value {
    match &spec.shape {
        Some(dims) => Value::Array(dims.iter().map(|d| Value::from(d.unwrap_or(-1))).collect()),
        None if spec.dtype.starts_with("seq(") => json!([-1, -1]),
        None => json!([-1]),
    }
}

/// The platform and backend a version reports, as Triton and MLServer name theirs.
fn platform(v: &Version) -> (&'static str, &'static str) {
    if v.runtime == "mlflow" { ("mlflow", "python") } else { ("onnxruntime_onnx", "onnxruntime") }
}

pub(crate) fn kserve_version_metadata(route: &Route, v: &Version) -> Value {
    json!({
        "name": route.target.model,
        "versions": route.versions().map(|v| v.version.to_string()).collect::<Vec<_>>(),
        "platform": platform(v).0,
        "inputs": v.inputs.iter().map(|s| {
            let mut shape = vec![Value::from(-1)];
            shape.extend(s.row_shape.iter().map(|d| d.map_or(Value::from(-1), Value::from)));
            json!({"name": s.name, "datatype": s.dtype.kserve(), "shape": shape})
        }).collect::<Vec<_>>(),
        "outputs": v.outputs.iter().map(|s| json!({"name": s.name, "datatype": kserve_datatype(&s.dtype), "shape": kserve_shape(s)})).collect::<Vec<_>>(),
    })
}

async fn kserve_server(State(app): State<Arc<App>>) -> Response {
    json_body(&json!({
        "name": "cairn",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository", "model_configuration", "statistics"],
        "runtime": app.runtime_version,
    }))
}

pub(crate) fn all_ready(app: &App) -> (bool, Vec<String>) {
    let table = app.routes.get();
    let reasons: Vec<String> = table
        .routes
        .values()
        .filter(|r| !r.ready())
        .map(|r| format!("{}: {}", r.target, r.reason().unwrap_or_default()))
        .collect();
    (reasons.is_empty() && !table.routes.is_empty(), reasons)
}

async fn kserve_server_ready(State(app): State<Arc<App>>) -> Response {
    let (ready, reasons) = all_ready(&app);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, json_body(&json!({"ready": ready, "not_ready": reasons}))).into_response()
}

pub(crate) fn kserve_lookup(
    app: &App,
    name: &str,
    number: Option<i64>,
) -> Result<(Route, Arc<Version>), ApiError> {
    let table = app.routes.get();
    let route = table.routes.get(name).ok_or_else(|| not_served(&table.routes, name))?;
    let version = match number {
        Some(n) => route.version(n).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "VERSION_NOT_FOUND",
                format!("version {n} of `{name}` is not served here"),
            )
        })?,
        None => route.primary.clone().ok_or_else(|| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_READY", route.reason().unwrap_or_default())
        })?,
    };
    Ok((route.clone(), version))
}

fn kserve_metadata_response(app: &App, name: &str, number: Option<i64>) -> Response {
    match kserve_lookup(app, name, number) {
        Ok((route, version)) => json_body(&kserve_version_metadata(&route, &version)),
        Err(e) => e.render(Protocol::KServe),
    }
}

async fn kserve_metadata(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    kserve_metadata_response(&app, &name, None)
}

async fn kserve_metadata_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match parse_version(&version) {
        Ok(n) => kserve_metadata_response(&app, &name, Some(n)),
        Err(e) => e.render(Protocol::KServe),
    }
}

fn kserve_ready_response(app: &App, name: &str, number: Option<i64>) -> Response {
    match kserve_lookup(app, name, number) {
        Ok((route, version)) => {
            let ready = if number.is_some() { version.ready() } else { route.ready() };
            let reason = if number.is_some() { version.problem() } else { route.reason() };
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, json_body(&json!({"name": name, "ready": ready, "reason": reason}))).into_response()
        }
        Err(e) => e.render(Protocol::KServe),
    }
}

async fn kserve_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    kserve_ready_response(&app, &name, None)
}

async fn kserve_ready_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match parse_version(&version) {
        Ok(n) => kserve_ready_response(&app, &name, Some(n)),
        Err(e) => e.render(Protocol::KServe),
    }
}

/// The header that says how long a binary request's (or answer's) JSON part is.
const INFERENCE_HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a request that uses the binary tensor data extension into its JSON header and the
/// binary data after it; any other request is JSON through and through.
fn kserve_read(headers: &HeaderMap, bytes: Bytes) -> Result<Request, ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER_LENGTH) else { return read_json_request(headers, bytes) };
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "BAD_BINARY_REQUEST", message);
    let text = value.to_str().unwrap_or("").trim();
    let length: usize = text
        .parse()
        .map_err(|_| bad(format!("Inference-Header-Content-Length `{text}` is not a byte count")))?;
    if length > bytes.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length says the JSON header is {length} bytes, but the body has only {}",
            bytes.len()
        )));
    }
    Ok(Request { json: parse_json(&bytes[..length])?, binary: bytes.slice(length..) })
}

/// `parameters.NAME` of a request, an input or an output.
fn parameter<'a>(item: &'a Value, name: &str) -> Option<&'a Value> {
    item.get("parameters").and_then(|p| p.get(name))
}

pub(crate) fn kserve_parse(
    version: &Version,
    request: &Request,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let body = &request.json;
    let inputs = body.get("inputs").and_then(Value::as_array).ok_or_else(|| {
        BadInput::new(r#"the body needs "inputs": a list of {"name", "shape", "datatype", "data"}"#)
    })?;
    let mut out: Vec<(String, Tensor)> = Vec::with_capacity(inputs.len());
    // Binary data follows the JSON header in the order of the inputs that declare it.
    let mut offset = 0usize;
    for (i, input) in inputs.iter().enumerate() {
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| BadInput::new(format!("inputs[{i}] has no \"name\"")))?;
        let spec: &InputSpec = version.inputs.iter().find(|s| s.name == name).ok_or_else(|| BadInput {
            field: Some(name.to_owned()),
            expected: None,
            message: format!(
                "unknown input `{name}`; model {} takes: {}",
                version.label(),
                describe_inputs(version)
            ),
        })?;
        if out.iter().any(|(n, _)| n == name) {
            return Err(BadInput::field(spec, "given twice"));
        }
        let datatype = input.get("datatype").and_then(Value::as_str).unwrap_or("");
        if DType::from_kserve(datatype) != Some(spec.dtype) {
            return Err(BadInput::field(
                spec,
                format!("datatype `{datatype}`; the model takes {}", spec.dtype.kserve()),
            ));
        }
        let shape: Vec<usize> = input
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| BadInput::field(spec, "\"shape\" must be a list of non-negative integers"))?;
        let tensor = match (parameter(input, "binary_data_size"), input.get("data")) {
            (Some(size), None) => {
                let size = size.as_u64().and_then(|s| usize::try_from(s).ok()).ok_or_else(|| {
                    BadInput::field(spec, "parameters.binary_data_size must be a non-negative integer")
                })?;
                let end = offset.checked_add(size).filter(|&end| end <= request.binary.len()).ok_or_else(|| {
                    BadInput::field(
                        spec,
                        format!(
                            "binary_data_size {size} runs past the end of the body ({} bytes of binary data after the JSON header, {offset} taken by earlier inputs)",
                            request.binary.len()
                        ),
                    )
                })?;
                let bytes = &request.binary[offset..end];
                offset = end;
                crate::tensor::from_binary(spec, &shape, bytes, strict)?
            }
            (Some(_), Some(_)) => {
                return Err(BadInput::field(
                    spec,
                    "has both \"data\" and parameters.binary_data_size; send one",
                ));
            }
            (None, Some(data)) => {
                let mut values = Vec::new();
                flatten(data, &mut values);
                from_flat(spec, &shape, &values, strict)?
            }
            (None, None) => {
                return Err(BadInput::field(
                    spec,
                    "no \"data\" (send JSON data, or binary data with parameters.binary_data_size)",
                ));
            }
        };
        out.push((name.to_owned(), tensor));
    }
    if offset != request.binary.len() {
        return Err(BadInput::new(format!(
            "the body has {} bytes of binary data after the JSON header, but the inputs' binary_data_size add up to {offset}",
            request.binary.len()
        )));
    }
    if let Some(missing) = version.inputs.iter().find(|s| !out.iter().any(|(n, _)| n == &s.name)) {
        return Err(BadInput::field(missing, "missing"));
    }
    for requested in body.get("outputs").and_then(Value::as_array).into_iter().flatten() {
        let name = requested.get("name").and_then(Value::as_str).unwrap_or("");
        if !version.outputs.iter().any(|o| o.name == name) {
            return Err(BadInput {
                field: Some(name.to_owned()),
                expected: None,
                message: format!(
                    "unknown output `{name}`; model {} answers: {}",
                    version.label(),
                    version.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    Ok(out)
}

/// One output in the Open Inference Protocol's form; with `binary`, its elements go there
/// (the binary tensor data extension) and the JSON says how many bytes they took.
fn kserve_output(name: &str, output: &Output, binary: Option<&mut Vec<u8>>) -> Value {
    let (datatype, shape, mut parameters, data) = match output {
        Output::Tensor(t) => (t.data.dtype().kserve(), json!(t.shape), Map::new(), &t.data),
        Output::Classes { classes, rows, .. } => {
            let mut parameters = Map::new();
            parameters.insert("classes".into(), json!(classes));
            ("FP32", json!([rows, classes.len()]), parameters, &Data::F32(Vec::new()))
        }
    };
    let mut value = json!({"name": name, "datatype": datatype, "shape": shape});
    match (binary, output) {
        (Some(tail), output) => {
            let before = tail.len();
            match output {
                Output::Tensor(t) => crate::tensor::to_binary(&t.data, tail),
                Output::Classes { probabilities, .. } => {
                    probabilities.iter().for_each(|p| tail.extend_from_slice(&p.to_le_bytes()))
                }
            }
            parameters.insert("binary_data_size".into(), Value::from(tail.len() - before));
        }
        (None, Output::Tensor(_)) => {
            value["data"] = Value::Array((0..data.len()).map(|i| data.json(i)).collect())
        }
        (None, Output::Classes { probabilities, .. }) => {
            value["data"] = Value::Array(probabilities.iter().map(|p| crate::tensor::f32_json(*p)).collect())
        }
    }
    if !parameters.is_empty() {
        value["parameters"] = Value::Object(parameters);
    }
    value
}

/// Answers in JSON, or — when the request asks for binary outputs (`binary_data_output`, or
/// `binary_data` on a requested output) — a JSON header followed by the outputs' bytes.
fn kserve_format(answer: &Answer, request: &Request) -> Response {
    let body = &request.json;
    let all_binary = parameter(body, "binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let wanted: Option<Vec<(&str, bool)>> = body.get("outputs").and_then(Value::as_array).map(|outs| {
        outs.iter()
            .filter_map(|o| {
                let name = o.get("name")?.as_str()?;
                Some((name, parameter(o, "binary_data").and_then(Value::as_bool).unwrap_or(all_binary)))
            })
            .collect()
    });
    let mut tail = Vec::new();
    let mut outputs = Vec::with_capacity(answer.outputs.len());
    for (name, out) in &answer.outputs {
        let binary = match &wanted {
            None => all_binary,
            Some(wanted) => match wanted.iter().find(|(n, _)| n == name) {
                Some(&(_, binary)) => binary,
                None => continue,
            },
        };
        outputs.push(kserve_output(name, out, binary.then_some(&mut tail)));
    }
    let mut json = json!({
        "model_name": answer.version.name,
        "model_version": answer.version.version.to_string(),
        "outputs": outputs,
        "parameters": {"trace_id": answer.trace_id},
    });
    if let Some(id) = body.get("id") {
        json["id"] = id.clone();
    }
    if tail.is_empty() {
        return json_body(&json);
    }
    let mut bytes = json.to_string().into_bytes();
    let header_length = bytes.len();
    bytes.extend_from_slice(&tail);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::HeaderName::from_static(INFERENCE_HEADER_LENGTH), HeaderValue::from(header_length)),
        ],
        bytes,
    )
        .into_response()
}

async fn kserve_infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_prediction(app, KSERVE, &name, None, &headers, body).await
}

async fn kserve_infer_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_prediction(app, KSERVE, &name, Some(&version), &headers, body).await
}

// ---------------------------------------------------------------- Triton's extensions

/// `/v2/repository/index`: every served version and its state.
async fn triton_index(State(app): State<Arc<App>>) -> Response {
    let table = app.routes.get();
    let mut index = Vec::new();
    for route in table.routes.values() {
        for v in route.versions() {
            let mut entry = json!({
                "name": route.target.model,
                "version": v.version.to_string(),
                "state": if v.ready() { "READY" } else { "UNAVAILABLE" },
            });
            if let Some(reason) = v.problem() {
                entry["reason"] = Value::from(reason);
            }
            index.push(entry);
        }
    }
    json_body(&Value::Array(index))
}

fn triton_type(datatype: &str) -> String {
    format!("TYPE_{}", if datatype == "BYTES" { "STRING" } else { datatype })
}

/// A model's configuration as Triton describes one (`config.pbtxt` in JSON).
fn triton_config_json(route: &Route, v: &Version) -> Value {
    let dims = |shape: &Value| {
        // The batch dimension is Triton's `max_batch_size`, not part of `dims`.
        shape.as_array().map(|d| d.iter().skip(1).cloned().collect::<Vec<_>>()).unwrap_or_default()
    };
    let metadata = kserve_version_metadata(route, v);
    let tensors = |key: &str| -> Vec<Value> {
        metadata[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                json!({
                    "name": t["name"],
                    "data_type": triton_type(t["datatype"].as_str().unwrap_or("")),
                    "dims": dims(&t["shape"]),
                })
            })
            .collect()
    };
    json!({
        "name": route.target.model,
        "platform": platform(v).0,
        "backend": platform(v).1,
        "version_policy": {"specific": {"versions": [v.version]}},
        "max_batch_size": 0,
        "input": tensors("inputs"),
        "output": tensors("outputs"),
        "parameters": {"digest": {"string_value": v.digest.map(|d| d.to_string()).unwrap_or_default()}},
    })
}

async fn triton_config(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match kserve_lookup(&app, &name, None) {
        Ok((route, version)) => json_body(&triton_config_json(&route, &version)),
        Err(e) => e.render(Protocol::KServe),
    }
}

async fn triton_config_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match parse_version(&version).and_then(|n| kserve_lookup(&app, &name, Some(n))) {
        Ok((route, version)) => json_body(&triton_config_json(&route, &version)),
        Err(e) => e.render(Protocol::KServe),
    }
}

/// `/v2/models[/NAME[/versions/V]]/stats`: counts and durations per served version.
fn triton_stats_json(app: &App, name: Option<&str>, number: Option<i64>) -> Result<Value, ApiError> {
    let table = app.routes.get();
    let mut versions: Vec<(String, i64)> = Vec::new();
    match name {
        Some(name) => {
            let route = table.routes.get(name).ok_or_else(|| not_served(&table.routes, name))?;
            for v in route.versions().filter(|v| number.is_none_or(|n| n == v.version)) {
                versions.push((route.target.model.clone(), v.version));
            }
            if versions.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "VERSION_NOT_FOUND",
                    format!("version {} of `{name}` is not served here", number.unwrap_or_default()),
                ));
            }
        }
        None => {
            for route in table.routes.values() {
                versions.extend(route.versions().map(|v| (route.target.model.clone(), v.version)));
            }
        }
    }
    drop(table);
    let stats = app.metrics.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let duration = |count: u64, ns: u64| json!({"count": count, "ns": ns});
    let model_stats: Vec<Value> = versions
        .iter()
        .map(|(model, version)| {
            let s = stats.get(&(model.clone(), *version)).copied().unwrap_or_default();
            json!({
                "name": model,
                "version": version.to_string(),
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.success_count,
                "inference_stats": {
                    "success": duration(s.success_count, s.success_ns),
                    "fail": duration(s.fail_count, s.fail_ns),
                    // Cairn measures a request end to end; it has no queue or stage timings.
                    "queue": duration(0, 0),
                    "compute_input": duration(0, 0),
                    "compute_infer": duration(s.success_count, s.success_ns),
                    "compute_output": duration(0, 0),
                },
            })
        })
        .collect();
    Ok(json!({ "model_stats": model_stats }))
}

async fn triton_stats_all(State(app): State<Arc<App>>) -> Response {
    triton_stats_json(&app, None, None).map_or_else(|e| e.render(Protocol::KServe), |v| json_body(&v))
}

async fn triton_stats(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    triton_stats_json(&app, Some(&name), None).map_or_else(|e| e.render(Protocol::KServe), |v| json_body(&v))
}

async fn triton_stats_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    parse_version(&version)
        .and_then(|n| triton_stats_json(&app, Some(&name), Some(n)))
        .map_or_else(|e| e.render(Protocol::KServe), |v| json_body(&v))
}

// ---------------------------------------------------------------- KServe v1

async fn v1_list(State(app): State<Arc<App>>) -> Response {
    let table = app.routes.get();
    json_body(&json!({ "models": table.routes.keys().collect::<Vec<_>>() }))
}

async fn v1_model(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let table = app.routes.get();
    match table.routes.get(&name) {
        Some(route) => {
            let status = if route.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, json_body(&json!({"name": name, "ready": route.ready()}))).into_response()
        }
        None => not_served(&table.routes, &name).render(Protocol::KServeV1),
    }
}

/// `POST /v1/models/NAME:predict` (the verb rides on the last path segment).
async fn v1_predict(
    State(app): State<Arc<App>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match segment.rsplit_once(':') {
        Some((name, "predict")) => serve_prediction(app, KSERVE_V1, name, None, &headers, body).await,
        Some((_, verb)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("`:{verb}` is not supported; this server answers `:predict`"),
        )
        .render(Protocol::KServeV1),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("POST /v1/models/{segment}:predict to get predictions"),
        )
        .render(Protocol::KServeV1),
    }
}

/// `{"instances": [...]}` (or `{"inputs": [...]}`): rows, records, or columns.
fn v1_parse(
    version: &Version,
    request: &Request,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let object = request.json.as_object().ok_or_else(|| BadInput::new("the body must be a JSON object"))?;
    match (object.get("instances"), object.get("inputs")) {
        (Some(value), None) => instances(version, "instances", value, strict),
        (None, Some(value)) => instances(version, "inputs", value, strict),
        _ => Err(BadInput::new(r#"give one of "instances" or "inputs": a list of rows or records"#)),
    }
}

// ---------------------------------------------------------------- MLflow scoring

/// Rows given positionally (a list per row) for a model: each row feeds the single input, or
/// — when the model has several inputs of one value each — one value per input in order.
fn positional(
    version: &Version,
    rows: &[&Value],
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    match version.inputs.as_slice() {
        [single] => Ok(vec![(single.name.clone(), column(single, rows.iter().copied(), strict)?)]),
        specs => {
            let mut out = Vec::with_capacity(specs.len());
            for (j, spec) in specs.iter().enumerate() {
                let values: Vec<&Value> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        row.as_array().and_then(|r| r.get(j)).ok_or_else(|| {
                            BadInput::field(
                                spec,
                                format!(
                                    "row {i} has no value {j}; model {} takes: {}",
                                    version.label(),
                                    describe_inputs(version)
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                out.push((spec.name.clone(), column(spec, values.into_iter(), strict)?));
            }
            Ok(out)
        }
    }
}

/// Records whose keys are the model's inputs, or — for a single-input model — columns in order.
fn mlflow_records(
    version: &Version,
    records: &[&Map<String, Value>],
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let named = records.iter().all(|r| r.keys().all(|k| version.inputs.iter().any(|s| &s.name == k)));
    if named || version.inputs.len() != 1 {
        return records_to_inputs(version, records, strict);
    }
    let rows: Vec<Value> = records.iter().map(|r| Value::Array(r.values().cloned().collect())).collect();
    positional(version, &rows.iter().collect::<Vec<_>>(), strict)
}

fn mlflow_parse(
    version: &Version,
    request: &Request,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let body = &request.json;
    let object = body.as_object().ok_or_else(|| BadInput::new("the body must be a JSON object"))?;
    const FORMATS: &str = "dataframe_split, dataframe_records, instances or inputs";
    let keys: Vec<&String> = object.keys().filter(|k| *k != "params").collect();
    let [key] = keys.as_slice() else {
        return Err(BadInput::new(format!(
            "give exactly one of {FORMATS}; got {}",
            keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        )));
    };
    let value = &object[key.as_str()];
    match key.as_str() {
        "dataframe_split" => dataframe_split(version, value, strict),
        "dataframe_records" => {
            let items = value
                .as_array()
                .ok_or_else(|| BadInput::new("dataframe_records must be a list of records"))?;
            let records = records_of(items, "dataframe_records")?;
            mlflow_records(version, &records.iter().collect::<Vec<_>>(), strict)
        }
        "instances" | "inputs" => instances(version, key, value, strict),
        other => Err(BadInput::new(format!("unknown format `{other}`; give one of {FORMATS}"))),
    }
}

fn records_of(items: &[Value], what: &str) -> Result<Vec<Map<String, Value>>, BadInput> {
    items
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.as_object().cloned().ok_or_else(|| BadInput::new(format!("{what}[{i}] is not a record")))
        })
        .collect()
}

/// pandas' `split` orientation: `{"columns": [...], "data": [[...], ...]}`. Without
/// `columns` the rows are positional (as for a single-tensor model's features).
fn dataframe_split(
    version: &Version,
    value: &Value,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    let data = value
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| BadInput::new(r#"dataframe_split needs "data" (a list of rows)"#))?;
    let Some(columns) = value.get("columns") else {
        return positional(version, &data.iter().collect::<Vec<_>>(), strict);
    };
    let columns: Vec<&str> = columns
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .ok_or_else(|| BadInput::new(r#"dataframe_split "columns" must be a list of names"#))?;
    let mut records = Vec::with_capacity(data.len());
    for (i, row) in data.iter().enumerate() {
        let cells = row
            .as_array()
            .ok_or_else(|| BadInput::new(format!("dataframe_split data[{i}] is not a list")))?;
        if cells.len() != columns.len() {
            return Err(BadInput::new(format!(
                "dataframe_split data[{i}] has {} values for {} columns",
                cells.len(),
                columns.len()
            )));
        }
        records.push(columns.iter().map(|c| c.to_string()).zip(cells.iter().cloned()).collect::<Map<_, _>>());
    }
    mlflow_records(version, &records.iter().collect::<Vec<_>>(), strict)
}

/// TF Serving's (and KServe v1's) `instances` / `inputs`: a list of rows or records, or an
/// object of columns.
fn instances(
    version: &Version,
    key: &str,
    value: &Value,
    strict: Strictness,
) -> Result<Vec<(String, Tensor)>, BadInput> {
    match value {
        Value::Array(items) if items.first().is_some_and(Value::is_object) => {
            let records = records_of(items, key)?;
            mlflow_records(version, &records.iter().collect::<Vec<_>>(), strict)
        }
        Value::Array(items) => positional(version, &items.iter().collect::<Vec<_>>(), strict),
        // Columnar: {input: [rows]}.
        Value::Object(columns) => {
            if let Some(unknown) = columns.keys().find(|k| !version.inputs.iter().any(|s| &s.name == *k)) {
                return Err(BadInput {
                    field: Some(unknown.clone()),
                    expected: None,
                    message: format!(
                        "unknown input `{unknown}`; model {} takes: {}",
                        version.label(),
                        describe_inputs(version)
                    ),
                });
            }
            version
                .inputs
                .iter()
                .map(|spec| {
                    let rows = columns
                        .get(&spec.name)
                        .and_then(Value::as_array)
                        .ok_or_else(|| BadInput::field(spec, "missing (give a list of rows per input)"))?;
                    Ok((spec.name.clone(), column(spec, rows.iter(), strict)?))
                })
                .collect()
        }
        _ => Err(BadInput::new(format!("`{key}` must be a list of rows or an object of columns"))),
    }
}

/// The label output of a classifier: a one-dimensional output named `…label` next to class
/// probabilities, as scikit-learn models export.
fn classifier_label(outputs: &[(String, Output)]) -> Option<&Output> {
    let (_, label) = outputs.iter().find(|(name, out)| {
        name.ends_with("label") && matches!(out, Output::Tensor(t) if t.shape.len() == 1)
    })?;
    let probabilities = outputs
        .iter()
        .any(|(name, out)| matches!(out, Output::Classes { .. }) || name.contains("probabilit"));
    (outputs.len() == 2 && probabilities).then_some(label)
}

/// One prediction per row, as MLflow's and KServe v1's scikit-learn servers answer: a
/// classifier's label; with `records`, one `{output: value}` record per row for any other
/// model (MLflow's answer for a model with named outputs), else the single output's value.
fn predictions(outputs: &[(String, Output)], records: bool) -> Vec<Value> {
    let plain = |out: &Output| (0..out.rows()).map(|i| out.row_json(i)).collect();
    match (classifier_label(outputs), outputs) {
        (Some(label), _) => plain(label),
        (None, [(_, only)]) if !records => plain(only),
        _ => row_records(outputs),
    }
}

/// MLflow's scoring server answers a list for a model that returns an array (a Python
/// model's single output), and records for named outputs.
fn mlflow_format(answer: &Answer, _request: &Value) -> Value {
    let array = answer.version.runtime == "mlflow" && answer.outputs.len() == 1;
    json!({ "predictions": predictions(&answer.outputs, !array) })
}

/// `application/json`, or `text/csv` (a header row, then one row per instance; numbers are
/// numbers, empty cells missing, anything else text), as MLflow's scoring server takes.
fn mlflow_read(headers: &HeaderMap, bytes: Bytes) -> Result<Request, ApiError> {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "" => read_json_request(headers, bytes),
        "text/csv" => Ok(Request::json(json!({ "dataframe_split": csv_frame(&bytes)? }))),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("content type `{content_type}` is not supported; send application/json or text/csv"),
        )),
    }
}

fn csv_frame(bytes: &[u8]) -> Result<Value, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_CSV", message);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let columns: Vec<Value> = reader
        .headers()
        .map_err(|e| bad(format!("the CSV header row cannot be read: {e}")))?
        .iter()
        .map(|c| Value::from(c.trim()))
        .collect();
    let mut data = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("CSV row {}: {e}", i + 1)))?;
        data.push(Value::Array(
            record
                .iter()
                .map(|cell| {
                    let cell = cell.trim();
                    if cell.is_empty() {
                        Value::Null
                    } else if let Ok(n) = cell.parse::<i64>() {
                        Value::from(n)
                    } else if let Some(n) = cell.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                        Value::Number(n)
                    } else {
                        Value::from(cell)
                    }
                })
                .collect(),
        ));
    }
    Ok(json!({"columns": columns, "data": data}))
}

/// The model a request to `/invocations` is for: `?model=NAME`, the `x-cairn-model` header,
/// or the only one served.
async fn mlflow_invocations(
    State(app): State<Arc<App>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let table = app.routes.get();
    let named = query
        .get("model")
        .cloned()
        .or_else(|| headers.get("x-cairn-model").and_then(|v| v.to_str().ok()).map(str::to_owned));
    let endpoint = match (named, table.routes.len()) {
        (Some(name), _) => name,
        (None, 1) => table.routes.keys().next().cloned().unwrap_or_default(),
        (None, _) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "AMBIGUOUS_MODEL",
                format!(
                    "this server serves {} models; name one with `?model=NAME` or the `x-cairn-model` header ({})",
                    table.routes.len(),
                    table.routes.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .render(Protocol::Mlflow);
        }
    };
    drop(table);
    serve_prediction(app, MLFLOW, &endpoint, None, &headers, body).await
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let (ready, reasons) = all_ready(&app);
    if ready {
        (StatusCode::OK, "\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", reasons.join("; "))).into_response()
    }
}

async fn version(State(app): State<Arc<App>>) -> Response {
    format!("cairn {} (ONNX Runtime {})\n", env!("CARGO_PKG_VERSION"), app.runtime_version).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let table = app.routes.get();
    for route in table.routes.values() {
        for v in route.versions() {
            app.metrics
                .ready
                .get_or_create(&VersionLabels { model: v.name.clone(), version: v.version.to_string() })
                .set(i64::from(v.ready()));
        }
    }
    if let Some(log) = &app.log {
        let dropped = log.dropped();
        let counted = app.metrics.log_dropped.get();
        if dropped > counted {
            app.metrics.log_dropped.inc_by(dropped - counted);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.encode())
        .into_response()
}

// ---------------------------------------------------------------- ground truth

/// `POST /feedback` with `{"trace_id": ID, "label": VALUE}` or `{"feedback": [...]}`: true
/// labels for logged predictions, appended to `feedback.jsonl` in the log directory. Every id
/// must name a logged prediction; nothing is recorded when one does not.
async fn feedback(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let value = match read_json(&app, &headers, body).await {
        Ok(v) => v,
        Err(e) => return e.render(Protocol::Native),
    };
    let Some(dir) = app.log_dir.clone() else {
        return ApiError::new(
            StatusCode::CONFLICT,
            "NO_LOG",
            "this server does not log predictions (--no-log), so there is nothing to attach labels to",
        )
        .render(Protocol::Native);
    };
    let items: Vec<Value> = match value.get("feedback") {
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                r#""feedback" must be a list of {"trace_id", "label"}"#,
            )
            .render(Protocol::Native);
        }
        None => vec![value],
    };
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = item.get("trace_id").and_then(Value::as_str).unwrap_or_default();
        let Some(label) = item.get("label").filter(|l| !l.is_null()) else {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("feedback {i}: no \"label\""),
            )
            .render(Protocol::Native);
        };
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!("feedback {i}: `{id}` is not a trace id (32 hex digits)"),
            )
            .render(Protocol::Native);
        }
        records.push((id.to_owned(), label.clone()));
    }
    let result = tokio::task::spawn_blocking(move || record_feedback(&dir, &records)).await;
    match result {
        Ok(Ok(count)) => json_body(&json!({"recorded": count})),
        Ok(Err(e)) => e.render(Protocol::Native),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
            .render(Protocol::Native),
    }
}

fn record_feedback(dir: &std::path::Path, records: &[(String, Value)]) -> Result<usize, ApiError> {
    use std::io::Write as _;
    let unreadable = |e: crate::predlog::LogError| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "LOG_UNREADABLE", e.to_string())
    };
    /// The logged answers (not shadows') of these ids.
    fn answers(
        dir: &std::path::Path,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, crate::predlog::Entry>, crate::predlog::LogError> {
        Ok(crate::predlog::find_all(dir, ids)?
            .into_iter()
            .filter(|e| e.role != "shadow")
            .map(|e| (e.trace_id.clone(), e))
            .collect())
    }
    let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
    let mut found = answers(dir, &ids).map_err(unreadable)?;
    // A prediction from the last second may not be in the WAL yet: look once more after the
    // writer's next append.
    let recent = |found: &std::collections::HashMap<String, crate::predlog::Entry>| {
        ids.iter().any(|id| {
            !found.contains_key(*id) && crate::predlog::trace_time(id).is_some_and(|t| now_ms() - t < 2_000)
        })
    };
    if recent(&found) {
        std::thread::sleep(std::time::Duration::from_millis(1_200));
        let unknown: Vec<&str> = ids.iter().copied().filter(|id| !found.contains_key(*id)).collect();
        found.extend(answers(dir, &unknown).map_err(unreadable)?);
    }
    if let Some(id) = ids.iter().find(|id| !found.contains_key(**id)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_TRACE_ID",
            format!("no logged prediction has trace id `{id}`; nothing was recorded"),
        ));
    }
    let path = dir.join(crate::predlog::FEEDBACK);
    let mut text = String::new();
    for (id, label) in records {
        // With the answer it labels, so live quality needs no pass over the log.
        let entry = &found[id];
        let predicted = cairn_monitor::quality::predicted(&entry.outputs);
        text.push_str(
            &json!({"trace_id": id, "label": label, "time_ms": now_ms(), "model": entry.model,
                "version": entry.version, "predicted_ms": entry.time_ms, "predicted": predicted})
            .to_string(),
        );
        text.push('\n');
    }
    let io = |e: std::io::Error| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "FEEDBACK_UNWRITABLE",
            format!("{}: {e}", path.display()),
        )
    };
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(records.len())
}
