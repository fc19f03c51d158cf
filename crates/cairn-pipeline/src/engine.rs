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
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_hash::{Digest, hash_bytes};
use cairn_repo::pointer::Pointer;
use cairn_repo::{NoReporter, Repo, Tracked};
use serde_json::Value;

use crate::exec::{self, Cancel, Job, Outcome, OutputSink};
use crate::fingerprint::{self, Inputs};
use crate::graph::{self, Graph, is_under};
use crate::lock::{Content, LOCK_FILE, LockFile, LockedDatum, LockedStage};
use crate::runcache::{Entry, RunCache};
use crate::spec::{self, DEFAULT_PARAMS, PIPELINE_FILE, Pipeline, Stage};
use crate::template::render_datum;
use crate::{PipelineError, Result, checks, params};

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
    /// For datum stages: (ran, restored, fresh, removed).
    pub datums: Option<(u64, u64, u64, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub stages: Vec<StageReport>,
}

/// A pipeline in a repository, with its lock and run cache.
pub struct Project<'r> {
    repo: &'r Repo,
    pub pipeline: Pipeline,
    pub graph: Graph,
    pub lock: LockFile,
    runs: RunCache,
    params: HashMap<String, std::result::Result<Value, String>>,
    fetcher: Option<Box<dyn ContentSource + 'r>>,
    /// Whether evaluation may use the source (a run may; a plan only says it would).
    fetching: bool,
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
type Records = HashMap<String, Option<Pointer>>;

pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 { format!("{s:.2}s") } else { format!("{s:.0}s") }
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("blake3:").unwrap_or(digest);
    hex.chars().take(10).collect()
}

fn rel_bytes(path: &str) -> Vec<u8> {
    path.as_bytes().to_vec()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The stage's evaluated inputs.
struct Evaluation {
    fingerprint: Digest,
    deps: BTreeMap<String, Content>,
    params: BTreeMap<String, BTreeMap<String, Value>>,
    decision: Decision,
    reasons: Vec<String>,
    /// The outputs to restore or record (Restore/Record).
    outs: Option<BTreeMap<String, Content>>,
    /// Datum stages: the datums and what to do with each.
    datums: Option<DatumPlan>,
}

#[derive(Debug, Clone)]
struct Datum {
    item: String,
    fingerprint: Digest,
    input: Digest,
    /// Outputs from the run cache, when it has them.
    cached: Option<Content>,
}

#[derive(Debug, Clone, Default)]
struct DatumPlan {
    fresh: Vec<(String, LockedDatum)>,
    todo: Vec<Datum>,
    removed: Vec<(String, LockedDatum)>,
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
    fn check_params(&mut self, stages: &[usize]) -> Result<()> {
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
    fn digest_all(&self, stages: &[usize], records: &mut Records) -> Result<()> {
        let mut wanted: Vec<String> = Vec::new();
        for &i in stages {
            let stage = &self.pipeline.stages[i];
            for path in stage.deps.iter().chain(stage.outs.iter().map(|o| &o.path)) {
                if !records.contains_key(path) {
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
                        records.insert(path.clone(), content.to_pointer());
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
    fn resolve_exact(&self, names: &[String]) -> HashSet<usize> {
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
    fn invalidate_inside(&self, i: usize, records: &mut Records, keep_exact: bool) {
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
        for dep in &stage.deps {
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
    fn evaluate(&mut self, i: usize, records: &Records, force: bool) -> Result<Evaluation> {
        let stage = self.pipeline.stages[i].clone();
        let (mut inputs, deps, params) = self.inputs(i, records)?;
        if stage.datums.is_some() {
            return self.evaluate_datums(&stage, inputs, deps, params, records, force);
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
        inputs.cmd.clear();
        let mut evaluation = Evaluation {
            fingerprint,
            deps,
            params,
            decision: Decision::Fresh,
            reasons,
            outs: None,
            datums: None,
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
                        outs.iter().filter_map(|(p, c)| c.to_pointer().map(|ptr| (p.clone(), ptr))).collect();
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
        outs.values().all(|c| c.to_pointer().is_some_and(|p| self.repo.has_content(&p).unwrap_or(false)))
    }

    /// The datums of a `foreach: {glob}` stage, each with its own fingerprint.
    fn evaluate_datums(
        &mut self,
        stage: &Stage,
        mut inputs: Inputs,
        deps: BTreeMap<String, Content>,
        params: ParamValues,
        records: &Records,
        force: bool,
    ) -> Result<Evaluation> {
        let glob = stage.datums.clone().expect("a datum stage");
        let items = expand_glob(self.repo.root(), &glob)
            .map_err(|message| PipelineError::Stage { stage: stage.name.clone(), message })?;
        let digests =
            self.repo.digest_paths(&items.iter().map(|p| rel_bytes(p)).collect::<Vec<_>>(), &NoReporter)?;
        let template = inputs.cmd.clone();
        let locked = self.lock.stages.get(&stage.name).cloned();
        let mut plan = DatumPlan::default();
        let mut combined = Vec::new();
        for (item, record) in items.iter().zip(digests) {
            let Some(record) = record else { continue };
            let mut datum_inputs = inputs.clone();
            datum_inputs.cmd = template.iter().map(|c| render_datum(c, item, "${out}")).collect();
            datum_inputs.deps.push((item.clone(), Some(record.digest)));
            let fp = fingerprint::fingerprint(&datum_inputs);
            combined.extend_from_slice(fp.as_bytes());
            let known = locked.as_ref().and_then(|l| l.datums.get(item));
            if !force
                && let Some(known) = known
                && known.fingerprint == fp.to_string()
            {
                plan.fresh.push((item.clone(), known.clone()));
                continue;
            }
            let cached =
                if force { None } else { self.run_entry(&fp).and_then(|e| e.outs.into_values().next()) };
            plan.todo.push(Datum { item: item.clone(), fingerprint: fp, input: record.digest, cached });
        }
        // Run-cache hits need their outputs here: fetch the missing ones in one batch (in a
        // run), and treat what is still missing as a miss.
        let has = |c: &Content| c.to_pointer().is_some_and(|p| self.repo.has_content(&p).unwrap_or(false));
        let absent: Vec<(String, Pointer)> = plan
            .todo
            .iter()
            .filter_map(|d| {
                d.cached
                    .as_ref()
                    .filter(|c| !has(c))
                    .and_then(|c| c.to_pointer())
                    .map(|p| (d.item.clone(), p))
            })
            .collect();
        if !absent.is_empty()
            && self.fetching
            && let Some(source) = &self.fetcher
        {
            source.fetch(&absent);
        }
        let planning = !self.fetching && self.fetcher.is_some();
        for datum in &mut plan.todo {
            if datum.cached.as_ref().is_some_and(|c| !has(c) && !planning) {
                datum.cached = None;
            }
        }
        if let Some(locked) = &locked {
            let current: HashSet<&String> = items.iter().collect();
            plan.removed = locked
                .datums
                .iter()
                .filter(|(k, _)| !current.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        inputs.deps.push((format!("{glob} (datums)"), Some(hash_bytes(&combined))));
        let fingerprint = fingerprint::fingerprint(&inputs);
        let out = &stage.outs[0].path;
        let mut reasons = Vec::new();
        let run = plan.todo.iter().filter(|d| d.cached.is_none()).count();
        let restore = plan.todo.len() - run;
        if force {
            reasons.push("forced".into());
        }
        if locked.is_none() {
            reasons.push("it has never run".into());
        }
        if run + restore > 0 {
            reasons.push(format!(
                "{} of {} datums are new or changed ({run} to run, {restore} from the run cache)",
                plan.todo.len(),
                items.len()
            ));
        }
        if !plan.removed.is_empty() {
            let n = plan.removed.len();
            reasons.push(format!(
                "the input{} of {n} datum{} {} deleted: {} outputs are removed",
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "s" },
                if n == 1 { "was" } else { "were" },
                if n == 1 { "its" } else { "their" }
            ));
        }
        let current_out = records.get(out).cloned().flatten().map(|p| Content::from_pointer(&p));
        if reasons.is_empty() {
            match (current_out, locked.as_ref().and_then(|l| l.outs.get(out))) {
                (None, _) => reasons.push(format!("output `{out}` is missing")),
                (Some(now), Some(was)) if now.digest != was.digest => reasons.push(format!(
                    "output `{out}` was modified ({} → {})",
                    short(&was.digest),
                    short(&now.digest)
                )),
                _ => {}
            }
            if !reasons.is_empty() {
                // Rebuild the directory from every datum's recorded outputs.
                plan.todo = plan
                    .fresh
                    .drain(..)
                    .map(|(item, d)| Datum {
                        fingerprint: Digest::parse_bytes(d.fingerprint.as_bytes()).unwrap_or(fingerprint),
                        input: Digest::parse_bytes(d.input.as_bytes()).unwrap_or(fingerprint),
                        cached: Some(d.outs),
                        item,
                    })
                    .collect();
            }
        }
        let decision = if reasons.is_empty() {
            Decision::Fresh
        } else if plan.todo.iter().all(|d| d.cached.is_some()) {
            Decision::Restore
        } else {
            Decision::Run
        };
        Ok(Evaluation { fingerprint, deps, params, decision, reasons, outs: None, datums: Some(plan) })
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
        let head = cairn_git::GitRepo::discover(self.repo.root()).ok();
        let commit = head.as_ref().and_then(|g| g.head().ok().flatten());
        self.fetching = true;
        let before: HashSet<String> =
            head.as_ref().and_then(|g| g.changed_paths().ok()).unwrap_or_default().into_iter().collect();

        let mut scheduler = Scheduler::new(self, &selected, options, commit);
        let result = scheduler.drive(observer);
        let reports = scheduler.finish();
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

    /// Content records to keep in caches and carry to remotes: every output in `cairn.lock`
    /// and in the run cache (`(label, record)`).
    pub fn referenced_content(&self) -> Vec<(String, Pointer)> {
        let mut out = Vec::new();
        for (name, stage) in &self.lock.stages {
            for (path, content) in &stage.outs {
                if let Some(p) = content.to_pointer() {
                    out.push((format!("{path} (stage {name})"), p));
                }
            }
            for (item, datum) in &stage.datums {
                if let Some(p) = datum.outs.to_pointer() {
                    out.push((format!("{item} (datum of {name})"), p));
                }
            }
        }
        out
    }
}

type ParamValues = BTreeMap<String, BTreeMap<String, Value>>;

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
    if locked.fingerprint == fingerprint.to_string() {
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

// ---------------------------------------------------------------------------------------
// The scheduler.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Blocked,
    NotRun,
}

/// A command to run: a whole stage, or one datum of a datum stage.
struct Task {
    stage: usize,
    datum: Option<Datum>,
}

/// A datum stage being run: datums still out, and what finished.
struct DatumProgress {
    evaluation: Evaluation,
    outstanding: usize,
    done: BTreeMap<String, LockedDatum>,
    ran: u64,
    restored: u64,
    failed: bool,
}

struct Scheduler<'p, 'r> {
    project: &'p mut Project<'r>,
    options: &'p RunOptions,
    commit: Option<String>,
    selected: Vec<usize>,
    forced: HashSet<usize>,
    state: Vec<State>,
    remaining: Vec<usize>,
    records: Records,
    queue: Vec<Task>,
    /// Single-run stages waiting for their command: their evaluation.
    running: HashMap<usize, (Evaluation, Instant)>,
    datum_stages: HashMap<usize, (DatumProgress, Instant)>,
    reports: BTreeMap<usize, StageReport>,
    free_cpus: u32,
    free_gpus: Vec<u32>,
    free_memory: u64,
    active: usize,
    stop: bool,
}

struct Finished {
    task: Task,
    outcome: Outcome,
    gpus: Vec<u32>,
    cpus: u32,
    memory: u64,
}

impl<'p, 'r> Scheduler<'p, 'r> {
    fn new(
        project: &'p mut Project<'r>,
        selected: &[usize],
        options: &'p RunOptions,
        commit: Option<String>,
    ) -> Self {
        let n = project.pipeline.stages.len();
        let forced = if options.force { project.resolve_exact(&options.targets) } else { HashSet::new() };
        let in_run: HashSet<usize> = selected.iter().copied().collect();
        let remaining =
            (0..n).map(|i| project.graph.upstream[i].iter().filter(|u| in_run.contains(u)).count()).collect();
        Scheduler {
            project,
            options,
            commit,
            selected: selected.to_vec(),
            forced,
            state: vec![State::Waiting; n],
            remaining,
            records: Records::new(),
            queue: Vec::new(),
            running: HashMap::new(),
            datum_stages: HashMap::new(),
            reports: BTreeMap::new(),
            free_cpus: options.cpus.max(1),
            free_gpus: (0..options.gpus).collect(),
            free_memory: options.memory,
            active: 0,
            stop: false,
        }
    }

    fn name(&self, i: usize) -> String {
        self.project.pipeline.stages[i].name.clone()
    }

    fn report(
        &mut self,
        i: usize,
        action: Action,
        reasons: Vec<String>,
        started: Option<Instant>,
        error: Option<String>,
    ) {
        let seconds = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let stage = self.name(i);
        let datums = self.reports.get(&i).and_then(|r| r.datums);
        self.reports.insert(i, StageReport { stage, action, reasons, seconds, error, datums });
    }

    fn drive(&mut self, observer: &dyn Observer) -> Result<()> {
        let selected = self.selected.clone();
        self.project.digest_all(&selected, &mut self.records)?;
        let (tx, rx) = mpsc::channel::<Finished>();
        let cancel = &self.options.cancel;
        let root = self.project.repo.root().to_path_buf();
        std::thread::scope(|scope| -> Result<()> {
            let mut error = None;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    self.stop = true;
                }
                // Evaluate every stage whose upstream is done.
                if !self.stop && error.is_none() {
                    let ready: Vec<usize> = selected
                        .iter()
                        .copied()
                        .filter(|&i| self.state[i] == State::Waiting && self.remaining[i] == 0)
                        .collect();
                    for i in ready {
                        if let Err(e) = self.start_stage(i, observer) {
                            error = Some(e);
                            self.stop = true;
                            break;
                        }
                    }
                }
                // Start queued commands while the budget allows.
                let mut k = 0;
                while !self.stop && k < self.queue.len() {
                    let stage = &self.project.pipeline.stages[self.queue[k].stage];
                    let cpus = stage.cpus.clamp(1, self.options.cpus.max(1));
                    let fits = self.active < self.options.jobs.max(1)
                        && cpus <= self.free_cpus
                        && (stage.gpus as usize) <= self.free_gpus.len()
                        && (self.options.memory == 0 || stage.memory <= self.free_memory);
                    if !fits {
                        k += 1;
                        continue;
                    }
                    let task = self.queue.remove(k);
                    let gpus: Vec<u32> = self.free_gpus.drain(..stage.gpus as usize).collect();
                    let memory = if self.options.memory == 0 { 0 } else { stage.memory };
                    self.free_cpus -= cpus;
                    self.free_memory -= memory;
                    self.active += 1;
                    let job = self.job(&task, &gpus, &root)?;
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let outcome = exec::run(&job, observer, cancel);
                        let _ = tx.send(Finished { task, outcome, gpus, cpus, memory });
                    });
                }
                if self.active == 0 {
                    let more = !self.stop
                        && selected
                            .iter()
                            .any(|&i| self.state[i] == State::Waiting && self.remaining[i] == 0);
                    if !more && (self.queue.is_empty() || self.stop) {
                        break;
                    }
                    if more {
                        continue;
                    }
                }
                let Ok(finished) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                self.active -= 1;
                self.free_cpus += finished.cpus;
                self.free_memory += finished.memory;
                self.free_gpus.extend(finished.gpus);
                self.free_gpus.sort();
                if let Err(e) = self.finish_task(finished.task, finished.outcome, observer) {
                    error.get_or_insert(e);
                    self.stop = true;
                }
            }
            match error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// Builds the command for a task.
    fn job(&self, task: &Task, gpus: &[u32], root: &Path) -> Result<Job> {
        let stage = &self.project.pipeline.stages[task.stage];
        let cwd = root.join(&stage.wdir);
        let mut env: Vec<(String, String)> = stage.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("CAIRN_STAGE".into(), stage.name.clone()));
        if !gpus.is_empty() {
            let ids: Vec<String> = gpus.iter().map(u32::to_string).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), ids.join(",")));
        }
        let logs = root.join(".cairn/state/logs");
        let (label, cmds, log) = match &task.datum {
            None => (stage.name.clone(), stage.cmd.clone(), logs.join(format!("{}.log", stage.name))),
            Some(datum) => {
                let staging = root.join(staging_rel(&stage.name, &datum.item));
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging)
                    .map_err(|e| PipelineError::io("create directory", &staging, e))?;
                let out = staging.to_string_lossy().into_owned();
                env.push(("CAIRN_DATUM".into(), datum.item.clone()));
                (
                    format!("{}[{}]", stage.name, datum.item),
                    stage.cmd.iter().map(|c| render_datum(c, &datum.item, &out)).collect(),
                    logs.join(&stage.name).join(format!("{}.log", datum_key(&datum.item))),
                )
            }
        };
        Ok(Job { label, cmds, cwd, env, timeout: stage.timeout, retries: stage.retries, log })
    }

    /// Evaluates a ready stage and acts: fresh, record, restore, or queue its command(s).
    fn start_stage(&mut self, i: usize, observer: &dyn Observer) -> Result<()> {
        let name = self.name(i);
        if self.project.graph.upstream[i]
            .iter()
            .any(|&u| matches!(self.state[u], State::Failed | State::Blocked))
        {
            self.state[i] = State::Blocked;
            self.report(i, Action::Blocked, vec!["a stage it depends on failed".into()], None, None);
            observer.stage(&name, "blocked: a stage it depends on failed");
            self.release(i);
            return Ok(());
        }
        let started = Instant::now();
        let stage = self.project.pipeline.stages[i].clone();
        // Deps written by upstream stages in this run are digested now.
        self.project.digest_all(&[i], &mut self.records)?;
        let evaluation = match self.project.evaluate(i, &self.records, self.forced.contains(&i)) {
            Ok(e) => e,
            Err(e) => {
                self.state[i] = State::Failed;
                let message = e.to_string();
                observer.stage(&name, &format!("failed: {message}"));
                self.report(i, Action::Failed, Vec::new(), None, Some(message));
                self.after_failure(i);
                return Ok(());
            }
        };
        match evaluation.decision {
            Decision::Fresh => {
                self.state[i] = State::Done;
                observer.stage(&name, "up to date");
                self.report(i, Action::Fresh, evaluation.reasons, None, None);
                self.release(i);
            }
            Decision::Record | Decision::Restore if stage.datums.is_none() => {
                let outs = evaluation.outs.clone().unwrap_or_default();
                if evaluation.decision == Decision::Restore {
                    let tracked: Vec<Tracked> = outs
                        .iter()
                        .filter_map(|(path, c)| {
                            c.to_pointer().map(|pointer| Tracked { rel: rel_bytes(path), pointer })
                        })
                        .collect();
                    self.project.repo.restore_outputs(tracked, &NoReporter)?;
                    observer.stage(&name, "restored from the run cache");
                } else {
                    observer.stage(&name, "recorded (outputs already match an earlier run)");
                }
                self.ignore_cached_outs(i)?;
                self.record(i, &evaluation, outs);
                self.state[i] = State::Done;
                let action = if evaluation.decision == Decision::Restore {
                    Action::Restored
                } else {
                    Action::Recorded
                };
                self.report(i, action, evaluation.reasons, Some(started), None);
                self.release(i);
            }
            _ if stage.datums.is_some() => {
                let plan = evaluation.datums.clone().unwrap_or_default();
                let out = stage.outs[0].path.clone();
                let out_abs = self.project.repo.root().join(&out);
                std::fs::create_dir_all(&out_abs)
                    .map_err(|e| PipelineError::io("create directory", &out_abs, e))?;
                // Inputs that are gone take their outputs with them.
                for (_, datum) in &plan.removed {
                    self.remove_datum_files(&out, &datum.outs)?;
                }
                let mut progress = DatumProgress {
                    outstanding: 0,
                    done: plan.fresh.iter().cloned().collect(),
                    ran: 0,
                    restored: 0,
                    failed: false,
                    evaluation,
                };
                let mut to_run = Vec::new();
                for datum in plan.todo {
                    match &datum.cached {
                        Some(content) => {
                            let locked = self.merge_datum(i, &datum, Some(content.clone()))?;
                            progress.done.insert(datum.item.clone(), locked);
                            progress.restored += 1;
                        }
                        None => to_run.push(datum),
                    }
                }
                progress.outstanding = to_run.len();
                observer.stage(
                    &name,
                    &format!(
                        "{} datums: {} to run, {} restored from the run cache, {} up to date, {} removed",
                        plan.fresh.len() + progress.restored as usize + to_run.len(),
                        to_run.len(),
                        progress.restored,
                        plan.fresh.len(),
                        plan.removed.len()
                    ),
                );
                let removed = plan.removed.len() as u64;
                let fresh = plan.fresh.len() as u64;
                self.state[i] = State::Running;
                self.reports.insert(
                    i,
                    StageReport {
                        stage: name.clone(),
                        action: Action::Ran,
                        reasons: Vec::new(),
                        seconds: 0.0,
                        error: None,
                        datums: Some((0, progress.restored, fresh, removed)),
                    },
                );
                let empty = to_run.is_empty();
                for datum in to_run {
                    self.queue.push(Task { stage: i, datum: Some(datum) });
                }
                self.datum_stages.insert(i, (progress, started));
                if empty {
                    self.complete_datum_stage(i, observer)?;
                }
            }
            _ => {
                observer.stage(&name, &format!("running ({})", evaluation.reasons.join("; ")));
                self.prepare_outputs(&stage)?;
                self.state[i] = State::Running;
                self.running.insert(i, (evaluation, started));
                self.queue.push(Task { stage: i, datum: None });
            }
        }
        Ok(())
    }

    /// Deletes outputs (except `persist` ones) before the command runs, so nothing stale is
    /// mistaken for its output, and creates their parent directories.
    fn prepare_outputs(&self, stage: &Stage) -> Result<()> {
        let root = self.project.repo.root();
        for out in &stage.outs {
            let path = root.join(&out.path);
            if !out.persist {
                let removed = match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(_) => Ok(()),
                };
                removed.map_err(|e| PipelineError::io("remove the old output", &path, e))?;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| PipelineError::io("create directory", parent, e))?;
            }
        }
        Ok(())
    }

    fn ignore_cached_outs(&self, i: usize) -> Result<()> {
        for out in &self.project.pipeline.stages[i].outs {
            if out.cache {
                self.project.repo.ignore_in_git(out.path.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Records a finished stage in the lock and the records.
    fn record(&mut self, i: usize, evaluation: &Evaluation, outs: BTreeMap<String, Content>) {
        let stage = &self.project.pipeline.stages[i];
        let locked = LockedStage {
            fingerprint: evaluation.fingerprint.to_string(),
            cmd: stage.cmd.clone(),
            wdir: stage.wdir.clone(),
            deps: evaluation.deps.clone(),
            params: evaluation.params.clone(),
            env: stage.env.clone(),
            outs: outs.clone(),
            datums: BTreeMap::new(),
        };
        let name = stage.name.clone();
        self.project.invalidate_inside(i, &mut self.records, false);
        for (path, content) in &outs {
            self.records.insert(path.clone(), content.to_pointer());
        }
        self.project.lock.stages.insert(name, locked);
    }

    /// Lets downstream stages become ready.
    fn release(&mut self, i: usize) {
        for d in self.project.graph.downstream[i].clone() {
            self.remaining[d] = self.remaining[d].saturating_sub(1);
        }
    }

    fn after_failure(&mut self, i: usize) {
        if !self.options.keep_going {
            self.stop = true;
        }
        self.release(i);
    }

    fn finish_task(&mut self, task: Task, outcome: Outcome, observer: &dyn Observer) -> Result<()> {
        let i = task.stage;
        let name = self.name(i);
        if let Some(datum) = task.datum {
            let (progress, _) = self.datum_stages.get_mut(&i).expect("a running datum stage");
            progress.outstanding -= 1;
            match outcome {
                Outcome::Success => {
                    let merged = self.merge_datum(i, &datum, None);
                    let (progress, _) = self.datum_stages.get_mut(&i).expect("a running datum stage");
                    match merged {
                        Ok(locked) => {
                            progress.done.insert(datum.item.clone(), locked);
                            progress.ran += 1;
                        }
                        Err(e) => {
                            observer.stage(&format!("{name}[{}]", datum.item), &format!("failed: {e}"));
                            progress.failed = true;
                        }
                    }
                }
                other => {
                    observer.stage(
                        &format!("{name}[{}]", datum.item),
                        &format!("failed: {}", exec::describe(&other)),
                    );
                    progress.failed = true;
                    if !self.options.keep_going {
                        // Datums not started yet stay undone.
                        let before = self.queue.len();
                        self.queue.retain(|t| t.stage != i);
                        progress.outstanding -= before - self.queue.len();
                    }
                }
            }
            let (progress, _) = &self.datum_stages[&i];
            if progress.outstanding == 0 {
                self.complete_datum_stage(i, observer)?;
            }
            return Ok(());
        }

        let (evaluation, started) = self.running.remove(&i).expect("a running stage");
        let result = match outcome {
            Outcome::Success => self.collect_outputs(i),
            other => Err(exec::describe(&other)),
        };
        match result {
            Ok(outs) => {
                let entry = Entry {
                    schema: 1,
                    fingerprint: evaluation.fingerprint.to_string(),
                    stage: name.clone(),
                    outs: outs.clone(),
                    created: now_secs(),
                    commit: self.commit.clone(),
                };
                self.project.runs.put(&entry)?;
                self.record(i, &evaluation, outs);
                self.state[i] = State::Done;
                observer.stage(&name, &format!("done in {}", seconds(started.elapsed())));
                self.report(i, Action::Ran, evaluation.reasons, Some(started), None);
                self.release(i);
            }
            Err(message) => {
                let interrupted = self.options.cancel.load(Ordering::Relaxed);
                self.state[i] = if interrupted { State::NotRun } else { State::Failed };
                let log = self.project.repo.root().join(".cairn/state/logs").join(format!("{name}.log"));
                let message = format!("{message} (full log: {})", log.display());
                if interrupted {
                    observer.stage(&name, "stopped: interrupted; nothing it wrote was cached");
                } else {
                    observer.stage(&name, &format!("failed: {message}"));
                }
                let action = if interrupted { Action::NotRun } else { Action::Failed };
                self.report(i, action, evaluation.reasons, Some(started), Some(message));
                self.after_failure(i);
            }
        }
        Ok(())
    }

    /// After a successful command: every declared output must exist; checks must pass;
    /// then the outputs are stored. Nothing is cached if any of that fails.
    fn collect_outputs(&mut self, i: usize) -> std::result::Result<BTreeMap<String, Content>, String> {
        let stage = self.project.pipeline.stages[i].clone();
        let root = self.project.repo.root();
        let missing: Vec<&str> = stage
            .outs
            .iter()
            .filter(|o| std::fs::symlink_metadata(root.join(&o.path)).is_err())
            .map(|o| o.path.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the command succeeded but did not write the declared output{} {}; nothing was cached",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        for check in &stage.checks {
            checks::run(check, root)?;
        }
        let rels: Vec<Vec<u8>> = stage.outs.iter().map(|o| rel_bytes(&o.path)).collect();
        let stored = self.project.repo.store_outputs(&rels, &NoReporter).map_err(|e| e.to_string())?;
        self.ignore_cached_outs(i).map_err(|e| e.to_string())?;
        Ok(stage.outs.iter().zip(stored).map(|(o, p)| (o.path.clone(), Content::from_pointer(&p))).collect())
    }

    fn remove_datum_files(&self, out: &str, content: &Content) -> Result<()> {
        let Some(pointer) = content.to_pointer() else { return Ok(()) };
        let Ok(files) = self.project.repo.content_files(&pointer) else { return Ok(()) };
        let base = self.project.repo.root().join(out);
        for file in files {
            let path = base.join(String::from_utf8_lossy(&file.path).as_ref());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PipelineError::io("remove", &path, e)),
            }
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == base || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    /// Puts one datum's outputs into the stage's output directory: from the run cache
    /// (`cached`) or from the staging directory it just ran in (stored and entered into the
    /// run cache first). Returns its lock entry.
    fn merge_datum(&mut self, i: usize, datum: &Datum, cached: Option<Content>) -> Result<LockedDatum> {
        let stage = self.project.pipeline.stages[i].clone();
        let out = stage.outs[0].path.clone();
        let repo = self.project.repo;
        let staging = staging_rel(&stage.name, &datum.item);
        let content = match cached {
            Some(content) => {
                let pointer =
                    content.to_pointer().ok_or_else(|| PipelineError::Internal("bad datum record".into()))?;
                repo.restore_outputs(vec![Tracked { rel: rel_bytes(&staging), pointer }], &NoReporter)?;
                content
            }
            None => {
                let stored = repo.store_outputs(&[rel_bytes(&staging)], &NoReporter)?;
                let content = Content::from_pointer(&stored[0]);
                let mut outs = BTreeMap::new();
                outs.insert(out.clone(), content.clone());
                self.project.runs.put(&Entry {
                    schema: 1,
                    fingerprint: datum.fingerprint.to_string(),
                    stage: stage.name.clone(),
                    outs,
                    created: now_secs(),
                    commit: self.commit.clone(),
                })?;
                content
            }
        };
        // The datum's previous outputs go first.
        if let Some(previous) =
            self.project.lock.stages.get(&stage.name).and_then(|l| l.datums.get(&datum.item))
        {
            let previous = previous.outs.clone();
            self.remove_datum_files(&out, &previous)?;
        }
        let root = repo.root();
        let from = root.join(&staging);
        let to = root.join(&out);
        for entry in walkdir::WalkDir::new(&from).min_depth(1) {
            let entry =
                entry.map_err(|e| PipelineError::Internal(format!("listing `{}`: {e}", from.display())))?;
            let rel = entry.path().strip_prefix(&from).expect("under the staging directory");
            let dest = to.join(rel);
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&dest)
                    .map_err(|e| PipelineError::io("create directory", &dest, e))?;
                continue;
            }
            if std::fs::symlink_metadata(&dest).is_ok() {
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "datum `{}` wrote `{}`, which another datum already wrote; datums must write distinct files (use ${{item.stem}} in names)",
                        datum.item,
                        Path::new(&out).join(rel).display()
                    ),
                });
            }
            std::fs::rename(entry.path(), &dest)
                .map_err(|e| PipelineError::io("move a datum's output to", &dest, e))?;
        }
        let _ = std::fs::remove_dir_all(&from);
        Ok(LockedDatum {
            fingerprint: datum.fingerprint.to_string(),
            input: datum.input.to_string(),
            outs: content,
        })
    }

    fn complete_datum_stage(&mut self, i: usize, observer: &dyn Observer) -> Result<()> {
        let (progress, started) = self.datum_stages.remove(&i).expect("a datum stage");
        let name = self.name(i);
        let stage = self.project.pipeline.stages[i].clone();
        let out = stage.outs[0].path.clone();
        if progress.failed {
            // Datums that succeeded are in the run cache; the lock keeps its old state.
            let interrupted = self.options.cancel.load(Ordering::Relaxed);
            self.state[i] = if interrupted { State::NotRun } else { State::Failed };
            let action = if interrupted { Action::NotRun } else { Action::Failed };
            let message = format!(
                "some datums failed (logs: .cairn/state/logs/{name}/); the {} that succeeded are cached",
                progress.ran
            );
            observer.stage(&name, &format!("failed: {message}"));
            let datums =
                self.reports.get(&i).and_then(|r| r.datums).map(|(_, r, f, d)| (progress.ran, r, f, d));
            self.report(i, action, progress.evaluation.reasons.clone(), Some(started), Some(message));
            if let Some(r) = self.reports.get_mut(&i) {
                r.datums = datums;
            }
            self.after_failure(i);
            return Ok(());
        }
        for check in &stage.checks {
            if let Err(message) = checks::run(check, self.project.repo.root()) {
                self.state[i] = State::Failed;
                observer.stage(&name, &format!("failed: {message}"));
                self.report(
                    i,
                    Action::Failed,
                    progress.evaluation.reasons.clone(),
                    Some(started),
                    Some(message),
                );
                self.after_failure(i);
                return Ok(());
            }
        }
        let stored = self.project.repo.store_outputs(&[rel_bytes(&out)], &NoReporter)?;
        self.project.repo.ignore_in_git(out.as_bytes())?;
        let outs: BTreeMap<String, Content> =
            [(out.clone(), Content::from_pointer(&stored[0]))].into_iter().collect();
        self.record(i, &progress.evaluation, outs);
        if let Some(locked) = self.project.lock.stages.get_mut(&name) {
            locked.datums = progress.done;
        }
        self.state[i] = State::Done;
        let (_, restored, fresh, removed) = self.reports.get(&i).and_then(|r| r.datums).unwrap_or_default();
        let action = if progress.ran > 0 { Action::Ran } else { Action::Restored };
        observer.stage(&name, &format!("done in {}", seconds(started.elapsed())));
        self.report(i, action, progress.evaluation.reasons.clone(), Some(started), None);
        if let Some(r) = self.reports.get_mut(&i) {
            r.datums = Some((progress.ran, restored, fresh, removed));
        }
        self.release(i);
        Ok(())
    }

    /// Reports in run order, with stages never reached marked as not run.
    fn finish(&mut self) -> Vec<StageReport> {
        let selected = self.selected.clone();
        for i in selected.iter().copied() {
            if !self.reports.contains_key(&i) || self.state[i] == State::Waiting {
                let reason = if self.options.cancel.load(Ordering::Relaxed) {
                    "interrupted"
                } else {
                    "the run stopped"
                };
                self.state[i] = State::NotRun;
                self.report(i, Action::NotRun, vec![reason.into()], None, None);
            }
        }
        selected.iter().filter_map(|i| self.reports.get(i).cloned()).collect()
    }
}

/// Where a datum runs: `.cairn/state/datums/<stage>/<key>`.
fn staging_rel(stage: &str, item: &str) -> String {
    format!(".cairn/state/datums/{stage}/{}", datum_key(item))
}

fn datum_key(item: &str) -> String {
    hash_bytes(item.as_bytes()).hex()[..16].to_owned()
}
