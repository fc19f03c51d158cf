//! The MLflow-compatible tracking server, driven by the real `mlflow` Python client: against
//! `cairn server`, and from inside a `cairn run` stage.
#![allow(clippy::unwrap_used)]

use crate::common;

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
        Server::start_with(repo, &[])
    }

    fn start_with(repo: &TestRepo, args: &[&str]) -> Server {
        let mut child = repo
            .command(&[&["server", "--port", "0"], args].concat())
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
    import pandas as pd
    mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame({"x": [1, 2]}), name="churn-train"), context="training")

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
# Experiments ordered by their own attributes, and their tags removed, as against mlflow server.
mlflow.set_experiment("zeta")
by_name = [e.name for e in client.search_experiments(order_by=["name DESC"])]
by_update = [e.name for e in client.search_experiments(order_by=["last_update_time DESC", "name"])]
client.set_experiment_tag(experiment.experiment_id, "stage", "dev")
client.delete_experiment_tag(experiment.experiment_id, "stage")
tags_after_delete = client.get_experiment(experiment.experiment_id).tags
import urllib.request
by_dataset = [x.info.run_id for x in client.search_runs([experiment.experiment_id], "datasets.name = 'churn-train' AND datasets.context = 'training'")]
health = urllib.request.urlopen(os.environ["MLFLOW_TRACKING_URI"] + "/health").read().decode()
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds
server_version = str(RestStore._get_server_version(MlflowHostCreds(os.environ["MLFLOW_TRACKING_URI"])))
print(json.dumps({
    "by_name": by_name,
    "by_update": by_update,
    "tags_after_delete": tags_after_delete,
    "health": health,
    "server_version": server_version,
    "by_dataset": by_dataset,
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
    assert_eq!(out["by_name"], serde_json::json!(["zeta", "demo", "Default"]));
    assert_eq!(out["by_update"].as_array().unwrap().len(), 3);
    assert_eq!(out["tags_after_delete"], serde_json::json!({}));
    assert_eq!(out["health"], "OK");
    // The client parses /version to decide which features the server has.
    assert!(out["server_version"].as_str().unwrap().starts_with("3.3.0+cairn."), "{}", out["server_version"]);
    assert_eq!(out["by_dataset"], serde_json::json!([out["first"]]), "runs are searched by their datasets");

    // The same store backs `cairn exp show`.
    let shown = repo.json(&["exp", "show", "--json"]);
    let first = out["first"].as_str().unwrap();
    let run =
        shown.as_array().unwrap().iter().find(|r| r["run_id"] == first).expect("exp show lists the run");
    assert_eq!(run["params"]["lr"], "0.01");
    assert_eq!(run["metrics"]["acc"], 0.93);
    // The artifact is a verified object in the cache, which gc keeps.
    assert!(!repo.objects().is_empty());
    let gc = repo.json(&["gc", "--json"]);
    assert_eq!(gc["unreferenced_objects"], 0, "{gc}");
}

#[test]
fn mlflow_calls_in_a_stage_attach_to_the_cairn_run() {
    let repo = TestRepo::new();
    let interpreter = mlflow_python();
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
print("training done")
open("model.bin", "w").write(run.info.run_id)
"#,
    );
    repo.write(
        "cairn.yaml",
        format!(
            "stages:\n  train:\n    cmd: {} train.py\n    deps: [train.py]\n    params: [train.lr]\n    outs: [model.bin]\n",
            interpreter.display()
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

    // The stage's log is an artifact of the run, readable with the mlflow client.
    let server = Server::start(&repo);
    let script = format!(
        r#"
import json, tempfile
from mlflow import MlflowClient
path = MlflowClient().download_artifacts("{run_id}", "logs/train.log", tempfile.mkdtemp())
print(json.dumps({{"log": open(path).read()}}))
"#
    );
    let out = python(&repo, &script, &server.url);
    assert!(out["log"].as_str().unwrap().contains("training done"), "{out}");
    assert_eq!(recorded["stages"][0]["log"], "logs/train.log");
}

#[test]
fn step_metrics_appended_by_a_stage_are_recorded_while_it_runs_and_plotted() {
    let repo = TestRepo::new();
    // The stage writes step 0, then waits until `cairn exp show` (another process) sees it:
    // the metric is recorded while the stage is still running.
    repo.write(
        "train.sh",
        format!(
            r#"echo '{{"step": 0, "loss": 1.0}}' >> "$CAIRN_METRICS_FILE"
for i in $(seq 1 100); do
  if {cairn} exp show --json -n 1 | grep -q '"loss"'; then echo seen > seen.txt; break; fi
  sleep 0.1
done
for i in 1 2 3 4; do
  awk -v i=$i 'BEGIN {{ printf "{{\"step\": %d, \"loss\": %g, \"acc\": %g}}\n", i, 1 / (i + 1), i / 10 }}' >> "$CAIRN_METRICS_FILE"
done
echo 'not json' >> "$CAIRN_METRICS_FILE"
test -f seen.txt
"#,
            cairn = common::cairn_bin()
        ),
    );
    repo.write(
        "cairn.yaml",
        "stages:\n  train:\n    cmd: sh train.sh\n    deps: [train.sh]\n    outs: [seen.txt]\n",
    );
    let run = repo.json(&["run", "--json"]);
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(String::from_utf8(repo.read("seen.txt")).unwrap(), "seen\n", "the metric was visible mid-run");
    let shown = repo.json(&["exp", "show", "--json"]);
    let recorded = &shown[0];
    assert_eq!(recorded["run_id"], run_id.as_str());
    assert_eq!(recorded["metrics"]["loss"], 0.2, "the latest loss is step 4's");

    let summary = repo.ok(&["plots", "show", &run_id[..8], "-o", "plots.html"]);
    assert!(summary.contains("loss") && summary.contains("5 pts"), "{summary}");
    assert!(summary.contains("acc") && summary.contains("4 pts"), "{summary}");
    let html = String::from_utf8(repo.read("plots.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert_eq!(html.matches("<svg").count(), 2, "one chart per metric");
    assert!(html.contains("<polyline") && !html.contains("<script"), "self-contained SVG, no scripts");
    let err = repo.fail(1, &["plots", "show", &run_id[..8], "-m", "nope"]);
    assert!(err.contains("none of the metrics nope"), "{err}");
}

#[test]
fn the_mlflow_registry_client_works_and_policies_hold() {
    let repo = TestRepo::new();
    let server = Server::start(&repo);
    let script = r#"
import json, os, tempfile, mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
with mlflow.start_run() as run:
    mlflow.log_metric("accuracy", 0.85)
    d = tempfile.mkdtemp()
    os.makedirs(d + "/model")
    open(d + "/model/model.onnx", "wb").write(b"weights")
    mlflow.log_artifacts(d + "/model", artifact_path="model")
c = MlflowClient()
c.create_registered_model("churn", description="churn model", tags={"owner": "ml-team"})
v = c.create_model_version("churn", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
again = c.create_model_version("churn", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
c.set_registered_model_alias("churn", "champion", v.version)
c.set_registered_model_tag("churn", "team", "growth")
c.set_model_version_tag("churn", v.version, "validated", "yes")
c.set_model_version_tag("churn", v.version, "temporary", "x")
c.delete_model_version_tag("churn", v.version, "temporary")
found = c.search_registered_models(filter_string="name LIKE 'ch%'")
# Stages are aliases: Staging moves `staging` to the version, None takes it off.
staged = c.transition_model_version_stage("churn", v.version, "Staging")
staging_alias = c.get_model_version_by_alias("churn", "staging").version
unstaged = c.transition_model_version_stage("churn", v.version, "None")
def code(call):
    try:
        call()
        return "ok"
    except MlflowException as e:
        return e.error_code
print(json.dumps({
    "run_id": run.info.run_id,
    "version": v.version,
    "again": again.version,
    "by_alias": c.get_model_version_by_alias("churn", "champion").version,
    "models": [m.name for m in found],
    "aliases": found[0].aliases,
    "versions": [x.version for x in c.search_model_versions("name='churn'")],
    "model_tags": c.get_registered_model("churn").tags,
    "version_tags": c.get_model_version("churn", v.version).tags,
    "delete_version": code(lambda: c.delete_model_version("churn", v.version)),
    "missing": code(lambda: c.get_registered_model("nope")),
    "duplicate": code(lambda: c.create_registered_model("churn")),
    "staged": staged.current_stage,
    "staging_alias": staging_alias,
    "unstaged": unstaged.current_stage,
    "unstaged_aliases": list(c.get_model_version("churn", v.version).aliases),
    "bad_stage": code(lambda: c.transition_model_version_stage("churn", v.version, "Shipped")),
}))
"#;
    let out = python(&repo, script, &server.url);
    assert_eq!(out["version"], "1");
    assert_eq!(out["again"], "1", "the same content is the same version");
    assert_eq!(out["by_alias"], "1");
    assert_eq!(out["models"], serde_json::json!(["churn"]));
    assert_eq!(out["aliases"], serde_json::json!({"champion": "1"}));
    assert_eq!(out["versions"], serde_json::json!(["1"]));
    assert_eq!(
        out["model_tags"],
        serde_json::json!({"owner": "ml-team", "team": "growth"}),
        "tags given at creation stay"
    );
    assert_eq!(out["version_tags"], serde_json::json!({"validated": "yes"}));
    assert_eq!(out["delete_version"], "INVALID_PARAMETER_VALUE", "versions are immutable");
    assert_eq!(out["missing"], "RESOURCE_DOES_NOT_EXIST");
    assert_eq!(out["duplicate"], "RESOURCE_ALREADY_EXISTS");
    assert_eq!(out["staged"], "Staging");
    assert_eq!(out["staging_alias"], "1");
    assert_eq!(out["unstaged"], "None");
    assert_eq!(out["unstaged_aliases"], serde_json::json!(["champion"]));
    assert_eq!(out["bad_stage"], "INVALID_PARAMETER_VALUE");

    // The CLI sees the same registry, with the run's lineage; a policy binds REST clients too.
    let shown = repo.json(&["model", "show", "churn@champion", "--json"]);
    assert_eq!(shown["run_id"], out["run_id"]);
    assert_eq!(shown["lineage"]["metrics"]["accuracy"], 0.85);
    repo.ok(&["model", "policy", "churn", "production", "--require", "accuracy >= 0.9"]);
    let refused = python(
        &repo,
        r#"
import json
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
try:
    MlflowClient().set_registered_model_alias("churn", "production", "1")
    print(json.dumps({"code": "ok"}))
except MlflowException as e:
    print(json.dumps({"code": e.error_code, "message": e.message}))
"#,
        &server.url,
    );
    assert_eq!(refused["code"], "INVALID_PARAMETER_VALUE");
    assert!(refused["message"].as_str().unwrap().contains("accuracy >= 0.9"), "{refused}");
}

/// An unchanged MLflow 3 training script: `log_model` with `registered_model_name`, an alias,
/// `pyfunc.load_model("models:/name@alias")`, registration from `runs:/` and `models:/<id>`,
/// and the logged-model API itself (get, tags, search with filters and order).
const LOG_MODEL: &str = r#"
import json
import numpy as np
import pandas as pd
import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.exceptions import MlflowException
from sklearn.linear_model import LogisticRegression

X = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1], [0.4, 0.6], [0.7, 0.2]])
y = np.array([0, 1, 0, 1, 0, 1])
mlflow.set_experiment("churn")
with mlflow.start_run(run_name="train") as run:
    mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame(X, columns=["a", "b"]), name="churn-train"), context="training")
    model = LogisticRegression(C=0.5).fit(X, y)
    mlflow.log_param("C", 0.5)
    mlflow.log_metric("accuracy", float(model.score(X, y)))
    info = mlflow.sklearn.log_model(model, name="model", registered_model_name="churn", input_example=X[:2])
    weak = mlflow.pyfunc.log_model(name="weak", python_model=mlflow.pyfunc.PythonModel())
client = MlflowClient()
# A metric measured for the model on a dataset.
client.log_metric(run.info.run_id, "auc", 0.75, model_id=info.model_id, dataset_name="holdout", dataset_digest="d1")
client.set_registered_model_alias("churn", "champion", info.registered_model_version)
loaded = mlflow.pyfunc.load_model("models:/churn@champion")
from_run = mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn-from-run")
by_id = mlflow.register_model(f"models:/{info.model_id}", "churn-from-id")
client.set_logged_model_tags(info.model_id, {"reviewed": "yes", "temporary": "x"})
client.delete_logged_model_tag(info.model_id, "temporary")
logged = client.get_logged_model(info.model_id)
experiment = run.info.experiment_id
def ids(**kwargs):
    return [m.model_id for m in client.search_logged_models([experiment], **kwargs)]
def code(call):
    try:
        call()
        return "ok"
    except MlflowException as e:
        return e.error_code
r = client.get_run(run.info.run_id)
client.create_registered_model("external")
# A model no Python process can load (no python_function flavor), registered as MLflow allows.
import os, tempfile
keras = tempfile.mkdtemp()
open(os.path.join(keras, "MLmodel"), "w").write("flavors:\n  keras: {keras_version: 3.0}\n")
with mlflow.start_run() as other:
    mlflow.log_artifacts(keras, artifact_path="keras")
client.create_registered_model("keras-only")
client.create_model_version("keras-only", f"{other.info.artifact_uri}/keras", run_id=other.info.run_id)
print(json.dumps({
    "rows": X.tolist(),
    "model_id": info.model_id,
    "weak_id": weak.model_id,
    "run_id": run.info.run_id,
    "status": str(logged.status),
    "name": logged.name,
    "source_run": logged.source_run_id,
    "artifact_location": logged.artifact_location,
    "params": logged.params,
    "tags": {k: v for k, v in logged.tags.items() if not k.startswith("mlflow.")},
    "metrics": sorted([m.key, m.value, m.dataset_name] for m in logged.metrics),
    "version": info.registered_model_version,
    "predicted": loaded.predict(X).tolist(),
    "expected": model.predict(X).tolist(),
    "from_run": [from_run.version, from_run.source],
    "by_id": [by_id.version, by_id.source],
    "by_filter": ids(filter_string="params.C = '0.5' AND metrics.accuracy > 0.5 AND tags.reviewed = 'yes'"),
    "by_name": ids(filter_string="name = 'weak'"),
    "by_status": ids(filter_string="status = 'READY' AND source_run_id = '" + run.info.run_id + "'"),
    "on_holdout": ids(datasets=[{"dataset_name": "holdout"}]),
    "newest_first": ids(),
    "by_name_order": ids(order_by=[{"field_name": "name", "ascending": False}]),
    "paged": len(client.search_logged_models([experiment], max_results=1)),
    "bad_filter": code(lambda: ids(filter_string="colour = 'red'")),
    "missing": code(lambda: client.get_logged_model("m-" + "0" * 32)),
    "outputs": sorted(o.model_id for o in r.outputs.model_outputs),
    "history": len(client.get_metric_history(run.info.run_id, "accuracy")),
    "deleted": code(lambda: client.delete_logged_model(weak.model_id)),
    "after_delete": ids(),
    "unknown_run_version": code(lambda: client.create_model_version("external", "s3://elsewhere/model", run_id="f" * 32)),
}))
"#;

#[test]
fn mlflow_3_logged_models_register_load_and_search() {
    let repo = TestRepo::new();
    let server = Server::start(&repo);
    let out = python(&repo, LOG_MODEL, &server.url);
    let model_id = out["model_id"].as_str().unwrap();
    let run_id = out["run_id"].as_str().unwrap();
    assert!(model_id.starts_with("m-"), "{out}");
    assert_eq!(out["status"], "READY", "log_model finalizes the model once its files are up");
    assert_eq!(out["name"], "model");
    assert_eq!(out["source_run"], run_id);
    assert!(
        out["artifact_location"].as_str().unwrap().ends_with(&format!("/models/{model_id}/artifacts")),
        "{out}"
    );
    assert_eq!(out["params"], serde_json::json!({"C": "0.5"}), "the run's params become the model's");
    assert_eq!(out["tags"], serde_json::json!({"reviewed": "yes"}));
    assert_eq!(out["metrics"], serde_json::json!([["accuracy", 1.0, null], ["auc", 0.75, "holdout"]]));
    assert_eq!(out["version"], "1");
    assert_eq!(out["predicted"], out["expected"], "the registered model loads by alias and predicts");
    assert_eq!(out["from_run"], serde_json::json!(["1", format!("models:/{model_id}")]));
    assert_eq!(out["by_id"], serde_json::json!(["1", format!("models:/{model_id}")]));
    assert_eq!(out["by_filter"], serde_json::json!([model_id]));
    assert_eq!(out["by_name"], serde_json::json!([out["weak_id"]]));
    assert_eq!(out["by_status"], serde_json::json!([out["weak_id"], model_id]));
    assert_eq!(out["on_holdout"], serde_json::json!([model_id]));
    assert_eq!(out["newest_first"], serde_json::json!([out["weak_id"], model_id]));
    assert_eq!(out["by_name_order"], serde_json::json!([out["weak_id"], model_id]));
    assert_eq!(out["paged"], 1);
    assert_eq!(out["bad_filter"], "INVALID_PARAMETER_VALUE");
    assert_eq!(out["missing"], "RESOURCE_DOES_NOT_EXIST");
    let mut outputs = vec![model_id, out["weak_id"].as_str().unwrap()];
    outputs.sort();
    assert_eq!(out["outputs"], serde_json::json!(outputs), "the run records the models it produced");
    assert_eq!(out["history"], 1, "re-logging the run's metric for the model does not repeat it");
    assert_eq!(out["deleted"], "ok");
    assert_eq!(out["after_delete"], serde_json::json!([model_id]));
    assert_eq!(out["unknown_run_version"], "ok", "MLflow accepts a run it does not know");

    // The registered version is the logged model's content, with its run's lineage.
    let shown = repo.json(&["model", "show", "churn@champion", "--json"]);
    assert_eq!(shown["run_id"], run_id);
    assert_eq!(shown["lineage"]["params"]["C"], "0.5");
    assert_eq!(shown["lineage"]["metrics"]["accuracy"], 1.0);
    assert_eq!(shown["lineage"]["datasets"][0]["name"], "churn-train");
    assert_eq!(shown["lineage"]["logged_model"]["model_id"], model_id);
    assert_eq!(shown["lineage"]["logged_model"]["digest"], shown["digest"], "{shown}");
    let from_run = repo.json(&["model", "show", "churn-from-run@1", "--json"]);
    assert_eq!(from_run["digest"], shown["digest"], "one model, one content, however it was registered");
    assert_eq!(shown["runtime"], "mlflow");
    assert_eq!(shown["signature"]["inputs"][0]["dtype"], "float64", "the signature comes from MLmodel");

    // The onnx flavor logs, registers and loads back the same way.
    let onnx = python(
        &repo,
        r#"
import json, mlflow, mlflow.onnx
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
mlflow.set_experiment("churn")
with mlflow.start_run():
    info = mlflow.onnx.log_model(model, name="identity", registered_model_name="identity")
loaded = mlflow.onnx.load_model(f"models:/identity/{info.registered_model_version}")
print(json.dumps({"ops": [n.op_type for n in loaded.graph.node], "flavors": sorted(mlflow.models.get_model_info(info.model_uri).flavors)}))
"#,
        &server.url,
    );
    assert_eq!(onnx["ops"], serde_json::json!(["Identity"]), "{onnx}");
    assert!(onnx["flavors"].as_array().unwrap().iter().any(|f| f == "onnx"), "{onnx}");

    // `cairn serve` runs it in an environment built from its requirements.txt (kept under
    // target/test-tools, so later runs reuse it), and answers as pyfunc.load_model did.
    let envs = common::tools::tools_dir().join("python-envs");
    let serve = Serve::start(&repo, &["churn@champion"], &envs);
    let ready = serve.wait_ready("churn", std::time::Duration::from_secs(600));
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let answer = serve.post("/invocations", &serde_json::json!({"inputs": out["rows"]}));
    assert_eq!(answer["predictions"], out["expected"], "{answer}");
    let trace = serve.post("/models/churn/predict", &serde_json::json!({"inputs": {"input": [0.9, 0.1]}}));
    let traced = repo.ok(&["trace", trace["trace_id"].as_str().unwrap()]);
    assert!(traced.contains(run_id) && traced.contains("C=0.5"), "{traced}");
    drop(serve);

    // A version no runtime here can run is refused when the server starts, with the reason.
    let refused = repo
        .command(&["serve", "--port", "0", "keras-only"])
        .env("CAIRN_ONNXRUNTIME", common::tools::onnxruntime_library())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("keras-only@1 cannot be served") && stderr.contains("python_function"),
        "{stderr}"
    );
}

/// `cairn serve ... --port 0` with Python environments under `envs`, killed when dropped.
struct Serve {
    child: Child,
    url: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Serve {
    fn start(repo: &TestRepo, targets: &[&str], envs: &std::path::Path) -> Serve {
        let mut child = repo
            .command(&[&["serve", "--port", "0"], targets].concat())
            .env("CAIRN_ONNXRUNTIME", common::tools::onnxruntime_library())
            .env("CAIRN_PYTHON_ENVS", envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn serve starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with("http://127.0.0.1:"), "cairn serve printed {line:?}");
        Serve { child, url: line.trim().to_owned(), _stdout: stdout }
    }

    fn get(&self, path: &str) -> String {
        let output = Command::new("curl").args(["-s", &format!("{}{path}", self.url)]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let output = Command::new("curl")
            .args([
                "-s",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body.to_string(),
                &format!("{}{path}", self.url),
            ])
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
    }

    /// Polls readiness while the model is starting; the last answer.
    fn wait_ready(&self, model: &str, limit: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let answer = self.get(&format!("/v2/models/{model}/ready"));
            if !answer.contains("starting") || std::time::Instant::now() > deadline {
                return answer;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mlflow server` from the mlflow venv on a free port, with a SQLite store in `dir`, stopped
/// when dropped.
struct MlflowServer {
    child: Child,
    url: String,
}

impl MlflowServer {
    fn start(dir: &std::path::Path) -> MlflowServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mlflow = mlflow_python().with_file_name("mlflow");
        let child = Command::new(mlflow)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.sqlite").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mlflow server starts");
        let server = MlflowServer { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mlflow server did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        server
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What autolog records for one `fit`: run params, run metrics, the logged model with its
/// params and metrics, the run's outputs and artifacts.
const AUTOLOG: &str = r#"
import json, sys
import numpy as np
import mlflow
from mlflow import MlflowClient
from sklearn.ensemble import RandomForestClassifier

X = np.random.RandomState(0).rand(40, 3)
y = (X[:, 0] > 0.5).astype(int)
out = {}
for kind in ["sklearn", "generic"]:
    mlflow.set_experiment("autolog-" + kind)
    (mlflow.sklearn.autolog if kind == "sklearn" else mlflow.autolog)()
    with mlflow.start_run() as run:
        RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(X, y)
    client = MlflowClient()
    r = client.get_run(run.info.run_id)
    models = client.search_logged_models([run.info.experiment_id])
    out[kind] = {
        "params": r.data.params,
        "metrics": sorted(r.data.metrics),
        "models": [[m.name, str(m.status), m.source_run_id == run.info.run_id, sorted(m.params), sorted(x.key for x in m.metrics)] for m in models],
        "outputs": [o.model_id for o in r.outputs.model_outputs] == [m.model_id for m in models],
        "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        "model_files": sorted(a.path for a in mlflow.artifacts.list_artifacts(f"models:/{models[0].model_id}")) if models else [],
    }
    mlflow.autolog(disable=True)
print(json.dumps(out))
"#;

#[test]
fn autolog_records_what_it_records_against_mlflow_server() {
    let repo = TestRepo::new();
    let server = Server::start(&repo);
    let scratch = tempfile::tempdir().unwrap();
    let reference = MlflowServer::start(scratch.path());
    let expected = python(&repo, AUTOLOG, &reference.url);
    let got = python(&repo, AUTOLOG, &server.url);
    for kind in ["sklearn", "generic"] {
        let run = &got[kind];
        assert!(run["params"]["n_estimators"] == "5", "autolog logged no params: {run}");
        assert!(
            run["metrics"].as_array().unwrap().iter().any(|m| m == "training_accuracy_score"),
            "no metrics: {run}"
        );
        assert_eq!(run["models"].as_array().unwrap().len(), 1, "no model: {run}");
        assert!(run["model_files"].as_array().unwrap().iter().any(|f| f == "MLmodel"), "{run}");
        assert_eq!(run, &expected[kind], "{kind} autolog differs from mlflow server's");
    }
}

/// The `mlflow` client's script for the auth test: one run, or the error it got.
const LOG_ONE_RUN: &str = r#"
import json, mlflow
from mlflow.exceptions import MlflowException
try:
    mlflow.set_experiment("auth-demo")
    with mlflow.start_run() as run:
        mlflow.log_metric("acc", 0.9)
    print(json.dumps({"run": run.info.run_id}))
except MlflowException as e:
    print(json.dumps({"error": str(e)}))
"#;

/// Runs [`LOG_ONE_RUN`] with these extra environment variables.
fn log_one_run(repo: &TestRepo, url: &str, env: &[(&str, &str)]) -> Value {
    repo.write("auth_client.py", LOG_ONE_RUN);
    let mut command = Command::new(mlflow_python());
    command
        .arg(repo.path("auth_client.py"))
        .env("MLFLOW_TRACKING_URI", url)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .current_dir(&repo.root);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_mlflow_client_authenticates_with_a_token_or_basic_credentials() {
    let repo = TestRepo::new();
    // No default user: --auth refuses to start until an admin exists.
    let err = repo.fail(1, &["server", "--port", "0", "--auth"]);
    assert!(err.contains("--auth needs a user") && err.contains("cairn user add"), "{err}");
    repo.ok(&["user", "add", "alice", "--admin"]);
    repo.ok(&["user", "add", "nightly", "--service"]);
    let token = repo.ok(&["token", "create", "laptop", "--user", "alice", "-q"]).trim().to_owned();
    assert!(token.starts_with("cairn_"));
    let listed = repo.json(&["token", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&token[23..]), "a listing never shows a secret");

    let server = Server::start_with(&repo, &["--auth"]);
    let url = server.url.as_str();
    // Health stays open (load balancers); everything else needs a token.
    let health = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("{url}/health")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "200");
    let refused = log_one_run(&repo, url, &[]);
    let message = refused["error"].as_str().expect("no token is refused");
    assert!(message.contains("UNAUTHENTICATED") && message.contains("MLFLOW_TRACKING_TOKEN"), "{message}");

    // MLFLOW_TRACKING_TOKEN (Bearer) and MLFLOW_TRACKING_USERNAME/PASSWORD (Basic) both work.
    let by_token = log_one_run(&repo, url, &[("MLFLOW_TRACKING_TOKEN", &token)]);
    assert!(by_token["run"].is_string(), "{by_token}");
    let by_basic = log_one_run(
        &repo,
        url,
        &[("MLFLOW_TRACKING_USERNAME", "alice"), ("MLFLOW_TRACKING_PASSWORD", &token)],
    );
    assert!(by_basic["run"].is_string(), "{by_basic}");
    let wrong_user = log_one_run(
        &repo,
        url,
        &[("MLFLOW_TRACKING_USERNAME", "nightly"), ("MLFLOW_TRACKING_PASSWORD", &token)],
    );
    assert!(wrong_user["error"].as_str().unwrap().contains("does not belong"), "{wrong_user}");
    // A token that expires: valid until then, refused after.
    let created = std::time::Instant::now();
    let bot =
        repo.ok(&["token", "create", "ci", "--user", "nightly", "--expires", "8s", "-q"]).trim().to_owned();
    let ran = log_one_run(&repo, url, &[("MLFLOW_TRACKING_TOKEN", &bot)]);
    assert!(ran["run"].is_string(), "{ran}");
    std::thread::sleep(std::time::Duration::from_millis(8_200).saturating_sub(created.elapsed()));

    // An expired token and a revoked one authenticate nobody.
    let expired = log_one_run(&repo, url, &[("MLFLOW_TRACKING_TOKEN", &bot)]);
    assert!(expired["error"].as_str().unwrap().contains("expired or revoked"), "{expired}");
    let id = listed.as_array().unwrap().iter().find(|t| t["name"] == "laptop").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    repo.ok(&["token", "revoke", &id]);
    let revoked = log_one_run(&repo, url, &[("MLFLOW_TRACKING_TOKEN", &token)]);
    assert!(revoked["error"].as_str().unwrap().contains("expired or revoked"), "{revoked}");
    // Every write is in the audit log: who, from where, what, with which outcome; refused
    // requests never reached it.
    let audit = repo.json(&["audit", "--user", "alice", "--json"]);
    let audit = audit.as_array().unwrap();
    let created: Vec<&Value> =
        audit.iter().filter(|e| e["path"].as_str().unwrap().ends_with("/runs/create")).collect();
    assert_eq!(created.len(), 2, "two runs created as alice: {audit:?}");
    assert!(
        created
            .iter()
            .all(|e| e["status"] == 200 && e["address"].as_str().unwrap().starts_with("127.0.0.1:"))
    );
    let logged = audit.iter().find(|e| e["path"].as_str().unwrap().contains("log-")).expect("a metric write");
    assert!(logged["object"].as_str().unwrap().contains("run_id="), "{logged}");
    let bots = repo.json(&["audit", "--user", "nightly", "--json"]);
    assert!(!bots.as_array().unwrap().is_empty());
    assert!(repo.json(&["audit", "--user", "anonymous", "--json"]).as_array().unwrap().is_empty());

    // Removing a user removes their tokens.
    repo.ok(&["user", "remove", "nightly"]);
    assert!(repo.json(&["token", "list", "--user", "nightly", "--json"]).as_array().unwrap().is_empty());
}
