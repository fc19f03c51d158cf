//! `cairn ui` and `/api/v1`: the JSON API against a real repository, and the main flows in a
//! real browser (Debian's chromium driven by `playwright-core` from npm; `.ci/run` installs
//! both).

use crate::common;
use crate::serving::{Server, churn_training_csv, fixtures, post, wait_for_alerts};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::TestRepo;
use common::tools::tools_dir;
use serde_json::{Value, json};

/// The `playwright-core` release the flows are written against (the last that runs on the
/// Node.js 18 of Debian 12; it drives the system chromium, so it downloads no browser).
const PLAYWRIGHT: &str = "playwright-core@1.61.1";

/// A project with a two-stage pipeline whose `train` writes the churn model, three recorded
/// runs (`lr` 0.1, 0.05, 0.2; the last makes acc > 0.85 false for one), the model registered
/// from the pipeline's output with training data, and `lr` changed since (so `train` is stale).
fn project() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("data/raw.csv", churn_training_csv());
    std::fs::create_dir_all(repo.path("vendor")).unwrap();
    std::fs::copy(fixtures().join("churn.onnx"), repo.path("vendor/churn.onnx")).unwrap();
    repo.write(
        "train.py",
        r#"import json, os, shutil, sys
lr = float(sys.argv[1])
with open(os.environ["CAIRN_METRICS_FILE"], "a") as f:
    for step in range(300):
        f.write(json.dumps({"step": step, "loss": 1 / (step + 1) + lr}) + "\n")
os.makedirs("models", exist_ok=True)
shutil.copy("vendor/churn.onnx", "models/churn.onnx")
json.dump({"acc": round(1 - lr, 3)}, open("metrics.json", "w"))
"#,
    );
    repo.write(
        "cairn.yaml",
        r#"stages:
  prepare:
    cmd: mkdir -p out && cp data/raw.csv out/clean.csv
    deps: [data/raw.csv]
    outs: [out/clean.csv]
    checks:
      - {name: enough rows, file: out/clean.csv, rows: {min: 100}, columns: [age, plan]}
  train:
    cmd: python3 train.py ${lr}
    deps: [out/clean.csv, train.py, vendor/churn.onnx]
    params: [lr]
    outs: [models/churn.onnx]
    metrics: [metrics.json]
  regions:
    partitions:
      region: {static: [us, eu, asia]}
    cmd: mkdir -p ${out} && echo ${partition} > ${out}/${partition}.txt
    outs: [data/regions]
"#,
    );
    for lr in ["0.1", "0.05", "0.2"] {
        repo.write("params.yaml", format!("lr: {lr}\n"));
        repo.commit_all(&format!("lr {lr}"));
        repo.ok(&["run"]);
    }
    repo.ok(&["model", "register", "churn", "models/churn.onnx", "--training-data", "data/raw.csv"]);
    repo.ok(&["model", "alias", "churn@1", "production"]);
    // A second version, for a canary.
    std::fs::copy(fixtures().join("logistic.onnx"), repo.path("vendor/churn-v2.onnx")).unwrap();
    repo.ok(&["model", "register", "churn", "vendor/churn-v2.onnx"]);
    repo.write("params.yaml", "lr: 0.02\n");
    repo
}

/// `cairn ui --port 0`, killed when dropped.
struct Ui {
    child: Child,
    url: String,
}

impl Ui {
    fn start(repo: &TestRepo, args: &[&str]) -> Ui {
        let mut child = repo
            .command(&[&["ui", "--port", "0"], args].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        if !line.starts_with("http://127.0.0.1:") {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("cairn ui printed {line:?}\n{err}");
        }
        Ui { child, url: line.trim().to_owned() }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        request(&self.url, "GET", path, None)
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with curl (as the README's examples): the status and the JSON body.
fn request(url: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &format!("{url}{path}")]);
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "-d", &body.to_string()]);
    }
    let out = command.output().expect("curl runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// Serves the model and sends drifting traffic until the drift rule opens an alert.
fn drift_alert(repo: &TestRepo) {
    repo.write(
        "monitor.yaml",
        "evaluate_every: 300ms\nmodels:\n  churn:\n    rules:\n      - {name: inputs drifted, metric: drift_share, op: \">=\", threshold: 0.5, window: 1m, min_rows: 50}\n",
    );
    let server = Server::start(repo, &["churn@production"]);
    for i in 0..100 {
        let plan = if i % 4 == 0 { "student" } else { ["basic", "pro", "enterprise"][i % 3] };
        let body = json!({"inputs": {"age": 70 + i % 25, "tenure": (i * 11) % 73, "plan": plan}});
        assert_eq!(post(&server.addr, "/models/churn/predict", &body).status, 200);
    }
    let alerts = wait_for_alerts(repo, |a| !a.is_empty());
    assert!(!alerts.is_empty(), "no drift alert opened");
    server.stop();
}

#[test]
fn the_api_answers_what_the_cli_prints_in_one_error_shape() {
    let repo = project();
    let ui = Ui::start(&repo, &[]);

    // Runs: the same runs as `exp show --json`, a page at a time, without gaps or repeats.
    let shown = repo.json(&["exp", "show", "--json"]);
    let shown = shown.as_array().unwrap();
    let mut ids: Vec<String> = shown.iter().map(|r| r["run_id"].as_str().unwrap().to_owned()).collect();
    let (_, first) = ui.get("/api/v1/runs?max_results=1");
    assert_eq!(first["runs"][0], shown[0], "the newest run, as `exp show --json` prints it");
    let mut paged = Vec::new();
    let mut path = "/api/v1/runs?max_results=2".to_owned();
    loop {
        let (status, page) = ui.get(&path);
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 3);
        paged.extend(
            page["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_owned()),
        );
        match page["next_page_token"].as_str() {
            Some(token) => path = format!("/api/v1/runs?max_results=2&page_token={token}"),
            None => break,
        }
    }
    ids.sort();
    let mut sorted = paged.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "pages cover every run once");
    let (_, by_acc) = ui.get("/api/v1/runs?order_by=-metrics.acc");
    let accs: Vec<f64> =
        by_acc["runs"].as_array().unwrap().iter().map(|r| r["metrics"]["acc"].as_f64().unwrap()).collect();
    assert_eq!(accs, [0.95, 0.9, 0.8]);
    let (_, filtered) = ui.get("/api/v1/runs?filter=metrics.acc%20%3E%200.85");
    assert_eq!(filtered["total"], 2);
    // Pages in a metric's order too, without gaps or repeats.
    let (_, first) = ui.get("/api/v1/runs?order_by=metrics.acc&max_results=2");
    let token = first["next_page_token"].as_str().unwrap();
    let (_, second) = ui.get(&format!("/api/v1/runs?order_by=metrics.acc&max_results=2&page_token={token}"));
    let accs: Vec<f64> = [&first, &second]
        .iter()
        .flat_map(|p| p["runs"].as_array().unwrap().iter().map(|r| r["metrics"]["acc"].as_f64().unwrap()))
        .collect();
    assert_eq!(accs, [0.8, 0.9, 0.95]);
    let (_, keys) = ui.get("/api/v1/runs/keys");
    assert_eq!(keys, json!({"params": ["lr"], "metrics": ["acc", "loss"]}));

    // A metric history comes downsampled, with its extremes.
    let run = &paged[0];
    let (status, history) = ui.get(&format!("/api/v1/runs/{run}/history?key=loss&points=50"));
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["recorded"], 300);
    let points = history["points"].as_array().unwrap();
    assert!(points.len() <= 52 && points.len() >= 45, "{} points", points.len());
    let min = history["min"].as_f64().unwrap();
    assert!(points.iter().any(|p| p[1].as_f64() == Some(min)), "the minimum is kept");

    // The comparison says what differs.
    let (_, cmp) = ui.get(&format!("/api/v1/compare?runs={},{}", paged[0], paged[1]));
    let lr = cmp["params"].as_array().unwrap().iter().find(|p| p["key"] == "lr").unwrap();
    assert_eq!(lr["differs"], true, "{cmp}");

    // The graph: train is stale because lr changed, with the reason; prepare is fresh.
    let (status, graph) = ui.get("/api/v1/pipeline");
    assert_eq!(status, 200, "{graph}");
    let stage =
        |name: &str| graph["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(stage("prepare")["state"], "fresh");
    assert_eq!(stage("train")["state"], "stale");
    let reasons = stage("train")["reasons"].to_string();
    assert!(reasons.contains("param `lr`") && reasons.contains("0.2 → 0.02"), "{reasons}");
    assert_eq!(graph["edges"], json!([["prepare", "train"]]));
    // Partitions come as ranges of one state, never one element per key.
    assert_eq!(stage("regions")["parts"], json!({"total": 3, "ranges": [["us", "asia", 3, "missing"]]}));
    let positions = graph["layout"]["positions"].as_array().unwrap();
    assert!(positions[0][0].as_f64() < positions[1][0].as_f64(), "train is drawn after prepare");
    assert!(stage("train")["last"]["run_id"].is_string());
    assert_eq!(
        stage("prepare")["checks"],
        json!([{"name": "enough rows", "state": "passed", "message": null}])
    );

    // The registry and lineage, as the CLI has them.
    let (_, versions) = ui.get("/api/v1/models/churn/versions");
    assert_eq!(versions, repo.json(&["model", "versions", "churn", "--json"]));
    let (_, lineage) = ui.get("/api/v1/lineage?path=models/churn.onnx");
    assert_eq!(lineage, repo.json(&["lineage", "models/churn.onnx", "--json"]));

    // Errors: one shape, a 4xx for what the client can fix, with a hint where there is one.
    let (status, bad) = ui.get("/api/v1/runs?filter=metrics.acc%20%3E");
    assert_eq!(status, 400);
    assert!(bad["error"]["message"].as_str().unwrap().contains("invalid filter"), "{bad}");
    let (status, missing) = ui.get("/api/v1/models/nope/versions");
    assert_eq!(status, 422);
    assert_eq!(missing["error"]["hint"], "list models with `cairn model list`");
    let (status, unknown) = ui.get("/api/v1/nothing/here");
    assert_eq!((status, unknown["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, traversal) = ui.get("/api/v1/pipeline/stages/..%2F..%2Fetc/log");
    assert_eq!(status, 422, "{traversal}");
    // A stage's log planted as a link to a file outside is not served.
    let log = repo.path(".cairn/state/logs/prepare.log");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &log).unwrap();
    let (status, planted) = ui.get("/api/v1/pipeline/stages/prepare/log");
    assert_eq!(status, 422, "{planted}");
    assert!(!planted.to_string().contains("root:"), "{planted}");

    // The OpenAPI document lists every route the UI uses.
    let (_, openapi) = ui.get("/api/v1/openapi.json");
    for path in ["/api/v1/runs", "/api/v1/pipeline", "/api/v1/compare", "/api/v1/monitor/{model}"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }

    // Actions: the local user approves on loopback; a team server's UI is read-only.
    let (status, approved) = request(
        &ui.url,
        "POST",
        "/api/v1/models/churn/versions/1/approve",
        Some(&json!({"comment": "looked"})),
    );
    assert_eq!(status, 200, "{approved}");
    let shown = repo.json(&["model", "show", "churn@1", "--json"]);
    assert_eq!(shown["approvals"][0]["comment"], "looked");
    drop(ui);
    let mut server = repo
        .command(&["server", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim();
    let (status, page) = request(url, "GET", "/api/v1/runs", None);
    assert_eq!((status, page["total"].as_u64()), (200, Some(3)));
    let (status, refused) =
        request(url, "POST", "/api/v1/models/churn/aliases/staging", Some(&json!({"version": 1})));
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("READ_ONLY")), "{refused}");
    let index = Command::new("curl").args(["-s", &format!("{url}/")]).output().unwrap();
    assert!(String::from_utf8_lossy(&index.stdout).contains("/ui/app.js"), "the server mounts the UI at /");
    let _ = server.kill();
    let _ = server.wait();
}

/// Where the browser tooling lives: `playwright-core` installed on first use.
fn browser_tools() -> PathBuf {
    let dir = tools_dir().join("browser");
    // The same marker as `.ci/run`'s: the package spec installed.
    let marker = dir.join(".installed");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(PLAYWRIGHT) {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            .status()
            .expect("npm runs (install Node.js: apt-get install -y nodejs npm)");
        assert!(status.success(), "npm install {PLAYWRIGHT} failed");
        std::fs::write(&marker, PLAYWRIGHT).unwrap();
    }
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "the browser tests need chromium: apt-get install -y chromium (or CHROMIUM=/path/to/it)"
    );
    // The script imports `playwright-core`: it runs from beside the installed package.
    let script = dir.join("flows.mjs");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-ui/tests/browser/flows.mjs"), &script)
        .unwrap();
    script
}

#[test]
fn the_main_flows_work_in_a_real_browser() {
    let repo = project();
    drift_alert(&repo);
    let script = browser_tools();
    let ui = Ui::start(&repo, &[]);
    let shots = std::env::var_os("CAIRN_UI_SCREENSHOTS");
    let mut command = Command::new("node");
    command.arg(&script).arg(&ui.url).arg(repo.path("")).arg(common::cairn_bin());
    if let Some(dir) = &shots {
        command.arg(dir);
    }
    let out = command.output().expect("node runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
