//! The pipeline as a graph of stages and their outputs, each stage in one state — fresh,
//! stale, running, restored from the run cache, failed, never run — with the reasons a run
//! would give, its last materialization and its partitions; and the live progress of a
//! `cairn run`, which [`Progress`] writes for a UI to poll.
//!
//! The progress file (`.cairn/state/progress.json`) is a derived cache: the run that writes
//! it names itself, and a reader believes it only while that run is `RUNNING` in the
//! metadata store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use cairn_meta::{RunStatus, Store};
use cairn_pipeline::engine::{Decision, PartitionState};
use cairn_pipeline::exec::OutputSink;
use cairn_pipeline::{Observer, Project};
use cairn_repo::Repo;
use serde::{Deserialize, Serialize};

use crate::{Result, Workspace};

/// Where a running `cairn run` writes each stage's state.
const PROGRESS_FILE: &str = ".cairn/state/progress.json";

/// How many recent runs are searched for a stage's last materialization.
const RECENT_RUNS: usize = 50;

/// A stage's state, as the graph colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    Fresh,
    Stale,
    Running,
    Restored,
    Failed,
    NeverRun,
}

/// The pipeline's graph and each stage's state.
#[derive(Debug, Serialize)]
pub struct AssetGraph {
    pub stages: Vec<GraphStage>,
    /// `[from, to]` stage names: `to` reads what `from` writes.
    pub edges: Vec<(String, String)>,
    /// The `cairn run` in progress, if one is.
    pub running: Option<String>,
    /// Why the pipeline cannot be planned (stages then have no state).
    pub error: Option<String>,
}

/// One stage in the graph.
#[derive(Debug, Serialize)]
pub struct GraphStage {
    pub name: String,
    pub state: StageState,
    /// Why a run would run it (`explain`), empty when fresh.
    pub reasons: Vec<String>,
    pub cmd: Vec<String>,
    pub deps: Vec<String>,
    /// Outputs with the digest the lock records for each.
    pub outs: Vec<Output>,
    pub last: Option<Materialization>,
    /// The stage's checks and how they fared in its last materialization.
    pub checks: Vec<CheckState>,
    /// Partitioned and datum stages: their parts as ranges of one state.
    pub parts: Option<PartRanges>,
}

/// A check and its result: `passed` (its outputs were cached, which the checks gate),
/// `failed` (with why), or `not_run`.
#[derive(Debug, Serialize)]
pub struct CheckState {
    pub name: String,
    pub state: &'static str,
    pub message: Option<String>,
}

/// An output path and its recorded content.
#[derive(Debug, Serialize)]
pub struct Output {
    pub path: String,
    pub digest: Option<String>,
    pub size: Option<u64>,
}

/// The last run that ran or restored a stage.
#[derive(Debug, Serialize)]
pub struct Materialization {
    pub run_id: String,
    pub action: String,
    pub start_time: i64,
    pub wall_ms: i64,
    pub cpu_ms: Option<i64>,
    pub max_rss_kb: Option<i64>,
    pub log: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Parts as run-length ranges of one state, in key order: never one element per key.
#[derive(Debug, Serialize)]
pub struct PartRanges {
    pub total: usize,
    /// `[first key, last key, count, state]`.
    pub ranges: Vec<(String, String, usize, &'static str)>,
}

/// The progress file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ProgressFile {
    run_id: String,
    stages: BTreeMap<String, StageState>,
}

/// An observer that records each stage's state in the progress file as a run goes, and
/// passes every event on.
pub struct Progress<'o> {
    inner: &'o dyn Observer,
    path: PathBuf,
    file: Mutex<ProgressFile>,
}

impl<'o> Progress<'o> {
    pub fn new(repo: &Repo, run_id: &str, inner: &'o dyn Observer) -> Self {
        let file = ProgressFile { run_id: run_id.to_owned(), stages: BTreeMap::new() };
        Progress { inner, path: repo.root().join(PROGRESS_FILE), file: Mutex::new(file) }
    }

    /// The state a stage event's phrase announces (see [`Observer::stage`]).
    fn state_of(what: &str) -> Option<StageState> {
        let starts = |prefix: &str| what.starts_with(prefix);
        if starts("running") || starts("datums:") || starts("partitions:") {
            Some(StageState::Running)
        } else if starts("restored") {
            Some(StageState::Restored)
        } else if starts("up to date") || starts("recorded") || starts("ran") || starts("done") {
            Some(StageState::Fresh)
        } else if starts("failed") || starts("blocked") || starts("timed out") {
            Some(StageState::Failed)
        } else {
            None
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl OutputSink for Progress<'_> {
    fn line(&self, stage: &str, line: &str, is_stderr: bool) {
        self.inner.line(stage, line, is_stderr);
    }
}

impl Observer for Progress<'_> {
    fn stage(&self, stage: &str, what: &str) {
        if let (Some(state), Ok(mut file)) = (Self::state_of(what), self.file.lock()) {
            // Only what the graph cannot learn elsewhere is kept (running, failed in this run):
            // a run whose stages are all up to date writes nothing.
            let changed = match state {
                StageState::Running | StageState::Failed => {
                    file.stages.insert(stage.to_owned(), state) != Some(state)
                }
                _ => file.stages.remove(stage).is_some(),
            };
            if changed && let Ok(bytes) = serde_json::to_vec(&*file) {
                // A cache the reader checks against the run's status: not synced.
                let _ = cairn_fs::write_derived(&self.path, &bytes);
            }
        }
        self.inner.stage(stage, what);
    }

    fn warn(&self, message: &str) {
        self.inner.warn(message);
    }
}

/// The progress of the run in progress, if the file names a run that is still running.
fn live_progress(repo: &Repo, store: Option<&Store>) -> Option<ProgressFile> {
    let bytes = std::fs::read(repo.root().join(PROGRESS_FILE)).ok()?;
    let file: ProgressFile = serde_json::from_slice(&bytes).ok()?;
    let run = store?.run(&file.run_id).ok()??;
    (run.info.status == RunStatus::Running).then_some(file)
}

/// The pipeline's graph with every stage's state.
pub fn graph(ws: &Workspace) -> Result<AssetGraph> {
    let repo = ws.repo();
    let mut project = Project::load(repo)?;
    let store = ws.meta().ok();
    let live = live_progress(repo, store.as_ref());
    let (plan, error) = match project.plan(&[], false) {
        Ok(plan) => (plan, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let plan: BTreeMap<String, _> = plan.into_iter().map(|p| (p.stage.clone(), p)).collect();
    let last = store.as_ref().map(last_materializations).unwrap_or_default();
    // Partitioned stages' parts, each a range of one state.
    let partitioned: Vec<String> =
        (project.pipeline.stages.iter()).filter(|s| s.partitions.is_some()).map(|s| s.name.clone()).collect();
    let mut parts: BTreeMap<String, PartRanges> = BTreeMap::new();
    for name in partitioned {
        if let Ok(states) = project.partition_states(&name) {
            parts.insert(name, part_ranges(&states));
        }
    }
    let stages = &project.pipeline.stages;
    let mut out = Vec::with_capacity(stages.len());
    for stage in stages {
        let locked = project.lock.stages.get(&stage.name);
        let planned = plan.get(&stage.name);
        let last = last.get(&stage.name);
        let running = live.as_ref().and_then(|l| l.stages.get(&stage.name)).copied();
        let state = match (running, planned.map(|p| p.decision)) {
            (Some(StageState::Running | StageState::Failed), _) => running.unwrap_or(StageState::Running),
            _ if last.is_some_and(|l| l.action == "failed")
                && planned.is_none_or(|p| p.decision != Decision::Fresh) =>
            {
                StageState::Failed
            }
            _ if locked.is_none() => StageState::NeverRun,
            (_, Some(Decision::Fresh)) if last.is_some_and(|l| l.action == "restored") => {
                StageState::Restored
            }
            (_, Some(Decision::Fresh)) | (_, None) => StageState::Fresh,
            _ => StageState::Stale,
        };
        out.push(GraphStage {
            name: stage.name.clone(),
            state,
            reasons: planned.map(|p| p.reasons.clone()).unwrap_or_default(),
            cmd: stage.cmd.clone(),
            deps: stage.deps.clone(),
            outs: stage
                .outs
                .iter()
                .map(|o| {
                    let content = locked.and_then(|l| l.outs.get(&o.path));
                    Output {
                        path: o.path.clone(),
                        digest: content.map(|c| c.digest.to_string()),
                        size: content.map(|c| c.size),
                    }
                })
                .collect(),
            checks: checks(stage, last),
            last: last.map(|l| Materialization {
                run_id: l.run_id.clone(),
                action: l.action.clone(),
                start_time: l.start_time,
                wall_ms: l.wall_ms,
                cpu_ms: l.cpu_ms,
                max_rss_kb: l.max_rss_kb,
                log: l.log.clone(),
                error: l.error.clone(),
            }),
            parts: parts.remove(&stage.name),
        });
    }
    let mut edges = Vec::new();
    for (i, ups) in project.graph.upstream.iter().enumerate() {
        for &j in ups {
            edges.push((stages[j].name.clone(), stages[i].name.clone()));
        }
    }
    Ok(AssetGraph { stages: out, edges, running: live.map(|l| l.run_id), error })
}

/// A stage's record in the newest run that did more than find it fresh.
struct LastRecord {
    run_id: String,
    action: String,
    start_time: i64,
    wall_ms: i64,
    cpu_ms: Option<i64>,
    max_rss_kb: Option<i64>,
    log: Option<String>,
    error: Option<String>,
}

/// Each stage's last materialization among the recent runs.
fn last_materializations(store: &Store) -> BTreeMap<String, LastRecord> {
    let mut found = BTreeMap::new();
    let runs = store.search_runs(&[], RECENT_RUNS).unwrap_or_default();
    for run in runs {
        for record in store.stages(&run.info.run_id).unwrap_or_default() {
            if record.action == "fresh" || found.contains_key(&record.stage) {
                continue;
            }
            found.insert(
                record.stage.clone(),
                LastRecord {
                    run_id: run.info.run_id.clone(),
                    action: record.action,
                    start_time: record.start_time,
                    wall_ms: record.wall_ms,
                    cpu_ms: record.cpu_ms,
                    max_rss_kb: record.max_rss_kb,
                    log: record.log,
                    error: record.error,
                },
            );
        }
    }
    found
}

/// How a stage's checks fared in its last materialization: they gate caching, so a stage
/// that ran or was restored passed them all; a failure names the check it was.
fn checks(stage: &cairn_pipeline::spec::Stage, last: Option<&LastRecord>) -> Vec<CheckState> {
    use cairn_pipeline::spec::Check;
    stage
        .checks
        .iter()
        .map(|check| {
            let name = match check {
                Check::Command { name, .. } | Check::Table { name, .. } => name.clone(),
            };
            let (state, message) = match last {
                Some(l) if l.action == "failed" => match &l.error {
                    Some(e) if e.starts_with(&format!("check `{name}`")) => ("failed", Some(e.clone())),
                    _ => ("not_run", None),
                },
                Some(l) if matches!(l.action.as_str(), "ran" | "restored" | "recorded") => ("passed", None),
                _ => ("not_run", None),
            };
            CheckState { name, state, message }
        })
        .collect()
}

/// Runs of one state in key order.
fn part_ranges(states: &[(String, PartitionState)]) -> PartRanges {
    let mut ranges: Vec<(String, String, usize, &'static str)> = Vec::new();
    for (key, state) in states {
        match ranges.last_mut() {
            Some(last) if last.3 == state.name() => {
                last.1 = key.clone();
                last.2 += 1;
            }
            _ => ranges.push((key.clone(), key.clone(), 1, state.name())),
        }
    }
    PartRanges { total: states.len(), ranges }
}

/// The tail of a stage's log from its last run here (at most `max_bytes`).
pub fn stage_log(repo: &Repo, stage: &str, max_bytes: usize) -> Result<String> {
    let project = Project::load(repo)?;
    // A stage's log is named after it: a name that is a path is no stage's.
    if stage.contains(['/', '\\'])
        || stage.starts_with('.')
        || !project.pipeline.stages.iter().any(|s| s.name == stage)
    {
        return Err(crate::Error::refused(
            format!("no stage `{stage}` in cairn.yaml"),
            Some("the graph lists the stages"),
        ));
    }
    let path = repo.root().join(".cairn/state/logs").join(format!("{stage}.log"));
    // Read only where it really is: no directory on the way, and not the file itself, may be a
    // link (a hostile clone could plant one to serve any file over HTTP).
    repo.confinement().check_leading(&path, cairn_repo::confine::Access::Read)?;
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(crate::Error::io("read", path, e)),
        Ok(meta) if !meta.is_file() => {
            return Err(crate::Error::refused(
                format!("`{}` is not a plain file; a stage's log is one", path.display()),
                Some("remove it; the next run writes the log again"),
            ));
        }
        Ok(_) => {}
    }
    // Only the tail is read, however long the log.
    let tail = || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes as u64)))?;
        let mut bytes = Vec::new();
        file.take(max_bytes as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = tail().map_err(|e| crate::Error::io("read", path.clone(), e))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
