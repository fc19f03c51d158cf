//! Cairn pipelines: stages declared in `cairn.yaml`, run only when their inputs changed.
//!
//! * [`spec`] parses `cairn.yaml` (with line numbers for every error), resolves `${...}`
//!   templates and generates `foreach`/`matrix` stages;
//! * [`graph`] validates the stage graph before anything runs and orders it;
//! * [`fingerprint`] names a stage run by everything that determines its outputs (scheme v1,
//!   with test vectors); [`lock`] is `cairn.lock`; [`runcache`] maps fingerprints that ran
//!   to the outputs they produced;
//! * [`engine`] decides per stage — fresh, restore from the run cache, or run — and runs
//!   stages in parallel within CPU, GPU and memory limits through [`exec`];
//! * [`checks`] validates outputs; [`params`] reads params and metrics files.
//!
//! Like the other library crates it never prints: progress and stage output go through
//! [`engine::Observer`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod checks;
pub mod engine;
pub mod exec;
pub mod fingerprint;
pub mod graph;
pub mod lock;
pub mod params;
pub mod partitions;
pub mod runcache;
mod scheduler;
pub mod spec;
pub mod template;

use std::path::{Path, PathBuf};

pub use engine::{Observer, Project, RunOptions};

/// Where each command's `$CAIRN_METRICS_FILE` (step-wise metrics as JSON lines) is, from the
/// project root: one file per stage, or per part of a datum or partitioned stage.
pub const LIVE_METRICS_DIR: &str = ".cairn/state/live";

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("`{}` is not valid: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}:{line}: stage `{stage}`: {message}", file.display())]
    Invalid { file: PathBuf, line: u64, stage: String, message: String },
    #[error("the pipeline in `{}` is not valid: {message}", file.display())]
    Graph { file: PathBuf, message: String },
    #[error("`{}` is damaged: {message}", path.display())]
    Lock { path: PathBuf, message: String },
    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },
    #[error("no stage named `{name}` in cairn.yaml{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownStage { name: String, suggestion: Option<String> },
    #[error("no pipeline: `{}` does not exist", path.display())]
    NoPipeline { path: PathBuf },
    #[error("{} failed: {}{}", if stages.len() == 1 { "a stage" } else { "stages" }, stages.join(", "),
        if not_run.is_empty() { String::new() } else { format!("; not run because of it: {}", not_run.join(", ")) })]
    Failed { stages: Vec<String>, not_run: Vec<String> },
    #[error("interrupted: running stages were stopped and nothing they wrote was cached")]
    Interrupted,
    #[error("could not {action} `{}`: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Repo(#[from] cairn_repo::RepoError),
    #[error(transparent)]
    Git(#[from] cairn_git::GitError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PipelineError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        PipelineError::Io { action, path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    cairn_fs::write(path, bytes).map_err(|e| PipelineError::io("write", path, e))
}
