//! Cairn's metadata store: experiments, runs, params, metrics (with history), tags, the
//! stages of each run and the digests of what they read and wrote.
//!
//! One trait, [`MetaStore`], with two backends that pass the same test suite: embedded SQLite
//! (the default: a file under `.cairn/`, no setup) and PostgreSQL for teams (a
//! `postgres://` URL in config). Both run the same SQL; the schema is versioned and migrated
//! forward on open ([`schema`]). The data model follows MLflow's tracking model (experiments
//! with integer ids, runs with hex ids, params that never change once logged, metrics as a
//! history of `(value, timestamp, step)`), so the MLflow-compatible server can sit on it.

mod backend;
pub mod identity;
pub mod logged_models;
#[cfg(feature = "postgres")]
mod postgres_backend;
pub mod registry;
pub mod schema;
pub mod search;
mod sqlite_backend;
mod store;

pub use logged_models::{LoggedModel, LoggedModelStatus, ModelMetric, NewLoggedModel};
pub use store::Store;

/// An error from the metadata store; each names the store (a path or a URL without its
/// password) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store `{location}`: {message}")]
    Backend { location: String, message: String },
    #[error(
        "metadata store `{location}` has schema version {found}; this cairn knows up to {supported}: upgrade cairn"
    )]
    TooNew { location: String, found: i64, supported: i64 },
    #[error("no run with id `{0}`")]
    NoRun(String),
    #[error("run `{0}` is deleted; restore it before logging to it")]
    RunNotActive(String),
    #[error("no model version `{0}`")]
    NoModelVersion(String),
    #[error("no experiment `{0}`")]
    NoExperiment(String),
    #[error("experiment `{0}` is deleted; restore it before logging to it")]
    ExperimentNotActive(String),
    #[error("no logged model with id `{0}`")]
    NoLoggedModel(String),
    #[error(
        "param `{key}` of logged model `{model}` is already `{old}` and cannot become `{new}`; params are immutable (log the new value under another key)"
    )]
    ModelParamChanged { model: String, key: String, old: String, new: String },
    #[error(
        "model `{model}` cannot be deleted: its alias `{alias}` is protected by a policy ({policy}); clear the policy (`cairn model policy {model} {alias} --clear`) or allow deletion in it (`--allow-delete`) first"
    )]
    Protected { model: String, alias: String, policy: String },
    #[error("an experiment named `{0}` already exists")]
    ExperimentExists(String),
    #[error(
        "param `{key}` of run `{run}` is already `{old}` and cannot become `{new}`; params are immutable (log the new value under another key)"
    )]
    ParamChanged { run: String, key: String, old: String, new: String },
    #[error(
        "`{0}` is not a metadata store location: use a file path (SQLite) or postgres://user@host:port/db"
    )]
    BadLocation(String),
    /// A stored value is not what this version of Cairn writes (a hand-edited database).
    #[error("the metadata store holds a malformed {what}: `{value}`")]
    Corrupt { what: &'static str, value: String },
    #[error("`{0}` is not a valid name: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`")]
    BadName(String),
    #[error("a user named `{0}` already exists")]
    UserExists(String),
    #[error("no user named `{0}`")]
    NoUser(String),
    #[error("no token with id `{0}`")]
    NoToken(String),
}

impl MetaError {
    /// What the user can do about it, where there is something to do.
    pub fn hint(&self) -> Option<&'static str> {
        use MetaError as E;
        match self {
            E::Backend { .. } | E::BadLocation(_) => None,
            E::Corrupt { .. } => Some("the store was changed by hand or damaged; restore it from a backup"),
            E::TooNew { .. } => Some("install a newer cairn, or point `meta.url` at another store"),
            E::NoRun(_) => Some("list runs with `cairn exp show`"),
            E::RunNotActive(_) | E::ExperimentNotActive(_) => None,
            E::NoModelVersion(_) => Some("list versions with `cairn model versions NAME`"),
            E::NoExperiment(_) | E::NoLoggedModel(_) => None,
            E::ModelParamChanged { .. } | E::ParamChanged { .. } | E::Protected { .. } => None,
            E::ExperimentExists(_) | E::UserExists(_) => Some("choose another name"),
            E::BadName(_) => None,
            E::NoUser(_) => Some("list users with `cairn user list`"),
            E::NoToken(_) => Some("list tokens with `cairn token list`"),
        }
    }
}

pub type Result<T, E = MetaError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: i64,
    pub name: String,
    pub artifact_location: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// Milliseconds since the Unix epoch.
    pub creation_time: i64,
    pub last_update_time: i64,
    pub tags: Vec<(String, String)>,
}

/// The parts of runs a listing reads ([`Store::runs_with`]): these params, tags and metrics,
/// and dataset inputs if `inputs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub metrics: Vec<String>,
    pub params: Vec<String>,
    pub tags: Vec<String>,
    pub inputs: bool,
}

/// Which runs or experiments a search sees, by lifecycle stage (MLflow's `ViewType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Active,
    Deleted,
    All,
}

impl View {
    /// The SQL condition on `table`'s lifecycle stage.
    fn clause(self, table: &str) -> String {
        match self {
            View::Active => format!("{table}.lifecycle_stage = 'active'"),
            View::Deleted => format!("{table}.lifecycle_stage = 'deleted'"),
            View::All => "1 = 1".to_owned(),
        }
    }
}

/// Where a run is in its life (MLflow's `RunStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RunStatus {
    /// Running now (a live process owns it, see [`RunOwner`]).
    #[default]
    Running,
    /// Queued, not started (`cairn exp run --queue`).
    Scheduled,
    Finished,
    Failed,
    /// Stopped (Ctrl-C), or its process died.
    Killed,
}

impl RunStatus {
    /// MLflow's name: `RUNNING`, `SCHEDULED`, `FINISHED`, `FAILED`, `KILLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }

    /// Reads MLflow's names and the enum's numbers (1 to 5).
    pub fn parse(text: &str) -> Option<RunStatus> {
        Some(match text {
            "RUNNING" | "1" => RunStatus::Running,
            "SCHEDULED" | "2" => RunStatus::Scheduled,
            "FINISHED" | "3" => RunStatus::Finished,
            "FAILED" | "4" => RunStatus::Failed,
            "KILLED" | "5" => RunStatus::Killed,
            _ => return None,
        })
    }

    /// Whether the run has ended (finished, failed or killed).
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Finished | RunStatus::Failed | RunStatus::Killed)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RunStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Changes to a run's info; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    pub end_time: Option<i64>,
    pub name: Option<String>,
}

/// A file in the artifact tree: a path naming a cache object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: String,
    pub digest: cairn_hash::Digest,
    pub size: i64,
}

/// The process that runs a run: where, which pid, and when that pid started (ticks since
/// boot on Linux), so that a pid reused by another process is not taken for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOwner {
    pub host: String,
    pub pid: i64,
    pub process_start: i64,
}

/// What a new run starts with.
#[derive(Debug, Clone, Default)]
pub struct NewRun {
    pub experiment_id: i64,
    pub name: String,
    /// The run this one re-runs or varies (experiments).
    pub parent_run_id: Option<String>,
    pub user: String,
    pub git_commit: Option<String>,
    pub git_dirty: bool,
    /// Milliseconds since the Unix epoch.
    pub start_time: i64,
    /// What started it: `cairn run`, `cairn exp run`, `mlflow`.
    pub source: String,
    pub artifact_uri: String,
    /// The process that runs it, recorded in the same transaction (see
    /// [`Store::claim_run`]): a run is never left `RUNNING` without one.
    pub owner: Option<RunOwner>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub parent_run_id: Option<String>,
    pub status: RunStatus,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub user: String,
    pub git_commit: Option<String>,
    pub git_dirty: bool,
    pub source: String,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

/// A run with its params, tags and latest metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Run {
    pub info: RunInfo,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// The latest value of each metric (highest step, then latest timestamp).
    pub metrics: Vec<Metric>,
    /// Dataset inputs, each MLflow's `DatasetInput` as JSON.
    pub inputs: Vec<String>,
    /// The logged models the run read or produced.
    pub models: Vec<RunModel>,
}

/// A logged model a run read (MLflow's `ModelInput`) or produced (`ModelOutput`, at a step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunModel {
    pub model_id: String,
    pub direction: ModelDirection,
    pub step: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelDirection {
    Input,
    Output,
}

impl ModelDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelDirection::Input => "input",
            ModelDirection::Output => "output",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub step: i64,
}

/// One stage of a run: what happened to it and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    pub stage: String,
    /// `ran`, `restored`, `fresh`, `failed`, ...
    pub action: String,
    pub start_time: i64,
    pub wall_ms: i64,
    pub cpu_ms: Option<i64>,
    pub max_rss_kb: Option<i64>,
    pub fingerprint: Option<String>,
    /// Where the stage's full output is kept.
    pub log: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A path a run read (`input`) or wrote (`output`), by content digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoRecord {
    pub direction: String,
    pub path: String,
    pub digest: cairn_hash::Digest,
    pub size: i64,
}

/// Opens (creating and migrating as needed) the store at `location`: a `postgres://` or
/// `postgresql://` URL, or else a path to an SQLite file.
pub fn open(location: &str) -> Result<Store> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Store::new(Box::new(postgres_backend::Postgres::connect(location)?));
        #[cfg(not(feature = "postgres"))]
        return Err(MetaError::Backend {
            location: redact(location),
            message: "this build of Cairn has no PostgreSQL support (the `postgres` feature of cairn-meta)"
                .into(),
        });
    } else if location.contains("://") {
        Err(MetaError::BadLocation(redact(location)))
    } else {
        Store::new(Box::new(sqlite_backend::Sqlite::open(std::path::Path::new(location))?))
    }
}

/// A location for messages: a URL's password is replaced by `***`.
pub fn redact(location: &str) -> String {
    let Some((scheme, rest)) = location.split_once("://") else { return location.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return location.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => location.to_owned(),
    }
}

/// The path in the artifact tree (the `artifacts` table) that an artifact URI names:
/// `mlflow-artifacts:/1/abc/artifacts` → `1/abc/artifacts`, also with a host
/// (`mlflow-artifacts://host:5000/...`) or as the proxy's HTTP URL; `None` for URIs the tree
/// does not hold (`s3://...`).
pub fn artifact_tree_path(uri: &str) -> Option<String> {
    const PROXY: &str = "/api/2.0/mlflow-artifacts/artifacts";
    let rest = if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
        match rest.strip_prefix("//") {
            Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
            None => rest,
        }
    } else {
        let (_, rest) = uri.split_once(PROXY)?;
        rest
    };
    Some(rest.trim_matches('/').to_owned())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
