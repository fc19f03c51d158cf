//! Deciding and running: for each stage, fresh (nothing to do), restore (its fingerprint ran
//! before: the run cache has its outputs) or run; then running stages in parallel within
//! the job, CPU, GPU and memory budget.
//!
//! A stage is evaluated only when everything upstream of it has finished, against the
//! digests its deps have then, so a re-run upstream stage that reproduces the same outputs
//! leaves everything downstream fresh.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_hash::Digest;
use cairn_repo::pointer::Pointer;
use cairn_repo::{NoReporter, Repo};
use serde_json::Value;

use crate::exec::{Cancel, OutputSink};
use crate::fingerprint::{self, Inputs};
use crate::graph::{self, Graph, is_under};
use crate::lock::{Content, LOCK_FILE, LockFile, LockedDatum, LockedStage};
use crate::runcache::{Entry, RunCache};
use crate::scheduler::Scheduler;
use crate::spec::{self, DEFAULT_PARAMS, PIPELINE_FILE, Pipeline, Stage};
use crate::{PipelineError, Result, params};

/// Receives what happens during a run. Stage output arrives through [`OutputSink::line`].
pub trait Observer: OutputSink {
    /// A stage changed state: `what` is a short phrase ("running", "restored from the run
    /// cache", "up to date", "failed: ...").
    fn stage(&self, stage: &str, what: &str);
    fn warn(&self, message: &str);
}

/// What `cairn run` does for a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Outputs match the lock for the current inputs.
    Fresh,
    /// The run cache has this fingerprint and the outputs are already what it produced.
    Record,
    /// The run cache (or the lock) has this fingerprint's outputs; they are checked out.
    Restore,
    /// The command runs.
    Run,
    /// Depends on a stage that will run; decided once that stage's outputs exist.
    AfterUpstream,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Fresh => "fresh",
            Decision::Record => "record",
            Decision::Restore => "restore",
            Decision::Run => "run",
            Decision::AfterUpstream => "after upstream",
        }
    }
}

/// A stage's decision and why.
#[derive(Debug, Clone)]
pub struct Planned {
    pub stage: String,
    pub decision: Decision,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stage names (a foreach base name means all its generated stages); empty: all.
    pub targets: Vec<String>,
    pub jobs: usize,
    pub keep_going: bool,
    /// Run the targets even if fresh (upstream stages still follow the normal rules).
    pub force: bool,
    pub cpus: u32,
    pub gpus: u32,
    /// Bytes of memory stages may reserve in total.
    pub memory: u64,
    pub cancel: Cancel,
    /// Partitions to run (for partitioned stages); empty: only stale materialized ones.
    pub partitions: PartitionRequest,
    /// Measures each command's CPU time and peak memory (see [`crate::exec::Job`]).
    pub supervisor: Option<std::path::PathBuf>,
    /// Environment for every command that is not part of any stage's fingerprint (the
    /// tracking server's address and the run id).
    pub extra_env: Vec<(String, String)>,
}

/// What happened to a stage in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Fresh,
    Recorded,
    Restored,
    Ran,
    Failed,
    /// Not run because a stage it depends on failed.
    Blocked,
    /// Not run because the run stopped (a failure without --keep-going, or Ctrl-C).
    NotRun,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Fresh => "fresh",
            Action::Recorded => "recorded",
            Action::Restored => "restored",
            Action::Ran => "ran",
            Action::Failed => "failed",
            Action::Blocked => "blocked",
            Action::NotRun => "not run",
        }
    }
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: String,
    pub action: Action,
    pub reasons: Vec<String>,
    pub seconds: f64,
    pub error: Option<String>,
    /// For datum and partitioned stages: what happened to the parts.
    pub parts: Option<PartCounts>,
    /// CPU time of the stage's commands (summed over parts), when measured.
    pub cpu_ms: Option<i64>,
    /// The largest peak resident memory of the stage's commands, when measured.
    pub max_rss_kb: Option<i64>,
}

/// What happened to the parts of a datum or partitioned stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartCounts {
    pub ran: u64,
    pub restored: u64,
    pub fresh: u64,
    pub removed: u64,
    /// Partitions never materialized and not asked for.
    pub missing: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
}

/// A pipeline in a repository, with its lock and run cache.
pub struct Project<'r> {
    pub(crate) repo: &'r Repo,
    pub pipeline: Pipeline,
    pub graph: Graph,
    pub lock: LockFile,
    pub(crate) runs: RunCache,
    /// The parts of datum and partitioned stages, by stage, loaded from the objects the lock
    /// names (and replaced when a run changes them).
    pub(crate) parts: HashMap<String, BTreeMap<String, LockedDatum>>,
    /// The partitions asked for.
    pub(crate) request: PartitionRequest,
    params: HashMap<String, std::result::Result<Value, String>>,
    fetcher: Option<Box<dyn ContentSource + 'r>>,
    /// Whether evaluation may use the source (a run may; a plan only says it would).
    fetching: bool,
    /// What the last `run` did, also when it failed or was interrupted.
    last_report: Option<RunReport>,
    /// HEAD and the work tree's changed paths, read once before a run (see
    /// [`Project::git_state`]).
    git_before: Option<GitBefore>,
    /// The remote's run-cache entries were copied in during this run.
    refreshed: std::cell::Cell<bool>,
}

/// Where run-cache entries and outputs this clone lacks come from (the default remote).
pub trait ContentSource {
    /// Fetches the objects of these records into the cache; false if that failed.
    fn fetch(&self, records: &[(String, Pointer)]) -> bool;
    /// Copies the remote's run-cache entries this clone lacks into its run cache.
    fn refresh_runs(&self) -> bool;
}

/// The current content of paths (`None`: absent).
pub(crate) type Records = HashMap<String, Option<Pointer>>;

pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 { format!("{s:.2}s") } else { format!("{s:.0}s") }
}

fn short(digest: &Digest) -> String {
    digest.hex().chars().take(10).collect()
}

pub(crate) fn rel_bytes(path: &str) -> Vec<u8> {
    path.as_bytes().to_vec()
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The stage's evaluated inputs.
pub(crate) struct Evaluation {
    pub(crate) fingerprint: Digest,
    pub(crate) deps: BTreeMap<String, Content>,
    pub(crate) params: BTreeMap<String, BTreeMap<String, Value>>,
    pub(crate) decision: Decision,
    pub(crate) reasons: Vec<String>,
    /// The outputs to restore or record (Restore/Record).
    pub(crate) outs: Option<BTreeMap<String, Content>>,
    /// Datum and partitioned stages: the parts and what to do with each.
    pub(crate) parts: Option<PartPlan>,
}

/// One datum (an input path) or partition (a key) of a stage.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub(crate) key: String,
    pub(crate) fingerprint: Digest,
    /// A datum's input digest.
    pub(crate) input: Option<Digest>,
    /// Outputs from the run cache, when it has them.
    pub(crate) cached: Option<Content>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PartPlan {
    /// The lock's parts as they stand; parts that run replace their entry.
    pub(crate) locked: BTreeMap<String, LockedDatum>,
    pub(crate) fresh: usize,
    pub(crate) todo: Vec<Part>,
    pub(crate) removed: Vec<(String, LockedDatum)>,
    /// Partitions never materialized and not asked for.
    pub(crate) missing: usize,
}

/// Which partitions `cairn run` was asked for (`--partition`, `--partitions`).
#[derive(Debug, Clone, Default)]
pub struct PartitionRequest {
    pub keys: Vec<String>,
    pub ranges: Vec<String>,
}

impl PartitionRequest {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.ranges.is_empty()
    }
}

/// A partition's state, for `cairn partitions list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    Fresh,
    Stale,
    Missing,
}

impl PartitionState {
    pub fn name(self) -> &'static str {
        match self {
            PartitionState::Fresh => "fresh",
            PartitionState::Stale => "stale",
            PartitionState::Missing => "missing",
        }
    }
}

impl<'r> Project<'r> {
    /// Loads `cairn.yaml`, `params.yaml` and `cairn.lock`, and validates the graph.
    pub fn load(repo: &'r Repo) -> Result<Self> {
        let root = repo.root();
        let file = root.join(PIPELINE_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PipelineError::NoPipeline { path: file });
            }
            Err(e) => return Err(PipelineError::io("read", &file, e)),
        };
        let mut project = Project {
            repo,
            pipeline: Pipeline::default(),
            graph: Graph { upstream: Vec::new(), downstream: Vec::new(), order: Vec::new() },
            lock: LockFile::load(&root.join(LOCK_FILE))?,
            runs: RunCache::new(repo.store().root()),
            params: HashMap::new(),
            fetcher: None,
            fetching: false,
            refreshed: std::cell::Cell::new(false),
            parts: HashMap::new(),
            request: PartitionRequest::default(),
            last_report: None,
            git_before: None,
        };
        let root_params = match project.params_file(DEFAULT_PARAMS) {
            Ok(Some(value)) => value,
            Ok(None) => Value::Object(Default::default()),
            Err(message) => return Err(PipelineError::Syntax { file: root.join(DEFAULT_PARAMS), message }),
        };
        project.pipeline = spec::parse(&text, &file, &root_params)?;
        project.graph = graph::build(&project.pipeline, &file, root)?;
        Ok(project)
    }

    /// The partitions `plan`, `explain` and `run` consider for partitioned stages.
    pub fn set_partitions(&mut self, request: PartitionRequest) {
        self.request = request;
    }

    /// HEAD's commit and whether the work tree differs from it, as the next [`Project::run`]
    /// will see them (read once: the run uses the same reading to spot undeclared writes).
    pub fn git_state(&mut self) -> (Option<String>, bool) {
        let state = self.git_before.get_or_insert_with(|| GitBefore::read(self.repo.root()));
        (state.commit.clone(), !state.changed.is_empty())
    }

    /// What the last [`Project::run`] did, including when it returned an error.
    pub fn last_report(&self) -> Option<&RunReport> {
        self.last_report.as_ref()
    }

    pub fn run_cache(&self) -> &RunCache {
        &self.runs
    }

    /// Lets `run` fetch the outputs of run-cache hits that this cache lacks (from the
    /// default remote, say).
    pub fn set_source(&mut self, source: Box<dyn ContentSource + 'r>) {
        self.fetcher = Some(source);
    }

    /// The run-cache entry for `fingerprint`; on the first miss of a run, the remote's
    /// entries are copied in and it is looked up again.
    fn run_entry(&self, fingerprint: &Digest) -> Option<Entry> {
        if let Some(entry) = self.runs.get(fingerprint) {
            return Some(entry);
        }
        let source = self.fetcher.as_ref().filter(|_| self.fetching && !self.refreshed.get())?;
        self.refreshed.set(true);
        source.refresh_runs();
        self.runs.get(fingerprint)
    }

    /// A params file's content (`None` if it does not exist), read once.
    fn params_file(&mut self, file: &str) -> std::result::Result<Option<Value>, String> {
        let path = self.repo.root().join(file);
        if !self.params.contains_key(file) {
            let loaded = match std::fs::read(&path) {
                Ok(bytes) => params::parse_file(file, &bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None);
                }
                Err(e) => Err(format!("could not read `{file}`: {e}")),
            };
            self.params.insert(file.to_owned(), loaded);
        }
        self.params[file].clone().map(Some)
    }

    /// Stage indices for names; a foreach/matrix base name selects all stages it generated.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<usize>> {
        if names.is_empty() {
            return Ok(self.graph.order.clone());
        }
        let mut out = Vec::new();
        for name in names {
            let matches: Vec<usize> = (0..self.pipeline.stages.len())
                .filter(|&i| {
                    let s = &self.pipeline.stages[i].name;
                    s == name || s.split_once('@').is_some_and(|(base, _)| base == name)
                })
                .collect();
            if matches.is_empty() {
                let names = self.pipeline.stages.iter().flat_map(|s| {
                    let base = s.name.split_once('@').map(|(b, _)| b);
                    std::iter::once(s.name.as_str()).chain(base)
                });
                let suggestion = crate::closest(name, names).map(str::to_owned);
                return Err(PipelineError::UnknownStage { name: name.clone(), suggestion });
            }
            out.extend(matches);
        }
        Ok(self.graph.closure(&out))
    }

    /// Every param the stages read must exist before anything runs.
    pub(crate) fn check_params(&mut self, stages: &[usize]) -> Result<()> {
        let file = self.repo.root().join(PIPELINE_FILE);
        for &i in stages {
            let stage = self.pipeline.stages[i].clone();
            for key in &stage.params {
                let invalid = |message: String| PipelineError::Invalid {
                    file: file.clone(),
                    line: stage.line,
                    stage: stage.name.clone(),
                    message,
                };
                let root = self.params_file(&key.file).map_err(invalid)?.ok_or_else(|| {
                    invalid(format!("it reads param `{}` from `{}`, which does not exist", key.key, key.file))
                })?;
                if params::lookup(&root, &key.key).is_none() {
                    return Err(invalid(params::missing_key(&key.file, &key.key, &root)));
                }
            }
        }
        Ok(())
    }

    /// Current content of every dep and output of `stages`, in one pass over the stat cache.
    pub(crate) fn digest_all(&self, stages: &[usize], records: &mut Records) -> Result<()> {
        let mut wanted: Vec<String> = Vec::new();
        for &i in stages {
            let stage = &self.pipeline.stages[i];
            for path in stage.deps.iter().chain(stage.outs.iter().map(|o| &o.path)) {
                if !records.contains_key(path) && !path.contains("${") {
                    wanted.push(path.clone());
                }
            }
        }
        wanted.sort();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let rels: Vec<Vec<u8>> = wanted.iter().map(|p| rel_bytes(p)).collect();
        let digested = self.repo.digest_paths(&rels, &NoReporter)?;
        records.extend(wanted.into_iter().zip(digested));
        Ok(())
    }

    /// Which stages would run and why, without running anything (`cairn run --dry`,
    /// `cairn status`).
    pub fn plan(&mut self, targets: &[String], force: bool) -> Result<Vec<Planned>> {
        let selected = self.resolve(targets)?;
        self.check_params(&selected)?;
        let forced: HashSet<usize> = if force { self.resolve_exact(targets) } else { HashSet::new() };
        let mut records = Records::new();
        self.digest_all(&selected, &mut records)?;
        let mut pending: HashSet<usize> = HashSet::new();
        let mut out = Vec::new();
        for &i in &selected {
            let name = self.pipeline.stages[i].name.clone();
            let waiting: Vec<String> = self.graph.upstream[i]
                .iter()
                .filter(|u| pending.contains(u))
                .map(|&u| format!("upstream stage `{}` will run", self.pipeline.stages[u].name))
                .collect();
            if !waiting.is_empty() {
                pending.insert(i);
                out.push(Planned { stage: name, decision: Decision::AfterUpstream, reasons: waiting });
                continue;
            }
            let evaluation = self.evaluate(i, &records, forced.contains(&i))?;
            match evaluation.decision {
                Decision::Run | Decision::AfterUpstream => {
                    pending.insert(i);
                }
                Decision::Restore | Decision::Record => {
                    // Downstream stages see the outputs the run cache will give back.
                    for (path, content) in evaluation.outs.iter().flatten() {
                        records.insert(path.clone(), Some(content.to_pointer()));
                    }
                    self.invalidate_inside(i, &mut records, true);
                }
                Decision::Fresh => {}
            }
            out.push(Planned { stage: name, decision: evaluation.decision, reasons: evaluation.reasons });
        }
        Ok(out)
    }

    /// Indices of exactly the named stages (no upstream closure).
    pub(crate) fn resolve_exact(&self, names: &[String]) -> HashSet<usize> {
        (0..self.pipeline.stages.len())
            .filter(|&i| {
                let s = &self.pipeline.stages[i].name;
                names.is_empty()
                    || names.iter().any(|n| s == n || s.split_once('@').is_some_and(|(base, _)| base == n))
            })
            .collect()
    }

    /// Forgets recorded content of paths that contain or are inside the stage's outputs (they
    /// are digested again when next needed). With `keep_exact`, the outputs themselves stay.
    pub(crate) fn invalidate_inside(&self, i: usize, records: &mut Records, keep_exact: bool) {
        let outs: Vec<&str> = self.pipeline.stages[i].outs.iter().map(|o| o.path.as_str()).collect();
        records.retain(|path, _| {
            !outs
                .iter()
                .any(|out| (path != out || !keep_exact) && (is_under(path, out) || is_under(out, path)))
        });
    }

    /// Why a stage would run, or why it would be restored (`cairn explain`).
    pub fn explain(&mut self, name: &str) -> Result<Vec<Planned>> {
        let targets = vec![name.to_owned()];
        let wanted = self.resolve_exact(&targets);
        if wanted.is_empty() {
            self.resolve(&targets)?;
        }
        let plan = self.plan(&targets, false)?;
        Ok(plan
            .into_iter()
            .filter(|p| wanted.iter().any(|&i| self.pipeline.stages[i].name == p.stage))
            .collect())
    }

    /// The fingerprint inputs of stage `i` given current records.
    fn inputs(
        &mut self,
        i: usize,
        records: &Records,
    ) -> Result<(Inputs, BTreeMap<String, Content>, ParamValues)> {
        let stage = &self.pipeline.stages[i];
        let (name, line) = (stage.name.clone(), stage.line);
        let file = self.repo.root().join(PIPELINE_FILE);
        self.inputs_inner(i, records).map_err(|e| match e {
            PipelineError::Stage { message, .. } => {
                PipelineError::Invalid { file, line, stage: name, message }
            }
            other => other,
        })
    }

    fn inputs_inner(
        &mut self,
        i: usize,
        records: &Records,
    ) -> Result<(Inputs, BTreeMap<String, Content>, ParamValues)> {
        let stage = self.pipeline.stages[i].clone();
        let mut deps = BTreeMap::new();
        let mut dep_inputs = Vec::new();
        // Per-partition deps (`${partition...}`) belong to each partition's fingerprint.
        for dep in stage.deps.iter().filter(|d| !d.contains("${")) {
            let record = records.get(dep).cloned().flatten().ok_or_else(|| PipelineError::Stage {
                stage: stage.name.clone(),
                message: format!(
                    "its dep `{dep}` does not exist{}",
                    if self.graph.upstream[i].is_empty() {
                        String::new()
                    } else {
                        " (the stage that should write it did not)".into()
                    }
                ),
            })?;
            dep_inputs.push((dep.clone(), Some(record.digest)));
            deps.insert(dep.clone(), Content::from_pointer(&record));
        }
        let mut values: ParamValues = BTreeMap::new();
        let mut param_inputs = Vec::new();
        for key in &stage.params {
            let root = self
                .params_file(&key.file)
                .map_err(|message| PipelineError::Stage { stage: stage.name.clone(), message })?
                .ok_or_else(|| PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "it reads param `{}` from `{}`, which does not exist",
                        key.key, key.file
                    ),
                })?;
            let value = params::lookup(&root, &key.key).cloned().ok_or_else(|| PipelineError::Stage {
                stage: stage.name.clone(),
                message: params::missing_key(&key.file, &key.key, &root),
            })?;
            param_inputs.push((key.file.clone(), key.key.clone(), value.clone()));
            values.entry(key.file.clone()).or_default().insert(key.key.clone(), value);
        }
        let inputs = Inputs {
            cmd: stage.cmd.clone(),
            wdir: stage.wdir.clone(),
            deps: dep_inputs,
            params: param_inputs,
            env: stage.env.clone(),
            outs: stage.outs.iter().map(|o| (o.path.clone(), o.cache, o.persist)).collect(),
        };
        Ok((inputs, deps, values))
    }

    /// Decides what to do with stage `i`.
    pub(crate) fn evaluate(&mut self, i: usize, records: &Records, force: bool) -> Result<Evaluation> {
        let stage = self.pipeline.stages[i].clone();
        let (inputs, deps, params) = self.inputs(i, records)?;
        if stage.has_parts() {
            return self.evaluate_parts(&stage, inputs, deps, params, records, force);
        }
        let fingerprint = fingerprint::fingerprint(&inputs);
        let locked = self.lock.stages.get(&stage.name);
        let mut reasons = match locked {
            None => vec!["it has never run".to_owned()],
            Some(locked) => input_changes(locked, &stage, &deps, &params, fingerprint),
        };
        let current_outs: BTreeMap<String, Option<Content>> = stage
            .outs
            .iter()
            .map(|o| {
                (o.path.clone(), records.get(&o.path).cloned().flatten().map(|p| Content::from_pointer(&p)))
            })
            .collect();
        let same_inputs = reasons.is_empty();
        if same_inputs && let Some(locked) = locked {
            for (path, current) in &current_outs {
                match (current, locked.outs.get(path)) {
                    (None, _) => reasons.push(format!("output `{path}` is missing")),
                    (Some(now), Some(was)) if now.digest != was.digest => reasons.push(format!(
                        "output `{path}` was modified ({} → {})",
                        short(&was.digest),
                        short(&now.digest)
                    )),
                    _ => {}
                }
            }
        }
        let mut evaluation = Evaluation {
            fingerprint,
            deps,
            params,
            decision: Decision::Fresh,
            reasons,
            outs: None,
            parts: None,
        };
        if force {
            evaluation.reasons.insert(0, "forced".into());
            evaluation.decision = Decision::Run;
            return Ok(evaluation);
        }
        if evaluation.reasons.is_empty() {
            return Ok(evaluation);
        }
        // A run with this fingerprint finished before: from the run cache, or (when only the
        // outputs changed) from the lock.
        let earlier = match self.run_entry(&fingerprint) {
            Some(entry) => Some((entry.outs, format!("from the run cache (ran {})", when(entry.created)))),
            None if same_inputs => {
                locked.map(|l| (l.outs.clone(), "from the cache (as cairn.lock records)".to_owned()))
            }
            None => None,
        };
        let available = |project: &Self, outs: &BTreeMap<String, Content>| -> Option<&'static str> {
            if project.has_all(outs) {
                Some("")
            } else if project.fetcher.is_some() {
                if project.fetching {
                    let records: Vec<(String, Pointer)> =
                        outs.iter().map(|(p, c)| (p.clone(), c.to_pointer())).collect();
                    let source = project.fetcher.as_ref().expect("checked above");
                    (source.fetch(&records) && project.has_all(outs)).then_some(" (fetched from the remote)")
                } else {
                    Some(" (after fetching them from the remote)")
                }
            } else {
                None
            }
        };
        if let Some((outs, source)) = earlier
            && stage.outs.iter().all(|o| outs.contains_key(&o.path))
            && let Some(fetched) = available(self, &outs)
        {
            let source = format!("{source}{fetched}");
            let already = current_outs
                .iter()
                .all(|(path, now)| now.as_ref().map(|c| &c.digest) == outs.get(path).map(|c| &c.digest));
            evaluation.decision = if already { Decision::Record } else { Decision::Restore };
            evaluation.reasons.push(if already {
                format!("this fingerprint ran before and the outputs already match: record it {source}")
            } else {
                format!("this fingerprint ran before: restore its outputs {source}")
            });
            evaluation.outs = Some(outs);
            return Ok(evaluation);
        }
        evaluation.decision = Decision::Run;
        Ok(evaluation)
    }

    fn has_all(&self, outs: &BTreeMap<String, Content>) -> bool {
        outs.values().all(|c| self.repo.has_content(&c.to_pointer()).unwrap_or(false))
    }

    /// The parts a datum or partitioned stage has recorded (from the object the lock names;
    /// empty if that object is not in the cache).
    pub(crate) fn locked_parts(&mut self, stage: &str) -> BTreeMap<String, LockedDatum> {
        if let Some(parts) = self.parts.get(stage) {
            return parts.clone();
        }
        let parts = self
            .lock
            .stages
            .get(stage)
            .and_then(|l| l.parts)
            .and_then(|d| self.repo.store().read_verified(&d).ok())
            .and_then(|bytes| serde_json::from_slice::<crate::lock::PartsFile>(&bytes).ok())
            .map(|f| f.parts)
            .unwrap_or_default();
        self.parts.insert(stage.to_owned(), parts.clone());
        parts
    }

    /// The current parts of a stage with their inputs: datums (matching paths and their
    /// digests) or partition keys (with the digests of their per-partition deps).
    fn part_inputs(&mut self, stage: &Stage, keys: Option<&[String]>) -> Result<Vec<(String, PartDeps)>> {
        let invalid = |message: String| PipelineError::Stage { stage: stage.name.clone(), message };
        if let Some(glob) = &stage.datums {
            let items = expand_glob(self.repo.root(), glob).map_err(invalid)?;
            let digests = self
                .repo
                .digest_paths(&items.iter().map(|p| rel_bytes(p)).collect::<Vec<_>>(), &NoReporter)?;
            return Ok(items
                .into_iter()
                .zip(digests)
                .filter_map(|(item, d)| d.map(|d| (item.clone(), vec![(item, Some(d.digest))])))
                .collect());
        }
        let dims = stage.partitions.as_ref().expect("a partitioned stage");
        let keys: Vec<String> = match keys {
            Some(keys) => keys.to_vec(),
            None => {
                crate::partitions::keys(dims, &crate::partitions::dynamic_keys(self.repo.root(), &stage.name))
            }
        };
        let templated: Vec<&String> = stage.deps.iter().filter(|d| d.contains("${")).collect();
        if templated.is_empty() {
            return Ok(keys.into_iter().map(|k| (k, Vec::new())).collect());
        }
        let per_key: Vec<Vec<String>> = keys
            .iter()
            .map(|k| templated.iter().map(|d| crate::partitions::render(d, dims, k)).collect())
            .collect();
        let mut paths: Vec<String> = per_key.iter().flatten().cloned().collect();
        paths.sort();
        paths.dedup();
        let digests =
            self.repo.digest_paths(&paths.iter().map(|p| rel_bytes(p)).collect::<Vec<_>>(), &NoReporter)?;
        let by_path: HashMap<&String, Option<Digest>> =
            paths.iter().zip(digests).map(|(p, d)| (p, d.map(|d| d.digest))).collect();
        Ok(keys
            .into_iter()
            .zip(per_key)
            .map(|(k, deps)| {
                let inputs = deps
                    .into_iter()
                    .map(|p| {
                        let d = by_path[&p];
                        (p, d)
                    })
                    .collect();
                (k, inputs)
            })
            .collect())
    }

    /// A part's fingerprint: the stage's inputs with the part's command and deps.
    fn part_fingerprint(
        stage: &Stage,
        inputs: &Inputs,
        key: &str,
        deps: &[(String, Option<Digest>)],
    ) -> Digest {
        let mut part = inputs.clone();
        part.cmd =
            inputs.cmd.iter().map(|c| crate::scheduler::render_part(stage, c, key, "${out}")).collect();
        part.env = inputs
            .env
            .iter()
            .map(|(k, v)| (k.clone(), crate::scheduler::render_part(stage, v, key, "${out}")))
            .collect();
        part.deps.extend(deps.iter().cloned());
        fingerprint::fingerprint(&part)
    }

    /// Every partition of a stage and whether it is fresh, stale or was never materialized.
    pub fn partition_states(&mut self, name: &str) -> Result<Vec<(String, PartitionState)>> {
        let i = self
            .resolve_exact(&[name.to_owned()])
            .into_iter()
            .next()
            .ok_or_else(|| PipelineError::UnknownStage { name: name.to_owned(), suggestion: None })?;
        let stage = self.pipeline.stages[i].clone();
        if stage.partitions.is_none() {
            return Err(PipelineError::Stage { stage: stage.name, message: "it is not partitioned".into() });
        }
        self.check_params(&[i])?;
        let mut records = Records::new();
        self.digest_all(&[i], &mut records)?;
        let (inputs, _, _) = self.inputs(i, &records)?;
        let locked = self.locked_parts(&stage.name);
        let parts = self.part_inputs(&stage, None)?;
        Ok(parts
            .into_iter()
            .map(|(key, deps)| {
                let state = match locked.get(&key) {
                    None => PartitionState::Missing,
                    Some(l) if l.fingerprint == Self::part_fingerprint(&stage, &inputs, &key, &deps) => {
                        PartitionState::Fresh
                    }
                    Some(_) => PartitionState::Stale,
                };
                (key, state)
            })
            .collect())
    }

    /// The parts of a datum or partitioned stage, each with its own fingerprint: which are
    /// fresh, which run or come from the run cache, which were removed.
    fn evaluate_parts(
        &mut self,
        stage: &Stage,
        inputs: Inputs,
        deps: BTreeMap<String, Content>,
        params: ParamValues,
        records: &Records,
        force: bool,
    ) -> Result<Evaluation> {
        let noun = if stage.datums.is_some() { "datum" } else { "partition" };
        let locked = self.locked_parts(&stage.name);
        let never_ran = !self.lock.stages.contains_key(&stage.name);
        let mut plan = PartPlan { locked: locked.clone(), ..Default::default() };

        // Which parts to look at: every datum; for partitions, those asked for, or else the
        // ones materialized before (new partitions run only when asked for).
        let all_keys: Option<Vec<String>> = stage.partitions.as_ref().map(|dims| {
            crate::partitions::keys(dims, &crate::partitions::dynamic_keys(self.repo.root(), &stage.name))
        });
        let candidates: Option<Vec<String>> = match (&all_keys, stage.partitions.as_ref()) {
            (Some(all), Some(dims)) => Some(if self.request.is_empty() {
                all.iter().filter(|k| locked.contains_key(*k)).cloned().collect()
            } else {
                crate::partitions::select(all, dims, &self.request.keys, &self.request.ranges)
                    .map_err(|message| PipelineError::Stage { stage: stage.name.clone(), message })?
            }),
            _ => None,
        };
        let parts = self.part_inputs(stage, candidates.as_deref())?;
        let current: HashSet<&str> = match &all_keys {
            Some(all) => all.iter().map(String::as_str).collect(),
            None => parts.iter().map(|(k, _)| k.as_str()).collect(),
        };
        plan.removed = locked
            .iter()
            .filter(|(k, _)| !current.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(all) = &all_keys {
            plan.missing = all.iter().filter(|k| !locked.contains_key(*k)).count()
                - parts.iter().filter(|(k, _)| !locked.contains_key(k)).count();
        }
        for (key, part_deps) in &parts {
            if let Some((path, _)) = part_deps.iter().find(|(_, d)| d.is_none()) {
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "partition `{key}` depends on `{path}`, which does not exist (run the upstream partition first)"
                    ),
                });
            }
            let fp = Self::part_fingerprint(stage, &inputs, key, part_deps);
            if !force && locked.get(key).is_some_and(|l| l.fingerprint == fp) {
                plan.fresh += 1;
                continue;
            }
            let cached =
                if force { None } else { self.run_entry(&fp).and_then(|e| e.outs.into_values().next()) };
            let input = stage.datums.as_ref().and(part_deps.first().and_then(|(_, d)| *d));
            plan.todo.push(Part { key: key.clone(), fingerprint: fp, input, cached });
        }
        self.settle_cached(&mut plan.todo);

        let mut reasons = Vec::new();
        let run = plan.todo.iter().filter(|d| d.cached.is_none()).count();
        let restore = plan.todo.len() - run;
        if force {
            reasons.push("forced".into());
        }
        if never_ran && !(stage.partitions.is_some() && parts.is_empty()) {
            reasons.push("it has never run".into());
        }
        if run + restore > 0 {
            reasons.push(format!(
                "{} of {} {noun}s {} ({run} to run, {restore} from the run cache)",
                plan.todo.len(),
                parts.len(),
                if stage.datums.is_some() { "are new or changed" } else { "are new or stale" }
            ));
        }
        if !plan.removed.is_empty() {
            let n = plan.removed.len();
            reasons.push(if stage.datums.is_some() {
                format!("the inputs of {n} datum(s) were deleted: their outputs are removed")
            } else {
                format!("{n} partition(s) no longer exist: their outputs are removed")
            });
        }
        if reasons.is_empty() && !plan.locked.is_empty() {
            reasons.extend(self.check_parts_output(stage, records, &current, &mut plan)?);
        }
        let decision = if reasons.is_empty() {
            Decision::Fresh
        } else if plan.todo.iter().all(|d| d.cached.is_some()) {
            Decision::Restore
        } else {
            Decision::Run
        };
        let fingerprint = fingerprint::fingerprint(&inputs);
        Ok(Evaluation { fingerprint, deps, params, decision, reasons, outs: None, parts: Some(plan) })
    }

    /// A parts stage whose parts are all fresh still runs if its output directory is missing
    /// or was modified: every part is then restored from its recorded outputs.
    fn check_parts_output(
        &self,
        stage: &Stage,
        records: &Records,
        current: &HashSet<&str>,
        plan: &mut PartPlan,
    ) -> Result<Vec<String>> {
        let out = &stage.outs[0].path;
        let mut reasons = Vec::new();
        let current_out = records.get(out).cloned().flatten().map(|p| Content::from_pointer(&p));
        match (current_out, self.lock.stages.get(&stage.name).and_then(|l| l.outs.get(out))) {
            (None, _) => reasons.push(format!("output `{out}` is missing")),
            (Some(now), Some(was)) if now.digest != was.digest => reasons.push(format!(
                "output `{out}` was modified ({} → {})",
                short(&was.digest),
                short(&now.digest)
            )),
            _ => {}
        }
        if !reasons.is_empty() {
            // Rebuild the directory from every part's recorded outputs (in a run; a plan
            // changes nothing), through no link that leads out of the repository.
            if self.fetching {
                let abs = self.repo.prepare_write(out.as_bytes())?;
                let removed = match std::fs::symlink_metadata(&abs) {
                    Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&abs),
                    Ok(_) => std::fs::remove_file(&abs),
                    Err(_) => Ok(()),
                };
                removed.map_err(|e| PipelineError::io("remove the old output", &abs, e))?;
            }
            plan.fresh = 0;
            plan.todo = plan
                .locked
                .iter()
                .filter(|(k, _)| current.contains(k.as_str()))
                .map(|(key, d)| Part {
                    key: key.clone(),
                    fingerprint: d.fingerprint,
                    input: d.input,
                    cached: Some(d.outs.clone()),
                })
                .collect();
            // A clone may have the records without the parts' data: fetch it, or run
            // what cannot be had.
            self.settle_cached(&mut plan.todo);
        }
        Ok(reasons)
    }

    /// Parts to restore need their outputs here: fetches the missing ones in one batch (in a
    /// run, from the configured source), and turns what is still missing into parts to run.
    fn settle_cached(&self, todo: &mut [Part]) {
        let has = |c: &Content| self.repo.has_content(&c.to_pointer()).unwrap_or(false);
        let absent: Vec<(String, Pointer)> = todo
            .iter()
            .filter_map(|d| d.cached.as_ref().filter(|c| !has(c)).map(|c| (d.key.clone(), c.to_pointer())))
            .collect();
        if !absent.is_empty()
            && self.fetching
            && let Some(source) = &self.fetcher
        {
            source.fetch(&absent);
        }
        let planning = !self.fetching && self.fetcher.is_some();
        for part in todo {
            if part.cached.as_ref().is_some_and(|c| !has(c) && !planning) {
                part.cached = None;
            }
        }
    }

    /// Runs the pipeline (or the targets and what they depend on).
    pub fn run(&mut self, options: &RunOptions, observer: &dyn Observer) -> Result<RunReport> {
        let selected = self.resolve(&options.targets)?;
        self.check_params(&selected)?;
        for &i in &selected {
            let stage = &self.pipeline.stages[i];
            if stage.gpus > options.gpus {
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "it needs {} GPU(s) and this machine has {}; lower `resources.gpus` or run it where GPUs are",
                        stage.gpus, options.gpus
                    ),
                });
            }
            if options.memory > 0 && stage.memory > options.memory {
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "it needs {} MiB of memory and this machine has {} MiB; lower `resources.memory`",
                        stage.memory >> 20,
                        options.memory >> 20
                    ),
                });
            }
        }
        let GitBefore { git: head, commit, changed: before } =
            self.git_before.take().unwrap_or_else(|| GitBefore::read(self.repo.root()));
        self.fetching = true;
        self.request = options.partitions.clone();

        let mut scheduler = Scheduler::new(self, &selected, options, commit);
        let result = scheduler.drive(observer);
        let reports = scheduler.finish();
        self.last_report = Some(RunReport { stages: reports.clone() });
        // A full run forgets stages that are no longer in cairn.yaml.
        if options.targets.is_empty() {
            let names: HashSet<&str> = self.pipeline.stages.iter().map(|s| s.name.as_str()).collect();
            self.lock.stages.retain(|name, _| names.contains(name.as_str()));
        }
        // Whatever happened, what finished is recorded: a later run resumes from there.
        self.lock.save(&self.repo.root().join(LOCK_FILE))?;

        if let Some(git) = &head
            && reports.iter().any(|r| r.action == Action::Ran)
        {
            let declared: Vec<String> =
                self.pipeline.stages.iter().flat_map(|s| s.outs.iter().map(|o| o.path.clone())).collect();
            for path in git.changed_paths().unwrap_or_default() {
                if before.contains(&path)
                    || path == LOCK_FILE
                    || path.ends_with(".gitignore")
                    || declared.iter().any(|d| is_under(&path, d))
                {
                    continue;
                }
                observer.warn(&format!(
                    "`{path}` was written during the run but is not a declared output of any stage; declare it in `outs` so it is versioned and restored"
                ));
            }
        }
        result?;
        let failed: Vec<String> =
            reports.iter().filter(|r| r.action == Action::Failed).map(|r| r.stage.clone()).collect();
        let report = RunReport { stages: reports };
        if options.cancel.load(Ordering::Relaxed) {
            return Err(PipelineError::Interrupted);
        }
        if !failed.is_empty() {
            let not_run = report
                .stages
                .iter()
                .filter(|r| matches!(r.action, Action::NotRun | Action::Blocked))
                .map(|r| r.stage.clone())
                .collect();
            return Err(PipelineError::Failed { stages: failed, not_run });
        }
        Ok(report)
    }
}

type ParamValues = BTreeMap<String, BTreeMap<String, Value>>;

/// The Git side of a run's start: HEAD, and the paths that already differed from it.
struct GitBefore {
    git: Option<cairn_git::GitRepo>,
    commit: Option<String>,
    changed: HashSet<String>,
}

impl GitBefore {
    fn read(root: &Path) -> Self {
        let git = cairn_git::GitRepo::discover(root).ok();
        let commit = git.as_ref().and_then(|g| g.head().ok().flatten());
        let changed =
            git.as_ref().and_then(|g| g.changed_paths().ok()).unwrap_or_default().into_iter().collect();
        GitBefore { git, commit, changed }
    }
}

/// A part's own deps: (path, digest or `None` if absent).
type PartDeps = Vec<(String, Option<Digest>)>;

fn when(created: u64) -> String {
    let ago = now_secs().saturating_sub(created);
    match ago {
        0..=119 => format!("{ago}s ago"),
        120..=7199 => format!("{}m ago", ago / 60),
        7200..=172_799 => format!("{}h ago", ago / 3600),
        _ => format!("{}d ago", ago / 86400),
    }
}

/// What changed between the lock's record and the current inputs, old → new.
fn input_changes(
    locked: &LockedStage,
    stage: &Stage,
    deps: &BTreeMap<String, Content>,
    params: &ParamValues,
    fingerprint: Digest,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if locked.fingerprint == fingerprint {
        return reasons;
    }
    if locked.cmd != stage.cmd {
        reasons.push(format!(
            "command changed: `{}` → `{}`",
            locked.cmd.join(" && "),
            stage.cmd.join(" && ")
        ));
    }
    if locked.wdir != stage.wdir {
        reasons.push(format!("wdir changed: `{}` → `{}`", locked.wdir, stage.wdir));
    }
    for (path, now) in deps {
        match locked.deps.get(path) {
            None => reasons.push(format!("new dep `{path}`")),
            Some(was) if was.digest != now.digest => {
                reasons.push(format!("dep `{path}` changed: {} → {}", short(&was.digest), short(&now.digest)))
            }
            _ => {}
        }
    }
    for path in locked.deps.keys().filter(|p| !deps.contains_key(*p)) {
        reasons.push(format!("dep `{path}` was removed"));
    }
    for (file, keys) in params {
        let old = locked.params.get(file);
        for (key, now) in keys {
            match old.and_then(|o| o.get(key)) {
                None => reasons.push(format!("new param `{key}` ({file}) = {now}")),
                Some(was) if was != now => {
                    reasons.push(format!("param `{key}` ({file}) changed: {was} → {now}"))
                }
                _ => {}
            }
        }
    }
    for (file, keys) in &locked.params {
        for key in keys.keys() {
            if !params.get(file).is_some_and(|k| k.contains_key(key)) {
                reasons.push(format!("param `{key}` ({file}) is no longer read"));
            }
        }
    }
    if locked.env != stage.env {
        reasons.push(format!("env changed: {:?} → {:?}", locked.env, stage.env));
    }
    let outs: Vec<&String> = stage.outs.iter().map(|o| &o.path).collect();
    let locked_outs: Vec<&String> = locked.outs.keys().collect();
    let mut sorted = outs.clone();
    sorted.sort();
    if sorted != locked_outs {
        reasons.push(format!("outputs changed: {locked_outs:?} → {sorted:?}"));
    }
    if reasons.is_empty() {
        reasons.push("the outputs' options (cache, persist) changed".into());
    }
    reasons
}

/// Paths matching a repository-relative glob (`*`, `?`, `[...]`, `**`), files and
/// directories, sorted. Matched directories are not searched further.
pub fn expand_glob(root: &Path, glob: &str) -> std::result::Result<Vec<String>, String> {
    let matcher = globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`{glob}` is not a valid glob: {e}"))?
        .compile_matcher();
    let base = graph::glob_base(glob);
    let depth = if glob.contains("**") {
        usize::MAX
    } else {
        glob.split('/').count() - base.split('/').filter(|s| !s.is_empty()).count()
    };
    let start = root.join(base);
    if !start.is_dir() {
        return Err(format!("the datum glob `{glob}` looks in `{base}`, which is not a directory"));
    }
    let mut out = Vec::new();
    let mut walker =
        walkdir::WalkDir::new(&start).min_depth(1).max_depth(depth).sort_by_file_name().into_iter();
    while let Some(entry) = walker.next() {
        let entry = entry.map_err(|e| format!("listing `{base}`: {e}"))?;
        let Ok(rel) = entry.path().strip_prefix(root) else { continue };
        let rel = rel.to_string_lossy().into_owned();
        if matcher.is_match(&rel) {
            if entry.file_type().is_dir() {
                walker.skip_current_dir();
            }
            out.push(rel);
        }
    }
    Ok(out)
}
