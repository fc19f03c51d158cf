//! The MLflow-compatible tracking server, driven by the real `mlflow` Python client: against
//! `cairn server`, and from inside a `cairn run` stage.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::TestRepo;
use common::tools::mlflow_python;
use serde_json::Value;

/// `cairn server --port 0` in `repo`, stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(repo: &TestRepo) -> Server {
        let mut child = repo
            .command(&["server", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("http://127.0.0.1:"), "cairn server printed {line:?}");
        Server { child, url: line.trim().to_owned() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python script with `mlflow` importable; returns the JSON it prints last.
fn python(repo: &TestRepo, script: &str, tracking_uri: &str) -> Value {
    repo.write("client.py", script);
    let output = Command::new(mlflow_python())
        .arg(repo.path("client.py"))
        .env("MLFLOW_TRACKING_URI", tracking_uri)
        // A wrong answer must fail the test, not be retried for minutes.
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        .current_dir(&repo.root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

const CLIENT: &str = r#"
import json, os, tempfile, threading
import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

mlflow.set_experiment("demo")
with mlflow.start_run(run_name="baseline") as run:
    mlflow.log_param("lr", 0.01)
    mlflow.log_params({"depth": 3, "optimizer": "adam"})
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"acc": 0.93, "f1": 0.9})
    mlflow.set_tag("team", "vision")
    d = tempfile.mkdtemp()
    path = os.path.join(d, "model.txt")
    with open(path, "w") as f:
        f.write("weights v1")
    mlflow.log_artifact(path)
    mlflow.log_artifact(path, artifact_path="checkpoints/best")
    first = run.info.run_id

with mlflow.start_run(run_name="worse") as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("acc", 0.71)
    second = run.info.run_id

client = MlflowClient()
# Concurrent writers to one run lose nothing.
def writer(k):
    for i in range(25):
        client.log_metric(second, "concurrent", float(i), step=k * 100 + i)
threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]

try:
    client.log_param(first, "lr", "0.5")
    changed = "accepted"
except MlflowException as e:
    changed = e.error_code
try:
    client.get_run("0" * 32)
    missing = "found"
except MlflowException as e:
    missing = e.error_code

experiment = mlflow.get_experiment_by_name("demo")
best = client.search_runs([experiment.experiment_id], "metrics.acc > 0.9 and params.lr = '0.01'")
ordered = client.search_runs([experiment.experiment_id], order_by=["metrics.acc ASC"])
paged = client.search_runs([experiment.experiment_id], max_results=1)
r = client.get_run(first)
download = client.download_artifacts(first, "checkpoints/best/model.txt", tempfile.mkdtemp())
print(json.dumps({
    "first": first,
    "status": r.info.status,
    "run_name": r.info.run_name,
    "params": r.data.params,
    "metrics": r.data.metrics,
    "team": r.data.tags.get("team"),
    "history": [[m.step, m.value] for m in client.get_metric_history(first, "loss")],
    "concurrent": len(client.get_metric_history(second, "concurrent")),
    "best": [x.info.run_id for x in best],
    "ordered": [x.info.run_id for x in ordered],
    "second": second,
    "paged": len(paged),
    "paged_token": paged.token is not None,
    "artifacts": sorted(f.path for f in client.list_artifacts(first)),
    "nested": [f.path for f in client.list_artifacts(first, "checkpoints/best")],
    "download": open(download).read(),
    "param_change": changed,
    "missing_run": missing,
}))
"#;

#[test]
fn the_mlflow_client_works_unchanged_against_cairn_server() {
    let repo = TestRepo::new();
    let server = Server::start(&repo);
    let out = python(&repo, CLIENT, &server.url);

    assert_eq!(out["status"], "FINISHED");
    assert_eq!(out["run_name"], "baseline");
    assert_eq!(out["params"], serde_json::json!({"lr": "0.01", "depth": "3", "optimizer": "adam"}));
    assert_eq!(out["metrics"]["acc"], 0.93);
    assert_eq!(out["metrics"]["loss"], 0.2, "the latest loss is the highest step's");
    assert_eq!(out["team"], "vision");
    assert_eq!(
        out["history"],
        serde_json::json!([[0, 1.0], [1, 0.5], [2, 0.3333333333333333], [3, 0.25], [4, 0.2]])
    );
    assert_eq!(out["concurrent"], 200, "8 threads × 25 points, none lost");
    assert_eq!(out["best"], serde_json::json!([out["first"]]));
    assert_eq!(out["ordered"], serde_json::json!([out["second"], out["first"]]));
    assert_eq!(out["paged"], 1);
    assert_eq!(out["paged_token"], true);
    assert_eq!(out["artifacts"], serde_json::json!(["checkpoints", "model.txt"]));
    assert_eq!(out["nested"], serde_json::json!(["checkpoints/best/model.txt"]));
    assert_eq!(out["download"], "weights v1");
    assert_eq!(out["param_change"], "INVALID_PARAMETER_VALUE");
    assert_eq!(out["missing_run"], "RESOURCE_DOES_NOT_EXIST");

    // The same store backs `cairn exp show`.
    let shown = repo.json(&["exp", "show", "--json"]);
    let first = out["first"].as_str().unwrap();
    let run =
        shown.as_array().unwrap().iter().find(|r| r["run_id"] == first).expect("exp show lists the run");
    assert_eq!(run["params"]["lr"], "0.01");
    assert_eq!(run["metrics"]["acc"], 0.93);
    // The artifact is a verified object in the cache.
    assert!(!repo.objects().is_empty());
}

#[test]
fn mlflow_calls_in_a_stage_attach_to_the_cairn_run() {
    let repo = TestRepo::new();
    let python = mlflow_python();
    repo.write("params.yaml", "train:\n  lr: 0.05\n");
    repo.write(
        "train.py",
        r#"
import os, mlflow
assert os.environ["MLFLOW_RUN_ID"] == os.environ["CAIRN_RUN_ID"]
with mlflow.start_run() as run:
    for step in range(3):
        mlflow.log_metric("train_loss", 1.0 - step / 10, step=step)
    mlflow.log_param("framework", "numpy")
    mlflow.set_tag("stage", os.environ["CAIRN_STAGE"])
open("model.bin", "w").write(run.info.run_id)
"#,
    );
    repo.write(
        "cairn.yaml",
        format!(
            "stages:\n  train:\n    cmd: {} train.py\n    deps: [train.py]\n    params: [train.lr]\n    outs: [model.bin]\n",
            python.display()
        ),
    );
    let run = repo.json(&["run", "--json"]);
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8(repo.read("model.bin")).unwrap(), run_id, "the stage saw the Cairn run");

    let shown = repo.json(&["exp", "show", "--json"]);
    let recorded = shown.as_array().unwrap().iter().find(|r| r["run_id"] == run_id.as_str()).unwrap();
    assert_eq!(recorded["status"], "FINISHED");
    assert_eq!(recorded["metrics"]["train_loss"], 0.8, "the stage's metric is on the Cairn run");
    assert_eq!(recorded["params"]["framework"], "numpy");
    assert_eq!(recorded["params"]["train.lr"], "0.05", "params files are recorded beside it");
}
