//! Pipelines: plans and `explain`, a recorded run, the params and metrics the stages read and
//! write (and how they changed since a revision), lineage, and partitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_pipeline::engine::{
    Action, Decision, PartitionRequest, PartitionState, Planned, RunOptions, RunReport,
};
use cairn_pipeline::lock::{LOCK_FILE, LockFile};
use cairn_pipeline::spec::{OutKind, PIPELINE_FILE};
use cairn_pipeline::{Observer, PipelineError, Project, params};
use cairn_repo::Repo;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::runs::Recorder;
use crate::{Error, Result, Workspace};

fn decision_name<S: Serializer>(decision: &Decision, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(decision.name())
}

fn action_name<S: Serializer>(action: &Action, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(action.name())
}

/// What a run would do with one stage, and why.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub stage: String,
    #[serde(serialize_with = "decision_name")]
    pub decision: Decision,
    pub reasons: Vec<String>,
}

impl From<Planned> for PlanEntry {
    fn from(p: Planned) -> Self {
        PlanEntry { stage: p.stage, decision: p.decision, reasons: p.reasons }
    }
}

/// `run --dry`: what running `targets` would do, stage by stage.
pub fn plan(
    repo: &Repo,
    targets: &[String],
    force: bool,
    partitions: PartitionRequest,
) -> Result<Vec<PlanEntry>> {
    let mut project = Project::load(repo)?;
    project.set_partitions(partitions);
    Ok(project.plan(targets, force)?.into_iter().map(PlanEntry::from).collect())
}

/// `explain STAGE`: the stage and what it depends on, with every reason each would run.
pub fn explain(repo: &Repo, stage: &str) -> Result<Vec<PlanEntry>> {
    let mut project = Project::load(repo)?;
    Ok(project.explain(stage)?.into_iter().map(PlanEntry::from).collect())
}

/// Stages that are not up to date, for `status` (`None` without a cairn.yaml). A pipeline
/// that cannot be planned is one stage-less entry saying why: it must not hide data status.
pub fn stale_stages(repo: &Repo) -> Option<Vec<PlanEntry>> {
    if !repo.root().join(PIPELINE_FILE).exists() {
        return None;
    }
    let plan = Project::load(repo).and_then(|mut project| project.plan(&[], false));
    Some(match plan {
        Ok(plan) => plan.into_iter().filter(|p| p.decision != Decision::Fresh).map(PlanEntry::from).collect(),
        Err(error) => vec![PlanEntry {
            stage: "(pipeline)".into(),
            decision: Decision::AfterUpstream,
            reasons: vec![format!("cannot be planned: {error} (see `cairn run --dry`)")],
        }],
    })
}

/// Machine resources the scheduler may hand out.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    pub cpus: u32,
    pub gpus: u32,
    /// Bytes of memory stages may reserve in total.
    pub memory: u64,
}

impl Resources {
    /// What this machine has: CPUs available to this process, NVIDIA devices, total memory.
    pub fn detect() -> Resources {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let gpus = std::fs::read_dir("/dev")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        name.strip_prefix("nvidia")
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count() as u32
            })
            .unwrap_or(0);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024)
            })
            .unwrap_or(0);
        Resources { cpus, gpus, memory }
    }
}

/// What to run.
pub struct RunRequest {
    /// Stage names (a foreach or matrix base name selects all its stages); empty: all.
    pub targets: Vec<String>,
    /// Commands at once (default: one per CPU).
    pub jobs: Option<usize>,
    pub keep_going: bool,
    pub force: bool,
    pub partitions: PartitionRequest,
    /// Record into this existing (queued) run instead of a new one.
    pub record_as: Option<String>,
    pub resources: Resources,
    /// Set to stop the run as by Ctrl-C (finished stages are kept).
    pub cancel: Arc<AtomicBool>,
    /// The binary that supervises each command (measures its CPU time and memory).
    pub supervisor: Option<PathBuf>,
}

/// What happened to the parts of a datum or partitioned stage.
#[derive(Debug, Serialize)]
pub struct Parts {
    pub ran: u64,
    pub restored: u64,
    pub fresh: u64,
    pub removed: u64,
    pub missing: u64,
}

/// One stage of a finished run.
#[derive(Debug, Serialize)]
pub struct StageOutcome {
    pub stage: String,
    #[serde(serialize_with = "action_name")]
    pub action: Action,
    pub reasons: Vec<String>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<Parts>,
}

/// A pipeline run (`run --json`): the run it was recorded as, and each stage.
#[derive(Debug, Serialize)]
pub struct PipelineRun {
    pub run_id: Option<String>,
    pub stages: Vec<StageOutcome>,
}

impl PipelineRun {
    fn new(run_id: Option<String>, report: &RunReport) -> Self {
        let stages = report
            .stages
            .iter()
            .map(|s| StageOutcome {
                stage: s.stage.clone(),
                action: s.action,
                reasons: s.reasons.clone(),
                seconds: s.seconds,
                parts: s.parts.map(|p| Parts {
                    ran: p.ran,
                    restored: p.restored,
                    fresh: p.fresh,
                    removed: p.removed,
                    missing: p.missing,
                }),
            })
            .collect();
        PipelineRun { run_id, stages }
    }

    /// How many stages ended with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.stages.iter().filter(|s| s.action == action).count()
    }
}

/// A run as it ended: the run it is recorded as (also when the pipeline failed), and the
/// pipeline's result.
pub struct Completed {
    pub recorded_as: Option<String>,
    pub result: Result<PipelineRun>,
}

/// Runs the pipeline as `cairn run` does: the run is recorded in the metadata store (its
/// stages reach it through a loopback tracking server and live metrics), stage outputs come
/// from the default remote's run cache where they can, and a run that changed nothing leaves
/// no record. The caller holds the repository lock.
pub fn run(ws: &Workspace, request: RunRequest, observer: &dyn Observer) -> Result<Completed> {
    let repo = ws.repo();
    let mut project = Project::load(repo)?;
    if repo.remote_spec(None).is_ok() {
        project.set_source(Box::new(crate::runcache::RemoteSource { workspace: ws, observer }));
    }
    let recorder = Recorder::start(ws, &mut project, request.record_as.as_deref(), observer);
    #[cfg(feature = "tracking-server")]
    let server = recorder.as_ref().and_then(|_| crate::tracking::background(ws, &|m| observer.warn(m)));
    let mut extra_env = Vec::new();
    #[cfg(feature = "tracking-server")]
    if let (Some(recorder), Some(server)) = (&recorder, &server) {
        extra_env.push(("MLFLOW_TRACKING_URI".to_owned(), server.url()));
        extra_env.push(("MLFLOW_RUN_ID".to_owned(), recorder.run_id.clone()));
        extra_env.push(("MLFLOW_EXPERIMENT_ID".to_owned(), "0".to_owned()));
    }
    if let Some(recorder) = &recorder {
        extra_env.push(("CAIRN_RUN_ID".to_owned(), recorder.run_id.clone()));
    }
    let Resources { cpus, gpus, memory } = request.resources;
    let options = RunOptions {
        targets: request.targets,
        jobs: request.jobs.unwrap_or(cpus as usize).max(1),
        keep_going: request.keep_going,
        force: request.force,
        cpus,
        gpus,
        memory,
        cancel: request.cancel,
        partitions: request.partitions,
        supervisor: request.supervisor,
        extra_env,
    };
    // A UI follows the run through its progress file (removed when the run ends).
    let progress = recorder.as_ref().map(|r| crate::asset_graph::Progress::new(repo, &r.run_id, observer));
    let watched: &dyn Observer = match &progress {
        Some(progress) => progress,
        None => observer,
    };
    let result = std::thread::scope(|scope| {
        let _follower = recorder.as_ref().and_then(|recorder| {
            let store = cairn_meta::open(&repo.meta_location()).ok()?;
            let dir = repo.root().join(cairn_pipeline::LIVE_METRICS_DIR);
            Some(crate::live::Follower::start(scope, dir, store, recorder.run_id.clone(), observer))
        });
        let _heartbeat = recorder.as_ref().map(Recorder::heartbeat);
        project.run(&options, watched)
    });
    #[cfg(feature = "tracking-server")]
    drop(server);
    drop(progress);
    // A run that changed nothing (every stage up to date), or that was refused before any
    // stage started, is not an experiment: it leaves no record. An experiment's own run
    // (`record_as`) is always kept.
    let did_nothing = request.record_as.is_none()
        && match &result {
            Ok(report) => report.stages.iter().all(|s| s.action == Action::Fresh),
            Err(PipelineError::Interrupted) => false,
            Err(_) => project.last_report().is_none_or(|r| r.stages.is_empty()),
        };
    let mut recorded_as = None;
    if let Some(recorder) = &recorder {
        if did_nothing {
            recorder.discard(observer);
        } else {
            let status = match &result {
                Ok(_) => cairn_meta::RunStatus::Finished,
                Err(PipelineError::Interrupted) => cairn_meta::RunStatus::Killed,
                Err(_) => cairn_meta::RunStatus::Failed,
            };
            recorder.finish(repo, &project, project.last_report(), status, observer);
            recorded_as = Some(recorder.run_id.clone());
        }
    }
    let result = result.map(|report| PipelineRun::new(recorded_as.clone(), &report)).map_err(Error::from);
    Ok(Completed { recorded_as, result })
}

/// Param values per file for every param key the stages read: at `rev`, or in the work
/// tree (`None`).
fn param_values(repo: &Repo, project: &Project, rev: Option<&str>) -> Result<BTreeMap<String, Value>> {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for stage in &project.pipeline.stages {
        for key in &stage.params {
            files.entry(key.file.clone()).or_default().push(key.key.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (file, keys) in files {
        let Some(bytes) = read_at(repo, rev, &file)? else { continue };
        let root = params::parse_file(&file, &bytes).map_err(|m| Error::refused(m, None))?;
        for key in keys {
            if let Some(value) = params::lookup(&root, &key) {
                for (leaf, v) in params::flatten(value) {
                    let name = if leaf.is_empty() { key.clone() } else { format!("{key}.{leaf}") };
                    out.insert(format!("{file}:{name}"), v);
                }
            }
        }
    }
    Ok(out)
}

fn read_at(repo: &Repo, rev: Option<&str>, file: &str) -> Result<Option<Vec<u8>>> {
    match rev {
        None => match std::fs::read(repo.root().join(file)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", file, e)),
        },
        Some(rev) => {
            let git = cairn_git::GitRepo::discover(repo.root()).map_err(PipelineError::from)?;
            Ok(git.read_file(rev, file).map_err(PipelineError::from)?)
        }
    }
}

fn diff_keys<'a>(
    old: &'a BTreeMap<String, Value>,
    new: &'a BTreeMap<String, Value>,
    all: bool,
) -> impl Iterator<Item = (&'a str, &'a str, Option<Value>, Option<Value>)> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(move |k| all || old.get(*k) != new.get(*k)).map(|k| {
        let (file, key) = k.split_once(':').unwrap_or(("", k));
        (file, key, old.get(k).cloned(), new.get(k).cloned())
    })
}

/// A param that differs between a revision and the work tree.
#[derive(Debug, Serialize)]
pub struct ParamChange {
    pub file: String,
    pub param: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// `params diff`: the params the stages read that differ between `rev` and the work tree
/// (with `all`, every one).
pub fn params_diff(repo: &Repo, rev: &str, all: bool) -> Result<Vec<ParamChange>> {
    let project = Project::load(repo)?;
    let old = param_values(repo, &project, Some(rev))?;
    let new = param_values(repo, &project, None)?;
    Ok(diff_keys(&old, &new, all)
        .map(|(file, param, old, new)| ParamChange { file: file.into(), param: param.into(), old, new })
        .collect())
}

/// Every metric of every declared metrics file, flattened: `file:key -> value`.
fn metric_values(repo: &Repo, project: &Project, rev: Option<&str>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let mut files: Vec<&str> = project
        .pipeline
        .stages
        .iter()
        .flat_map(|s| s.outs.iter().filter(|o| o.kind == OutKind::Metric).map(|o| o.path.as_str()))
        .collect();
    files.sort();
    files.dedup();
    for file in files {
        // A metrics file kept in the cache is found through cairn.lock at that revision.
        let bytes = read_at(repo, rev, file)?.or_else(|| cached_metric(repo, rev, file));
        let Some(bytes) = bytes else { continue };
        let root = params::parse_file(file, &bytes).map_err(|m| Error::refused(m, None))?;
        for (key, value) in params::flatten(&root) {
            out.insert(format!("{file}:{key}"), value);
        }
    }
    Ok(out)
}

/// A metrics file's bytes from the cache, by its digest in cairn.lock at `rev`.
fn cached_metric(repo: &Repo, rev: Option<&str>, file: &str) -> Option<Vec<u8>> {
    let lock_bytes = read_at(repo, rev, LOCK_FILE).ok()??;
    let lock =
        LockFile::parse(std::path::Path::new(LOCK_FILE), std::str::from_utf8(&lock_bytes).ok()?).ok()?;
    let content = lock.stages.values().find_map(|s| s.outs.get(file))?;
    repo.store().read_verified(&content.digest).ok()
}

/// `metrics show`: the declared metrics files' values, by file.
pub fn metrics_show(repo: &Repo) -> Result<BTreeMap<String, BTreeMap<String, Value>>> {
    let project = Project::load(repo)?;
    let mut by_file: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (k, v) in metric_values(repo, &project, None)? {
        let (file, key) = k.split_once(':').unwrap_or(("", &k));
        by_file.entry(file.to_owned()).or_default().insert(key.to_owned(), v);
    }
    Ok(by_file)
}

/// A metric that differs between a revision and the work tree.
#[derive(Debug, Serialize)]
pub struct MetricChange {
    pub file: String,
    pub metric: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// new − old, when both are numbers.
    pub change: Option<f64>,
}

/// `metrics diff`: metrics that differ between `rev` and the work tree.
pub fn metrics_diff(repo: &Repo, rev: &str) -> Result<Vec<MetricChange>> {
    let project = Project::load(repo)?;
    let old = metric_values(repo, &project, Some(rev))?;
    let new = metric_values(repo, &project, None)?;
    Ok(diff_keys(&old, &new, false)
        .map(|(file, metric, old, new)| {
            let change = match (old.as_ref().and_then(Value::as_f64), new.as_ref().and_then(Value::as_f64)) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            MetricChange { file: file.into(), metric: metric.into(), old, new, change }
        })
        .collect())
}

/// One step of an output's lineage.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum LineageNode {
    /// Made by a stage, from its inputs.
    Stage {
        path: String,
        digest: Option<cairn_hash::Digest>,
        stage: String,
        cmd: Vec<String>,
        fingerprint: Option<cairn_hash::Digest>,
        params: Option<BTreeMap<String, BTreeMap<String, Value>>>,
        /// False when the stage has not run yet.
        ran: bool,
        inputs: Vec<LineageNode>,
    },
    /// A stage already on the path (a cycle through a directory dependency).
    Repeated { path: String, stage: String, repeated: bool },
    /// Raw data or code: its digest now, and whether Cairn or Git tracks it.
    Source { path: String, digest: Option<cairn_hash::Digest>, source: &'static str },
    /// A datum stage's glob.
    Datums { path: String, source: &'static str },
}

/// `lineage PATH`: the chain of stages from an output back to raw data and code, at the
/// commit checked out.
#[derive(Debug, Serialize)]
pub struct Lineage {
    #[serde(flatten)]
    pub node: LineageNode,
    pub commit: Option<String>,
    /// Whether the work tree has changes.
    pub dirty: Option<bool>,
}

/// `lineage PATH` for a repository-relative path.
pub fn lineage(repo: &Repo, path: &str) -> Result<Lineage> {
    let project = Project::load(repo)?;
    let git = cairn_git::GitRepo::discover(repo.root()).map_err(PipelineError::from)?;
    let commit = git.head_state().map_err(PipelineError::from)?;
    let node = lineage_node(repo, &project, path, &mut Vec::new())?;
    let (commit, dirty) = match commit {
        Some((commit, dirty)) => (Some(commit), Some(dirty)),
        None => (None, None),
    };
    Ok(Lineage { node, commit, dirty })
}

fn lineage_node(repo: &Repo, project: &Project, path: &str, seen: &mut Vec<String>) -> Result<LineageNode> {
    let producer = project
        .pipeline
        .stages
        .iter()
        .find(|s| s.outs.iter().any(|o| cairn_pipeline::graph::is_under(path, &o.path)));
    let Some(stage) = producer else {
        let record = repo.digest_paths(&[path.as_bytes().to_vec()], &cairn_repo::NoReporter)?.pop().flatten();
        let tracked = repo.read_pointer(path.as_bytes()).ok().flatten().is_some();
        return Ok(LineageNode::Source {
            path: path.to_owned(),
            digest: record.map(|r| r.digest),
            source: if tracked { "tracked by cairn" } else { "work tree (Git)" },
        });
    };
    if seen.contains(&stage.name) {
        return Ok(LineageNode::Repeated {
            path: path.to_owned(),
            stage: stage.name.clone(),
            repeated: true,
        });
    }
    seen.push(stage.name.clone());
    let locked = project.lock.stages.get(&stage.name);
    let out =
        stage.outs.iter().find(|o| cairn_pipeline::graph::is_under(path, &o.path)).map(|o| o.path.clone());
    let digest = locked.and_then(|l| out.as_ref().and_then(|o| l.outs.get(o))).map(|c| c.digest);
    let mut inputs = Vec::new();
    for dep in &stage.deps {
        inputs.push(lineage_node(repo, project, dep, seen)?);
    }
    if let Some(glob) = &stage.datums {
        inputs.push(LineageNode::Datums { path: glob.clone(), source: "datums" });
    }
    seen.pop();
    Ok(LineageNode::Stage {
        path: path.to_owned(),
        digest,
        stage: stage.name.clone(),
        cmd: stage.cmd.clone(),
        fingerprint: locked.map(|l| l.fingerprint),
        params: locked.map(|l| l.params.clone()),
        ran: locked.is_some(),
        inputs,
    })
}

/// One partition and its state.
#[derive(Debug, Serialize)]
pub struct PartitionEntry {
    pub partition: String,
    #[serde(serialize_with = "state_name")]
    pub state: PartitionState,
}

fn state_name<S: Serializer>(state: &PartitionState, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(state.name())
}

/// `partitions list STAGE`.
#[derive(Debug, Serialize)]
pub struct PartitionList {
    pub stage: String,
    /// How many partitions are in each state (of all of them, not only those shown).
    pub summary: BTreeMap<&'static str, u64>,
    pub partitions: Vec<PartitionEntry>,
    #[serde(skip)]
    pub total: usize,
}

/// Every partition of a stage (only those in `state`, when given) and a count by state.
pub fn partitions(repo: &Repo, stage: &str, state: Option<&str>) -> Result<PartitionList> {
    let mut project = Project::load(repo)?;
    let states = project.partition_states(stage)?;
    let mut summary = BTreeMap::new();
    for (_, s) in &states {
        *summary.entry(s.name()).or_insert(0u64) += 1;
    }
    let total = states.len();
    let partitions = states
        .into_iter()
        .filter(|(_, s)| state.is_none_or(|w| w == s.name()))
        .map(|(partition, state)| PartitionEntry { partition, state })
        .collect();
    Ok(PartitionList { stage: stage.to_owned(), summary, partitions, total })
}

/// What `partitions add`/`remove` changed.
#[derive(Debug, Serialize)]
pub struct PartitionEdit {
    /// Keys added or removed.
    pub changed: usize,
    /// Keys of the dimension now.
    pub total: usize,
    /// The keys file to commit, relative to the repository root.
    pub file: PathBuf,
}

/// Adds keys to (or removes them from) a stage's dynamic partition dimension.
pub fn edit_partitions(repo: &Repo, stage: &str, keys: &[String], add: bool) -> Result<PartitionEdit> {
    use cairn_pipeline::partitions;
    let project = Project::load(repo)?;
    let dims = project
        .pipeline
        .stage(stage)
        .ok_or_else(|| Error::refused(format!("no stage named `{stage}` in cairn.yaml"), None))?
        .partitions
        .clone()
        .ok_or_else(|| Error::refused(format!("stage `{stage}` is not partitioned"), None))?;
    if !dims.iter().any(|(_, d)| *d == partitions::Dimension::Dynamic) {
        return Err(Error::refused(
            format!("stage `{stage}` has no dynamic partition dimension"),
            Some("declare one in cairn.yaml: `partitions: {customer: {dynamic: true}}`"),
        ));
    }
    if let Some(bad) = keys.iter().find(|k| !partitions::valid_key(k)) {
        return Err(Error::refused(
            format!("`{bad}` is not a valid partition key: {}", partitions::KEY_RULE),
            None,
        ));
    }
    let mut current = partitions::dynamic_keys(repo.root(), stage);
    let before = current.len();
    if add {
        for key in keys {
            if !current.contains(key) {
                current.push(key.clone());
            }
        }
    } else {
        current.retain(|k| !keys.contains(k));
    }
    let file = partitions::dynamic_file(repo.root(), stage);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let mut text = current.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    cairn_fs::write(&file, text.as_bytes()).map_err(|e| Error::io("write", &file, e))?;
    Ok(PartitionEdit {
        changed: current.len().abs_diff(before),
        total: current.len(),
        file: file.strip_prefix(repo.root()).unwrap_or(&file).to_path_buf(),
    })
}
