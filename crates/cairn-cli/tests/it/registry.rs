//! `cairn model`: versions with signature and lineage, aliases with history, approvals and
//! policies, rollback.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::TestRepo;

fn fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cairn-model/tests/fixtures")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// A pipeline whose `train` stage writes the model (a copy of a fixture, chosen by a param)
/// and an accuracy metric.
fn project() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("params.yaml", "train:\n  kind: logistic\n  accuracy: 0.93\n");
    repo.write(
        "train.sh",
        format!(
            "kind=$(awk '/kind:/ {{print $2}}' params.yaml)\nacc=$(awk '/accuracy:/ {{print $2}}' params.yaml)\nmkdir -p models\ncp {dir}/$kind.onnx models/churn.onnx\necho \"{{\\\"accuracy\\\": $acc}}\" > metrics.json\n",
            dir = std::path::Path::new(&fixture("logistic.onnx")).parent().unwrap().display()
        ),
    );
    repo.write(
        "cairn.yaml",
        "stages:\n  train:\n    cmd: sh train.sh\n    deps: [train.sh]\n    params: [train.kind, train.accuracy]\n    outs: [models/churn.onnx]\n    metrics: [metrics.json]\n",
    );
    repo
}

#[test]
fn versions_carry_signature_and_lineage_and_aliases_obey_policies() {
    let repo = project();
    let run = repo.json(&["run", "--json"]);
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    // The model takes one [N, 4] tensor: four training columns name its columns.
    repo.write("data/train.csv", "age,tenure,plan,spend\n31,2,pro,10\n45,7,basic,3\nNA,1,basic,4\n");
    let v1 = repo.json(&[
        "model",
        "register",
        "churn",
        "models/churn.onnx",
        "--training-data",
        "data/train.csv",
        "--json",
    ]);
    assert_eq!(v1["version"], 1);
    assert!(v1["profile"].as_str().unwrap().starts_with("blake3:"), "{v1}");
    assert_eq!(v1["run_id"], run_id.as_str(), "the run that wrote this content is found by digest");
    assert_eq!(v1["signature"]["inputs"][0]["name"], "features");
    assert_eq!(
        v1["signature"]["inputs"][0]["columns"],
        serde_json::json!(["age", "tenure", "plan", "spend"])
    );
    let again = repo.json(&["model", "register", "churn", "models/churn.onnx", "--json"]);
    assert_eq!((again["version"].as_i64(), again["created"].as_bool()), (Some(1), Some(false)));

    repo.write("params.yaml", "train:\n  kind: forest\n  accuracy: 0.88\n");
    repo.ok(&["run"]);
    let v2 = repo.json(&["model", "register", "churn", "models/churn.onnx", "--json"]);
    assert_eq!(v2["version"], 2);
    let shown = repo.json(&["model", "show", "churn@2", "--json"]);
    assert_eq!(shown["lineage"]["params"]["train.kind"], "forest");
    assert_eq!(shown["lineage"]["metrics"]["accuracy"], 0.88);
    assert_eq!(shown["signature"]["outputs"][1]["name"], "probabilities");

    // production needs an approval and accuracy >= 0.9.
    repo.ok(&["model", "policy", "churn", "production", "--approvals", "1", "--require", "accuracy >= 0.9"]);
    let err = repo.fail(1, &["model", "alias", "churn@1", "production"]);
    assert!(err.contains("needs 1 approval(s)") && err.contains("did not move"), "{err}");
    repo.ok(&["model", "approve", "churn@1", "--comment", "checked the holdout report"]);
    repo.ok(&["model", "alias", "churn@1", "production", "--reason", "first release"]);
    repo.ok(&["model", "approve", "churn@2", "--comment", "looks fine"]);
    let err = repo.fail(1, &["model", "alias", "churn@2", "production"]);
    assert!(err.contains("requires accuracy >= 0.9") && err.contains("0.88"), "{err}");
    assert_eq!(repo.json(&["model", "show", "churn@production", "--json"])["version"], 1);

    // Without a policy, staging moves freely; rollback is moving it back.
    repo.ok(&["model", "alias", "churn@2", "staging", "--reason", "try the forest"]);
    repo.ok(&["model", "alias", "churn@1", "staging", "--reason", "rollback"]);
    let history = repo.json(&["model", "history", "churn", "staging", "--json"]);
    let moves: Vec<(Option<i64>, Option<i64>, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["previous"].as_i64(), m["version"].as_i64(), m["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(moves, vec![(None, Some(2), "try the forest"), (Some(2), Some(1), "rollback")]);
    // Times are ISO 8601 in JSON and human in text.
    let time = history[0]["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.as_bytes()[10] == b'T' && time.ends_with('Z'), "{time}");
    assert!(history[0]["time_ms"].as_i64().unwrap() > 1_700_000_000_000);
    let text = repo.ok(&["model", "history", "churn", "staging"]);
    assert!(text.contains(&format!("{} UTC", time[..23].replace('T', " "))), "{text}");

    let list = repo.json(&["model", "list", "--json"]);
    assert_eq!(list[0]["latest_version"], 2);
    assert_eq!(list[0]["aliases"], serde_json::json!({"production": 1, "staging": 1}));
    let text = repo.ok(&["model", "versions", "churn"]);
    assert_eq!(text.lines().count(), 2, "{text}");

    // The registered content stays in the cache through gc.
    let gc = repo.json(&["gc", "--json"]);
    assert_eq!(gc["unreferenced_objects"], 0, "{gc}");
}

#[test]
fn registry_mistakes_are_clear() {
    let repo = project();
    repo.write("notes.txt", "not a model");
    let err = repo.fail(1, &["model", "register", "churn", "notes.txt"]);
    assert!(err.contains("neither an .onnx file"), "{err}");
    repo.write("bad.onnx", "garbage that is not protobuf");
    let err = repo.fail(1, &["model", "register", "churn", "bad.onnx"]);
    assert!(err.contains("not an ONNX model"), "{err}");
    let err = repo.fail(2, &["model", "register", "../up", "bad.onnx"]);
    assert!(err.contains("invalid model name"), "{err}");
    let err = repo.fail(1, &["model", "show", "nope"]);
    assert!(err.contains("no model named `nope`"), "{err}");
    std::fs::create_dir_all(repo.path("models")).unwrap();
    std::fs::copy(fixture("logistic.onnx"), repo.path("models/m.onnx")).unwrap();
    repo.ok(&["model", "register", "m", "models/m.onnx"]);
    let err = repo.fail(1, &["model", "alias", "m@7", "production"]);
    assert!(err.contains("no version 7"), "{err}");
    let err = repo.fail(2, &["model", "approve", "m@1", "--comment", " "]);
    assert!(err.contains("needs --comment"), "{err}");
    let err = repo.fail(1, &["model", "register", "m", "models/m.onnx", "--training-data", "models/m.onnx"]);
    assert!(err.contains(".csv, .tsv or .parquet"), "{err}");
    let err = repo.fail(2, &["model", "policy", "m", "production", "--require", "accuracy is high"]);
    assert!(err.contains("invalid condition"), "{err}");
}
