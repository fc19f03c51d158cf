//! One suite, both backends: SQLite in a temporary directory, and a real PostgreSQL server
//! started here on 127.0.0.1 (Debian's `postgresql` package; `.ci/run` installs it).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_meta::registry::{NewVersion, Policy, Rollout};
use cairn_meta::{
    Artifact, IoRecord, LoggedModelStatus, MetaError, Metric, ModelDirection, ModelMetric, NewLoggedModel,
    NewRun, RunModel, RunOwner, RunStatus, RunUpdate, StageRecord, Store, View,
};

/// A digest for test content (`d("aa")` is the digest of the bytes `aa`).
fn d(text: &str) -> cairn_hash::Digest {
    cairn_hash::hash_bytes(text.as_bytes())
}

fn new_run(experiment_id: i64, name: &str, start_time: i64) -> NewRun {
    NewRun {
        experiment_id,
        name: name.into(),
        parent_run_id: None,
        user: "ada".into(),
        git_commit: Some("4f2a".into()),
        git_dirty: true,
        start_time,
        source: "cairn run".into(),
        artifact_uri: "cairn-artifacts:/".into(),
        owner: None,
    }
}

fn metric(key: &str, value: f64, step: i64, timestamp: i64) -> Metric {
    Metric { key: key.into(), value, step, timestamp }
}

/// What every backend must do.
/// Users and tokens: created explicitly, hashed, expiring, revocable.
fn identity(store: &Store) {
    let alice = store.create_user("alice", false, true).unwrap();
    assert!(alice.admin && !alice.service);
    store.create_user("ci-bot", true, false).unwrap();
    assert!(matches!(store.create_user("alice", false, false), Err(MetaError::UserExists(_))));
    assert!(matches!(store.create_user("a b", false, false), Err(MetaError::BadName(_))));
    let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["alice", "ci-bot"]);

    let now = cairn_meta::now_ms();
    let laptop = store.create_token("alice", "laptop", None).unwrap();
    let short = store.create_token("ci-bot", "nightly", Some(now + 60_000)).unwrap();
    assert!(laptop.secret.starts_with("cairn_") && laptop.secret.len() == 6 + 16 + 1 + 64);
    let who = store.authenticate(&laptop.secret, now).unwrap().expect("a fresh token authenticates");
    assert_eq!((who.user.as_str(), who.admin), ("alice", true));
    assert_eq!(store.authenticate(&short.secret, now).unwrap().map(|i| i.user), Some("ci-bot".to_owned()));
    assert_eq!(store.authenticate(&short.secret, now + 60_000).unwrap(), None, "expired");
    // A wrong secret under a real id, and garbage, authenticate nobody.
    let forged = format!(
        "{}{}",
        &laptop.secret[..laptop.secret.len() - 1],
        if laptop.secret.ends_with('0') { "1" } else { "0" }
    );
    assert_eq!(store.authenticate(&forged, now).unwrap(), None);
    assert_eq!(store.authenticate("Bearer nonsense", now).unwrap(), None);
    // Only a hash is stored: the secret appears nowhere in the listing.
    let listed = store.tokens(Some("alice")).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_used_ms.is_some());
    assert!(!format!("{listed:?}").contains(&laptop.secret[23..]));
    let revoked = store.revoke_token(&laptop.token.id).unwrap();
    assert!(revoked.revoked_ms.is_some());
    assert_eq!(store.authenticate(&laptop.secret, now).unwrap(), None, "revoked");
    assert!(matches!(store.revoke_token("0000000000000000"), Err(MetaError::NoToken(_))));
    // Removing a user removes their tokens.
    store.remove_user("ci-bot").unwrap();
    assert_eq!(store.authenticate(&short.secret, now).unwrap(), None);
    assert!(store.tokens(Some("ci-bot")).unwrap().is_empty());
    assert!(matches!(store.remove_user("ci-bot"), Err(MetaError::NoUser(_))));
    store.remove_user("alice").unwrap();

    // The audit log: appended, read back in order, filtered by time, user and object.
    let entry = |time_ms: i64, user: &str, object: &str| cairn_meta::identity::AuditEntry {
        time_ms,
        user: user.into(),
        address: "127.0.0.1:5555".into(),
        method: "POST".into(),
        path: "/api/2.0/mlflow/runs/create".into(),
        object: object.into(),
        status: 200,
        request: "{\"experiment_id\": \"0\"}".into(),
    };
    store.append_audit(&entry(10, "alice", "experiment_id=0")).unwrap();
    store.append_audit(&entry(20, "bob", "name=churn version=2")).unwrap();
    let all = store.audit(&Default::default()).unwrap();
    assert_eq!(all, vec![entry(10, "alice", "experiment_id=0"), entry(20, "bob", "name=churn version=2")]);
    let query = |since: Option<i64>, user: Option<&str>, object: Option<&str>| {
        let q = cairn_meta::identity::AuditQuery {
            since_ms: since,
            user: user.map(str::to_owned),
            object: object.map(str::to_owned),
            limit: None,
        };
        store.audit(&q).unwrap().len()
    };
    assert_eq!(
        (query(Some(15), None, None), query(None, Some("alice"), None), query(None, None, Some("churn"))),
        (1, 1, 1)
    );
}

fn suite(open: &dyn Fn() -> Store) {
    let store = open();
    identity(&store);
    assert_eq!(store.version().unwrap(), cairn_meta::schema::latest());
    assert_eq!(store.experiment(0).unwrap().unwrap().name, "Default");
    let churn = store.create_experiment("churn", "s3://bucket/churn").unwrap();
    assert_eq!(churn, 1);
    assert!(matches!(store.create_experiment("churn", ""), Err(MetaError::ExperimentExists(_))));
    assert_eq!(store.experiment_by_name("churn").unwrap().unwrap().artifact_location, "s3://bucket/churn");
    assert_eq!(store.experiments().unwrap().len(), 2);

    let first = store.create_run(&new_run(churn, "first", 1_000)).unwrap();
    let second = store.create_run(&new_run(churn, "second", 2_000)).unwrap();
    let other = store.create_run(&new_run(0, "default", 3_000)).unwrap();
    assert_eq!(first.len(), 32);
    assert!(matches!(store.create_run(&new_run(99, "x", 1)), Err(MetaError::NoExperiment(_))));

    // Runs whose owning process is gone are marked KILLED; live ones, finished ones and runs
    // without an owner (an MLflow client's) are left alone.
    {
        let owner = |host: &str, pid: i64| RunOwner { host: host.into(), pid, process_start: 7 };
        let gone = store.create_run(&new_run(0, "gone", 10)).unwrap();
        let live = store.create_run(&new_run(0, "live", 10)).unwrap();
        let remote_stale = store.create_run(&new_run(0, "remote-stale", 10)).unwrap();
        let remote_fresh = store.create_run(&new_run(0, "remote-fresh", 10)).unwrap();
        let done = store.create_run(&new_run(0, "done", 10)).unwrap();
        let unowned = store.create_run(&new_run(0, "unowned", 10)).unwrap();
        store.claim_run(&gone, &owner("here", 100), 50).unwrap();
        store.claim_run(&live, &owner("here", 200), 50).unwrap();
        store.claim_run(&remote_stale, &owner("there", 100), 50).unwrap();
        store.claim_run(&remote_fresh, &owner("there", 100), 50).unwrap();
        store.heartbeat(&remote_fresh, 9_000).unwrap();
        store.claim_run(&done, &owner("here", 100), 50).unwrap();
        store.end_run(&done, RunStatus::Finished, 60).unwrap();
        let alive = |pid: i64, start: i64| pid == 200 && start == 7;
        let mut reaped = store.reap_dead_runs("here", &alive, 10_000, 5_000).unwrap();
        reaped.sort();
        let mut expected = vec![gone.clone(), remote_stale.clone()];
        expected.sort();
        assert_eq!(reaped, expected);
        let status = |id: &str| store.run(id).unwrap().unwrap().info.status.as_str();
        assert_eq!(status(&gone), "KILLED");
        assert_eq!(store.run(&gone).unwrap().unwrap().info.end_time, Some(50));
        assert_eq!(status(&remote_stale), "KILLED");
        for (id, want) in
            [(&live, "RUNNING"), (&remote_fresh, "RUNNING"), (&done, "FINISHED"), (&unowned, "RUNNING")]
        {
            assert_eq!(status(id), want);
        }
        assert!(store.reap_dead_runs("here", &alive, 10_000, 5_000).unwrap().is_empty());
        for id in [gone, live, remote_stale, remote_fresh, done, unowned] {
            store.purge_run(&id).unwrap();
        }
    }

    let params = vec![("lr".to_owned(), "0.01".to_owned()), ("depth".to_owned(), "3".to_owned())];
    let tags = vec![("team".to_owned(), "ml".to_owned())];
    let metrics = vec![metric("loss", 0.9, 0, 10), metric("loss", 0.5, 2, 30), metric("loss", 0.7, 1, 40)];
    store.log_batch(&first, &metrics, &params, &tags).unwrap();
    // The same param value again is fine; another value is refused, and the whole batch
    // with it (its metric is not recorded).
    store.log_batch(&first, &[], &params[..1], &[]).unwrap();
    let changed = store.log_batch(&first, &[metric("acc", 1.0, 0, 1)], &[("lr".into(), "0.1".into())], &[]);
    assert!(matches!(changed, Err(MetaError::ParamChanged { .. })), "{changed:?}");
    assert!(matches!(store.log_batch("nope", &[], &params, &[]), Err(MetaError::NoRun(_))));
    // Tags are overwritten.
    store.log_batch(&first, &[], &[], &[("team".into(), "platform".into())]).unwrap();

    let run = store.run(&first).unwrap().unwrap();
    assert_eq!(run.info.status, RunStatus::Running);
    assert_eq!(run.info.git_commit.as_deref(), Some("4f2a"));
    assert!(run.info.git_dirty);
    assert_eq!(run.params, vec![("depth".to_owned(), "3".to_owned()), ("lr".to_owned(), "0.01".to_owned())]);
    assert_eq!(run.tags, vec![("team".to_owned(), "platform".to_owned())]);
    assert_eq!(run.metrics, vec![metric("loss", 0.5, 2, 30)], "the latest is the highest step");
    let history = store.metric_history(&first, "loss").unwrap();
    assert_eq!(history.iter().map(|m| m.step).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(store.run("nope").unwrap().is_none());

    store.end_run(&first, RunStatus::Finished, 5_000).unwrap();
    assert!(matches!(store.end_run("nope", RunStatus::Failed, 1), Err(MetaError::NoRun(_))));
    let run = store.run(&first).unwrap().unwrap();
    assert_eq!((run.info.status.as_str(), run.info.end_time), ("FINISHED", Some(5_000)));

    let found: Vec<String> =
        store.search_runs(&[churn], 100).unwrap().into_iter().map(|r| r.info.run_id).collect();
    assert_eq!(found, vec![second.clone(), first.clone()], "newest first, one experiment");
    assert_eq!(store.search_runs(&[], 100).unwrap().len(), 3);
    assert_eq!(store.search_runs(&[], 1).unwrap()[0].info.run_id, other);
    // A listing reads only the keys it names; whole runs by id come back in the order asked.
    let columns = cairn_meta::Columns { params: vec!["lr".into(), "it's".into()], ..Default::default() };
    let slim = store.runs_with(cairn_meta::View::Active, &columns).unwrap();
    let slim_first = slim.iter().find(|r| r.info.run_id == first).unwrap();
    assert_eq!(slim_first.params, vec![("lr".to_owned(), "0.01".to_owned())]);
    assert!(slim_first.metrics.is_empty() && slim_first.tags.is_empty());
    let whole = store.runs_by_id(&[first.clone(), other.clone(), "nope".into()]).unwrap();
    assert_eq!(
        whole.iter().map(|r| r.info.run_id.as_str()).collect::<Vec<_>>(),
        [first.as_str(), other.as_str()]
    );
    assert_eq!(whole[0].params.len(), 2);
    // Pages in start order read from the index: newest first, then after the last one seen.
    let (page, total) = store.run_ids_by_start(true, None, 2).unwrap();
    assert_eq!((page, total), (vec![other.clone(), second.clone()], 3));
    let (page, _) = store.run_ids_by_start(true, Some((2_000, &second)), 2).unwrap();
    assert_eq!(page, vec![first.clone()]);
    let (page, _) = store.run_ids_by_start(false, Some((1_000, &first)), 5).unwrap();
    assert_eq!(page, vec![second.clone(), other.clone()]);
    let (param_keys, metric_keys) = store.run_keys().unwrap();
    assert_eq!(
        (param_keys, metric_keys),
        (vec!["depth".to_owned(), "lr".to_owned()], vec!["loss".to_owned()])
    );
    store.delete_run(&second).unwrap();
    assert_eq!(store.search_runs(&[churn], 100).unwrap().len(), 1);

    let stage = StageRecord {
        stage: "train".into(),
        action: "ran".into(),
        start_time: 1_100,
        wall_ms: 420,
        cpu_ms: Some(800),
        max_rss_kb: Some(51_200),
        fingerprint: Some("blake3:ab".into()),
        log: Some(".cairn/state/logs/train.log".into()),
        error: Some("check `rows`: 0 rows".into()),
    };
    store.record_stage(&first, &stage).unwrap();
    store.record_stage(&first, &StageRecord { wall_ms: 430, ..stage.clone() }).unwrap();
    store
        .record_stage(
            &first,
            &StageRecord { stage: "prep".into(), start_time: 1_000, cpu_ms: None, ..stage.clone() },
        )
        .unwrap();
    let stages = store.stages(&first).unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!((stages[0].stage.as_str(), stages[0].cpu_ms), ("prep", None));
    assert_eq!(stages[1].wall_ms, 430);
    assert_eq!(stages[1].error.as_deref(), Some("check `rows`: 0 rows"), "why it failed is kept");
    let io = vec![
        IoRecord { direction: "input".into(), path: "data/raw".into(), digest: d("01"), size: 10 },
        IoRecord { direction: "output".into(), path: "model.onnx".into(), digest: d("02"), size: 20 },
    ];
    store.record_io(&first, &io).unwrap();
    assert_eq!(store.io(&first).unwrap(), io);

    // Concurrent writers to one run lose nothing: threads sharing the store, and a second
    // store (another connection, as another process would have).
    let other_store = open();
    std::thread::scope(|scope| {
        for t in 0..4i64 {
            let target = if t % 2 == 0 { &store } else { &other_store };
            let first = &first;
            scope.spawn(move || {
                for i in 0..50 {
                    target
                        .log_batch(first, &[metric("step_loss", i as f64, t * 100 + i, i)], &[], &[])
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.metric_history(&first, "step_loss").unwrap().len(), 200);

    // Non-finite metric values survive (SQLite alone would turn a NaN into NULL).
    store
        .log_batch(&first, &[metric("odd", f64::NAN, 0, 1), metric("inf", f64::INFINITY, 0, 1)], &[], &[])
        .unwrap();
    let run = store.run(&first).unwrap().unwrap();
    assert!(run.metrics.iter().find(|m| m.key == "odd").unwrap().value.is_nan());
    assert_eq!(run.metrics.iter().find(|m| m.key == "inf").unwrap().value, f64::INFINITY);
    assert!(store.metric_history(&first, "odd").unwrap()[0].value.is_nan());

    // Deleted runs leave the active view and refuse writes until restored.
    let doomed = store.create_run(&new_run(churn, "doomed", 3_000)).unwrap();
    store.delete_run(&doomed).unwrap();
    assert!(store.runs(&[churn], View::Active).unwrap().iter().all(|r| r.info.run_id != doomed));
    assert!(store.runs(&[churn], View::Deleted).unwrap().iter().any(|r| r.info.run_id == doomed));
    assert!(matches!(
        store.log_batch(&doomed, &[], &[("a".into(), "1".into())], &[]),
        Err(MetaError::RunNotActive(_))
    ));
    store.restore_run(&doomed).unwrap();
    store.update_run(&doomed, &RunUpdate { name: Some("renamed".into()), ..RunUpdate::default() }).unwrap();
    let renamed = store.run(&doomed).unwrap().unwrap();
    assert_eq!(renamed.info.name, "renamed");
    assert!(renamed.tags.contains(&("mlflow.runName".into(), "renamed".into())));
    store.purge_run(&doomed).unwrap();
    assert!(store.run(&doomed).unwrap().is_none());

    // Experiment tags, renames and deletion.
    let vision = store.create_experiment_with_tags("vision", "", &[("team".into(), "cv".into())]).unwrap();
    let found = store.experiment(vision).unwrap().unwrap();
    assert_eq!(found.artifact_location, format!("mlflow-artifacts:/{vision}"));
    assert_eq!(found.tags, vec![("team".to_owned(), "cv".to_owned())]);
    assert!(matches!(store.rename_experiment(vision, "churn"), Err(MetaError::ExperimentExists(_))));
    store.rename_experiment(vision, "vision-2").unwrap();
    store.set_experiment_stage(vision, "deleted").unwrap();
    assert!(store.search_experiments(View::Active).unwrap().iter().all(|e| e.id != vision));

    // Artifacts: a path tree over cache objects.
    for (path, size) in
        [("0/r/artifacts/a.txt", 1), ("0/r/artifacts/d/b.txt", 2), ("0/r2/artifacts/c.txt", 3)]
    {
        store.put_artifact(&Artifact { path: path.into(), digest: d(&format!("{size:02}")), size }).unwrap();
    }
    let under: Vec<String> =
        store.artifacts_under("0/r/artifacts").unwrap().into_iter().map(|a| a.path).collect();
    assert_eq!(under, ["0/r/artifacts/a.txt", "0/r/artifacts/d/b.txt"]);
    assert_eq!(store.artifact("0/r2/artifacts/c.txt").unwrap().unwrap().size, 3);
    assert_eq!(store.delete_artifacts("0/r/artifacts/d").unwrap(), 1);
    assert_eq!(store.artifacts_under("0/r").unwrap().len(), 1);

    // The model registry.
    let version = |digest: &str, metrics: &str| NewVersion {
        digest: d(digest),
        size: 10,
        kind: cairn_meta::registry::VersionKind::File,
        model_file: String::new(),
        runtime: "onnx".into(),
        source: "models/churn.onnx".into(),
        run_id: None,
        signature: "{}".into(),
        lineage: format!("{{\"metrics\": {metrics}}}"),
        profile: None,
        description: String::new(),
        user: String::new(),
    };
    assert_eq!(store.register_version("churn", &version("blake3:aa", r#"{"acc": 0.8}"#)).unwrap(), (1, true));
    assert_eq!(
        store.register_version("churn", &version("blake3:bb", r#"{"acc": 0.95}"#)).unwrap(),
        (2, true)
    );
    assert_eq!(store.register_version("churn", &version("blake3:aa", "{}")).unwrap(), (1, false));
    store
        .set_policy(
            "churn",
            "production",
            Some(&Policy { approvals: 1, conditions: vec!["acc >= 0.9".into()], allow_delete: false }),
        )
        .unwrap();
    assert_eq!(store.policy_violations("churn", "production", 2).unwrap().len(), 1, "no approval yet");
    store.approve("churn", 2, "ada", "checked").unwrap();
    assert!(store.policy_violations("churn", "production", 2).unwrap().is_empty());
    assert!(
        store.policy_violations("churn", "production", 1).unwrap().iter().any(|p| p.contains("acc = 0.8"))
    );
    assert_eq!(store.move_alias("churn", "production", Some(2), "ada", "release").unwrap(), None);
    assert_eq!(store.move_alias("churn", "production", Some(1), "ada", "rollback").unwrap(), Some(2));
    assert_eq!(store.resolve_alias("churn", "production").unwrap(), Some(1));
    let history = store.alias_history("churn", Some("production")).unwrap();
    assert_eq!(
        history.iter().map(|m| (m.previous, m.version)).collect::<Vec<_>>(),
        [(None, Some(2)), (Some(2), Some(1))]
    );
    assert!(matches!(store.move_alias("churn", "x", Some(9), "ada", ""), Err(MetaError::NoModelVersion(_))));
    // A protected alias protects its model from deletion, naming the policy, unless the
    // policy allows it.
    let refused = store.delete_model("churn").unwrap_err();
    assert!(matches!(&refused, MetaError::Protected { alias, .. } if alias == "production"), "{refused}");
    assert!(refused.to_string().contains("acc >= 0.9"), "{refused}");
    assert!(store.model("churn").unwrap().is_some());
    let mut lenient = store.policy("churn", "production").unwrap().unwrap();
    lenient.allow_delete = true;
    store.set_policy("churn", "production", Some(&lenient)).unwrap();
    assert!(store.policy("churn", "production").unwrap().unwrap().allow_delete);
    lenient.allow_delete = false;
    store.set_policy("churn", "production", Some(&lenient)).unwrap();
    // Rollouts: a canary with a weight and shadows, in the routing snapshot servers poll.
    let rollout = Rollout { canary: Some(2), weight: 25, shadows: vec![2], user: "ada".into(), time: 0 };
    store.set_rollout("churn", "production", Some(&rollout)).unwrap();
    let snapshot = store.routing_snapshot().unwrap();
    let key = ("churn".to_owned(), "production".to_owned());
    assert_eq!(snapshot.aliases[&key], 1);
    assert_eq!(snapshot.latest["churn"], 2);
    let stored = &snapshot.rollouts[&key];
    assert_eq!((stored.canary, stored.weight, stored.shadows.clone()), (Some(2), 25, vec![2]));
    assert!(matches!(
        store.set_rollout("churn", "production", Some(&Rollout { canary: Some(9), ..rollout.clone() })),
        Err(MetaError::NoModelVersion(_))
    ));
    assert!(matches!(
        store.set_rollout("churn", "staging", Some(&rollout)),
        Err(MetaError::NoModelVersion(_))
    ));
    store.set_model_tag("churn", 0, "team", "growth").unwrap();
    store.set_model_tag("churn", 2, "validated", "yes").unwrap();
    store.set_model_tag("churn", 2, "validated", "twice").unwrap();
    assert!(matches!(store.set_model_tag("churn", 7, "k", "v"), Err(MetaError::NoModelVersion(_))));
    store.rename_model("churn", "churn-v2").unwrap();
    assert_eq!(store.model_tags("churn-v2", 2).unwrap(), [("validated".to_owned(), "twice".to_owned())]);
    store.delete_model_tag("churn-v2", 0, "team").unwrap();
    assert!(store.model_tags("churn-v2", 0).unwrap().is_empty());
    assert_eq!(store.model_versions("churn-v2").unwrap().len(), 2);
    assert_eq!(store.resolve_alias("churn-v2", "production").unwrap(), Some(1));
    assert_eq!(
        store.rollout("churn-v2", "production").unwrap().unwrap().weight,
        25,
        "the rollout follows a rename"
    );
    store.set_rollout("churn-v2", "production", None).unwrap();
    assert!(store.rollout("churn-v2", "production").unwrap().is_none());
    // The policy followed the rename, and still guards the model.
    assert!(matches!(store.delete_model("churn-v2"), Err(MetaError::Protected { .. })));
    store.set_policy("churn-v2", "production", None).unwrap();
    store.delete_model("churn-v2").unwrap();
    assert!(store.model("churn-v2").unwrap().is_none());

    logged_models(&store, churn, &first);

    // A batch larger than one INSERT statement's rows keeps every point, in order.
    let big = store.create_run(&new_run(churn, "big", 9_000)).unwrap();
    let many: Vec<Metric> = (0..250).map(|i| metric("many", f64::from(i), i64::from(i), 10)).collect();
    store.log_batch(&big, &many, &[], &[]).unwrap();
    let history = store.metric_history(&big, "many").unwrap();
    assert_eq!(history.len(), 250);
    assert_eq!(history.last().unwrap().value, 249.0);
    let latest = store.run(&big).unwrap().unwrap().metrics;
    assert_eq!(latest.iter().find(|m| m.key == "many").unwrap().step, 249);

    // Opening again finds the schema current and the data there.
    drop(store);
    let again = open();
    assert_eq!(again.run(&first).unwrap().unwrap().params.len(), 2);
}

/// MLflow 3's logged models: created pending under the experiment's artifact location,
/// params immutable, tags replaceable, metrics linked to a run without repeating the run's
/// points, finalized with a digest, searched per experiment, deleted softly.
fn logged_models(store: &Store, experiment: i64, run: &str) {
    let new = NewLoggedModel {
        experiment_id: experiment,
        name: "model".into(),
        model_type: "sklearn".into(),
        source_run_id: Some(run.to_owned()),
        user: "ada".into(),
        params: vec![("alpha".into(), "0.5".into())],
        tags: vec![("team".into(), "growth".into())],
    };
    let model = store.create_logged_model(&new).unwrap();
    assert!(model.model_id.starts_with("m-") && model.model_id.len() == 34, "{}", model.model_id);
    assert_eq!(model.artifact_uri, format!("s3://bucket/churn/models/{}/artifacts", model.model_id));
    assert_eq!(model.status, LoggedModelStatus::Pending);
    assert_eq!(model.params, [("alpha".to_owned(), "0.5".to_owned())]);
    let unnamed =
        store.create_logged_model(&NewLoggedModel { experiment_id: 0, ..NewLoggedModel::default() }).unwrap();
    assert!(!unnamed.name.is_empty(), "a model logged without a name gets one");
    assert!(matches!(
        store.create_logged_model(&NewLoggedModel { experiment_id: 99, ..NewLoggedModel::default() }),
        Err(MetaError::NoExperiment(_))
    ));
    assert!(matches!(
        store.log_logged_model_params(&model.model_id, &[("alpha".into(), "0.9".into())]),
        Err(MetaError::ModelParamChanged { .. })
    ));
    store
        .log_logged_model_params(
            &model.model_id,
            &[("alpha".into(), "0.5".into()), ("depth".into(), "3".into())],
        )
        .unwrap();
    store.set_logged_model_tags(&model.model_id, &[("team".into(), "core".into())]).unwrap();
    assert!(store.delete_logged_model_tag(&model.model_id, "absent").is_ok_and(|removed| !removed));

    // The client re-logs the run's point for the model: the run keeps one copy.
    let point = metric("auc", 0.8, 1, 5_000);
    store.log_batch(run, std::slice::from_ref(&point), &[], &[]).unwrap();
    let linked = ModelMetric {
        metric: point,
        run_id: Some(run.to_owned()),
        dataset_name: Some("eval".into()),
        dataset_digest: Some("d1".into()),
    };
    store.log_model_metrics(Some(run), &model.model_id, std::slice::from_ref(&linked)).unwrap();
    assert_eq!(store.metric_history(run, "auc").unwrap().len(), 1);
    store.log_run_models(run, ModelDirection::Output, &[(model.model_id.clone(), 1)]).unwrap();
    assert!(matches!(
        store.log_run_models(run, ModelDirection::Output, &[("m-missing".into(), 0)]),
        Err(MetaError::NoLoggedModel(_))
    ));
    let outputs = store.run(run).unwrap().unwrap().models;
    assert_eq!(
        outputs,
        [RunModel { model_id: model.model_id.clone(), direction: ModelDirection::Output, step: 1 }]
    );

    let ready =
        store.finalize_logged_model(&model.model_id, LoggedModelStatus::Ready, Some(d("ab"))).unwrap();
    assert_eq!(ready.status, LoggedModelStatus::Ready);
    assert_eq!(ready.digest, Some(d("ab")));
    assert_eq!(ready.metrics, [linked]);
    assert_eq!(ready.tags, [("team".to_owned(), "core".to_owned())]);
    assert_eq!(ready.params.len(), 2);
    let found: Vec<String> =
        store.logged_models(&[experiment]).unwrap().into_iter().map(|m| m.model_id).collect();
    assert_eq!(found, std::slice::from_ref(&model.model_id));
    assert_eq!(store.logged_models(&[]).unwrap().len(), 2);
    store.delete_logged_model(&model.model_id).unwrap();
    assert!(store.logged_models(&[experiment]).unwrap().is_empty());
    assert_eq!(store.logged_model(&model.model_id).unwrap().unwrap().lifecycle_stage, "deleted");
    assert!(matches!(store.delete_logged_model("m-missing"), Err(MetaError::NoLoggedModel(_))));
}

#[test]
fn sqlite_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/meta.sqlite");
    let location = path.to_str().unwrap().to_owned();
    suite(&|| cairn_meta::open(&location).unwrap());
    assert!(matches!(cairn_meta::open("mysql://x"), Err(MetaError::BadLocation(_))));
}

#[test]
fn a_store_newer_than_this_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.sqlite");
    let location = path.to_str().unwrap();
    drop(cairn_meta::open(location).unwrap());
    assert!(sqlite_exec(&path, "UPDATE cairn_schema SET version = 99"), "could not edit the schema version");
    match cairn_meta::open(location) {
        Err(MetaError::TooNew { found: 99, .. }) => {}
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer store was opened"),
    }
}

/// Runs one SQL statement on an SQLite file, outside the store (Python's standard sqlite3
/// module), as a future cairn writing a newer schema would.
fn sqlite_exec(path: &Path, sql: &str) -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()",
        ])
        .arg(path)
        .arg(sql)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn postgres_backend() {
    let server = Postgres::start();
    suite(&|| cairn_meta::open(&server.url).unwrap());
    let bad = format!("postgres://postgres:secret@127.0.0.1:{}/no_such_db", server.port);
    match cairn_meta::open(&bad) {
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("no_such_db") && !message.contains("secret"), "{message}");
        }
        Ok(_) => panic!("connected to a database that does not exist"),
    }
}

/// A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, stopped when dropped.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
    url: String,
}

impl Postgres {
    fn start() -> Self {
        let bin = postgres_bin().expect(
            "PostgreSQL is not installed: `apt-get install -y postgresql` (Debian), or put initdb and pg_ctl on PATH",
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // initdb refuses to run as root: run the server as the `postgres` user then.
        let as_postgres = running_as_root();
        if as_postgres {
            std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Postgres { _dir: dir, data, bin, as_postgres, port, url: String::new() };
        server.pg(
            "initdb",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", server.data.display());
        let log = server.data.join("server.log");
        server.pg(
            "pg_ctl",
            &[
                "-D",
                server.data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        server.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        server
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let output = if self.as_postgres {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !self.url.is_empty() {
            let data = self.data.to_str().unwrap_or_default().to_owned();
            let program = self.bin.join("pg_ctl");
            let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
            let _ = if self.as_postgres {
                Command::new("runuser").args(["-u", "postgres", "--"]).arg(&program).args(args).output()
            } else {
                Command::new(&program).args(args).output()
            };
        }
    }
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The directory holding `initdb` and `pg_ctl`: Debian's versioned directory, else PATH.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(PathBuf::from)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}
