//! The application layer used the way a front end other than the CLI would: a workspace over
//! a repository, with its own idea of who is acting, and no `cairn` binary anywhere.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use cairn_app::registry::{self, PolicyChange, Register};
use cairn_app::{Environment, Error, Workspace};

/// A front end's surroundings: a fixed user, no cloud credentials.
struct Service(&'static str);

impl Environment for Service {
    fn user(&self) -> String {
        self.0.to_owned()
    }

    fn aws(&self) -> cairn_remote::AwsEnvironment {
        cairn_remote::AwsEnvironment::default()
    }
}

const MLMODEL: &str = r#"
flavors:
  python_function: {loader_module: mlflow.sklearn, python_version: 3.11.7}
  sklearn: {pickled_model: model.pkl}
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"#;

fn workspace(root: &Path, user: &'static str) -> Workspace {
    cairn_git::GitRepo::init(root).unwrap();
    cairn_repo::Repo::init(root).unwrap();
    let repo = cairn_repo::Repo::open(root, &cairn_repo::OpenOptions::default()).unwrap();
    Workspace::new(repo, Box::new(Service(user)))
}

fn model_dir(root: &Path, content: &str) {
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("MLmodel"), MLMODEL).unwrap();
    std::fs::write(dir.join("model.pkl"), content).unwrap();
}

fn register(ws: &Workspace) -> registry::Registered {
    let request = Register {
        name: "churn".into(),
        path: "model".into(),
        run: None,
        training_data: None,
        feature_names: Vec::new(),
        description: "from a service".into(),
    };
    registry::register(ws, &request, &cairn_repo::NoReporter).unwrap()
}

#[test]
fn a_front_end_registers_promotes_and_reads_history_as_its_own_user() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), "ci-bot");
    model_dir(dir.path(), "v1");
    let first = register(&ws);
    assert_eq!((first.version, first.created), (1, true));
    assert_eq!(first.signature.inputs[0].dtype, "float64");
    // The same content is the same version: registering is idempotent.
    let again = register(&ws);
    assert_eq!((again.version, again.created, again.digest), (1, false, first.digest));
    model_dir(dir.path(), "v2");
    assert_eq!(register(&ws).version, 2);

    let moved = registry::alias(&ws, "churn@1", "production", "first release").unwrap();
    assert_eq!((moved.version, moved.previous), (1, None));
    let moved = registry::alias(&ws, "churn@2", "production", "better").unwrap();
    assert_eq!((moved.version, moved.previous), (2, Some(1)));
    let history = registry::history(&ws, "churn", Some("production")).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|m| m.user == "ci-bot"), "{history:?}");
    // The JSON a web UI or API returns is the same value `--json` prints.
    let json = serde_json::to_value(&history[0]).unwrap();
    assert!(json["time"].as_str().unwrap().ends_with('Z'), "{json}");
    assert_eq!(json["time_ms"], history[0].time_ms);

    let shown = registry::show(&ws, "churn@production").unwrap();
    assert_eq!((shown.version, shown.user.as_str()), (2, "ci-bot"));
    let listed = registry::list(&ws).unwrap();
    assert_eq!(listed[0].aliases.get("production"), Some(&2));
}

#[test]
fn a_policy_refuses_a_move_with_a_hint_and_moves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), "alice");
    model_dir(dir.path(), "v1");
    register(&ws);
    let policy = PolicyChange { approvals: Some(1), ..Default::default() };
    registry::policy(&ws, "churn", "production", &policy).unwrap();
    let error = registry::alias(&ws, "churn@1", "production", "").unwrap_err();
    let Error::Refused { message, hint } = error else { panic!("not a refusal") };
    assert!(message.contains("may not become `production`"), "{message}");
    assert!(hint.unwrap().contains("did not move"));
    assert!(registry::history(&ws, "churn", Some("production")).unwrap().is_empty());
    registry::approve(&ws, "churn@1", "checked the eval report").unwrap();
    registry::alias(&ws, "churn@1", "production", "approved").unwrap();
}

#[test]
fn garbage_collection_keeps_what_the_registry_names() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), "alice");
    model_dir(dir.path(), "weights");
    let registered = register(&ws);
    // The model directory is not tracked by a pointer: only the registry keeps it.
    std::fs::remove_dir_all(dir.path().join("model")).unwrap();
    let _lock = ws.repo().lock(&cairn_repo::NoReporter).unwrap();
    let summary =
        cairn_app::content::gc(&ws, cairn_repo::GcScope::WorkTree, true, &cairn_repo::NoReporter).unwrap();
    assert!(summary.deleted);
    assert!(ws.repo().store().contains(&registered.digest).unwrap(), "gc removed a registered version");
}

#[test]
fn a_malformed_reference_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), "alice");
    let error = registry::alias(&ws, "churn@1", "7", "").unwrap_err();
    assert!(matches!(error, Error::Usage(ref m) if m.contains("is a number")), "{error}");
    let error = cairn_app::serving::rollout(
        &ws,
        &cairn_app::serving::RolloutChange { target: "churn".into(), ..Default::default() },
    )
    .unwrap_err();
    assert!(matches!(error, Error::Usage(ref m) if m.contains("NAME@ALIAS")), "{error}");
}
