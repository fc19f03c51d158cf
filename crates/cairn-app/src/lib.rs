//! Cairn's application layer: every use case a front end offers, as functions over typed
//! requests and results.
//!
//! The CLI, the tracking server, a web UI or a scheduler call the same functions here and
//! get the same values back: a `--json` output is one of this crate's `serde` structs, and
//! the CLI's text output is a rendering of it. The crates below own the mechanisms (the
//! cache, pointers, remotes, the pipeline engine, the metadata store); this crate owns the
//! decisions that combine them — what garbage collection must keep, how a run is recorded,
//! how an experiment is queued, run and shared.
//!
//! Library rule (jj's): nothing here prints, exits, or reads the user's environment. What a
//! front end knows about its surroundings (the acting user, cloud credentials) arrives
//! through [`Environment`]; progress and warnings go through `cairn_repo::Reporter` and
//! `cairn_pipeline::Observer`.
//!
//! | module          | use cases                                                              |
//! |-----------------|------------------------------------------------------------------------|
//! | [`content`]     | what pipelines, runs and the registry keep alive (gc roots); `gc`       |
//! | [`transfer`]    | `push`, `fetch`, `pull`, `gc --cloud` with pipelines' content; remotes  |
//! | [`runcache`]    | run-cache entries on remotes; the remote as a source for `run`          |
//! | [`pipeline`]    | `run`, plans, `explain`, `params`/`metrics` diffs, lineage, partitions  |
//! | [`runs`]        | the run recorder, `exp show`, `exp diff`, run lookup, plotted series    |
//! | [`live`]        | live metrics followed while a pipeline runs                             |
//! | [`experiments`] | `exp run/apply/branch/remove/push/pull`                                 |
//! | [`registry`]    | `model register/list/versions/show/alias/history/approve/policy`        |
//! | [`serving`]     | the model server's assembly, `model rollout`, `trace`                   |
//! | [`monitoring`]  | monitor.yaml, the rule evaluator, retrain, `alerts`, `alerts check`     |
//! | [`reports`]     | `monitor` reports, `monitor requests`, `monitor export`                 |
//! | [`tracking`]    | the tracking server's state, in the foreground or for one run           |
//! | [`identity`]    | users, service accounts and API tokens (`cairn user`, `cairn token`)    |
//! | [`asset_graph`] | the pipeline graph with each stage's state; a run's live progress       |
//! | [`browse`]      | pages of runs (keyset), downsampled metric histories, run comparison   |

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod asset_graph;
pub mod browse;
mod civil;
pub mod content;
pub mod downsample;
mod error;
pub mod experiments;
pub mod identity;
pub mod live;
pub mod monitoring;
pub mod pipeline;
pub mod registry;
pub mod reports;
pub mod runcache;
pub mod runs;
pub mod serving;
pub mod time;
#[cfg(feature = "tracking-server")]
pub mod tracking;
pub mod transfer;

use std::sync::OnceLock;

use cairn_remote::{AwsEnvironment, Remote};
use cairn_repo::Repo;

pub use error::{Error, Result};

/// What the library needs to know about the process's surroundings, provided by the front
/// end: the CLI reads `$USER` and the AWS variables and files, a server its own settings.
pub trait Environment: Send + Sync {
    /// Who is acting, as runs and registry changes record it.
    fn user(&self) -> String;
    /// Credentials and defaults for S3 remotes.
    fn aws(&self) -> AwsEnvironment;
}

/// A repository opened for a front end: the repository and its surroundings.
pub struct Workspace {
    repo: Repo,
    environment: Box<dyn Environment>,
    aws: OnceLock<AwsEnvironment>,
}

impl Workspace {
    pub fn new(repo: Repo, environment: Box<dyn Environment>) -> Self {
        Workspace { repo, environment, aws: OnceLock::new() }
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    pub fn repo_mut(&mut self) -> &mut Repo {
        &mut self.repo
    }

    /// The acting user.
    pub fn user(&self) -> String {
        self.environment.user()
    }

    /// Credentials for remotes, read once.
    pub fn aws(&self) -> &AwsEnvironment {
        self.aws.get_or_init(|| self.environment.aws())
    }

    /// Opens a remote by name (default: `core.remote`, or the only one).
    pub fn remote(&self, name: Option<&str>, jobs: Option<usize>) -> Result<Remote> {
        Ok(self.repo.open_remote(name, self.aws(), jobs)?)
    }

    /// Opens the metadata store (`meta.url`, else SQLite under `.cairn/state/`), marking
    /// `KILLED` the runs whose process is gone.
    pub fn meta(&self) -> Result<cairn_meta::Store> {
        runs::open_meta(&self.repo.meta_location()).map_err(Error::OpenMeta)
    }
}
