//! The tracking API's handlers, called in-process with `oneshot`: status codes and MLflow's
//! error bodies for client mistakes, and what the store holds afterwards.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    _dir: tempfile::TempDir,
    state: cairn_server::State,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let meta = cairn_meta::open(dir.path().join("meta.sqlite").to_str().unwrap()).unwrap();
    let objects = cairn_store::Store::open(&dir.path().join("cache")).unwrap();
    Fixture {
        _dir: dir,
        state: cairn_server::State { meta: Arc::new(meta), objects, uploads: Default::default() },
    }
}

impl Fixture {
    async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Value, Vec<u8>) {
        let request = Request::builder().method(method).uri(uri).body(body.into()).unwrap();
        let response = cairn_server::router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json, bytes)
    }

    /// A GET's status and headers.
    async fn head_of(&self, uri: &str) -> (StatusCode, axum::http::HeaderMap) {
        let request = Request::builder().method(Method::GET).uri(uri).body(Body::empty()).unwrap();
        let response = cairn_server::router(self.state.clone()).oneshot(request).await.unwrap();
        (response.status(), response.headers().clone())
    }

    async fn post(&self, endpoint: &str, body: Value) -> (StatusCode, Value) {
        let (status, json, _) =
            self.call(Method::POST, &format!("/api/2.0/mlflow/{endpoint}"), body.to_string()).await;
        (status, json)
    }

    async fn get(&self, endpoint: &str) -> (StatusCode, Value) {
        let (status, json, _) =
            self.call(Method::GET, &format!("/api/2.0/mlflow/{endpoint}"), Body::empty()).await;
        (status, json)
    }

    async fn new_run(&self) -> String {
        let (status, body) = self.post("runs/create", json!({"experiment_id": "0", "start_time": 1})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["run"]["info"]["run_id"].as_str().unwrap().to_owned()
    }
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str, says: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(says), "`{message}` should say `{says}`");
}

#[tokio::test]
async fn client_mistakes_get_4xx_with_mlflow_error_bodies() {
    let f = fixture();
    let (s, b) = f.get("runs/get?run_id=0123456789abcdef0123456789abcdef").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "0123456789abcdef");

    let (s, json, _) = f.call(Method::POST, "/api/2.0/mlflow/runs/create", "{not json").await;
    assert_error(s, &json, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "not valid JSON");

    let (s, json, _) = f.call(Method::POST, "/api/2.0/mlflow/runs/create", "[1, 2]").await;
    assert_error(s, &json, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "JSON object");

    let (s, b) = f.post("runs/log-metric", json!({"key": "x", "value": 1})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "run_uuid");

    let run = f.new_run().await;
    let (s, b) = f.post("runs/log-metric", json!({"run_id": run, "key": "x", "value": "high"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "not a number");

    let (s, b) = f.post("runs/log-parameter", json!({"run_id": run, "key": "../etc", "value": "1"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "invalid param name");

    let (s, b) =
        f.post("runs/log-parameter", json!({"run_id": run, "key": "p", "value": "x".repeat(6001)})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "limit is 6000");

    let metrics: Vec<Value> =
        (0..1001).map(|i| json!({"key": "m", "value": i, "timestamp": 1, "step": i})).collect();
    let (s, b) = f.post("runs/log-batch", json!({"run_id": run, "metrics": metrics})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "at most 1000 metrics");

    let params: Vec<Value> = (0..101).map(|i| json!({"key": format!("p{i}"), "value": "v"})).collect();
    let (s, b) = f.post("runs/log-batch", json!({"run_id": run, "params": params})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "at most 100 params and tags");

    // Within the count limits, but over 1 MB: 100 tags of 8,000 characters and 1,000 metrics.
    let tags: Vec<Value> =
        (0..100).map(|i| json!({"key": format!("t{i}"), "value": "v".repeat(8000)})).collect();
    let metrics: Vec<Value> = (0..1000)
        .map(|i| json!({"key": format!("{i}{}", "k".repeat(240)), "value": 1, "timestamp": 1, "step": 0}))
        .collect();
    let (s, b) = f.post("runs/log-batch", json!({"run_id": run, "tags": tags, "metrics": metrics})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "limit is 1000000");

    let (s, b) = f.post("runs/search", json!({"filter": "metrics.acc >> 1"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "invalid filter");

    let (s, b) = f.post("experiments/create", json!({"name": "Default"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", "Default");

    let (s, b) = f.get("experiments/get-by-name?experiment_name=nope").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "nope");

    let (s, b) = f.post("no/such/endpoint", json!({})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND", "no endpoint");

    let (s, json, _) =
        f.call(Method::PUT, "/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/../../escape", "x").await;
    assert!(s.is_client_error(), "{s} {json}");

    // A rejected batch changed nothing.
    let (_, got) = f.get(&format!("runs/get?run_id={run}")).await;
    assert_eq!(got["run"]["data"]["params"], json!([]), "{got}");
    assert_eq!(got["run"]["data"]["metrics"], json!([]), "{got}");
}

#[tokio::test]
async fn params_are_immutable_and_deleted_runs_refuse_writes() {
    let f = fixture();
    let run = f.new_run().await;
    let (s, _) = f.post("runs/log-parameter", json!({"run_id": run, "key": "lr", "value": "0.1"})).await;
    assert_eq!(s, StatusCode::OK);
    // The same value again is fine (clients retry); another value is not.
    let (s, _) = f.post("runs/log-parameter", json!({"run_id": run, "key": "lr", "value": "0.1"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = f.post("runs/log-parameter", json!({"run_id": run, "key": "lr", "value": "0.2"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "immutable");

    let (s, _) = f.post("runs/delete", json!({"run_id": run})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = f.post("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "deleted");
    let (_, found) = f.post("runs/search", json!({"experiment_ids": ["0"]})).await;
    assert_eq!(found["runs"], json!([]), "deleted runs are not listed by default");
    let (_, found) = f.post("runs/search", json!({"experiment_ids": ["0"], "run_view_type": "ALL"})).await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
    let (s, _) = f.post("runs/restore", json!({"run_id": run})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = f.post("runs/log-metric", json!({"run_id": run, "key": "m", "value": 1})).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_keep_history_and_non_finite_values() {
    let f = fixture();
    let run = f.new_run().await;
    let metrics = json!([
        {"key": "loss", "value": 0.5, "timestamp": 10, "step": 1},
        {"key": "loss", "value": 0.9, "timestamp": 5, "step": 0},
        {"key": "loss", "value": "NaN", "timestamp": 20, "step": 2},
        {"key": "gain", "value": "-Infinity", "timestamp": 1, "step": 0},
    ]);
    let (s, b) = f.post("runs/log-batch", json!({"run_id": run, "metrics": metrics})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, history) = f.get(&format!("metrics/get-history?run_id={run}&metric_key=loss")).await;
    let steps: Vec<(i64, Value)> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].clone()))
        .collect();
    assert_eq!(steps, vec![(0, json!(0.9)), (1, json!(0.5)), (2, json!("NaN"))]);
    let (_, got) = f.get(&format!("runs/get?run_id={run}")).await;
    let latest: Vec<(String, Value)> = got["run"]["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap().to_owned(), m["value"].clone()))
        .collect();
    assert_eq!(latest, vec![("gain".into(), json!("-Infinity")), ("loss".into(), json!("NaN"))]);

    let (_, page) = f.get(&format!("metrics/get-history?run_id={run}&metric_key=loss&max_results=2")).await;
    assert_eq!(page["metrics"].as_array().unwrap().len(), 2);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, rest) = f
        .get(&format!("metrics/get-history?run_id={run}&metric_key=loss&max_results=2&page_token={token}"))
        .await;
    assert_eq!(rest["metrics"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_page_token").is_none());
}

#[tokio::test]
async fn artifacts_are_stored_by_content_and_listed_by_directory() {
    let f = fixture();
    let base = "/api/2.0/mlflow-artifacts/artifacts/0/r1/artifacts";
    for (path, body) in [("model/weights.bin", "abc"), ("model/config.json", "{}"), ("notes.txt", "abc")] {
        let (s, json, _) = f.call(Method::PUT, &format!("{base}/{path}"), body).await;
        assert_eq!(s, StatusCode::OK, "{json}");
    }
    let (s, _, bytes) = f.call(Method::GET, &format!("{base}/model/weights.bin"), Body::empty()).await;
    assert_eq!((s, bytes.as_slice()), (StatusCode::OK, b"abc".as_slice()));
    let (_, listing, _) =
        f.call(Method::GET, "/api/2.0/mlflow-artifacts/artifacts?path=0/r1/artifacts", Body::empty()).await;
    assert_eq!(
        listing["files"],
        json!([{"path": "model", "is_dir": true}, {"path": "notes.txt", "is_dir": false, "file_size": 3}])
    );
    // Identical bytes are one object.
    assert_eq!(f.state.objects.list().unwrap().len(), 2);
    let (s, body, _) = f.call(Method::GET, &format!("{base}/missing.txt"), Body::empty()).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "missing.txt");
    let (s, _, _) = f.call(Method::DELETE, &format!("{base}/model"), Body::empty()).await;
    assert_eq!(s, StatusCode::OK);
    let (_, listing, _) =
        f.call(Method::GET, "/api/2.0/mlflow-artifacts/artifacts?path=0/r1/artifacts", Body::empty()).await;
    assert_eq!(listing["files"], json!([{"path": "notes.txt", "is_dir": false, "file_size": 3}]));
}

#[tokio::test]
async fn experiments_create_rename_search_and_delete() {
    let f = fixture();
    let (_, created) = f
        .post("experiments/create", json!({"name": "vision", "tags": [{"key": "team", "value": "cv"}]}))
        .await;
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    let (_, got) = f.get(&format!("experiments/get?experiment_id={id}")).await;
    assert_eq!(got["experiment"]["name"], "vision");
    assert_eq!(got["experiment"]["artifact_location"], format!("mlflow-artifacts:/{id}"));
    assert_eq!(got["experiment"]["tags"], json!([{"key": "team", "value": "cv"}]));
    let (s, _) = f.post("experiments/update", json!({"experiment_id": id, "new_name": "vision-2"})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, found) = f.post("experiments/search", json!({"filter": "name LIKE 'vision%'"})).await;
    assert_eq!(found["experiments"].as_array().unwrap().len(), 1);
    assert_eq!(found["experiments"][0]["name"], "vision-2");
    let (s, _) = f.post("experiments/delete", json!({"experiment_id": id})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, active) = f.post("experiments/search", json!({})).await;
    let names: Vec<&str> =
        active["experiments"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Default"]);
    let (s, b) = f.post("runs/create", json!({"experiment_id": id})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "deleted");
    let (s, b) = f.post("experiments/delete", json!({"experiment_id": "0"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "Default");
}

#[tokio::test]
async fn uploads_go_to_runs_that_exist_within_the_artifact_limit_and_the_run_quota() {
    let mut f = fixture();
    f.state.uploads = cairn_server::UploadLimits { max_artifact_bytes: 1000, run_quota_bytes: 1500 };
    let base = "/api/2.0/mlflow-artifacts/artifacts";
    // A run that does not exist gets nothing.
    let ghost = "0123456789abcdef0123456789abcdef";
    let (s, b, _) = f.call(Method::PUT, &format!("{base}/0/{ghost}/artifacts/big.bin"), vec![1u8; 10]).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", ghost);
    assert!(f.state.objects.list().unwrap().is_empty());
    let run = f.new_run().await;
    // Nor a run filed under another experiment.
    let (s, b, _) = f.call(Method::PUT, &format!("{base}/7/{run}/artifacts/x"), vec![1u8; 10]).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "experiment 0");
    // One artifact over the limit: refused, with or without a Content-Length, and not stored.
    let (s, b, _) = f.call(Method::PUT, &format!("{base}/0/{run}/artifacts/too-big"), vec![1u8; 1001]).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_LIMIT_EXCEEDED", "--max-artifact-size");
    let streamed = Body::from_stream(futures::stream::iter(
        (0..11).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![2u8; 100]))),
    ));
    let (s, b, _) = f.call(Method::PUT, &format!("{base}/0/{run}/artifacts/streamed"), streamed).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_LIMIT_EXCEEDED", "1100 bytes or more");
    assert!(f.state.meta.artifact(&format!("0/{run}/artifacts/streamed")).unwrap().is_none());
    // Within the limit it is stored; the run's quota then bounds the next one.
    let (s, _, _) = f.call(Method::PUT, &format!("{base}/0/{run}/artifacts/a.bin"), vec![3u8; 900]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) = f.call(Method::PUT, &format!("{base}/0/{run}/artifacts/b.bin"), vec![4u8; 700]).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_LIMIT_EXCEEDED", "quota");
    // Replacing an artifact counts its new size, not both.
    let (s, _, _) = f.call(Method::PUT, &format!("{base}/0/{run}/artifacts/a.bin"), vec![5u8; 1000]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn artifact_downloads_say_what_they_are_and_are_never_sniffed() {
    let f = fixture();
    let run = f.new_run().await;
    let base = format!("/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts");
    for (path, expected) in [
        ("metrics.json", "application/json"),
        ("plot.png", "image/png"),
        ("notes.txt", "text/plain; charset=utf-8"),
        // Markup an uploader controls is never rendered.
        ("report.html", "text/plain; charset=utf-8"),
        ("chart.SVG", "text/plain; charset=utf-8"),
        ("model/MLmodel", "text/plain; charset=utf-8"),
        ("model/model.pkl", "application/octet-stream"),
    ] {
        let (s, json, _) = f.call(Method::PUT, &format!("{base}/{path}"), "<script>alert(1)</script>").await;
        assert_eq!(s, StatusCode::OK, "{json}");
        let (s, headers) = f.head_of(&format!("{base}/{path}")).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(headers["content-type"], expected, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
}

#[tokio::test]
async fn health_answers_ok_as_mlflow_server_does() {
    let f = fixture();
    let (s, _, body) = f.call(Method::GET, "/health", Body::empty()).await;
    assert_eq!((s, body.as_slice()), (StatusCode::OK, b"OK".as_slice()));
}

#[tokio::test]
async fn experiments_are_ordered_by_their_own_attributes_as_mlflow_documents() {
    let f = fixture();
    for name in ["beta", "alpha", "gamma"] {
        let (s, body) = f.post("experiments/create", json!({"name": name})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let names = |body: &Value| -> Vec<String> {
        body["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, body) = f.post("experiments/search", json!({"order_by": ["name DESC"]})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(names(&body), ["gamma", "beta", "alpha", "Default"]);
    let (_, body) = f.post("experiments/search", json!({"order_by": ["attributes.name"]})).await;
    assert_eq!(names(&body), ["Default", "alpha", "beta", "gamma"]);
    // The Default experiment has real times (those of the store's creation).
    let (_, default) = f.get("experiments/get?experiment_id=0").await;
    let created = default["experiment"]["creation_time"].as_i64().unwrap();
    assert!(created > 1_700_000_000_000, "{default}");
    assert_eq!(default["experiment"]["last_update_time"].as_i64(), Some(created));
    // The Default experiment is the oldest; the others follow their creation.
    let (_, body) = f.post("experiments/search", json!({"order_by": ["creation_time ASC"]})).await;
    assert_eq!(names(&body)[0], "Default");
    let (_, body) =
        f.post("experiments/search", json!({"order_by": ["attributes.creation_time DESC"]})).await;
    assert_eq!(names(&body)[3], "Default");
    let (_, body) = f.post("experiments/search", json!({"order_by": ["last_update_time DESC"]})).await;
    assert_eq!(names(&body)[3], "Default");
    let (s, body) = f.post("experiments/search", json!({"order_by": ["colour"]})).await;
    assert_error(s, &body, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "invalid order_by `colour`");
}

#[tokio::test]
async fn experiment_tags_are_set_and_deleted() {
    let f = fixture();
    let (_, created) = f.post("experiments/create", json!({"name": "tagged"})).await;
    let id = created["experiment_id"].as_str().unwrap().to_owned();
    let (s, body) = f
        .post("experiments/set-experiment-tag", json!({"experiment_id": id, "key": "team", "value": "ml"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, got) = f.get(&format!("experiments/get?experiment_id={id}")).await;
    assert_eq!(got["experiment"]["tags"], json!([{"key": "team", "value": "ml"}]));
    let (s, body) =
        f.post("experiments/delete-experiment-tag", json!({"experiment_id": id, "key": "team"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, got) = f.get(&format!("experiments/get?experiment_id={id}")).await;
    assert!(got["experiment"]["tags"].as_array().is_none_or(Vec::is_empty), "{got}");
    let (s, body) =
        f.post("experiments/delete-experiment-tag", json!({"experiment_id": "999", "key": "team"})).await;
    assert_error(s, &body, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "999");
}

#[tokio::test]
async fn runs_are_searched_by_their_datasets() {
    let f = fixture();
    let input = |name: &str, digest: &str, context: &str| {
        json!({"dataset": {"name": name, "digest": digest, "source_type": "local", "source": "{}"},
            "tags": [{"key": "mlflow.data.context", "value": context}]})
    };
    let train = f.new_run().await;
    let (s, body) = f
        .post("runs/log-inputs", json!({"run_id": train, "datasets": [input("churn", "abc123", "training")]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let eval = f.new_run().await;
    f.post(
        "runs/log-inputs",
        json!({"run_id": eval, "datasets": [input("churn", "abc123", "training"), input("holdout", "def456", "evaluation")]}),
    )
    .await;
    let plain = f.new_run().await;
    let found = |filter: &'static str| {
        let f = &f;
        async move {
            let (s, body) = f.post("runs/search", json!({"experiment_ids": ["0"], "filter": filter})).await;
            assert_eq!(s, StatusCode::OK, "{filter}: {body}");
            let mut ids: Vec<String> = body["runs"]
                .as_array()
                .map(|runs| runs.iter().map(|r| r["info"]["run_id"].as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            ids.sort();
            ids
        }
    };
    let sorted = |mut ids: Vec<&String>| {
        ids.sort();
        ids.into_iter().cloned().collect::<Vec<_>>()
    };
    assert_eq!(found("datasets.name = 'churn'").await, sorted(vec![&train, &eval]));
    assert_eq!(found("datasets.context = 'evaluation'").await, vec![eval.clone()]);
    assert_eq!(found("datasets.digest IN ('def456', 'zzz')").await, vec![eval.clone()]);
    assert_eq!(
        found("datasets.name LIKE 'hold%' AND datasets.context = 'training'").await,
        vec![eval.clone()]
    );
    assert_eq!(found("datasets.name IS NULL").await, vec![plain.clone()]);
    let (s, body) =
        f.post("runs/search", json!({"experiment_ids": ["0"], "filter": "datasets.size = '1'"})).await;
    assert_error(
        s,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER_VALUE",
        "unknown dataset field `size`",
    );
}

#[tokio::test]
async fn wrongly_typed_fields_are_invalid_parameter_values_as_in_mlflow() {
    let f = fixture();
    let run = f.new_run().await;
    for (endpoint, body, says) in [
        (
            "runs/log-parameter",
            json!({"run_id": run, "key": 5, "value": "x"}),
            "`key` must be a string, not 5",
        ),
        ("experiments/create", json!({"name": 12}), "`name` must be a string, not 12"),
        ("runs/search", json!({"experiment_ids": "0"}), "`experiment_ids` must be a list, not \"0\""),
        ("runs/log-batch", json!({"run_id": run, "params": {"a": "1"}}), "`params` must be a list"),
        (
            "runs/log-metric",
            json!({"run_id": run, "key": "a", "value": "high", "timestamp": 1}),
            "not a number",
        ),
    ] {
        let (s, b) = f.post(endpoint, body).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", says);
    }
    // Nothing was written by the refused calls.
    let (_, got) = f.get(&format!("runs/get?run_id={run}")).await;
    assert_eq!(got["run"]["data"]["params"], json!([]), "{got}");
    // A query string has only strings, and one value of a repeated field is a list of one.
    let (s, body) = f.get("experiments/search?max_results=5&order_by=name").await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn logged_model_files_go_to_models_that_exist_within_their_quota() {
    let mut f = fixture();
    f.state.uploads = cairn_server::UploadLimits { max_artifact_bytes: 1000, run_quota_bytes: 1500 };
    let base = "/api/2.0/mlflow-artifacts/artifacts";
    let ghost = format!("m-{}", "0".repeat(32));
    let (s, b, _) =
        f.call(Method::PUT, &format!("{base}/0/models/{ghost}/artifacts/MLmodel"), vec![1u8; 10]).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", &ghost);
    assert!(f.state.objects.list().unwrap().is_empty());

    let (s, created) = f.post("logged-models", json!({"experiment_id": "0", "name": "model"})).await;
    assert_eq!(s, StatusCode::OK, "{created}");
    let id = created["model"]["info"]["model_id"].as_str().unwrap().to_owned();
    assert_eq!(created["model"]["info"]["status"], "LOGGED_MODEL_PENDING");
    assert_eq!(
        created["model"]["info"]["artifact_uri"],
        format!("mlflow-artifacts:/0/models/{id}/artifacts")
    );
    let (s, b, _) =
        f.call(Method::PUT, &format!("{base}/9/models/{id}/artifacts/MLmodel"), vec![1u8; 10]).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "experiment 0");
    let (s, _, _) =
        f.call(Method::PUT, &format!("{base}/0/models/{id}/artifacts/model.pkl"), vec![3u8; 900]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) =
        f.call(Method::PUT, &format!("{base}/0/models/{id}/artifacts/more.pkl"), vec![4u8; 700]).await;
    assert_error(
        s,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "RESOURCE_LIMIT_EXCEEDED",
        &format!("logged model {id}"),
    );

    // Finalizing records the digest of its files; a bad status is refused.
    let (s, b, _) = f
        .call(
            Method::PATCH,
            &format!("/api/2.0/mlflow/logged-models/{id}"),
            json!({"status": "DONE"}).to_string(),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "LOGGED_MODEL_READY");
    let (s, ready, _) = f
        .call(
            Method::PATCH,
            &format!("/api/2.0/mlflow/logged-models/{id}"),
            json!({"model_id": id, "status": "LOGGED_MODEL_READY"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["model"]["info"]["status"], "LOGGED_MODEL_READY");
    let stored = f.state.meta.logged_model(&id).unwrap().unwrap();
    assert!(stored.digest.is_some(), "a ready model records the digest of its artifacts: {stored:?}");

    // Names follow MLflow's rules; a metric for a model that does not exist changes nothing.
    let (s, b) = f.post("logged-models", json!({"experiment_id": "0", "name": "a/b"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", "Invalid model name");
    let run = f.new_run().await;
    let (s, b) = f
        .post(
            "runs/log-batch",
            json!({"run_id": run, "params": [{"key": "p", "value": "1"}],
                   "metrics": [{"key": "m", "value": 1, "timestamp": 1, "step": 0, "model_id": ghost}]}),
        )
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", &ghost);
    assert!(f.state.meta.run(&run).unwrap().unwrap().params.is_empty());
    let (s, b, _) = f
        .call(Method::DELETE, &format!("/api/2.0/mlflow/logged-models/{id}/tags/absent"), Body::empty())
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", "absent");
}
