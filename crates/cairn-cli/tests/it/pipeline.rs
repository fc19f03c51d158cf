//! `cairn run` end to end: which stages run across cold, warm and changed runs, the run
//! cache shared through a remote, datums, checks, failures, Ctrl-C and bad input.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestRepo;

/// stage -> action of a `cairn run --json`.
fn run(repo: &TestRepo, args: &[&str]) -> BTreeMap<String, String> {
    let mut full = vec!["run", "--json"];
    full.extend_from_slice(args);
    let report = repo.json(&full);
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["action"].as_str().unwrap().to_owned()))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
}

/// A three-stage pipeline (prepare → train → evaluate) plus an independent `report`.
/// Scripts read params.yaml themselves, so a param change shows only as a param change.
fn ml_pipeline() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("data/raw.csv", "x\n1\n2\n3\n");
    repo.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.01\n  epochs: 3\n");
    repo.write(
        "prepare.sh",
        "f=$(grep factor params.yaml | awk '{print $2}')\nmkdir -p data/prepared\ntail -n +2 data/raw.csv | awk -v f=$f '{print $1*f}' > data/prepared/values.txt\n",
    );
    repo.write(
        "train.sh",
        "lr=$(grep 'lr:' params.yaml | awk '{print $2}')\nsum=$(awk '{s += $1} END {print s}' data/prepared/values.txt)\necho \"model lr=$lr sum=$sum\" > model.bin\n",
    );
    repo.write(
        "evaluate.sh",
        "printf '{\"score\": %s, \"lines\": %s}\\n' \"$(wc -c < model.bin)\" \"$(wc -l < data/prepared/values.txt)\" > metrics.json\n",
    );
    repo.write(
        "cairn.yaml",
        r#"stages:
  prepare:
    cmd: sh prepare.sh
    deps: [data/raw.csv, prepare.sh]
    params: [prepare.factor]
    outs: [data/prepared]
  train:
    cmd: sh train.sh
    deps: [data/prepared, train.sh]
    params: [train.lr, train.epochs]
    outs: [model.bin]
  evaluate:
    cmd: sh evaluate.sh
    deps: [model.bin, data/prepared, evaluate.sh]
    metrics: [metrics.json]
  report:
    cmd: echo report > report.txt
    outs: [report.txt]
"#,
    );
    repo
}

#[test]
fn stages_run_only_when_their_inputs_change() {
    let repo = ml_pipeline();
    // The plan before anything ran.
    assert_eq!(
        repo.ok(&["run", "--dry"]),
        "prepare: would run\n    it has never run\n\
         train: would run if its inputs change\n    upstream stage `prepare` will run\n\
         evaluate: would run if its inputs change\n    upstream stage `prepare` will run\n    upstream stage `train` will run\n\
         report: would run\n    it has never run\n"
    );
    // Cold.
    let all_ran = expect(&[("prepare", "ran"), ("train", "ran"), ("evaluate", "ran"), ("report", "ran")]);
    assert_eq!(run(&repo, &[]), all_ran);
    assert!(repo.exists("model.bin") && repo.exists("metrics.json"));
    let gitignore = String::from_utf8(repo.read(".gitignore")).unwrap();
    assert!(gitignore.contains("/model.bin") && !gitignore.contains("metrics.json"), "{gitignore}");
    let data_ignore = String::from_utf8(repo.read("data/.gitignore")).unwrap();
    assert!(data_ignore.contains("/prepared"), "{data_ignore}");
    // Warm: nothing runs.
    let all_fresh =
        expect(&[("prepare", "fresh"), ("train", "fresh"), ("evaluate", "fresh"), ("report", "fresh")]);
    assert_eq!(run(&repo, &[]), all_fresh);
    assert!(repo.ok(&["status"]).contains("pipeline: every stage is up to date"));
    repo.commit_all("pipeline v1");

    // One input changes: prepare and what depends on it.
    repo.write("data/raw.csv", "x\n1\n2\n3\n4\n");
    let status = repo.ok(&["status"]);
    assert!(status.contains("prepare: would run (dep `data/raw.csv` changed"), "{status}");
    assert_eq!(
        run(&repo, &[]),
        expect(&[("prepare", "ran"), ("train", "ran"), ("evaluate", "ran"), ("report", "fresh")])
    );

    // One param changes: train and evaluate; explain says which param, old → new.
    repo.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.1\n  epochs: 3\n");
    assert_eq!(
        repo.ok(&["explain", "train"]),
        "train: would run\n    param `train.lr` (params.yaml) changed: 0.01 → 0.1\n"
    );
    assert_eq!(
        repo.json(&["run", "--dry", "--json"])[1],
        serde_json::json!({"stage": "train", "decision": "run", "reasons": ["param `train.lr` (params.yaml) changed: 0.01 → 0.1"]})
    );
    assert_eq!(
        run(&repo, &[]),
        expect(&[("prepare", "fresh"), ("train", "ran"), ("evaluate", "ran"), ("report", "fresh")])
    );
    // Back to the earlier value: that fingerprint ran, so its outputs come back from the
    // run cache instead of running again.
    repo.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.01\n  epochs: 3\n");
    let explained = repo.ok(&["explain", "train"]);
    assert!(explained.starts_with("train: would be restored from the run cache\n"), "{explained}");
    assert!(explained.contains("restore its outputs from the run cache"), "{explained}");
    assert_eq!(
        run(&repo, &[]),
        expect(&[("prepare", "fresh"), ("train", "restored"), ("evaluate", "restored"), ("report", "fresh")])
    );
    assert!(String::from_utf8(repo.read("model.bin")).unwrap().contains("lr=0.01"));

    // A deleted output is restored, not recomputed.
    std::fs::remove_file(repo.path("model.bin")).unwrap();
    assert_eq!(run(&repo, &["train"]), expect(&[("prepare", "fresh"), ("train", "restored")]));

    // --force runs the named stage even though it is fresh.
    assert_eq!(run(&repo, &["report", "--force"]), expect(&[("report", "ran")]));

    // params diff and metrics against the last commit.
    repo.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.5\n  epochs: 3\n");
    let diff = repo.json(&["params", "diff", "--json"]);
    assert_eq!(
        diff,
        serde_json::json!([{"file": "params.yaml", "param": "train.lr", "old": 0.01, "new": 0.5}])
    );
    let metrics = repo.json(&["metrics", "show", "--json"]);
    assert_eq!(metrics["metrics.json"]["lines"], 4);
    let changed = repo.json(&["metrics", "diff", "--json"]);
    assert_eq!(changed[0]["metric"], "lines");
    assert_eq!((changed[0]["old"].as_i64(), changed[0]["new"].as_i64()), (Some(3), Some(4)));
}

#[test]
fn second_clone_restores_from_the_shared_run_cache() {
    let origin = ml_pipeline();
    let remote = tempfile::tempdir().unwrap();
    origin.ok(&["remote", "add", "store", remote.path().to_str().unwrap()]);
    assert_eq!(run(&origin, &[]).values().filter(|a| *a == "ran").count(), 4);
    // An experiment with another learning rate, then back; both fingerprints are cached.
    origin.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.3\n  epochs: 3\n");
    run(&origin, &[]);
    origin.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.01\n  epochs: 3\n");
    run(&origin, &[]);
    origin.commit_all("pipeline");
    let pushed = origin.json(&["push", "--json"]);
    assert!(pushed["run_cache_entries_sent"].as_u64().unwrap() >= 5, "{pushed}");

    // A clone that never ran anything: every stage comes back without running (`evaluate`
    // writes only a metrics file, which is committed, so the clone already has it).
    let clone = TestRepo::clone_of(&origin);
    assert_eq!(
        run(&clone, &[]),
        expect(&[
            ("prepare", "restored"),
            ("train", "restored"),
            ("evaluate", "fresh"),
            ("report", "restored")
        ])
    );
    assert_eq!(clone.read("model.bin"), origin.read("model.bin"));
    // The other experiment's fingerprint is in the shared run cache too.
    clone.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.3\n  epochs: 3\n");
    assert_eq!(
        run(&clone, &[]),
        expect(&[("prepare", "fresh"), ("train", "restored"), ("evaluate", "restored"), ("report", "fresh")])
    );
    assert!(String::from_utf8(clone.read("model.bin")).unwrap().contains("lr=0.3"));

    // `pull` in a third clone brings the lock's outputs and the run-cache entries.
    let third = TestRepo::clone_of(&origin);
    third.ok(&["pull"]);
    assert_eq!(third.read("model.bin"), origin.read("model.bin"));
    assert_eq!(run(&third, &[]).values().filter(|a| *a == "fresh").count(), 4);

    // gc keeps pipeline outputs (the lock's and the run cache's).
    let gc = origin.json(&["gc", "--json"]);
    assert_eq!(gc["unreferenced_objects"], 0, "{gc}");
}

#[test]
fn independent_stages_run_in_parallel_and_failures_resume() {
    let repo = TestRepo::new();
    // Each stage records when it started and ended.
    let mut yaml = String::from("stages:\n");
    for name in ["a", "b", "c", "d"] {
        yaml.push_str(&format!(
            "  {name}:\n    cmd: date +%s.%N > {name}.txt; sleep 0.6; date +%s.%N >> {name}.txt\n    outs: [{name}.txt]\n"
        ));
    }
    repo.write("cairn.yaml", &yaml);
    assert_eq!(run(&repo, &["-j", "4"]).len(), 4);
    let spans: Vec<(f64, f64)> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            let text = String::from_utf8(repo.read(format!("{n}.txt"))).unwrap();
            let mut times = text.lines().map(|l| l.parse::<f64>().unwrap());
            (times.next().unwrap(), times.next().unwrap())
        })
        .collect();
    let overlapping =
        spans.iter().enumerate().any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "no two stages ran at the same time: {spans:?}");

    // A failing stage stops the run; with --keep-going independent stages still run; a
    // later run resumes without redoing what succeeded.
    repo.write(
        "cairn.yaml",
        "stages:\n  bad:\n    cmd: test -f fixed || exit 3; echo ok > bad.txt\n    outs: [bad.txt]\n  after:\n    cmd: cp bad.txt after.txt\n    deps: [bad.txt]\n    outs: [after.txt]\n  other:\n    cmd: echo other > other.txt\n    outs: [other.txt]\n",
    );
    let err = repo.fail(1, &["run", "-j", "1"]);
    assert!(err.contains("bad: failed: `test -f fixed || exit 3; echo ok > bad.txt` exited with 3"), "{err}");
    assert!(err.contains(".cairn/state/logs/bad.log"), "{err}");
    assert!(!repo.exists("other.txt"), "without --keep-going nothing new starts after a failure");
    let err = repo.fail(1, &["run", "-j", "1", "--keep-going"]);
    assert!(err.contains("after: blocked"), "{err}");
    assert!(repo.exists("other.txt"));
    repo.write("fixed", "");
    assert_eq!(run(&repo, &[]), expect(&[("bad", "ran"), ("after", "ran"), ("other", "fresh")]));
}

#[test]
fn datums_rerun_only_what_changed() {
    let repo = TestRepo::new();
    for i in 1..=4 {
        repo.write(format!("data/images/p{i}.txt"), format!("image {i}\n"));
    }
    repo.write(
        "cairn.yaml",
        "stages:\n  upper:\n    foreach: {glob: \"data/images/*.txt\"}\n    cmd: tr a-z A-Z < ${item} > ${out}/${item.stem}.out\n    outs: [upper]\n  count:\n    cmd: ls upper | wc -l | tr -d ' ' > count.txt\n    deps: [upper]\n    outs: [count.txt]\n",
    );
    let datums = |report: &serde_json::Value| report["stages"][0]["parts"].clone();
    let cold = repo.json(&["run", "--json"]);
    assert_eq!(
        datums(&cold),
        serde_json::json!({"ran": 4, "restored": 0, "fresh": 0, "removed": 0, "missing": 0})
    );
    assert_eq!(repo.read("upper/p3.out"), b"IMAGE 3\n");
    assert_eq!(repo.read("count.txt"), b"4\n");

    // One changed, one added, one deleted: exactly two datums run, one output disappears.
    repo.write("data/images/p2.txt", "image two\n");
    repo.write("data/images/p5.txt", "image 5\n");
    std::fs::remove_file(repo.path("data/images/p4.txt")).unwrap();
    let warm = repo.json(&["run", "--json"]);
    assert_eq!(
        datums(&warm),
        serde_json::json!({"ran": 2, "restored": 0, "fresh": 2, "removed": 1, "missing": 0})
    );
    assert_eq!(repo.read("upper/p2.out"), b"IMAGE TWO\n");
    assert!(!repo.exists("upper/p4.out") && repo.exists("upper/p5.out"));
    assert_eq!(repo.read("count.txt"), b"4\n");
    assert_eq!(run(&repo, &[]), expect(&[("upper", "fresh"), ("count", "fresh")]));

    // Putting an input back restores its datum from the run cache.
    repo.write("data/images/p2.txt", "image 2\n");
    let back = repo.json(&["run", "--json"]);
    assert_eq!(
        datums(&back),
        serde_json::json!({"ran": 0, "restored": 1, "fresh": 3, "removed": 0, "missing": 0})
    );
    assert_eq!(repo.read("upper/p2.out"), b"IMAGE 2\n");
}

#[test]
fn checks_block_downstream_stages() {
    let repo = TestRepo::new();
    repo.write(
        "cairn.yaml",
        "stages:\n  table:\n    cmd: printf 'id,age\\n1,30\\n2,\\n3,\\n' > table.csv\n    outs: [table.csv]\n    checks:\n      - file: table.csv\n        name: ages present\n        columns: [id, age]\n        max_null_fraction: 0.5\n  use:\n    cmd: wc -l table.csv > n.txt\n    deps: [table.csv]\n    outs: [n.txt]\n",
    );
    let err = repo.fail(1, &["run"]);
    assert!(
        err.contains("check `ages present` failed on `table.csv`: column `age` is 66.7% empty (2 of 3 rows), above the limit of 50.0%"),
        "{err}"
    );
    assert!(err.contains("a stage failed: table; not run because of it: use"), "{err}");
    assert!(!repo.exists("n.txt"));
    let err = repo.fail(1, &["run", "--keep-going"]);
    assert!(err.contains("use: blocked: a stage it depends on failed"), "{err}");
    // Nothing failed is recorded: the next run tries again.
    let lock = std::fs::read_to_string(repo.path("cairn.lock")).unwrap_or_default();
    assert!(!lock.contains("table:"), "{lock}");
}

#[test]
fn generated_stages_and_lineage() {
    let repo = TestRepo::new();
    repo.write("params.yaml", "seed: 7\n");
    repo.write(
        "cairn.yaml",
        "vars:\n  out: results\nstages:\n  train:\n    matrix: {lr: [0.1, 0.01], depth: [3]}\n    cmd: echo ${item.lr} ${item.depth} ${seed} > ${out}-${item.lr}.txt\n    outs: [\"${out}-${item.lr}.txt\"]\n  sweep:\n    foreach: [a, b]\n    cmd: echo ${item} > ${item}.txt\n    outs: [\"${item}.txt\"]\n  summary:\n    cmd: cat results-0.1.txt a.txt > summary.txt\n    deps: [results-0.1.txt, a.txt]\n    params: [seed]\n    outs: [summary.txt]\n",
    );
    assert_eq!(
        run(&repo, &[]),
        expect(&[
            ("train@lr-0.1-depth-3", "ran"),
            ("train@lr-0.01-depth-3", "ran"),
            ("sweep@a", "ran"),
            ("sweep@b", "ran"),
            ("summary", "ran")
        ])
    );
    assert_eq!(repo.read("results-0.01.txt"), b"0.01 3 7\n");
    // A base name selects every stage it generated.
    assert_eq!(run(&repo, &["sweep"]), expect(&[("sweep@a", "fresh"), ("sweep@b", "fresh")]));
    let lineage = repo.ok(&["lineage", "summary.txt"]);
    assert!(lineage.contains("summary.txt") && lineage.contains("← stage `summary`"), "{lineage}");
    assert!(lineage.contains("param seed = 7 (params.yaml)"), "{lineage}");
    assert!(
        lineage.contains("results-0.1.txt") && lineage.contains("← stage `train@lr-0.1-depth-3`"),
        "{lineage}"
    );
    let json = repo.json(&["lineage", "summary.txt", "--json"]);
    assert_eq!(json["inputs"][1]["stage"], "sweep@a");
    // A stage removed from cairn.yaml leaves cairn.lock at the next full run.
    let yaml = std::fs::read_to_string(repo.path("cairn.yaml")).unwrap();
    let without_summary = &yaml[..yaml.find("  summary:").unwrap()];
    repo.write("cairn.yaml", without_summary);
    assert!(std::fs::read_to_string(repo.path("cairn.lock")).unwrap().contains("  summary:"));
    run(&repo, &[]);
    assert!(!std::fs::read_to_string(repo.path("cairn.lock")).unwrap().contains("  summary:"));
    let err = repo.fail(1, &["run", "trian"]);
    assert!(err.contains("no stage named `trian` in cairn.yaml (did you mean `train`?)"), "{err}");
}

#[test]
fn bad_pipelines_are_rejected_before_anything_runs() {
    let repo = TestRepo::new();
    let check = |yaml: &str, expected: &[&str]| {
        repo.write("cairn.yaml", yaml);
        let err = repo.fail(1, &["run"]);
        for e in expected {
            assert!(err.contains(e), "expected {e:?} in:\n{err}");
        }
        assert!(!repo.exists("ran"), "a stage ran despite: {err}");
    };
    let marker = "    cmd: touch ran\n";
    check(
        &format!("stages:\n  a:\n{marker}    depz: [x]\n"),
        &["cairn.yaml` is not valid: line 4 column 5: unknown field `depz`", "did you mean `deps`?"],
    );
    check("stages:\n  a:\n    cmd: [touch ran\n", &["line 3 column 10", "unclosed bracket"]);
    check(
        &format!(
            "stages:\n  a:\n{marker}    deps: [b.txt]\n    outs: [a.txt]\n  b:\n{marker}    deps: [a.txt]\n    outs: [b.txt]\n"
        ),
        &["the stages form a cycle: `b` (line 7) → `a` (line 3) → `b` (line 7)"],
    );
    check(
        &format!("stages:\n  a:\n{marker}    outs: [x]\n  b:\n{marker}    outs: [x]\n"),
        &["stages `a` (line 3) and `b` (line 6) both write `x`"],
    );
    check(
        &format!("stages:\n  a:\n{marker}    outs: [x]\n  b:\n{marker}    outs: [x/y]\n"),
        &["the output `x/y` of stage `b` (line 6) is inside the output `x` of stage `a` (line 3)"],
    );
    check(
        &format!("stages:\n  a:\n{marker}    deps: [nowhere.csv]\n"),
        &["stage `a` (line 3) depends on `nowhere.csv`, which does not exist and no stage writes it"],
    );
    check(
        &format!("stages:\n  a:\n{marker}    deps: [../outside]\n"),
        &["`../outside` is outside the repository"],
    );
    repo.write("params.yaml", "train:\n  lr: 0.1\n");
    check(
        &format!("stages:\n  a:\n{marker}    params: [train.lrr]\n"),
        &["cairn.yaml:3: stage `a`: param `train.lrr` is not in `params.yaml`; did you mean `train.lr`?"],
    );
    check(&format!("stages:\n  a:\n{marker}    env: {{X: \"${{nope}}\"}}\n"), &["`${nope}` is not defined"]);

    // Problems found while running: a missing command, an undeclared output, a write
    // outside the outputs.
    repo.write("cairn.yaml", "stages:\n  a:\n    cmd: no-such-tool-xyz --train\n");
    let err = repo.fail(1, &["run"]);
    assert!(err.contains("exited with 127: command not found"), "{err}");
    repo.write("cairn.yaml", "stages:\n  a:\n    cmd: echo hi > other.txt\n    outs: [declared.txt]\n");
    let err = repo.fail(1, &["run"]);
    assert!(err.contains("did not write the declared output `declared.txt`; nothing was cached"), "{err}");
    assert!(
        !repo.path("cairn.lock").exists()
            || !std::fs::read_to_string(repo.path("cairn.lock")).unwrap().contains("  a:")
    );
    repo.write(
        "cairn.yaml",
        "stages:\n  a:\n    cmd: echo hi > stray.txt; echo ok > declared.txt\n    outs: [declared.txt]\n",
    );
    let output = repo.run(&["run"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: `stray.txt` was written during the run but is not a declared output"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_stops_stages_and_caches_nothing_partial() {
    let repo = TestRepo::new();
    repo.write(
        "cairn.yaml",
        "stages:\n  slow:\n    cmd: echo $$ > pid.txt; echo partial > out.txt; sleep 30; echo done >> out.txt\n    outs: [out.txt]\n",
    );
    let mut child = repo.command(&["run"]).spawn().unwrap();
    let started = Instant::now();
    while !repo.exists("pid.txt") || std::fs::read_to_string(repo.path("pid.txt")).unwrap().trim().is_empty()
    {
        assert!(started.elapsed() < Duration::from_secs(20), "the stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stage_pid: i32 = std::fs::read_to_string(repo.path("pid.txt")).unwrap().trim().parse().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(15), "Ctrl-C took too long");
    let alive =
        rustix::process::test_kill_process(rustix::process::Pid::from_raw(stage_pid).unwrap()).is_ok();
    assert!(!alive, "the stage process survived Ctrl-C");
    let lock = std::fs::read_to_string(repo.path("cairn.lock")).unwrap_or_default();
    assert!(!lock.contains("slow"), "{lock}");
    assert!(
        !repo.path(".cairn/cache/runs-v1").exists()
            || std::fs::read_dir(repo.path(".cairn/cache/runs-v1")).unwrap().next().is_none()
    );
}

#[test]
fn schema_is_published_and_current() {
    let repo = TestRepo::new();
    let schema = repo.ok(&["pipeline", "schema"]);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cairn.schema.json"))
            .unwrap();
    assert!(
        schema == committed,
        "docs/cairn.schema.json is stale: regenerate it with `cairn pipeline schema > docs/cairn.schema.json`"
    );
    let parsed: serde_json::Value = serde_json::from_str(&schema).unwrap();
    assert!(parsed["properties"]["stages"].is_object());
    assert!(schema.contains("\"foreach\"") && schema.contains("\"max_null_fraction\""));
}

#[test]
fn partitions_run_when_asked_and_downstream_follows() {
    let repo = TestRepo::new();
    repo.write(
        "cairn.yaml",
        r#"stages:
  ingest:
    partitions:
      date: {daily: {start: 2026-01-01, end: 2026-01-10}}
      region: {static: [us, eu]}
    cmd: mkdir -p ${out}/${partition.date} && echo "${partition.region} on ${partition.date}" > ${out}/${partition.date}/${partition.region}.txt
    outs: [data/ingested]
  features:
    partitions:
      date: {daily: {start: 2026-01-01, end: 2026-01-10}}
      region: {static: [us, eu]}
    deps: ["data/ingested/${partition.date}/${partition.region}.txt"]
    cmd: tr a-z A-Z < data/ingested/${partition.date}/${partition.region}.txt > ${out}/${partition.date}-${partition.region}.txt
    outs: [data/features]
  report:
    deps: [data/features]
    cmd: ls data/features | wc -l | tr -d ' ' > report.txt
    outs: [report.txt]
  customers:
    partitions:
      customer: {dynamic: true}
    cmd: echo ${partition} > ${out}/${partition}.txt
    outs: [data/customers]
"#,
    );
    let parts = |report: &serde_json::Value, stage: usize| report["stages"][stage]["parts"].clone();
    // Nothing is materialized until asked for.
    let listed = repo.json(&["partitions", "list", "ingest", "--json"]);
    assert_eq!(listed["summary"], serde_json::json!({"missing": 20}));

    // One partition of the downstream stage brings the same partition upstream.
    let one = repo.json(&["run", "features", "--partition", "2026-01-03|eu", "--json"]);
    assert_eq!(one["stages"][0]["stage"], "ingest");
    assert_eq!(parts(&one, 0)["ran"], 1);
    assert_eq!(parts(&one, 0)["missing"], 19);
    assert_eq!(parts(&one, 1)["ran"], 1);
    assert_eq!(repo.read("data/features/2026-01-03-eu.txt"), b"EU ON 2026-01-03\n");

    // A backfill over a range of one dimension.
    let backfill = repo.json(&["run", "features", "--partitions", "date=2026-01-01..2026-01-05", "--json"]);
    assert_eq!(parts(&backfill, 0)["ran"], 9);
    assert_eq!(parts(&backfill, 0)["fresh"], 1);
    let listed = repo.json(&["partitions", "list", "ingest", "--json"]);
    assert_eq!(listed["summary"], serde_json::json!({"fresh": 10, "missing": 10}));
    let text = repo.ok(&["partitions", "list", "ingest", "--state", "fresh"]);
    assert!(text.starts_with("2026-01-01|us\tfresh\n"), "{text}");

    // A plain run keeps materialized partitions up to date and runs no new ones; the
    // unpartitioned report depends on all of them.
    let plain = repo.json(&["run", "--json"]);
    assert_eq!(parts(&plain, 0)["fresh"], 10);
    assert_eq!(parts(&plain, 0)["ran"], 0);
    assert_eq!(repo.read("report.txt"), b"10\n");

    // Changing the command makes every materialized partition stale; only they re-run.
    let yaml = std::fs::read_to_string(repo.path("cairn.yaml"))
        .unwrap()
        .replace("on ${partition.date}", "@ ${partition.date}");
    repo.write("cairn.yaml", yaml);
    let listed = repo.json(&["partitions", "list", "ingest", "--json"]);
    assert_eq!(listed["summary"], serde_json::json!({"stale": 10, "missing": 10}));
    let rerun = repo.json(&["run", "--json"]);
    assert_eq!(parts(&rerun, 0)["ran"], 10);
    assert_eq!(parts(&rerun, 1)["ran"], 10);
    assert_eq!(repo.read("data/features/2026-01-03-eu.txt"), b"EU @ 2026-01-03\n");

    // Dynamic keys.
    let err = repo.fail(1, &["run", "customers", "--partition", "acme"]);
    assert!(err.contains("`acme` is not a partition of this stage"), "{err}");
    repo.ok(&["partitions", "add", "customers", "acme", "globex"]);
    let dynamic = repo.json(&["run", "customers", "--partitions", "acme..globex", "--json"]);
    assert_eq!(parts(&dynamic, 0)["ran"], 2);
    repo.ok(&["partitions", "remove", "customers", "globex"]);
    let removed = repo.json(&["run", "customers", "--json"]);
    assert_eq!(parts(&removed, 0)["removed"], 1);
    assert!(repo.exists("data/customers/acme.txt") && !repo.exists("data/customers/globex.txt"));

    // The lock names a parts list instead of listing every partition.
    let lock = std::fs::read_to_string(repo.path("cairn.lock")).unwrap();
    assert!(lock.contains("parts: blake3:") && !lock.contains("2026-01-03|eu"), "{lock}");
}

#[test]
fn resources_limit_what_runs_at_once() {
    let repo = TestRepo::new();
    // Two stages that each need both CPUs of a 2-CPU budget, and two that each need one of
    // two GPUs; each records its start and end time and the GPUs it was given.
    repo.write(
        "cairn.yaml",
        "stages:\n  big1:\n    cmd: date +%s.%N > big1.txt; sleep 0.4; date +%s.%N >> big1.txt\n    outs: [big1.txt]\n    resources: {cpus: 2}\n  big2:\n    cmd: date +%s.%N > big2.txt; sleep 0.4; date +%s.%N >> big2.txt\n    outs: [big2.txt]\n    resources: {cpus: 2}\n  gpu1:\n    cmd: echo $CUDA_VISIBLE_DEVICES > gpu1.txt\n    outs: [gpu1.txt]\n    resources: {gpus: 1, cpus: 0}\n  gpu2:\n    cmd: echo $CUDA_VISIBLE_DEVICES > gpu2.txt\n    outs: [gpu2.txt]\n    resources: {gpus: 1, cpus: 0}\n  huge:\n    cmd: echo never\n    resources: {gpus: 4}\n",
    );
    let run = |args: &[&str]| {
        repo.command(args)
            .env("CAIRN_CPUS", "2")
            .env("CAIRN_GPUS", "2")
            .env("CAIRN_MEMORY", "1000000000")
            .output()
            .unwrap()
    };
    let output = run(&["run", "huge"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it needs 4 GPU(s) and this machine has 2"), "{stderr}");
    let output = run(&["run", "big1", "big2", "gpu1", "gpu2", "-j", "4"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let span = |n: &str| {
        let text = String::from_utf8(repo.read(n)).unwrap();
        let t: Vec<f64> = text.lines().map(|l| l.parse().unwrap()).collect();
        (t[0], t[1])
    };
    let (a, b) = (span("big1.txt"), span("big2.txt"));
    assert!(a.1 <= b.0 || b.1 <= a.0, "two 2-CPU stages overlapped on 2 CPUs: {a:?} {b:?}");
    let mut gpus = vec![
        String::from_utf8(repo.read("gpu1.txt")).unwrap().trim().to_owned(),
        String::from_utf8(repo.read("gpu2.txt")).unwrap().trim().to_owned(),
    ];
    gpus.sort();
    assert!(gpus == ["0", "1"] || gpus == ["0", "0"] || gpus == ["1", "1"], "{gpus:?}");
    repo.write("cairn.yaml", "stages:\n  fat:\n    cmd: echo hi\n    resources: {memory: 2GB}\n");
    let output = run(&["run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it needs 1907 MiB of memory and this machine has 953 MiB"), "{stderr}");
}

#[test]
fn wdir_persist_uncached_outputs_and_other_params_files() {
    let repo = TestRepo::new();
    repo.write("src/config.toml", "[model]\nname = \"tree\"\ndepth = 4\n");
    repo.write("src/input.txt", "abc\n");
    repo.write(
        "cairn.yaml",
        r#"stages:
  build:
    wdir: src
    cmd:
      - echo "run $(date +%s%N)" >> ../history.log
      - mkdir -p ../build && echo ${model.depth} > ../build/depth.txt
      - cat input.txt > report.txt
      - echo building in $(basename $PWD)
    deps: [input.txt]
    params:
      - config.toml: [model.depth, model.name]
    outs:
      - ../build
      - ../history.log: {persist: true, cache: false}
      - report.txt: {cache: false}
"#,
    );
    // `${model.depth}` resolves from the root params.yaml only, so give it one.
    repo.write("params.yaml", "model:\n  depth: 4\n");
    let output = repo.run(&["run"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Stage output is streamed with a prefix.
    assert!(String::from_utf8_lossy(&output.stdout).contains("[build] building in src\n"));
    assert_eq!(repo.read("build/depth.txt"), b"4\n");
    let lock = std::fs::read_to_string(repo.path("cairn.lock")).unwrap();
    assert!(
        lock.contains("wdir: src") && lock.contains("src/config.toml:") && lock.contains("model.name: tree"),
        "{lock}"
    );
    // Cached outputs are ignored by Git; `cache: false` ones are left to Git.
    let root_ignore = String::from_utf8(repo.read(".gitignore")).unwrap();
    assert!(root_ignore.contains("/build") && !root_ignore.contains("history.log"), "{root_ignore}");
    assert!(
        !repo.exists("src/.gitignore")
            || !String::from_utf8(repo.read("src/.gitignore")).unwrap().contains("report.txt")
    );
    // A param of the other file changes: the stage runs again, and the persistent output
    // keeps what earlier runs wrote while the others are rebuilt.
    repo.write("src/config.toml", "[model]\nname = \"forest\"\ndepth = 4\n");
    assert_eq!(
        repo.ok(&["explain", "build"]),
        "build: would run\n    param `model.name` (src/config.toml) changed: \"tree\" → \"forest\"\n"
    );
    run(&repo, &[]);
    let history = String::from_utf8(repo.read("history.log")).unwrap();
    assert_eq!(history.lines().count(), 2, "{history}");
}

#[test]
fn every_run_is_recorded() {
    let repo = ml_pipeline();
    repo.commit_all("pipeline");
    let first = repo.json(&["run", "--json"]);
    let first_id = first["run_id"].as_str().unwrap().to_owned();
    repo.write("params.yaml", "prepare:\n  factor: 2\ntrain:\n  lr: 0.1\n  epochs: 3\n");
    let second = repo.json(&["run", "--json"]);
    repo.write("cairn.yaml", "stages:\n  broken:\n    cmd: exit 4\n");
    repo.fail(1, &["run"]);

    let runs = repo.json(&["exp", "show", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["status"], "FAILED");
    assert_eq!(runs[1]["run_id"], second["run_id"]);
    assert_eq!(runs[1]["params"]["train.lr"], "0.1");
    assert_eq!(runs[1]["metrics"]["lines"], 3.0);
    let commit = repo.git(&["rev-parse", "HEAD"]);
    assert_eq!(runs[1]["commit"], commit.trim());
    assert_eq!(runs[1]["dirty"], true, "params.yaml was edited after the commit");
    let first_run = &runs[2];
    assert_eq!(first_run["run_id"], first_id.as_str());
    assert_eq!(first_run["dirty"], false);
    let stages: Vec<(&str, &str)> = first_run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["action"].as_str().unwrap()))
        .collect();
    assert_eq!(stages.len(), 4);
    assert!(stages.iter().all(|(_, a)| *a == "ran"), "{stages:?}");
    // Each command ran under a supervisor that measured it.
    for stage in first_run["stages"].as_array().unwrap() {
        assert!(stage["cpu_ms"].as_i64().is_some_and(|c| c >= 0), "{stage}");
        assert!(stage["max_rss_kb"].as_i64().is_some_and(|kb| kb > 100), "{stage}");
    }
    let table = repo.ok(&["exp", "show", "--sort", "-train.lr", "-n", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("run ") && lines[0].contains("train.lr") && lines[0].contains("score"),
        "{table}"
    );
    assert!(lines[1].contains("0.1") && lines.len() == 3, "{table}");
    // Two runs compared: the param and the metrics that changed.
    let (a, b) = (first_id.as_str(), second["run_id"].as_str().unwrap());
    let diff = repo.json(&["exp", "diff", &a[..6], b, "--json"]);
    let keys: Vec<(&str, &str)> = diff["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["kind"].as_str().unwrap(), d["key"].as_str().unwrap()))
        .collect();
    assert!(keys.contains(&("param", "train.lr")), "{diff}");
    assert!(!keys.contains(&("param", "prepare.factor")), "{diff}");
    let text = repo.ok(&["exp", "diff", a, b]);
    assert!(text.contains("param train.lr") && text.contains("0.01") && text.contains("0.1"), "{text}");
    let err = repo.fail(1, &["exp", "diff", "zz", b]);
    assert!(err.contains("too short"), "{err}");
    let csv = repo.ok(&["exp", "show", "--csv"]);
    assert!(csv.lines().next().unwrap().starts_with("run,status,commit,"), "{csv}");
}

/// Datum and partitioned stages in a clone: their parts' records and data travel with push,
/// pull and the run cache, so the clone restores them instead of failing or running them.
#[test]
fn a_clone_restores_datum_and_partitioned_stages() {
    let origin = TestRepo::new();
    let remote = tempfile::tempdir().unwrap();
    origin.ok(&["remote", "add", "store", remote.path().to_str().unwrap(), "--default"]);
    for name in ["a", "b", "c"] {
        origin.write(format!("images/{name}.txt"), format!("image {name}\n"));
    }
    origin.write(
        "cairn.yaml",
        "stages:\n  thumbs:\n    foreach: {glob: \"images/*.txt\"}\n    cmd: tr a-z A-Z < ${item} > ${out}/${item.stem}.up\n    outs: [thumbs]\n  daily:\n    partitions: {day: {static: [mon, tue]}}\n    cmd: echo ${partition.day} > ${out}/${partition.day}.txt\n    outs: [days]\n",
    );
    origin.ok(&["add", "images"]);
    let ran = run(&origin, &["--partitions", "mon..tue"]);
    assert_eq!(ran["thumbs"], "ran", "{ran:?}");
    origin.commit_all("pipeline");
    origin.ok(&["push"]);

    // `pull`, then the outputs deleted and `cairn run`: everything comes back, nothing runs.
    let clone = TestRepo::clone_of(&origin);
    clone.ok(&["pull"]);
    assert_eq!(clone.read("thumbs/b.up"), b"IMAGE B\n");
    assert_eq!(clone.read("days/tue.txt"), b"tue\n");
    std::fs::remove_dir_all(clone.path("thumbs")).unwrap();
    std::fs::remove_dir_all(clone.path("days")).unwrap();
    let again = run(&clone, &[]);
    assert!(again.values().all(|a| a != "ran"), "{again:?}");
    assert_eq!(clone.read("thumbs/a.up"), b"IMAGE A\n");
    assert_eq!(clone.read("days/mon.txt"), b"mon\n");

    // A clone that never pulled restores from the remote during the run.
    let fresh = TestRepo::clone_of(&origin);
    fresh.ok(&["fetch", "images"]);
    fresh.ok(&["checkout", "images"]);
    let restored = run(&fresh, &[]);
    assert!(restored.values().all(|a| a != "ran"), "{restored:?}");
    assert_eq!(fresh.read("thumbs/c.up"), b"IMAGE C\n");
    // And one new input runs only its own datum.
    fresh.write("images/d.txt", "image d\n");
    fresh.ok(&["commit", "images"]);
    let one = fresh.json(&["run", "--json"]);
    let thumbs = one["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "thumbs").unwrap().clone();
    assert_eq!(thumbs["parts"]["ran"], 1, "{one}");
    assert_eq!(fresh.read("thumbs/d.up"), b"IMAGE D\n");
}

#[test]
fn checkout_names_the_pipeline_outputs_it_restores() {
    let repo = TestRepo::new();
    repo.write("cairn.yaml", "stages:\n  train:\n    cmd: echo weights > model.bin\n    outs: [model.bin]\n");
    repo.ok(&["run"]);
    std::fs::remove_file(repo.path("model.bin")).unwrap();
    let text = repo.ok(&["checkout"]);
    assert!(text.contains("restored pipeline output model.bin (stage train)"), "{text}");
    assert_eq!(repo.read("model.bin"), b"weights\n");
}
