//! `cairn exp`: runs with overridden params in isolated workspaces, sweeps and the queue,
//! apply, branch, remove, push and pull, and snapshots of `exp show` and `exp diff`.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::TestRepo;
use serde_json::Value;

/// A pipeline whose score depends on both params and on tracked data.
fn project() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("data/raw.csv", (1..=100).map(|i| format!("{i}\n")).collect::<String>());
    repo.ok(&["add", "data/raw.csv"]);
    repo.write("params.yaml", "# training params\ntrain:\n  lr: 0.1\n  depth: 3\n");
    repo.write(
        "train.sh",
        r#"lr=$(grep "lr:" params.yaml | awk '{print $2}')
depth=$(grep "depth:" params.yaml | awk '{print $2}')
rows=$(wc -l < data/raw.csv)
score=$(awk -v r="$rows" -v l="$lr" -v d="$depth" 'BEGIN { print r * l + d }')
echo "{\"score\": $score}" > metrics.json
echo "model lr=$lr depth=$depth" > model.txt
echo ran >> runs.log
"#,
    );
    repo.write(
        "cairn.yaml",
        "stages:\n  train:\n    cmd: sh train.sh\n    deps: [train.sh, data/raw.csv]\n    params: [train.lr, train.depth]\n    outs: [model.txt]\n    metrics: [metrics.json]\n",
    );
    repo.write(".gitignore", "runs.log\n");
    repo.ok(&["run", "-q"]);
    repo.commit_all("baseline");
    repo
}

fn experiments(repo: &TestRepo) -> Vec<Value> {
    let shown = repo.json(&["exp", "show", "--json", "-n", "1000"]);
    shown
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("exp"))
        .cloned()
        .collect()
}

fn by_params<'a>(runs: &'a [Value], lr: &str, depth: &str) -> &'a Value {
    runs.iter()
        .find(|r| r["params"]["train.lr"] == lr && r["params"]["train.depth"] == depth)
        .unwrap_or_else(|| panic!("no experiment with lr={lr} depth={depth}: {runs:?}"))
}

/// Replaces 8-hex-digit run ids and commits (words between spaces or commas) with `<id>`.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == 8 && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("<id>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if matches!(c, ' ' | ',' | '\n') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[test]
fn a_sweep_runs_in_isolated_workspaces_from_the_queue() {
    let repo = project();
    let params_before = repo.read("params.yaml");
    let status_before = repo.git(&["status", "--porcelain"]);

    let queued =
        repo.ok(&["exp", "run", "-S", "train.lr=0.01,0.5", "-S", "train.depth=range(3,5)", "--queue"]);
    assert_eq!(queued.lines().filter(|l| l.starts_with("queued experiment")).count(), 4, "{queued}");
    let runs = experiments(&repo);
    assert_eq!(runs.len(), 4);
    assert!(runs.iter().all(|r| r["status"] == "SCHEDULED"), "{runs:?}");

    repo.ok(&["exp", "run", "--run-all", "--jobs", "2"]);
    let runs = experiments(&repo);
    assert!(runs.iter().all(|r| r["status"] == "FINISHED"), "{runs:?}");
    for (lr, depth, score) in [("0.01", "3", 4.0), ("0.01", "4", 5.0), ("0.5", "3", 53.0), ("0.5", "4", 54.0)]
    {
        let run = by_params(&runs, lr, depth);
        assert_eq!(run["metrics"]["score"], score, "{run}");
        assert_eq!(run["commit"], repo.git(&["rev-parse", "HEAD"]).trim());
    }
    // The user's work tree is untouched, and the workspaces are gone.
    assert_eq!(repo.read("params.yaml"), params_before);
    assert_eq!(repo.git(&["status", "--porcelain"]), status_before);
    assert_eq!(String::from_utf8(repo.read("model.txt")).unwrap(), "model lr=0.1 depth=3\n");
    let left = std::fs::read_dir(repo.path(".cairn/state/exps")).unwrap().count();
    assert_eq!(left, 0, "finished experiments leave no workspace");

    // The same params again come back from the run cache: nothing runs.
    let log_before = repo.read("runs.log");
    repo.ok(&["exp", "run", "-S", "train.lr=0.5", "-S", "train.depth=4", "--name", "exp again"]);
    let again = experiments(&repo).into_iter().find(|r| r["name"] == "exp again").unwrap();
    assert_eq!(again["stages"][0]["action"], "restored", "{again}");
    assert_eq!(again["metrics"]["score"], 54.0);
    assert_eq!(repo.read("runs.log"), log_before);
    assert!(repo.ok(&["exp", "run", "--run-all"]).contains("no queued experiments"));
}

#[test]
fn exp_show_and_diff_snapshots() {
    let repo = project();
    repo.ok(&["exp", "run", "-S", "train.lr=0.01,0.5"]);
    let table = repo.ok(&[
        "exp",
        "show",
        "--filter",
        "metrics.score > 4",
        "--columns",
        "train.lr,score",
        "--sort",
        "-score",
    ]);
    // The baseline ran before the first commit: no commit to show.
    assert_eq!(
        normalize(&table),
        "run       status    commit    train.lr  score\n\
         <id>  FINISHED  <id>  0.5       53\n\
         <id>  FINISHED  -         0.1       13\n"
    );
    let runs = experiments(&repo);
    let (low, high) = (by_params(&runs, "0.01", "3"), by_params(&runs, "0.5", "3"));
    let (a, b) = (low["run_id"].as_str().unwrap(), high["run_id"].as_str().unwrap());
    let diff = repo.ok(&["exp", "diff", &a[..8], &b[..8]]);
    assert_eq!(
        normalize(&diff),
        "                    <id>      <id>\nparam train.lr          0.01           0.5\nmetric score               4            53\n"
    );
    let csv =
        repo.ok(&["exp", "show", "--csv", "--columns", "train.*", "--filter", "params.train.lr = '0.5'"]);
    assert_eq!(normalize(&csv), "run,status,commit,train.depth,train.lr\n<id>,FINISHED,<id>,3,0.5\n");
    let err = repo.fail(2, &["exp", "show", "--filter", "metrics.score >> 1"]);
    assert!(err.contains("invalid --filter"), "{err}");
}

#[test]
fn apply_and_branch_bring_an_experiment_back() {
    let repo = project();
    repo.ok(&["exp", "run", "-S", "train.lr=0.5", "-S", "train.depth=7"]);
    let run = experiments(&repo).pop().unwrap();
    let id = run["run_id"].as_str().unwrap()[..8].to_owned();

    repo.ok(&["exp", "branch", &id, "deep"]);
    let committed = repo.git(&["show", "deep:params.yaml"]);
    assert!(committed.contains("lr: 0.5") && committed.contains("depth: 7"), "{committed}");
    assert!(repo.git(&["show", "deep:cairn.lock"]).contains("model.txt"));
    assert_eq!(repo.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main", "HEAD stays where it was");
    let err = repo.fail(1, &["exp", "branch", &id, "deep"]);
    assert!(err.contains("deep"), "{err}");

    let log_before = repo.read("runs.log");
    repo.ok(&["exp", "apply", &id]);
    let params = String::from_utf8(repo.read("params.yaml")).unwrap();
    assert!(params.contains("lr: 0.5") && params.contains("depth: 7"), "{params}");
    assert_eq!(String::from_utf8(repo.read("model.txt")).unwrap(), "model lr=0.5 depth=7\n");
    assert_eq!(repo.read("runs.log"), log_before, "apply restores outputs, it runs nothing");
    // The applied work tree is fresh: nothing to run.
    let status = repo.json(&["status", "--json"]);
    assert_eq!(status["stages"], serde_json::json!([]), "{status}");

    // A plain `cairn run` has nothing to apply.
    let plain = repo
        .json(&["exp", "show", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str().unwrap().starts_with("run-"))
        .cloned()
        .unwrap();
    let err = repo.fail(1, &["exp", "apply", &plain["run_id"].as_str().unwrap()[..8]]);
    assert!(err.contains("no experiment files"), "{err}");
}

#[test]
fn a_failing_experiment_keeps_its_workspace_and_remove_cleans_up() {
    let repo = project();
    repo.write("train.sh", "echo boom >&2; exit 3\n");
    repo.commit_all("broken");
    let err = repo.fail(1, &["exp", "run", "-S", "train.lr=0.2,0.3", "--jobs", "2"]);
    assert!(err.contains("2 experiment(s) failed"), "{err}");
    let runs = experiments(&repo);
    assert!(runs.iter().all(|r| r["status"] == "FAILED"), "{runs:?}");
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let log = String::from_utf8(repo.read(format!(".cairn/state/exps/{id}/exp.log"))).unwrap();
    assert!(log.contains("boom"), "{log}");

    repo.ok(&["exp", "run", "-S", "train.lr=0.9", "--queue"]);
    repo.ok(&["exp", "remove", "--queued", &id[..8]]);
    assert!(!repo.exists(&format!(".cairn/state/exps/{id}")));
    assert_eq!(experiments(&repo).len(), 1, "one failed experiment is left");

    for bad in [
        ["exp", "run", "-S", "train.lr"],
        ["exp", "run", "-S", "train.lr=range(1,x)"],
        ["exp", "run", "-S", "=3"],
    ] {
        let err = repo.fail(2, &bad);
        assert!(err.contains("invalid -S"), "{err}");
    }
}

#[test]
fn experiments_travel_through_a_remote() {
    let repo = project();
    let remote = tempfile::tempdir().unwrap();
    repo.ok(&["remote", "add", "origin", remote.path().to_str().unwrap(), "--default"]);
    repo.commit_all("remote");
    repo.ok(&["exp", "run", "-S", "train.lr=0.5"]);
    let id = experiments(&repo)[0]["run_id"].as_str().unwrap().to_owned();
    repo.ok(&["push"]);
    let pushed = repo.ok(&["exp", "push", "origin"]);
    assert!(pushed.contains("pushed 1 experiment(s)"), "{pushed}");

    let clone = TestRepo::clone_of(&repo);
    assert!(clone.ok(&["exp", "pull", "origin"]).contains("pulled 1 experiment(s)"));
    let theirs = experiments(&clone);
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["run_id"], id.as_str());
    assert_eq!(theirs[0]["metrics"]["score"], 53.0);
    clone.ok(&["pull"]);
    clone.ok(&["exp", "apply", &id[..8]]);
    assert_eq!(String::from_utf8(clone.read("model.txt")).unwrap(), "model lr=0.5 depth=3\n");
    assert!(
        clone.ok(&["exp", "pull", "origin"]).contains("pulled 0 experiment(s)"),
        "pulling again adds nothing"
    );
}

#[test]
fn a_param_typo_fails_before_anything_runs_and_empty_runs_leave_no_row() {
    let repo = TestRepo::new();
    repo.write("params.yaml", "train:\n  C: 1.0\n");
    repo.write("cairn.yaml", "stages:\n  train:\n    cmd: echo C=${train.C} > out.txt\n    params: [train.C]\n    outs: [out.txt]\n");
    repo.commit_all("pipeline");
    let stderr = repo.fail(1, &["exp", "run", "-S", "train.CC=5"]);
    assert!(stderr.contains("did you mean `train.C`"), "{stderr}");
    assert!(stderr.contains("--add"), "{stderr}");
    let shown = repo.json(&["exp", "show", "--json"]);
    assert_eq!(shown.as_array().unwrap().len(), 0, "a refused experiment left a record: {shown}");
    assert!(
        !repo.exists(".cairn/state/exps")
            || std::fs::read_dir(repo.path(".cairn/state/exps")).unwrap().count() == 0
    );
    // Asked for, a new key is added.
    repo.ok(&["exp", "run", "--add", "-S", "train.extra=5"]);
    assert_eq!(repo.json(&["exp", "show", "--json"]).as_array().unwrap().len(), 1);
    // An empty queue is not an error.
    assert!(repo.ok(&["exp", "remove", "--queued"]).contains("no queued experiments"));
    // A run that runs: one row; a second that finds everything up to date: none.
    repo.ok(&["run"]);
    let rows = repo.json(&["exp", "show", "--json"]).as_array().unwrap().len();
    let second = repo.json(&["run", "--json"]);
    assert!(second["run_id"].is_null(), "{second}");
    assert_eq!(repo.json(&["exp", "show", "--json"]).as_array().unwrap().len(), rows);
}

#[test]
fn runs_are_found_by_name_as_well_as_by_id() {
    let repo = project();
    repo.ok(&["exp", "run", "-S", "train.lr=0.5", "--name", "fast"]);
    repo.ok(&["exp", "run", "-S", "train.lr=0.01", "--name", "slow"]);
    let diff = repo.ok(&["exp", "diff", "fast", "slow"]);
    assert!(diff.contains("train.lr") && diff.contains("0.5") && diff.contains("0.01"), "{diff}");
    repo.ok(&["exp", "apply", "slow"]);
    assert_eq!(String::from_utf8(repo.read("model.txt")).unwrap(), "model lr=0.01 depth=3\n");

    // A name two runs share is an error that lists them, never a guess.
    repo.ok(&["exp", "run", "-S", "train.lr=0.2", "--name", "fast"]);
    let stderr = repo.fail(1, &["exp", "apply", "fast"]);
    assert!(stderr.contains("`fast` fits 2 runs"), "{stderr}");
    assert!(stderr.contains("hint: name the run by its id"), "{stderr}");
    let stderr = repo.fail(1, &["exp", "diff", "slow", "nope"]);
    assert!(stderr.contains("no run has an id starting `nope` or the name `nope`"), "{stderr}");
}
