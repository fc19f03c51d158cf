//! `cairn serve` end to end: the real `tritonclient` and `mlflow` scoring clients against a
//! server on 127.0.0.1:0, answers compared with ONNX Runtime's Python API; bad input in each
//! protocol's error shape; live routing changes; batching; the prediction log and
//! `cairn trace`; graceful shutdown.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestRepo;
use common::tools::{mlflow_python, onnxruntime_library, serve_python};
use serde_json::{Value, json};

pub(crate) fn fixtures() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cairn-model/tests/fixtures")
        .canonicalize()
        .unwrap()
}

/// A repository with the four fixture models registered under their own names (version 1,
/// alias `production`).
fn project() -> TestRepo {
    let repo = TestRepo::new();
    for name in ["logistic", "forest", "regressor", "churn"] {
        std::fs::create_dir_all(repo.path("models")).unwrap();
        std::fs::copy(fixtures().join(format!("{name}.onnx")), repo.path(&format!("models/{name}.onnx")))
            .unwrap();
        repo.ok(&["model", "register", name, &format!("models/{name}.onnx")]);
        repo.ok(&["model", "alias", &format!("{name}@1"), "production"]);
    }
    repo
}

/// `cairn serve ... --port 0`, killed when dropped (unless stopped first).
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    /// The gRPC listener's `host:port`.
    grpc: String,
}

impl Server {
    pub(crate) fn start(repo: &TestRepo, args: &[&str]) -> Server {
        Server::start_with(repo, args, &[])
    }

    /// With more environment variables.
    fn start_with(repo: &TestRepo, args: &[&str], env: &[(&str, &std::path::Path)]) -> Server {
        let mut command = repo.command(&[&["serve", "--port", "0"], args].concat());
        command.env("CAIRN_ONNXRUNTIME", onnxruntime_library()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("cairn serve starts");
        let (mut line, mut grpc) = (String::new(), String::new());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        stdout.read_line(&mut grpc).unwrap();
        if !line.starts_with("http://127.0.0.1:") || !grpc.starts_with("grpc://127.0.0.1:") {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("cairn serve printed {line:?} {grpc:?}\n{err}");
        }
        Server {
            child,
            addr: line.trim().trim_start_matches("http://").to_owned(),
            grpc: grpc.trim().trim_start_matches("grpc://").to_owned(),
        }
    }

    /// SIGTERM, then waits; returns stderr.
    pub(crate) fn stop(mut self) -> String {
        // (It may already be on its way out.)
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.child.id() as i32).unwrap(),
            rustix::process::Signal::TERM,
        );
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "cairn serve exited with {status}:\n{err}");
        err
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection. No Content-Type unless given (as tritonclient).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    Reply { status, headers, body: raw[split + 4..].to_vec() }
}

pub(crate) fn post(addr: &str, path: &str, body: &Value) -> Reply {
    http(addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
}

/// Runs a Python script; returns the JSON it prints last.
fn python(interpreter: PathBuf, repo: &TestRepo, script: &str, args: &[&str]) -> Value {
    repo.write("client.py", script);
    // In the scratch repository: nothing a script writes (mlflow's ./mlruns) lands in the source tree.
    let output = Command::new(interpreter)
        .arg(repo.path("client.py"))
        .args(args)
        .current_dir(&repo.root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Python the client scripts share (prepended by [`client`]): ONNX Runtime's answers for a
/// fixture model, and ZipMap's list of `{class: probability}` as the `[rows, classes]` matrix
/// Cairn answers. `fixtures` is the scripts' global, set before either is called.
const ORT_HELPERS: &str = r#"
import numpy as np
import onnxruntime as ort

def reference(model, feeds):
    session = ort.InferenceSession(f"{fixtures}/{model}.onnx", providers=["CPUExecutionProvider"])
    return [o.name for o in session.get_outputs()], session.run(None, feeds)

def dense(value):
    if isinstance(value, list):
        return np.array([[row[k] for k in sorted(row)] for row in value], dtype=np.float64)
    return np.asarray(value)
"#;

/// A client script with [`ORT_HELPERS`] before it.
fn client(script: &str) -> String {
    format!("{ORT_HELPERS}{script}")
}

const TRITON: &str = r#"
import json, sys
import numpy as np
import onnxruntime as ort
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

url, fixtures = sys.argv[1], sys.argv[2]
client = http.InferenceServerClient(url=url)
assert client.is_server_live()
assert client.is_server_ready()

def check(model, inputs, feeds, version=""):
    names, expected = reference(model, feeds)
    outputs = [http.InferRequestedOutput(n, binary_data=False) for n in names]
    result = client.infer(model, inputs, outputs=outputs, model_version=version)
    for name, want in zip(names, expected):
        got = result.as_numpy(name)
        want = dense(want)
        if want.dtype.kind in "iu":
            assert (got.reshape(want.shape) == want).all(), (model, name, got, want)
        else:
            np.testing.assert_allclose(got.astype(np.float64).reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    return result

X = np.random.RandomState(1).normal(size=(8, 4)).astype(np.float32)
checked = []
for model in ["logistic", "forest", "regressor"]:
    assert client.is_model_ready(model)
    meta = client.get_model_metadata(model)
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}], meta
    features = http.InferInput("features", list(X.shape), "FP32")
    features.set_data_from_numpy(X, binary_data=False)
    check(model, [features], {"features": X})
    checked.append(model)

# A version by number.
features = http.InferInput("features", [1, 4], "FP32")
features.set_data_from_numpy(X[:1], binary_data=False)
result = check("regressor", [features], {"features": X[:1]}, version="1")
assert result.get_response()["model_version"] == "1"

# Named inputs of mixed types, strings as BYTES.
age = np.array([[42.0], [23.0], [67.0]], dtype=np.float32)
tenure = np.array([[3.0], [48.0], [10.0]], dtype=np.float32)
plan = np.array([["basic"], ["pro"], ["enterprise"]], dtype=object)
inputs = []
for name, value, kind in [("age", age, "FP32"), ("tenure", tenure, "FP32"), ("plan", plan, "BYTES")]:
    i = http.InferInput(name, list(value.shape), kind)
    i.set_data_from_numpy(value, binary_data=False)
    inputs.append(i)
check("churn", inputs, {"age": age, "tenure": tenure, "plan": plan.astype(str)})
checked.append("churn")

# Wrong datatype: an error naming the input.
wrong = http.InferInput("features", [1, 4], "FP64")
wrong.set_data_from_numpy(X[:1].astype(np.float64), binary_data=False)
try:
    client.infer("regressor", [wrong])
    raise SystemExit("FP64 was accepted")
except InferenceServerException as e:
    assert "features" in str(e) and "FP32" in str(e), str(e)

# A model that is not served.
assert not client.is_model_ready("nothing")
print(json.dumps({"checked": checked}))
"#;

#[test]
fn tritonclient_gets_onnxruntimes_answers() {
    let repo = project();
    let server =
        Server::start(&repo, &["logistic@production", "forest@production", "regressor", "churn@production"]);
    let fixtures = fixtures().display().to_string();
    let result = python(serve_python(), &repo, &client(TRITON), &[&server.addr, &fixtures]);
    assert_eq!(result["checked"], json!(["logistic", "forest", "regressor", "churn"]));
}

const MLFLOW: &str = r#"
import json, sys
import pandas as pd
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

host, port = sys.argv[1].split(":")
rows = json.loads(sys.argv[2])
client = ScoringServerClient(host, port)
client.wait_server_ready(timeout=10)
assert client.get_version().startswith("cairn")
frame = pd.DataFrame(rows, columns=["a", "b", "c", "d"])
answers = {}
answers["dataframe"] = client.invoke(frame).get_predictions().to_dict(orient="list")
import numpy as np
answers["tensor"] = client.invoke(np.array(rows, dtype=np.float32)).get_predictions().to_dict(orient="list")
print(json.dumps(answers))
"#;

const REFERENCE: &str = r#"
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
rows = np.array(json.loads(sys.argv[2]), dtype=np.float32)
print(json.dumps(session.run(None, {"features": rows})[0].reshape(-1).tolist()))
"#;

#[test]
fn mlflow_scoring_clients_get_onnxruntimes_answers() {
    let repo = project();
    let server = Server::start(&repo, &["regressor@production"]);
    let rows = json!([[0.1, 0.2, 0.3, 0.4], [-1.0, 0.5, 2.0, 0.0], [1.5, -0.5, -1.0, 0.25]]);
    let expected = python(
        serve_python(),
        &repo,
        REFERENCE,
        &[&fixtures().join("regressor.onnx").display().to_string(), &rows.to_string()],
    );
    let answers = python(mlflow_python(), &repo, MLFLOW, &[&server.addr, &rows.to_string()]);
    for form in ["dataframe", "tensor"] {
        let got: Vec<f64> =
            answers[form]["variable"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let want: Vec<f64> = expected.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(got.len(), want.len(), "{form}: {answers}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{form}: {got:?} vs {want:?}");
        }
    }

    // The other MLflow input formats, by hand.
    let addr = &server.addr;
    let first = |reply: Reply| reply.json()["predictions"][0]["variable"].as_f64().unwrap();
    let want = expected[0].as_f64().unwrap();
    let records =
        post(addr, "/invocations", &json!({"dataframe_records": [{"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}]}));
    assert!((first(records) - want).abs() < 1e-5);
    let instances = post(addr, "/invocations", &json!({"instances": [[0.1, 0.2, 0.3, 0.4]]}));
    assert!((first(instances) - want).abs() < 1e-5);
    let columnar = post(addr, "/invocations", &json!({"inputs": {"features": [[0.1, 0.2, 0.3, 0.4]]}}));
    assert!((first(columnar) - want).abs() < 1e-5);
    assert_eq!(http(addr, "GET", "/ping", &[], b"").status, 200);
    assert_eq!(http(addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn bad_input_is_a_4xx_naming_the_field_in_each_protocols_shape() {
    let repo = project();
    let server = Server::start(&repo, &["churn@production", "--max-body", "4096"]);
    let addr = &server.addr;
    let predict = |body: Value| post(addr, "/models/churn/predict", &body);

    let wrong_type = predict(json!({"inputs": {"age": "old", "tenure": 3, "plan": "pro"}}));
    assert_eq!(wrong_type.status, 400);
    let error = &wrong_type.json()["error"];
    assert_eq!(
        (error["field"].as_str(), error["expected"].as_str()),
        (Some("age"), Some("float32")),
        "{error}"
    );

    let missing = predict(json!({"inputs": {"age": 40, "plan": "pro"}}));
    assert_eq!((missing.status, missing.json()["error"]["field"].as_str()), (400, Some("tenure")));
    let unknown = predict(json!({"inputs": {"age": 40, "tenure": 2, "plan": "pro", "zip": "9"}}));
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["error"]["field"], "zip");
    assert!(
        unknown.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("takes: age (float32), tenure (float32), plan (string)")
    );
    let nan = predict(json!({"inputs": {"age": null, "tenure": 2, "plan": "pro"}}));
    assert_eq!(nan.status, 400);
    assert!(nan.json()["error"]["message"].as_str().unwrap().contains("--allow-nan"), "{}", nan.text());
    let empty = predict(json!({"inputs": []}));
    assert_eq!(empty.status, 400);
    assert!(empty.text().contains("empty batch"), "{}", empty.text());
    let malformed = http(addr, "POST", "/models/churn/predict", &[], b"{\"inputs\": ");
    assert_eq!((malformed.status, malformed.json()["error"]["code"].as_str()), (400, Some("MALFORMED_JSON")));
    let big = format!("{{\"inputs\": {{\"plan\": \"{}\"}}}}", "x".repeat(5000));
    let oversized = http(addr, "POST", "/models/churn/predict", &[], big.as_bytes());
    assert_eq!(oversized.status, 413);
    assert!(oversized.json()["error"]["message"].as_str().unwrap().contains("4096"));

    // KServe v2: {"error": "..."}.
    let kserve = post(
        addr,
        "/v2/models/churn/infer",
        &json!({"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": ["x"]}]}),
    );
    assert_eq!(kserve.status, 400);
    assert!(kserve.json()["error"].as_str().unwrap().contains("input `age`"), "{}", kserve.text());
    let kserve_missing = post(
        addr,
        "/v2/models/churn/infer",
        &json!({"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}),
    );
    assert!(
        kserve_missing.json()["error"].as_str().unwrap().contains("input `tenure`: missing"),
        "{}",
        kserve_missing.text()
    );
    let shape = post(
        addr,
        "/v2/models/churn/infer",
        &json!({"inputs": [{"name": "age", "shape": [2, 1], "datatype": "FP32", "data": [1]}]}),
    );
    assert!(
        shape.json()["error"].as_str().unwrap().contains("holds 2 values but 1 were sent"),
        "{}",
        shape.text()
    );

    // MLflow: {"error_code": "BAD_REQUEST", "message": "..."}.
    let mlflow = post(
        addr,
        "/invocations",
        &json!({"dataframe_split": {"columns": ["age", "tenure", "plan"], "data": [[1, 2, 3]]}}),
    );
    assert_eq!(mlflow.status, 400);
    assert_eq!(mlflow.json()["error_code"], "BAD_REQUEST");
    assert!(mlflow.json()["message"].as_str().unwrap().contains("input `plan`"), "{}", mlflow.text());
    let two = post(addr, "/invocations", &json!({"instances": [], "inputs": []}));
    assert!(two.json()["message"].as_str().unwrap().contains("exactly one of"), "{}", two.text());

    // Not served; then a good request still works after all that.
    assert_eq!(predict_path(addr, "/models/nothing/predict").status, 404);
    let good = predict(json!({"inputs": {"age": 40, "tenure": 2, "plan": "pro"}}));
    assert_eq!(good.status, 200, "{}", good.text());
}

fn predict_path(addr: &str, path: &str) -> Reply {
    post(addr, path, &json!({"inputs": {"x": 1}}))
}

#[test]
fn a_model_that_cannot_load_reports_not_ready_and_the_others_serve() {
    let repo = project();
    // Lose churn's model file from the cache.
    let digest = repo.json(&["model", "show", "churn@1", "--json"])["digest"].as_str().unwrap().to_owned();
    let hex = digest.trim_start_matches("blake3:");
    let object =
        repo.objects().into_iter().find(|p| p.display().to_string().replace('/', "").contains(hex)).unwrap();
    common::make_writable(&object);
    std::fs::remove_file(&object).unwrap();

    let server = Server::start(&repo, &["churn@production", "regressor@production"]);
    let addr = &server.addr;
    let ready = http(addr, "GET", "/v2/models/churn/ready", &[], b"");
    assert_eq!(ready.status, 503);
    assert!(ready.json()["reason"].as_str().unwrap().contains("not in the cache"), "{}", ready.text());
    assert_eq!(http(addr, "GET", "/v2/models/regressor/ready", &[], b"").status, 200);
    assert_eq!(http(addr, "GET", "/v2/health/ready", &[], b"").status, 503);
    let refused =
        post(addr, "/models/churn/predict", &json!({"inputs": {"age": 1, "tenure": 2, "plan": "pro"}}));
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("cairn pull"), "{}", refused.text());
    let served =
        post(addr, "/models/regressor/predict", &json!({"inputs": {"features": [0.1, 0.2, 0.3, 0.4]}}));
    assert_eq!(served.status, 200, "{}", served.text());
    let listing = http(addr, "GET", "/models", &[], b"").json();
    let churn = listing["models"].as_array().unwrap().iter().find(|m| m["name"] == "churn").unwrap();
    assert_eq!(churn["ready"], false);
}

#[test]
fn a_missing_onnxruntime_is_a_clear_error_at_startup() {
    let repo = project();
    let out = repo
        .command(&["serve", "churn@production", "--port", "0"])
        .env("CAIRN_ONNXRUNTIME", repo.path("nowhere/libonnxruntime.so"))
        .env_remove("VIRTUAL_ENV")
        .env("HOME", repo.path("home"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ONNX Runtime was not found") && err.contains("pip install onnxruntime"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The version that answered, from the response header.
fn answered_by(addr: &str) -> String {
    let reply = post(addr, "/models/reg/predict", &json!({"inputs": {"features": [0.1, 0.2, 0.3, 0.4]}}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.headers["x-cairn-model-version"].clone()
}

/// Polls until `addr` answers with `version` every time for 20 requests; returns how long.
fn wait_for(addr: &str, version: &str) -> Duration {
    let started = Instant::now();
    loop {
        if (0..20).all(|_| answered_by(addr) == version) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still not answered by {version}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rollouts_and_rollbacks_take_effect_live_without_dropping_requests() {
    let repo = project();
    for name in ["regressor", "forest", "logistic"] {
        repo.ok(&["model", "register", "reg", &format!("models/{name}.onnx")]);
    }
    repo.ok(&["model", "alias", "reg@1", "production"]);
    let server = Server::start(&repo, &["reg@production"]);
    let addr = server.addr.clone();
    assert_eq!(answered_by(&addr), "reg@1");

    // Steady traffic from four clients for the whole test; every request must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut count = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = post(
                        &addr,
                        "/models/reg/predict",
                        &json!({"inputs": [{"features": [0.1, 0.2, 0.3, 0.4]}]}),
                    );
                    assert_eq!(
                        reply.status,
                        200,
                        "a request failed during a rollout change: {}",
                        reply.text()
                    );
                    count += 1;
                }
                count
            })
        })
        .collect();

    // A canary at 100% takes all traffic within a second; at 30% some.
    repo.ok(&["model", "rollout", "reg@production", "--canary", "2", "--weight", "100"]);
    assert!(wait_for(&addr, "reg@2") < Duration::from_millis(1500));
    repo.ok(&["model", "rollout", "reg@production", "--weight", "30"]);
    std::thread::sleep(Duration::from_millis(600));
    let versions: Vec<String> = (0..200).map(|_| answered_by(&addr)).collect();
    let canary = versions.iter().filter(|v| *v == "reg@2").count();
    assert!((20..=110).contains(&canary), "30% canary answered {canary} of 200");

    // Promote, then roll back: each within a second.
    repo.ok(&["model", "alias", "reg@2", "production"]);
    assert!(wait_for(&addr, "reg@2") < Duration::from_millis(1500));
    let rollout = repo.json(&["model", "rollout", "reg@production", "--json"]);
    assert_eq!(rollout["canary"], Value::Null, "promoting the canary ends its share: {rollout}");
    repo.ok(&["model", "alias", "reg@1", "production", "--reason", "rollback"]);
    assert!(wait_for(&addr, "reg@1") < Duration::from_millis(1500));

    // A shadow gets a copy of every request; its answer is logged, never returned.
    repo.ok(&["model", "rollout", "reg@production", "--shadow", "3"]);
    std::thread::sleep(Duration::from_millis(600));
    let reply = post(&addr, "/models/reg/predict", &json!({"inputs": {"features": [0.1, 0.2, 0.3, 0.4]}}));
    assert_eq!(reply.headers["x-cairn-model-version"], "reg@1");
    assert!(reply.json()["outputs"].get("variable").is_some(), "the primary's outputs: {}", reply.text());
    let trace = reply.headers["x-cairn-trace-id"].clone();
    // Traced at once, while the server runs and before its log is flushed: found, not "no
    // such prediction".
    let now = repo.json(&["trace", &trace, "--json"]);
    assert_eq!((now["trace_id"].as_str(), now["version"].as_i64()), (Some(trace.as_str()), Some(1)), "{now}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 20, "the load threads ran ({served} requests)");
    let metrics = http(&addr, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains(r#"cairn_requests_total{model="reg",version="2",protocol="native",status="200"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("cairn_request_duration_seconds_bucket"), "{metrics}");
    server.stop();

    let traced = repo.json(&["trace", &trace, "--json"]);
    assert_eq!((traced["version"].as_i64(), traced["role"].as_str()), (Some(1), Some("primary")));
    let shadows = traced["shadows"].as_array().unwrap();
    assert_eq!(shadows[0]["version"], 3);
    assert_eq!(shadows[0]["outputs"]["output_label"].as_array().unwrap().len(), 1, "{traced}");
}

#[test]
fn batching_answers_each_client_its_own_rows() {
    let repo = project();
    let server = Server::start(&repo, &["regressor@production", "--batch-max", "64", "--batch-wait-ms", "5"]);
    let unbatched = Server::start(&repo, &["regressor@production", "--no-log"]);
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let (a, b) = (server.addr.clone(), unbatched.addr.clone());
            std::thread::spawn(move || {
                for j in 0..20 {
                    let x = (i * 20 + j) as f64 / 100.0;
                    let body = json!({"inputs": {"features": [x, -x, x / 2.0, 1.0]}});
                    let got =
                        post(&a, "/models/regressor/predict", &body).json()["outputs"]["variable"].clone();
                    let want =
                        post(&b, "/models/regressor/predict", &body).json()["outputs"]["variable"].clone();
                    assert_eq!(got, want, "client {i} request {j}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn predictions_are_logged_and_traced_back_to_run_data_and_commit() {
    let repo = TestRepo::new();
    repo.write("params.yaml", "train:\n  depth: 3\n");
    repo.write("data/train.csv", "a,b,c,d\n1,2,3,4\n");
    repo.write(
        "train.sh",
        format!(
            "mkdir -p models && cp {} models/model.onnx && echo '{{\"r2\": 0.91}}' > metrics.json\n",
            fixtures().join("regressor.onnx").display()
        ),
    );
    repo.write(
        "cairn.yaml",
        "stages:\n  train:\n    cmd: sh train.sh\n    deps: [train.sh, data/train.csv]\n    params: [train.depth]\n    outs: [models/model.onnx]\n    metrics: [metrics.json]\n",
    );
    repo.commit_all("pipeline");
    repo.ok(&["run"]);
    repo.ok(&["model", "register", "reg", "models/model.onnx"]);
    repo.ok(&["model", "alias", "reg@1", "production"]);

    let server = Server::start(&repo, &["reg@production"]);
    let reply = post(&server.addr, "/models/reg/predict", &json!({"inputs": {"features": [1, 2, 3, 4]}}));
    assert_eq!(reply.status, 200);
    let trace = reply.headers["x-cairn-trace-id"].clone();
    assert_eq!(reply.json()["trace_id"], trace.as_str());
    let killed_trace = {
        let r = post(
            &server.addr,
            "/v2/models/reg/infer",
            &json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [4, 3, 2, 1]}]}),
        );
        r.headers["x-cairn-trace-id"].clone()
    };
    let err = server.stop();
    assert!(err.contains("prediction log sealed"), "{err}");
    let segments: Vec<_> = std::fs::read_dir(repo.path(".cairn/predictions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert!(
        segments.iter().all(|n| n == "profiles" || (n.starts_with("seg-") && n.ends_with(".parquet"))),
        "only sealed segments (and per-minute profiles) remain: {segments:?}"
    );

    let shown = repo.ok(&["trace", &trace]);
    for expected in
        ["reg@1", "features", "variable", "run ", "depth=3", "r2=0.91", "data/train.csv", "commit "]
    {
        assert!(shown.contains(expected), "`cairn trace` lacks {expected:?}:\n{shown}");
    }
    let traced = repo.json(&["trace", &killed_trace, "--json"]);
    assert_eq!(traced["protocol"], "kserve");
    assert_eq!(traced["inputs"]["features"], json!([[4.0, 3.0, 2.0, 1.0]]));
    assert_eq!(traced["lineage"]["params"]["train.depth"], "3", "{traced}");

    // A killed server loses at most the last second: what it logged before is found.
    let server = Server::start(&repo, &["reg@production"]);
    let reply = post(&server.addr, "/models/reg/predict", &json!({"inputs": {"features": [1, 1, 1, 1]}}));
    let last = reply.headers["x-cairn-trace-id"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    drop(server); // SIGKILL
    assert_eq!(repo.json(&["trace", &last, "--json"])["status"], 200);
    // The next server turns the crashed one's WAL into a segment.
    let server = Server::start(&repo, &["reg@production"]);
    server.stop();
    let names: Vec<_> = std::fs::read_dir(repo.path(".cairn/predictions"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("wal-")), "{names:?}");
    assert_eq!(repo.json(&["trace", &last, "--json"])["trace_id"], last.as_str());
    repo.fail(1, &["trace", "0000000000000000deadbeefdeadbeef"]);

    // Segments shipped to a remote are found there once the local log is gone.
    let store = tempfile::tempdir().unwrap();
    repo.ok(&["remote", "add", "store", &store.path().display().to_string()]);
    let server = Server::start(&repo, &["reg@production", "--log-remote", "store"]);
    let reply = post(&server.addr, "/models/reg/predict", &json!({"inputs": {"features": [2, 2, 2, 2]}}));
    let shipped = reply.headers["x-cairn-trace-id"].clone();
    server.stop();
    std::fs::remove_dir_all(repo.path(".cairn/predictions")).unwrap();
    repo.fail(1, &["trace", &shipped]);
    let traced = repo.json(&["trace", &shipped, "--remote", "store", "--json"]);
    assert_eq!(traced["inputs"]["features"], json!([[2.0, 2.0, 2.0, 2.0]]));
}

#[test]
fn graceful_shutdown_finishes_a_request_in_flight() {
    let repo = project();
    let server = Server::start(&repo, &["regressor@production"]);
    let body = json!({"inputs": {"features": [0.1, 0.2, 0.3, 0.4]}}).to_string();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Headers and half the body, then SIGTERM, then the rest.
    let head = format!(
        "POST /models/regressor/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = rustix::process::Pid::from_raw(server.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let reply = parse_reply(&raw);
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.stop();
}

/// The fixture project with `churn2@production`: the churn model registered with training
/// data of ages 18–80 and three plans (500 rows: the statistical tests apply).
/// The churn model's training data: 500 customers aged 18–80, three plans.
pub(crate) fn churn_training_csv() -> String {
    let mut csv = String::from("age,tenure,plan\n");
    for i in 0..500 {
        csv.push_str(&format!(
            "{},{},{}\n",
            18 + (i * 37) % 63,
            (i * 11) % 73,
            ["basic", "pro", "enterprise"][i % 3]
        ));
    }
    csv
}

fn churn_with_training_data() -> TestRepo {
    let repo = project();
    repo.write("train.csv", churn_training_csv());
    repo.ok(&["model", "register", "churn2", "models/churn.onnx", "--training-data", "train.csv"]);
    repo.ok(&["model", "alias", "churn2@1", "production"]);
    repo
}

#[test]
fn monitor_reports_drift_against_the_training_data_and_the_requests_behind_it() {
    let repo = churn_with_training_data();
    let server = Server::start(&repo, &["churn2@production"]);
    // Production: older customers, a plan the training data never had; tenure as before.
    for i in 0..200 {
        let plan = if i % 10 == 0 { "student" } else { ["basic", "pro", "enterprise"][i % 3] };
        let body = json!({"inputs": {"age": 60 + (i * 7) % 35, "tenure": (i * 11) % 73, "plan": plan}});
        assert_eq!(post(&server.addr, "/models/churn2/predict", &body).status, 200);
    }
    // Ground truth arrives later: label a few predictions (all as churned).
    let mut ids = Vec::new();
    for age in [25, 70] {
        let reply = post(
            &server.addr,
            "/models/churn2/predict",
            &json!({"inputs": {"age": age, "tenure": 2, "plan": "basic"}}),
        );
        ids.push((
            reply.headers["x-cairn-trace-id"].clone(),
            reply.json()["outputs"]["output_label"].clone(),
        ));
    }
    let feedback: Vec<Value> = ids.iter().map(|(id, _)| json!({"trace_id": id, "label": 1})).collect();
    let recorded = post(&server.addr, "/feedback", &json!({"feedback": feedback}));
    assert_eq!(
        (recorded.status, recorded.json()["recorded"].as_u64()),
        (200, Some(2)),
        "{}",
        recorded.text()
    );
    let unknown =
        post(&server.addr, "/feedback", &json!({"trace_id": "0000000000000000deadbeefdeadbeef", "label": 1}));
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().contains("nothing was recorded"), "{}", unknown.text());
    let malformed = post(&server.addr, "/feedback", &json!({"trace_id": "nope", "label": 1}));
    assert_eq!(malformed.status, 400);
    server.stop();
    let expected_accuracy = ids.iter().filter(|(_, label)| label == &json!(1)).count() as f64 / 2.0;

    let report = repo.json(&["monitor", "churn2", "--since", "1h", "--json", "--html", "drift.html"]);
    assert_eq!(report[0]["quality"]["labelled"], 2, "{}", report[0]["quality"]);
    // The server profiled every minute as it went, and persisted it at shutdown.
    let windows = report[0]["windows"].as_array().unwrap();
    assert_eq!(windows.iter().map(|w| w["rows"].as_u64().unwrap()).sum::<u64>(), 202, "{windows:?}");
    assert!(windows.iter().all(|w| w["drifted_share"].as_f64().is_some()));
    assert_eq!(report[0]["quality"]["accuracy"].as_f64(), Some(expected_accuracy));
    let version = &report[0];
    assert_eq!((version["version"].as_i64(), version["predictions"].as_u64()), (Some(1), Some(202)));
    let drift = |name: &str| {
        version["drift"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["feature"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (drift("age")["method"].as_str(), drift("age")["drifted"].as_bool()),
        (Some("ks"), Some(true)),
        "{version}"
    );
    assert_eq!(drift("tenure")["drifted"], false, "{version}");
    assert_eq!(
        (drift("plan")["method"].as_str(), drift("plan")["drifted"].as_bool()),
        (Some("chi_squared"), Some(true))
    );
    assert_eq!(version["drift"]["drifted"], true, "two of three inputs drifted");
    let plan = version["features"].as_array().unwrap().iter().find(|f| f["feature"] == "plan").unwrap();
    assert_eq!(plan["distinct"], 4);
    let html = String::from_utf8(repo.read("drift.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("age") && html.contains("drifted"),
        "the HTML report has charts"
    );
    let text = repo.ok(&["monitor", "churn2"]);
    assert!(text.contains("dataset drift: 2 of 3 features drifted"), "{text}");

    // The requests behind the drifted `plan`: the 20 with the unseen plan.
    let behind = repo.json(&["monitor", "requests", "churn2", "--feature", "plan", "--json"]);
    assert_eq!(behind.as_array().unwrap().len(), 20);
    let id = behind[0]["trace_id"].as_str().unwrap();
    assert!(repo.ok(&["trace", id]).contains("student"));

    // Back into training: the logged inputs as a versioned dataset.
    repo.ok(&["monitor", "export", "churn2", "--out", "data/production.csv"]);
    let exported = String::from_utf8(repo.read("data/production.csv")).unwrap();
    assert_eq!(exported.lines().next(), Some("trace_id,time_ms,version,age,tenure,plan"));
    assert_eq!(exported.lines().count(), 203);
    assert!(repo.exists("data/production.csv.cairn"), "the export is added");
    repo.ok(&["monitor", "export", "churn2", "--out", "data/drifted.csv", "--drifted-only"]);
    let drifted = String::from_utf8(repo.read("data/drifted.csv")).unwrap();
    let rows: Vec<&str> = drifted.lines().skip(1).collect();
    assert!(!rows.is_empty() && rows.len() < 200, "{} drifted rows", rows.len());
    assert!(
        rows.iter()
            .all(|r| r.ends_with("student") || r.split(',').nth(3).unwrap().parse::<f64>().unwrap() > 80.0),
        "{drifted}"
    );
    // Parquet into a directory, with the true labels where they arrived.
    let said = repo.ok(&["monitor", "export", "churn2", "--with-labels", "--out", "data/production"]);
    assert!(said.contains("202 row(s), 2 labelled"), "{said}");
    assert!(repo.exists("data/production.cairn"), "the directory is added");
    let file = std::fs::File::open(repo.path("data/production/production.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["trace_id", "time_ms", "version", "age", "tenure", "plan", "label"]);
    let batches: Vec<_> = reader.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 202);
    let labels = batches.iter().map(|b| b.column(6).len() - b.column(6).null_count()).sum::<usize>();
    assert_eq!(labels, 2);
    let said = repo.ok(&["monitor", "export", "churn2", "--labelled-only", "--out", "data/feedback.csv"]);
    assert!(said.contains("exported 2 row(s)"), "{said}");
    let text = repo.ok(&["monitor", "churn2", "--window", "1h"]);
    assert!(text.contains("live quality (2 labelled)") && text.contains("    from "), "{text}");
    repo.fail(2, &["monitor", "churn2", "--since", "soon"]);
    repo.fail(1, &["monitor", "nothing"]);
}

/// A webhook receiver on 127.0.0.1:0: `/flaky` answers 503 to its first request and 200 after,
/// `/gone` always 404. Every request's path and JSON body go to the channel.
fn webhook() -> (String, std::sync::mpsc::Receiver<(String, Value)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut flaky_seen = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            let path = first.split(' ').nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = match path.as_str() {
                "/flaky" => {
                    flaky_seen += 1;
                    if flaky_seen == 1 { "503 Service Unavailable" } else { "200 OK" }
                }
                _ => "404 Not Found",
            };
            let _ = tx.send((path, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
            );
        }
    });
    (addr, rx)
}

/// Polls `cairn alerts --all --json` until `done` holds (or 30 s pass).
pub(crate) fn wait_for_alerts(repo: &TestRepo, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let alerts = repo.json(&["alerts", "--all", "--json"]).as_array().unwrap().clone();
        if done(&alerts) || start.elapsed() > Duration::from_secs(30) {
            return alerts;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rules_open_alerts_deliver_them_with_retries_and_resolve_without_flapping() {
    let repo = churn_with_training_data();
    let (hook, received) = webhook();
    repo.write(
        "monitor.yaml",
        format!(
            r#"evaluate_every: 300ms
webhooks:
  - url: http://{hook}/flaky
    attempts: 3
  - url: http://{hook}/gone
models:
  churn2:
    rules:
      - {{name: inputs drifted, metric: drift_share, op: ">=", threshold: 0.5, window: 1m, min_rows: 50}}
      - {{name: refusals, metric: error_rate, op: ">", threshold: 0.1, window: 1m, min_rows: 10, cooldown: 1s}}
      - {{name: never, metric: latency_p99, op: ">", threshold: 60000, window: 1m}}
      - {{name: accuracy, metric: accuracy, op: "<", threshold: 0.75, window: 1m, min_rows: 4}}
"#
        ),
    );
    // A bad rule is refused before the server starts, naming the file and the rule.
    repo.write(
        "bad.yaml",
        "models:\n  churn2:\n    rules:\n      - {name: r, metric: accuracyy, op: '<', threshold: 1}\n",
    );
    let err = repo.fail(1, &["alerts", "check", "--config", "bad.yaml"]);
    assert!(err.contains("bad.yaml") && err.contains("unknown metric `accuracyy`"), "{err}");

    let server = Server::start(&repo, &["churn2@production"]);
    // Drifting traffic: older customers, a plan the training data never had.
    for i in 0..100 {
        let plan = if i % 4 == 0 { "student" } else { ["basic", "pro", "enterprise"][i % 3] };
        let body = json!({"inputs": {"age": 70 + i % 25, "tenure": (i * 11) % 73, "plan": plan}});
        assert_eq!(post(&server.addr, "/models/churn2/predict", &body).status, 200);
    }
    let alerts = wait_for_alerts(&repo, |a| a.iter().any(|a| a["rule"] == "inputs drifted"));
    let drift = alerts.iter().find(|a| a["rule"] == "inputs drifted").expect("a drift alert opened").clone();
    assert_eq!((drift["model"].as_str(), drift["version"].as_i64()), (Some("churn2"), Some(1)));
    assert!(drift["value"].as_f64().unwrap() >= 0.5, "{drift}");
    assert!(drift["resolved_ms"].is_null());
    let features: Vec<&str> =
        drift["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(features.contains(&"age") && features.contains(&"plan"), "{features:?}");
    assert!(drift["requests_total"].as_u64().unwrap() > 0);
    // The alert links to the requests behind it: values the training data never had.
    let id = drift["id"].as_str().unwrap().to_owned();
    let behind = repo.json(&["monitor", "requests", "churn2", "--alert", &id, "--json"]);
    let behind = behind.as_array().unwrap();
    assert_eq!(behind.len() as u64, drift["requests_total"].as_u64().unwrap());
    assert!(
        behind.iter().all(|r| {
            let v = &r["values"];
            v["plan"][0][0] == "student" || v["age"][0][0].as_f64().unwrap() > 80.0
        }),
        "{behind:?}"
    );
    // Delivered: the flaky hook took two attempts, the gone one failed at once (a 404 is final).
    let mut got: Vec<(String, Value)> = Vec::new();
    let start = Instant::now();
    while got.iter().filter(|(p, _)| p == "/flaky").count() < 2 && start.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = received.recv_timeout(Duration::from_millis(200)) {
            got.push(r);
        }
    }
    let flaky: Vec<&Value> = got.iter().filter(|(p, _)| p == "/flaky").map(|(_, b)| b).collect();
    assert_eq!(flaky.len(), 2, "{got:?}");
    assert_eq!(flaky[1]["event"], "opened");
    assert_eq!(flaky[1]["alert"]["id"], id.as_str());
    assert!(flaky[1]["text"].as_str().unwrap().contains("drift_share"), "{}", flaky[1]);
    let start = Instant::now();
    let shown = loop {
        let shown = repo.ok(&["alerts", "show", &id]);
        if shown.contains("NOT delivered") && shown.contains("delivered to")
            || start.elapsed() > Duration::from_secs(10)
        {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(shown.contains(&format!("opened: delivered to http://{hook}/flaky (attempt 2)")), "{shown}");
    assert!(shown.contains(&format!("NOT delivered to http://{hook}/gone after 1 attempt(s)")), "{shown}");

    // Ground truth: four answers labelled, two of them wrongly answered: live accuracy 0.5.
    let mut feedback = Vec::new();
    for i in 0..4 {
        let reply = post(
            &server.addr,
            "/models/churn2/predict",
            &json!({"inputs": {"age": 40, "tenure": i, "plan": "pro"}}),
        );
        let answer = reply.json()["outputs"]["output_label"].as_i64().unwrap();
        let label = if i < 2 { answer } else { 1 - answer };
        feedback.push(json!({"trace_id": reply.headers["x-cairn-trace-id"], "label": label}));
    }
    assert_eq!(post(&server.addr, "/feedback", &json!({"feedback": feedback})).status, 200);
    let alerts = wait_for_alerts(&repo, |a| a.iter().any(|a| a["rule"] == "accuracy"));
    let accuracy = alerts.iter().find(|a| a["rule"] == "accuracy").expect("a live-accuracy alert opened");
    assert_eq!(accuracy["value"].as_f64(), Some(0.5), "{accuracy}");

    // Refusals: half of these requests name a column the model doesn't have.
    for i in 0..40 {
        let mut inputs = json!({"age": 30, "tenure": 5, "plan": "pro"});
        if i % 2 == 0 {
            inputs["region"] = json!("north");
        }
        post(&server.addr, "/models/churn2/predict", &json!({"inputs": inputs}));
    }
    let alerts = wait_for_alerts(&repo, |a| a.iter().any(|a| a["rule"] == "refusals"));
    let refusals =
        alerts.iter().find(|a| a["rule"] == "refusals").expect("an error-rate alert opened").clone();
    let behind =
        repo.json(&["monitor", "requests", "churn2", "--alert", refusals["id"].as_str().unwrap(), "--json"]);
    assert!(behind.as_array().unwrap().iter().all(|r| r["status"] == 400), "{behind}");
    // Good traffic brings the rate under the threshold; it resolves once, after the cooldown.
    for _ in 0..200 {
        post(
            &server.addr,
            "/models/churn2/predict",
            &json!({"inputs": {"age": 30, "tenure": 5, "plan": "pro"}}),
        );
    }
    let alerts =
        wait_for_alerts(&repo, |a| a.iter().any(|a| a["rule"] == "refusals" && !a["resolved_ms"].is_null()));
    std::thread::sleep(Duration::from_secs(1));
    let err = server.stop();
    assert!(err.contains("alert ") && err.contains("opened"), "alerts also go to the server's log:\n{err}");
    let alerts_after = repo.json(&["alerts", "--all", "--json"]);
    let refusal_alerts: Vec<&Value> =
        alerts_after.as_array().unwrap().iter().filter(|a| a["rule"] == "refusals").collect();
    assert_eq!(refusal_alerts.len(), 1, "opened once, no flapping: {alerts_after}");
    assert!(alerts.iter().any(|a| a["rule"] == "refusals" && !a["resolved_ms"].is_null()), "{alerts:?}");
    assert!(alerts_after.as_array().unwrap().iter().all(|a| a["rule"] != "never"));
    // The report names why requests failed.
    let report = repo.ok(&["monitor", "churn2"]);
    assert!(report.contains("failed requests by reason (20)") && report.contains("region"), "{report}");
    // Open alerts only, by default.
    let open = repo.json(&["alerts", "--json"]);
    assert!(open.as_array().unwrap().iter().all(|a| a["resolved_ms"].is_null()));
    assert!(open.as_array().unwrap().iter().any(|a| a["rule"] == "inputs drifted"));

    // One evaluation on demand; a rule's retrain registers a candidate version.
    repo.write(
        "retrain.yaml",
        "models:\n  churn2:\n    rules:\n      - {name: busy, metric: requests, op: '>=', threshold: 1, window: 1h, retrain: {model_path: models/forest.onnx}}\n",
    );
    let said = repo.ok(&["alerts", "check", "--config", "retrain.yaml"]);
    assert!(
        said.contains("opened") && said.contains("cairn model register churn2 models/forest.onnx"),
        "{said}"
    );
    assert!(said.contains("done"), "{said}");
    let versions = repo.json(&["model", "versions", "churn2", "--json"]);
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    let again = repo.ok(&["alerts", "check", "--config", "retrain.yaml"]);
    assert!(again.contains("0 opened"), "an open alert is not opened again: {again}");
}

/// A scikit-learn model exported with skl2onnx takes one tensor `[N, k]`: its columns take
/// the training data's names, so drift is measured per named feature, not skipped.
#[test]
fn a_one_tensor_models_columns_take_the_training_datas_names() {
    let repo = project();
    let mut csv = String::from("income,debt,age,score\n");
    for i in 0..400 {
        let x = |k: usize| ((i * (7 + 4 * k)) % 97) as f64 / 97.0 - 0.5;
        csv.push_str(&format!("{},{},{},{}\n", x(0), x(1), x(2), x(3)));
    }
    repo.write("train.csv", &csv);
    // The count must match the tensor's columns: a label column too many is an error.
    repo.write(
        "with_label.csv",
        csv.replacen("score\n", "score,label\n", 1).replace('\n', ",1\n").replacen(",1\n", "\n", 1),
    );
    let err = repo.fail(
        1,
        &["model", "register", "credit", "models/logistic.onnx", "--training-data", "with_label.csv"],
    );
    assert!(err.contains("takes 4 columns") && err.contains("--feature-names"), "{err}");
    let err =
        repo.fail(1, &["model", "register", "credit", "models/logistic.onnx", "--feature-names", "a,b"]);
    assert!(err.contains("takes 4 columns, but --feature-names has 2"), "{err}");
    let registered = repo.json(&[
        "model",
        "register",
        "credit",
        "models/logistic.onnx",
        "--training-data",
        "train.csv",
        "--json",
    ]);
    assert_eq!(registered["signature"]["inputs"][0]["columns"], json!(["income", "debt", "age", "score"]));
    repo.ok(&["model", "alias", "credit@1", "production"]);

    let server = Server::start(&repo, &["credit@production"]);
    // Production: `age` shifted far from training; the others as before.
    for i in 0..150 {
        let x = |k: usize| ((i * (7 + 4 * k)) % 97) as f64 / 97.0 - 0.5;
        let body = json!({"inputs": {"features": [x(0), x(1), x(2) + 3.0, x(3)]}});
        assert_eq!(post(&server.addr, "/models/credit/predict", &body).status, 200);
    }
    server.stop();
    let report = repo.json(&["monitor", "credit", "--since", "1h", "--json"]);
    let features = report[0]["drift"]["features"].as_array().unwrap();
    let find = |name: &str| features.iter().find(|f| f["feature"] == name).cloned();
    assert_eq!(find("age").map(|f| f["drifted"].clone()), Some(json!(true)), "{}", report[0]["drift"]);
    assert_eq!(find("income").map(|f| f["drifted"].clone()), Some(json!(false)), "{}", report[0]["drift"]);
    assert!(find("features[0]").is_none(), "columns are profiled by name: {}", report[0]["drift"]);
    // The same names in the drill-down and the export.
    let requests = repo.ok(&["monitor", "requests", "credit", "--feature", "age"]);
    assert!(!requests.trim().is_empty(), "no requests listed for the drifted feature");
    repo.ok(&["monitor", "export", "credit", "--since", "1h", "--out", "data/production.csv"]);
    let exported = String::from_utf8(repo.read("data/production.csv")).unwrap();
    assert!(exported.lines().next().unwrap().contains("income,debt,age,score"), "{exported}");
}

/// The fixture models the protocol tests use besides `project()`'s: float64 and int64 inputs.
fn project_with_number_models() -> TestRepo {
    let repo = project();
    for name in ["linear64", "counts"] {
        std::fs::copy(fixtures().join(format!("{name}.onnx")), repo.path(&format!("models/{name}.onnx")))
            .unwrap();
        repo.ok(&["model", "register", name, &format!("models/{name}.onnx")]);
    }
    repo
}

const TRITON_BINARY: &str = r#"
import gzip, json, sys, urllib.request, urllib.error
import numpy as np
import onnxruntime as ort
import tritonclient.http as http

url, fixtures = sys.argv[1], sys.argv[2]
client = http.InferenceServerClient(url=url)

def infer(model, feeds, kinds, binary_in=True, binary_out=True, name_outputs=True, **options):
    names, expected = reference(model, feeds)
    inputs = []
    for name, value in feeds.items():
        i = http.InferInput(name, list(value.shape), kinds[name])
        i.set_data_from_numpy(value, binary_data=binary_in)
        inputs.append(i)
    outputs = [http.InferRequestedOutput(n, binary_data=binary_out) for n in names] if name_outputs else None
    result = client.infer(model, inputs, outputs=outputs, **options)
    return [(result.as_numpy(n), dense(w)) for n, w in zip(names, expected)]

def close(pairs, what):
    for got, want in pairs:
        if want.dtype.kind in "iu":
            assert (got.reshape(want.shape) == want).all(), (what, got, want)
        else:
            np.testing.assert_allclose(got.astype(np.float64).reshape(want.shape), want, rtol=1e-5, atol=1e-6, err_msg=what)

def exact(pairs, what):
    for got, want in pairs:
        assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
        assert np.array_equal(got.reshape(want.shape).view(np.uint64), want.view(np.uint64)), what

checked = []
rng = np.random.RandomState(3)
# FP32 in the default (binary) mode, both ways, and with binary inputs but JSON outputs.
for rows in [1, 100, 10000]:
    X = rng.normal(size=(rows, 4)).astype(np.float32)
    close(infer("forest", {"features": X}, {"features": "FP32"}), f"forest {rows}")
    close(infer("regressor", {"features": X}, {"features": "FP32"}, binary_out=False), f"regressor {rows}")
    checked.append(f"FP32 x{rows}")
# No outputs named: the client asks for every output in binary.
X = rng.normal(size=(5, 4)).astype(np.float32)
close(infer("logistic", {"features": X}, {"features": "FP32"}, name_outputs=False), "logistic, all outputs")
# BYTES (4-byte length-prefixed strings) next to FP32.
feeds = {
    "age": np.array([[42.0], [23.0], [67.0]], dtype=np.float32),
    "tenure": np.array([[3.0], [48.0], [10.0]], dtype=np.float32),
    "plan": np.array([["basic"], ["pro"], ["enterprise"]], dtype=object),
}
names, expected = reference("churn", {**feeds, "plan": feeds["plan"].astype(str)})
inputs = []
for name, kind in [("age", "FP32"), ("tenure", "FP32"), ("plan", "BYTES")]:
    i = http.InferInput(name, list(feeds[name].shape), kind)
    i.set_data_from_numpy(feeds[name])
    inputs.append(i)
result = client.infer("churn", inputs, outputs=[http.InferRequestedOutput(n) for n in names])
close([(result.as_numpy(n), dense(w)) for n, w in zip(names, expected)], "churn BYTES")
checked.append("BYTES")
# INT64 inputs, binary and JSON.
counts = rng.randint(0, 1000, size=(100, 3)).astype(np.int64)
close(infer("counts", {"counts": counts}, {"counts": "INT64"}), "counts binary")
close(infer("counts", {"counts": counts}, {"counts": "INT64"}, binary_in=False, binary_out=False), "counts JSON")
checked.append("INT64")
# FP64, bit for bit: binary both ways, and JSON both ways (every float round-trips exactly).
X64 = rng.normal(size=(10000, 4)) * np.array([1e-3, 1.0, 1e5, 3.0])
exact(infer("linear64", {"features": X64}, {"features": "FP64"}), "FP64 binary")
exact(infer("linear64", {"features": X64}, {"features": "FP64"}, binary_in=False, binary_out=False), "FP64 JSON")
checked.append("FP64 exact")
# Compressed requests and answers, each coding.
X = rng.normal(size=(100, 4)).astype(np.float32)
for request, response in [("gzip", "deflate"), ("deflate", "gzip")]:
    close(infer("forest", {"features": X}, {"features": "FP32"},
                request_compression_algorithm=request, response_compression_algorithm=response), request)
checked.append("compression")
# Triton's extensions.
index = client.get_model_repository_index()
assert {"name": "forest", "version": "1", "state": "READY"} in index, index
config = client.get_model_config("forest")
assert config["name"] == "forest" and config["input"][0]["data_type"] == "TYPE_FP32", config
assert config["input"][0]["dims"] == [4], config
stats = client.get_inference_statistics("forest")["model_stats"][0]
assert stats["inference_stats"]["success"]["count"] >= 5 and stats["inference_count"] >= 10101, stats
checked.append("extensions")
# A gzip bomb: 64 MiB of zeros in a small body is refused once it passes the limit.
bomb = gzip.compress(b" " * (64 << 20))
request = urllib.request.Request(f"http://{url}/v2/models/forest/infer", data=bomb, headers={"Content-Encoding": "gzip"})
try:
    urllib.request.urlopen(request)
    raise SystemExit("the bomb was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 413, e.code
    assert "once decompressed" in json.loads(e.read())["error"]
checked.append("bomb")
print(json.dumps({"checked": checked}))
"#;

#[test]
fn tritonclient_in_its_default_binary_mode_with_compression_and_extensions() {
    let repo = project_with_number_models();
    let server = Server::start(
        &repo,
        &["logistic", "forest", "regressor", "churn", "linear64", "counts", "--max-body", "33554432"],
    );
    let fixtures = fixtures().display().to_string();
    let result = python(serve_python(), &repo, &client(TRITON_BINARY), &[&server.addr, &fixtures]);
    assert_eq!(
        result["checked"],
        json!([
            "FP32 x1",
            "FP32 x100",
            "FP32 x10000",
            "BYTES",
            "INT64",
            "FP64 exact",
            "compression",
            "extensions",
            "bomb"
        ])
    );
}

#[test]
fn malformed_binary_requests_get_a_400_that_says_what_is_wrong() {
    let repo = project();
    let server = Server::start(&repo, &["regressor", "churn"]);
    let addr = &server.addr;
    // A one-dimensional input for an [N, 1] tensor is taken as the column it is.
    let reply = post(
        addr,
        "/v2/models/churn/infer",
        &json!({"inputs": [
            {"name": "age", "shape": [2], "datatype": "FP32", "data": [42, 23]},
            {"name": "tenure", "shape": [2], "datatype": "FP32", "data": [3, 48]},
            {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["basic", "pro"]}]}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["outputs"][0]["shape"], json!([2]));
    let infer = |header: &str, tail: &[u8]| {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(tail);
        let length = header.len().to_string();
        http(
            addr,
            "POST",
            "/v2/models/regressor/infer",
            &[("Inference-Header-Content-Length", &length)],
            &body,
        )
    };
    let input = |size: usize| {
        json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}]})
        .to_string()
    };
    let ok = infer(&input(16), &[0u8; 16]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    for (header, tail, says) in [
        (input(16), &[0u8; 12][..], "runs past the end of the body"),
        (input(12), &[0u8; 12][..], "does not hold shape [1, 4] of FP32"),
        (input(16), &[0u8; 20][..], "20 bytes of binary data after the JSON header"),
    ] {
        let reply = infer(&header, tail);
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(reply.json()["error"].as_str().unwrap().contains(says), "{}", reply.text());
    }
    let reply = http(
        addr,
        "POST",
        "/v2/models/regressor/infer",
        &[("Inference-Header-Content-Length", "999")],
        b"{}",
    );
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("the body has only 2"), "{}", reply.text());
    // A requested output the model does not have, and an endpoint that does not exist, in
    // the Open Inference Protocol's error shape.
    let reply = post(
        addr,
        "/v2/models/regressor/infer",
        &json!({"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}],
            "outputs": [{"name": "nope"}]}),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].as_str().unwrap().contains("unknown output `nope`"), "{}", reply.text());
    let reply = http(addr, "GET", "/v2/nope", &[], b"");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].as_str().unwrap().contains("no endpoint /v2/nope"), "{}", reply.text());
}

const V1_AND_CSV: &str = r#"
import gzip, json, sys
import requests

base, rows, expected = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
out = {}
out["models"] = requests.get(f"{base}/v1/models").json()["models"]
out["ready"] = requests.get(f"{base}/v1/models/regressor").json()
out["instances"] = requests.post(f"{base}/v1/models/regressor:predict", json={"instances": rows}).json()
out["inputs"] = requests.post(f"{base}/v1/models/regressor:predict", json={"inputs": rows}).json()
body = gzip.compress(json.dumps({"instances": rows}).encode())
out["gzipped"] = requests.post(f"{base}/v1/models/regressor:predict", data=body,
                               headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}).json()
out["labels"] = requests.post(f"{base}/v1/models/logistic:predict", json={"instances": rows}).json()
r = requests.post(f"{base}/v1/models/nope:predict", json={"instances": rows})
out["unknown"] = [r.status_code, r.json()]
csv = "a,b,c,d\n" + "\n".join(",".join(repr(x) for x in row) for row in rows) + "\n"
out["csv"] = requests.post(f"{base}/invocations?model=regressor", data=csv, headers={"Content-Type": "text/csv"}).json()
out["positional"] = requests.post(f"{base}/invocations?model=logistic", json={"dataframe_split": {"data": rows}}).json()
# Answers come compressed when asked (requests asks for gzip and reads it).
big = requests.post(f"{base}/v1/models/regressor:predict", json={"instances": rows * 200})
out["encoding"] = big.headers.get("Content-Encoding")
out["big"] = len(big.json()["predictions"])
print(json.dumps(out))
"#;

const LABELS: &str = r#"
import json, sys
import numpy as np
import onnxruntime as ort
fixtures, rows = sys.argv[1], np.array(json.loads(sys.argv[2]), dtype=np.float32)
out = {}
for model in ["regressor", "logistic"]:
    session = ort.InferenceSession(f"{fixtures}/{model}.onnx", providers=["CPUExecutionProvider"])
    out[model] = session.run(None, {"features": rows})[0].reshape(-1).tolist()
print(json.dumps(out))
"#;

#[test]
fn kserve_v1_and_mlflow_csv_clients_get_onnxruntimes_answers() {
    let repo = project();
    let server = Server::start(&repo, &["regressor", "logistic"]);
    let rows = json!([[0.1, 0.2, 0.3, 0.4], [-1.0, 0.5, 2.0, 0.0], [1.5, -0.5, -1.0, 0.25]]);
    let fixtures = fixtures().display().to_string();
    let expected = python(serve_python(), &repo, LABELS, &[&fixtures, &rows.to_string()]);
    let base = format!("http://{}", server.addr);
    let got = python(mlflow_python(), &repo, V1_AND_CSV, &[&base, &rows.to_string(), &expected.to_string()]);
    assert_eq!(got["models"], json!(["logistic", "regressor"]));
    assert_eq!(got["ready"], json!({"name": "regressor", "ready": true}));
    let values = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
    let want = values(&expected["regressor"]);
    for form in ["instances", "inputs", "gzipped"] {
        let predictions = values(&got[form]["predictions"]);
        assert_eq!(predictions.len(), 3, "{form}: {got}");
        for (p, w) in predictions.iter().zip(&want) {
            assert!((p - w).abs() < 1e-5, "{form}: {got}");
        }
    }
    // A classifier answers its labels, as scikit-learn servers do.
    assert_eq!(got["labels"]["predictions"], expected["logistic"], "{got}");
    assert_eq!(got["positional"]["predictions"], expected["logistic"], "{got}");
    assert_eq!(got["unknown"][0], 404);
    assert!(got["unknown"][1]["error"].as_str().unwrap().contains("`nope` is not served"), "{got}");
    let csv: Vec<f64> = got["csv"]["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variable"].as_f64().unwrap())
        .collect();
    for (p, w) in csv.iter().zip(&want) {
        assert!((p - w).abs() < 1e-5, "csv: {got}");
    }
    assert_eq!(got["encoding"], "gzip");
    assert_eq!(got["big"], 600);
}

const TRITON_GRPC: &str = r#"
import json, sys
import numpy as np
import onnxruntime as ort
import grpc as grpcio
import tritonclient.grpc as grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

url, fixtures = sys.argv[1], sys.argv[2]
client = grpc.InferenceServerClient(url=url)
assert client.is_server_live() and client.is_server_ready()
assert client.is_model_ready("forest") and not client.is_model_ready("nothing")
meta = client.get_model_metadata("forest", as_json=True)
assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}], meta
assert client.get_server_metadata(as_json=True)["name"] == "cairn"

def infer(model, feeds, kinds, exact=False, **options):
    names, expected = reference(model, {k: (v.astype(str) if v.dtype == object else v) for k, v in feeds.items()})
    inputs = []
    for name, value in feeds.items():
        i = grpc.InferInput(name, list(value.shape), kinds[name])
        i.set_data_from_numpy(value)
        inputs.append(i)
    result = client.infer(model, inputs, outputs=[grpc.InferRequestedOutput(n) for n in names], **options)
    for name, want in zip(names, expected):
        got, want = result.as_numpy(name), dense(want)
        if exact:
            assert got.dtype == want.dtype and np.array_equal(got.reshape(want.shape).view(np.uint64), want.view(np.uint64)), model
        elif want.dtype.kind in "iu":
            assert (got.reshape(want.shape) == want).all(), (model, name)
        else:
            np.testing.assert_allclose(got.astype(np.float64).reshape(want.shape), want, rtol=1e-5, atol=1e-6)
    return result

checked = []
rng = np.random.RandomState(4)
for rows in [1, 100, 10000]:
    result = infer("forest", {"features": rng.normal(size=(rows, 4)).astype(np.float32)}, {"features": "FP32"})
    checked.append(f"FP32 x{rows}")
trace = result.get_response(as_json=True)["parameters"]["trace_id"]["string_param"]
assert len(trace) == 32, trace
infer("churn", {
    "age": np.array([[42.0], [23.0]], dtype=np.float32),
    "tenure": np.array([[3.0], [48.0]], dtype=np.float32),
    "plan": np.array([["basic"], ["enterprise"]], dtype=object),
}, {"age": "FP32", "tenure": "FP32", "plan": "BYTES"})
checked.append("BYTES")
infer("counts", {"counts": rng.randint(0, 1000, size=(100, 3)).astype(np.int64)}, {"counts": "INT64"})
checked.append("INT64")
infer("linear64", {"features": rng.normal(size=(10000, 4)) * 1e3}, {"features": "FP64"}, exact=True)
checked.append("FP64 exact")
infer("forest", {"features": rng.normal(size=(100, 4)).astype(np.float32)}, {"features": "FP32"},
      compression_algorithm="gzip")
checked.append("gzip")

# Typed contents (not raw), through the protocol's own stubs: typed contents come back.
channel = grpcio.insecure_channel(url)
stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
X = rng.normal(size=(3, 4)).astype(np.float32)
request = service_pb2.ModelInferRequest(model_name="regressor")
tensor = request.inputs.add(name="features", datatype="FP32", shape=[3, 4])
tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
response, call = stub.ModelInfer.with_call(request)
_, expected = reference("regressor", {"features": X})
got = np.array(response.outputs[0].contents.fp32_contents, dtype=np.float32)
np.testing.assert_allclose(got, expected[0].reshape(-1), rtol=1e-5, atol=1e-6)
assert len(response.raw_output_contents) == 0
metadata = dict(call.trailing_metadata() or []) | dict(call.initial_metadata() or [])
assert metadata["x-cairn-trace-id"] == response.parameters["trace_id"].string_param, metadata
checked.append("typed contents")

# Errors: the status code and a message naming what is wrong.
try:
    client.infer("nothing", [grpc.InferInput("x", [1], "FP32")])
    raise SystemExit("an unknown model answered")
except InferenceServerException as e:
    assert e.status() == "StatusCode.NOT_FOUND" and "`nothing` is not served" in e.message(), (e.status(), e.message())
wrong = grpc.InferInput("features", [1, 4], "FP64")
wrong.set_data_from_numpy(np.zeros((1, 4)))
try:
    client.infer("forest", [wrong])
    raise SystemExit("FP64 was accepted")
except InferenceServerException as e:
    assert e.status() == "StatusCode.INVALID_ARGUMENT" and "FP32" in e.message(), (e.status(), e.message())
checked.append("errors")
print(json.dumps({"checked": checked, "trace": trace}))
"#;

#[test]
fn tritonclient_grpc_gets_onnxruntimes_answers_and_a_traceable_id() {
    let repo = project_with_number_models();
    let server = Server::start(&repo, &["forest", "regressor", "churn", "linear64", "counts"]);
    let fixtures = fixtures().display().to_string();
    let result = python(serve_python(), &repo, &client(TRITON_GRPC), &[&server.grpc, &fixtures]);
    assert_eq!(
        result["checked"],
        json!([
            "FP32 x1",
            "FP32 x100",
            "FP32 x10000",
            "BYTES",
            "INT64",
            "FP64 exact",
            "gzip",
            "typed contents",
            "errors"
        ])
    );
    // The trace id a gRPC answer carried finds the prediction, logged like any other.
    let trace = result["trace"].as_str().unwrap().to_owned();
    server.stop();
    let traced = repo.ok(&["trace", &trace]);
    assert!(traced.contains("forest@1") && traced.contains("grpc"), "{traced}");
}

/// Saves MLflow models with the mlflow venv: `echo`, a custom pyfunc whose `predict` doubles
/// column `x` (and kills its own process on a negative value, to test crash recovery), the
/// same with a requirement no index has (`broken`), and a Keras-only model with no
/// python_function flavor (`keras-only`).
const PYFUNC_MODELS: &str = r#"
import json, os, sys
import pandas as pd
import mlflow.pyfunc

class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        if (model_input["x"] < 0).any():
            os._exit(3)
        return model_input["x"].to_numpy() * 2

root = sys.argv[1]
example = pd.DataFrame({"x": [1.0, 2.0]})
mlflow.pyfunc.save_model(f"{root}/echo", python_model=Doubler(), input_example=example)
mlflow.pyfunc.save_model(f"{root}/broken", python_model=Doubler(), input_example=example,
                         pip_requirements=["cairn-no-such-package-anywhere==0.0.1"])
os.makedirs(f"{root}/keras-only")
open(f"{root}/keras-only/MLmodel", "w").write("flavors:\n  keras: {keras_version: 3.0}\n")
print(json.dumps({"saved": True}))
"#;

fn pyfunc_project() -> TestRepo {
    let repo = project();
    python(mlflow_python(), &repo, PYFUNC_MODELS, &[repo.path("models").to_str().unwrap()]);
    for name in ["echo", "broken"] {
        repo.ok(&["model", "register", name, &format!("models/{name}")]);
        repo.ok(&["model", "alias", &format!("{name}@1"), "production"]);
    }
    repo
}

/// Polls a model's readiness until it is ready or `limit` passes; the last answer.
fn wait_ready(addr: &str, model: &str, limit: Duration) -> Reply {
    let deadline = Instant::now() + limit;
    loop {
        let reply = http(addr, "GET", &format!("/v2/models/{model}/ready"), &[], b"");
        let starting =
            reply.json()["reason"].as_str().is_some_and(|r| r.starts_with(&format!("{model}@1: starting")));
        if reply.status == 200 || !starting || Instant::now() > deadline {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_custom_pyfunc_model_is_served_by_python_workers_that_are_restarted_when_they_crash() {
    let repo = pyfunc_project();
    let python = mlflow_python();
    let server = Server::start(
        &repo,
        &[
            "echo@production",
            "--env-manager",
            "local",
            "--python",
            python.to_str().unwrap(),
            "--sessions",
            "2",
            "--batch-max",
            "16",
        ],
    );
    let addr = &server.addr;
    let ready = wait_ready(addr, "echo", Duration::from_secs(120));
    assert_eq!(ready.status, 200, "{}", ready.text());
    // MLflow's scoring answer for a model that returns an array, and the other protocols.
    let mlflow =
        post(addr, "/invocations", &json!({"dataframe_split": {"columns": ["x"], "data": [[1.5], [4]]}}));
    assert_eq!(mlflow.json(), json!({"predictions": [3.0, 8.0]}), "{}", mlflow.text());
    let native = post(addr, "/models/echo/predict", &json!({"inputs": {"x": 21}}));
    assert_eq!(native.json()["outputs"]["predictions"], 42.0, "{}", native.text());
    let v2 = post(
        addr,
        "/v2/models/echo/infer",
        &json!({"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]}]}),
    );
    assert_eq!(v2.json()["outputs"][0]["data"], json!([2.0, 4.0, 6.0]), "{}", v2.text());
    let metadata = http(addr, "GET", "/v2/models/echo", &[], b"").json();
    assert_eq!(metadata["platform"], "mlflow");
    assert_eq!(metadata["inputs"][0]["name"], "x");

    // A worker that dies answers an error that says so; it is replaced, and the next
    // requests are answered.
    let crashed = post(addr, "/invocations", &json!({"dataframe_split": {"columns": ["x"], "data": [[-1]]}}));
    assert_eq!(crashed.status, 500, "{}", crashed.text());
    assert!(
        crashed.text().contains("worker died") && crashed.text().contains("restarted"),
        "{}",
        crashed.text()
    );
    for i in 0..6 {
        let again =
            post(addr, "/invocations", &json!({"dataframe_split": {"columns": ["x"], "data": [[i]]}}));
        assert_eq!(again.json(), json!({"predictions": [2.0 * f64::from(i)]}), "{}", again.text());
    }
    assert_eq!(http(addr, "GET", "/v2/models/echo/ready", &[], b"").status, 200);

    // Batched: concurrent clients each get their own rows back.
    let clients: Vec<_> = (0..8)
        .map(|k| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let x = f64::from(k * 10 + i);
                    let reply = post(&addr, "/models/echo/predict", &json!({"inputs": {"x": x}}));
                    assert_eq!(reply.json()["outputs"]["predictions"], 2.0 * x, "{}", reply.text());
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn uninstallable_requirements_are_a_clear_not_ready_reason_and_other_models_serve() {
    let repo = pyfunc_project();
    let envs = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &repo,
        &["broken@production", "regressor@production"],
        &[("CAIRN_PYTHON_ENVS", envs.path())],
    );
    let addr = &server.addr;
    let served =
        post(addr, "/models/regressor/predict", &json!({"inputs": {"features": [0.1, 0.2, 0.3, 0.4]}}));
    assert_eq!(
        served.status,
        200,
        "the ONNX model serves while the other's environment builds: {}",
        served.text()
    );
    let broken = wait_ready(addr, "broken", Duration::from_secs(300));
    assert_eq!(broken.status, 503, "{}", broken.text());
    let reason = broken.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("requirements") && reason.contains("cairn-no-such-package-anywhere"), "{reason}");
    assert!(reason.contains("--env-manager local"), "the reason names a fix: {reason}");
    let refused = post(
        addr,
        "/invocations?model=broken",
        &json!({"dataframe_split": {"columns": ["x"], "data": [[1]]}}),
    );
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(http(addr, "GET", "/v2/models/regressor/ready", &[], b"").status, 200);
    // No half-built environment is left behind.
    let left: Vec<_> = std::fs::read_dir(envs.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_mlflow_model_no_python_can_load_is_refused_at_registration() {
    let repo = pyfunc_project();
    let err = repo.fail(1, &["model", "register", "keras", "models/keras-only"]);
    assert!(err.contains("no python_function flavor") && err.contains("keras"), "{err}");
    assert!(repo.json(&["model", "list", "--json"]).to_string().contains("echo"));
    assert!(!repo.json(&["model", "list", "--json"]).to_string().contains("keras"));
}

#[test]
fn a_planted_link_cannot_carry_laid_out_model_files_out_of_the_repository() {
    let repo = pyfunc_project();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path(".cairn/serve")).unwrap();
    let output = repo
        .command(&["serve", "--port", "0", "echo@production"])
        .env("CAIRN_ONNXRUNTIME", onnxruntime_library())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(".cairn/serve"), "{stderr}");
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing was written outside");
}
