//! Recorded runs. Every `cairn run` is a run in the metadata store: who, when, which commit
//! (and whether the tree was dirty), status, each stage's action and wall time, the params
//! read, the metrics written, and the digests of inputs and outputs. This module records
//! them ([`Recorder`]) and reads them back (`exp show`, `exp diff`, run lookup).

use std::collections::BTreeMap;

use cairn_meta::{IoRecord, Metric, NewRun, RunStatus, StageRecord, Store, now_ms};
use cairn_pipeline::engine::{Action, RunReport};
use cairn_pipeline::spec::OutKind;
use cairn_pipeline::{Observer, Project, params};
use cairn_repo::Repo;
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result, Workspace};

/// How often a running `cairn run` says it is alive, and after how long without a word a
/// run on another host is taken for dead.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);
const STALE_MS: i64 = 10 * 60 * 1000;

/// This process as a run's owner.
pub fn this_process() -> cairn_meta::RunOwner {
    let pid = std::process::id() as i64;
    cairn_meta::RunOwner { host: host_name(), pid, process_start: process_start(pid).unwrap_or(0) }
}

/// Where a pid means something: the host name and the pid namespace (`pid:[4026531836]`),
/// so that two containers with the same host name never judge each other's pids.
fn host_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    match std::fs::read_link("/proc/self/ns/pid") {
        Ok(namespace) => format!("{host} {}", namespace.display()),
        Err(_) => host,
    }
}

/// When process `pid` started, in clock ticks since boot (`/proc/PID/stat`, field 22); `None`
/// when there is no such process.
fn process_start(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that claimed a run is still the one running with that pid.
fn process_alive(pid: i64, start: i64) -> bool {
    match process_start(pid) {
        None => false,
        Some(now) => start == 0 || now == start,
    }
}

/// Opens the metadata store and marks `KILLED` the runs whose process is gone (a `cairn run`
/// or `cairn exp run` killed with `kill -9`, or on a machine that went away).
pub fn open_meta(location: &str) -> Result<Store, cairn_meta::MetaError> {
    let store = cairn_meta::open(location)?;
    // Best effort: a store that cannot be updated right now is still readable.
    let _ = store.reap_dead_runs(&host_name(), &process_alive, now_ms(), STALE_MS);
    Ok(store)
}

/// Keeps a run's heartbeat while it lives; stops when dropped.
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A run being recorded.
pub struct Recorder {
    store: Store,
    pub run_id: String,
    started: i64,
    /// Recording into a run created before (`cairn exp run`), which has its own tags.
    queued: bool,
    location: String,
}

impl Recorder {
    /// Opens the store and starts a run; a store that cannot be opened is a warning, not a
    /// reason to refuse running the pipeline.
    pub fn start(
        ws: &Workspace,
        project: &mut Project,
        existing: Option<&str>,
        observer: &dyn Observer,
    ) -> Option<Recorder> {
        let location = ws.repo().meta_location();
        let store = match open_meta(&location) {
            Ok(store) => store,
            Err(e) => {
                observer.warn(&format!("this run is not recorded: {e}"));
                return None;
            }
        };
        if let Some(run_id) = existing {
            // A queued experiment: its commit and name were recorded when it was queued.
            let started = now_ms();
            let update = cairn_meta::RunUpdate { status: Some(RunStatus::Running), ..Default::default() };
            // The owner first: a process killed in between leaves a SCHEDULED run with an
            // owner (queued, as it was), never a RUNNING run without one.
            let claimed = store
                .claim_run(run_id, &this_process(), started)
                .and_then(|()| store.update_run(run_id, &update));
            return match claimed {
                Ok(()) => {
                    Some(Recorder { store, run_id: run_id.to_owned(), started, queued: true, location })
                }
                Err(e) => {
                    observer.warn(&format!("this run is not recorded: {e}"));
                    None
                }
            };
        }
        let (commit, dirty) = project.git_state();
        let user = ws.user();
        let started = now_ms();
        let run = NewRun {
            experiment_id: 0,
            name: format!("run-{}", commit.as_deref().map_or("nocommit", |c| &c[..c.len().min(8)])),
            // A re-run's parent is the last run at the same commit.
            parent_run_id: commit.as_deref().and_then(|c| store.latest_run_at("cairn run", c).ok().flatten()),
            user,
            git_commit: commit,
            git_dirty: dirty,
            start_time: started,
            source: "cairn run".into(),
            artifact_uri: String::new(),
            owner: Some(this_process()),
        };
        match store.create_run(&run) {
            Ok(run_id) => Some(Recorder { store, run_id, started, queued: false, location }),
            Err(e) => {
                observer.warn(&format!("this run is not recorded: {e}"));
                None
            }
        }
    }

    /// Records what the run did and ends it with `status` (finished, failed or killed).
    pub fn finish(
        &self,
        repo: &Repo,
        project: &Project,
        report: Option<&RunReport>,
        status: RunStatus,
        observer: &dyn Observer,
    ) {
        if let Err(e) = self.record(repo, project, report, status) {
            observer.warn(&format!("could not record run {}: {e}", self.run_id));
        }
    }

    fn record(
        &self,
        repo: &Repo,
        project: &Project,
        report: Option<&RunReport>,
        status: RunStatus,
    ) -> cairn_meta::Result<()> {
        let stages = report.map(|r| r.stages.as_slice()).unwrap_or_default();
        // The run as the stages left it: where its artifacts (stage logs) go, and the params
        // they logged through the tracking API.
        let current = self.store.run(&self.run_id)?;
        let artifacts = current.as_ref().and_then(|r| cairn_meta::artifact_tree_path(&r.info.artifact_uri));
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        let mut io = BTreeMap::new();
        for stage in stages {
            let locked = project.lock.stages.get(&stage.stage);
            let ran = matches!(stage.action, Action::Ran | Action::Failed);
            self.store.record_stage(
                &self.run_id,
                &StageRecord {
                    stage: stage.stage.clone(),
                    action: stage.action.name().into(),
                    start_time: self.started,
                    wall_ms: (stage.seconds * 1000.0).round() as i64,
                    cpu_ms: stage.cpu_ms,
                    max_rss_kb: stage.max_rss_kb,
                    fingerprint: locked.map(|l| l.fingerprint.to_string()),
                    log: if ran {
                        artifacts.as_deref().and_then(|root| self.keep_logs(repo, root, &stage.stage))
                    } else {
                        None
                    },
                    error: stage.error.clone(),
                },
            )?;
            let Some(locked) = locked else { continue };
            for (file, keys) in &locked.params {
                for (key, value) in keys {
                    let name = if file == cairn_pipeline::spec::DEFAULT_PARAMS {
                        key.clone()
                    } else {
                        format!("{file}:{key}")
                    };
                    params.insert(name, param_text(value));
                }
            }
            for (path, content) in &locked.deps {
                io.insert(("input", path.clone()), content.clone());
            }
            for (path, content) in &locked.outs {
                io.insert(("output", path.clone()), content.clone());
            }
        }
        let records: Vec<IoRecord> = io
            .into_iter()
            .map(|((direction, path), c)| IoRecord {
                direction: direction.into(),
                path,
                digest: c.digest,
                size: c.size as i64,
            })
            .collect();
        self.store.record_io(&self.run_id, &records)?;
        let now = now_ms();
        let metrics: Vec<Metric> = metrics_of(repo, project)
            .into_iter()
            .map(|(key, value)| Metric { key, value, timestamp: now, step: 0 })
            .collect();
        // Params a stage logged itself through the tracking API win over the params files
        // (params are immutable, and the run should not fail to record over it).
        let logged: std::collections::HashSet<String> = match current {
            Some(run) => run.params.into_iter().map(|(k, _)| k).collect(),
            None => Default::default(),
        };
        let params: Vec<(String, String)> = params.into_iter().filter(|(k, _)| !logged.contains(k)).collect();
        let tags =
            if self.queued { Vec::new() } else { vec![("cairn.source".to_owned(), "cairn run".to_owned())] };
        self.store.log_batch(&self.run_id, &metrics, &params, &tags)?;
        self.store.end_run(&self.run_id, status, now)
    }
}

impl Recorder {
    /// Removes the run again: it did nothing worth a record.
    pub fn discard(&self, observer: &dyn Observer) {
        if let Err(e) = self.store.purge_run(&self.run_id) {
            observer.warn(&format!("could not remove the empty run record {}: {e}", self.run_id));
        }
    }

    /// Starts the heartbeat that tells other hosts this run is alive.
    pub fn heartbeat(&self) -> Heartbeat {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (location, run_id) = (self.location.clone(), self.run_id.clone());
        let thread = std::thread::spawn(move || {
            // Connected at the first beat: most runs end before one is due.
            let mut store = None;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                if store.is_none() {
                    store = cairn_meta::open(&location).ok();
                }
                if let Some(store) = &store {
                    let _ = store.heartbeat(&run_id, now_ms());
                }
            }
        });
        Heartbeat { stop: Some(stop), thread: Some(thread) }
    }

    /// Stores a stage's log (or its parts' logs) in the cache as artifacts of the run
    /// (`logs/<stage>.log`, visible to `mlflow` clients too); returns where they are in the
    /// run's artifact tree. A log that cannot be kept is a warning-free `None`: the run still
    /// records.
    fn keep_logs(&self, repo: &Repo, root: &str, stage: &str) -> Option<String> {
        let logs = repo.root().join(".cairn/state/logs");
        let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
        let single = logs.join(format!("{stage}.log"));
        if single.is_file() {
            files.push((format!("logs/{stage}.log"), single));
        }
        if let Ok(parts) = std::fs::read_dir(logs.join(stage)) {
            for part in parts.flatten() {
                let name = part.file_name().to_string_lossy().into_owned();
                files.push((format!("logs/{stage}/{name}"), part.path()));
            }
        }
        let mut kept = 0;
        for (name, path) in &files {
            let Ok(bytes) = std::fs::read(path) else { continue };
            let Ok(digest) = repo.store().put_bytes(&bytes) else { continue };
            let artifact =
                cairn_meta::Artifact { path: format!("{root}/{name}"), digest, size: bytes.len() as i64 };
            if self.store.put_artifact(&artifact).is_ok() {
                kept += 1;
            }
        }
        match files.as_slice() {
            _ if kept == 0 => None,
            [(name, _)] => Some(name.clone()),
            _ => Some(format!("logs/{stage}/")),
        }
    }
}

fn param_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Numeric values of every declared metrics file, flattened (`train.loss`).
fn metrics_of(repo: &Repo, project: &Project) -> Vec<(String, f64)> {
    let mut out = BTreeMap::new();
    for stage in &project.pipeline.stages {
        for metric in stage.outs.iter().filter(|o| o.kind == OutKind::Metric) {
            let Ok(bytes) = std::fs::read(repo.root().join(&metric.path)) else { continue };
            let Ok(root) = params::parse_file(&metric.path, &bytes) else { continue };
            for (key, value) in params::flatten(&root) {
                if let Some(number) = value.as_f64() {
                    out.insert(key, number);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// What `exp show` lists.
#[derive(Debug, Default)]
pub struct ShowRequest {
    pub limit: usize,
    /// A metric or param key to sort by; `-key` sorts descending.
    pub sort: Option<String>,
    /// MLflow's search syntax (`metrics.acc > 0.9 and params.lr = '0.01'`).
    pub filter: Option<String>,
    /// Param and metric keys to show (`train.*` is a prefix); empty: all.
    pub columns: Vec<String>,
}

/// A recorded run as `exp show --json` lists it.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub name: String,
    pub parent: Option<String>,
    pub status: RunStatus,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub user: String,
    pub commit: Option<String>,
    pub dirty: bool,
    pub params: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub stages: Vec<StageSummary>,
}

/// One stage of a run: what it did and what it cost.
#[derive(Debug, Serialize)]
pub struct StageSummary {
    pub stage: String,
    pub action: String,
    pub wall_ms: i64,
    pub cpu_ms: Option<i64>,
    pub max_rss_kb: Option<i64>,
    pub log: Option<String>,
}

/// `exp show`: the runs, and the param and metric columns they have among those asked for.
#[derive(Debug)]
pub struct RunTable {
    pub runs: Vec<RunSummary>,
    pub param_keys: Vec<String>,
    pub metric_keys: Vec<String>,
}

/// Whether a param or metric key is among the chosen columns (`train.*` is a prefix).
fn chosen(columns: &[String], key: &str) -> bool {
    columns.is_empty()
        || columns.iter().any(|c| match c.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => c == key,
        })
}

/// Sorts by a metric (or a numeric param) `key`; `-key` descending; runs without it last.
fn sort_runs(runs: &mut [cairn_meta::Run], key: &str) {
    let (key, descending) = match key.strip_prefix('-') {
        Some(k) => (k, true),
        None => (key, false),
    };
    let value = |run: &cairn_meta::Run| -> Option<f64> {
        run.metrics
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value)
            .or_else(|| run.params.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.parse().ok()))
    };
    runs.sort_by(|a, b| match (value(a), value(b)) {
        (Some(x), Some(y)) if descending => y.total_cmp(&x),
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

fn keys<'r>(keys: impl Iterator<Item = &'r String>, columns: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = keys.filter(|k| chosen(columns, k)).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `exp show`: recorded runs with their params, metrics and stages.
pub fn show(ws: &Workspace, request: &ShowRequest) -> Result<RunTable> {
    let store = ws.meta()?;
    let mut runs = store.search_runs(&[], usize::MAX)?;
    if let Some(text) = &request.filter {
        let filter = cairn_meta::search::Filter::parse(text)
            .map_err(|e| Error::Usage(format!("invalid --filter `{text}`: {e}")))?;
        runs.retain(|r| filter.matches(r));
    }
    if let Some(key) = request.sort.as_deref() {
        sort_runs(&mut runs, key);
    }
    runs.truncate(request.limit);
    let param_keys = keys(runs.iter().flat_map(|r| r.params.iter().map(|(k, _)| k)), &request.columns);
    let metric_keys = keys(runs.iter().flat_map(|r| r.metrics.iter().map(|m| &m.key)), &request.columns);
    let runs = runs.into_iter().map(|r| summary(&store, r)).collect();
    Ok(RunTable { runs, param_keys, metric_keys })
}

/// A run as the runs table lists it, with its stages.
pub fn summary(store: &Store, r: cairn_meta::Run) -> RunSummary {
    let stages = store.stages(&r.info.run_id).unwrap_or_default();
    RunSummary {
        stages: stages
            .into_iter()
            .map(|s| StageSummary {
                stage: s.stage,
                action: s.action,
                wall_ms: s.wall_ms,
                cpu_ms: s.cpu_ms,
                max_rss_kb: s.max_rss_kb,
                log: s.log,
            })
            .collect(),
        params: r.params.into_iter().collect(),
        metrics: r.metrics.into_iter().map(|m| (m.key, m.value)).collect(),
        run_id: r.info.run_id,
        name: r.info.name,
        parent: r.info.parent_run_id,
        status: r.info.status,
        start_time: r.info.start_time,
        end_time: r.info.end_time,
        user: r.info.user,
        commit: r.info.git_commit,
        dirty: r.info.git_dirty,
    }
}

/// The run that `reference` names: the start (at least 4 characters) of a run id, or a run's
/// name (`cairn exp run --name`, MLflow's `runName`). A reference that fits several runs is an
/// error that lists them, never a guess.
pub fn find_run(store: &Store, runs: &[cairn_meta::Run], reference: &str) -> Result<cairn_meta::Run> {
    let by_id = |run: &&cairn_meta::Run| reference.len() >= 4 && run.info.run_id.starts_with(reference);
    let by_name = |run: &&cairn_meta::Run| !reference.is_empty() && run.info.name == reference;
    let matches: Vec<&cairn_meta::Run> = runs.iter().filter(|r| by_id(r) || by_name(r)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if reference.len() < 4 => Err(Error::refused(
            format!("no run is named `{reference}`, and `{reference}` is too short for a run id"),
            Some("give a run's name or at least 4 characters of its id, from `cairn exp show`"),
        )),
        [] => match store.run(reference) {
            Ok(Some(run)) => Ok(run),
            _ => Err(Error::refused(
                format!("no run has an id starting `{reference}` or the name `{reference}`"),
                Some("list runs with `cairn exp show`"),
            )),
        },
        many => {
            let ids: Vec<&str> = many.iter().take(5).map(|r| short_id(&r.info.run_id)).collect();
            Err(Error::refused(
                format!(
                    "`{reference}` fits {} runs ({}{})",
                    many.len(),
                    ids.join(", "),
                    if many.len() > ids.len() { ", …" } else { "" }
                ),
                Some("name the run by its id (or more of it), from `cairn exp show`"),
            ))
        }
    }
}

/// The first 8 characters of a run id, as runs are shown.
pub fn short_id(run_id: &str) -> &str {
    &run_id[..8.min(run_id.len())]
}

/// One param or metric that differs between two runs.
#[derive(Debug, Serialize)]
pub struct Difference {
    /// `param` or `metric`.
    pub kind: &'static str,
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
    /// For a metric with both values: new − old.
    pub change: Option<f64>,
}

/// `exp diff A B`.
#[derive(Debug, Serialize)]
pub struct RunDiff {
    pub old: String,
    pub new: String,
    pub differences: Vec<Difference>,
}

/// `exp diff A B`: params and metrics that differ between two runs (with `all`, every one).
pub fn diff(ws: &Workspace, a: &str, b: &str, all: bool) -> Result<RunDiff> {
    let store = ws.meta()?;
    let runs = store.search_runs(&[], usize::MAX)?;
    let (old, new) = (find_run(&store, &runs, a)?, find_run(&store, &runs, b)?);
    let params = |run: &cairn_meta::Run| run.params.iter().cloned().collect::<BTreeMap<String, String>>();
    let metrics = |run: &cairn_meta::Run| {
        run.metrics
            .iter()
            .map(|m| (m.key.clone(), format!("{}", m.value)))
            .collect::<BTreeMap<String, String>>()
    };
    let mut differences = Vec::new();
    for (kind, old_map, new_map) in
        [("param", params(&old), params(&new)), ("metric", metrics(&old), metrics(&new))]
    {
        let mut keys: Vec<&String> = old_map.keys().chain(new_map.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (o, n) = (old_map.get(key).cloned(), new_map.get(key).cloned());
            if all || o != n {
                let number = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<f64>().ok());
                let change = match (number(&o), number(&n)) {
                    (Some(x), Some(y)) if kind == "metric" => Some(y - x),
                    _ => None,
                };
                differences.push(Difference { kind, key: key.clone(), old: o, new: n, change });
            }
        }
    }
    Ok(RunDiff { old: old.info.run_id, new: new.info.run_id, differences })
}

/// One run's history of one metric.
#[derive(Debug, Serialize)]
pub struct MetricSeries {
    pub run_id: String,
    pub points: Vec<cairn_meta::Metric>,
}

/// What `plots show` draws: the runs, and per metric each run's history of it.
#[derive(Debug)]
pub struct Plot {
    pub runs: Vec<cairn_meta::Run>,
    pub metrics: BTreeMap<String, Vec<MetricSeries>>,
}

/// The metric histories of `runs` (ids or names; none: the latest run with metrics), only
/// `metrics` when any are named.
pub fn plot(ws: &Workspace, runs: &[String], metrics: &[String]) -> Result<Plot> {
    let store = ws.meta()?;
    let runs: Vec<cairn_meta::Run> = if runs.is_empty() {
        let all = store.runs(&[], cairn_meta::View::Active)?;
        all.into_iter().find(|r| !r.metrics.is_empty()).into_iter().collect()
    } else {
        runs.iter().map(|id| crate::experiments::find(&store, id)).collect::<Result<_>>()?
    };
    if runs.is_empty() {
        return Err(Error::refused(
            "no recorded run has metrics to plot",
            Some(
                "log step-wise metrics from a stage (append JSON lines to $CAIRN_METRICS_FILE, or use mlflow.log_metric)",
            ),
        ));
    }
    let mut series: BTreeMap<String, Vec<MetricSeries>> = BTreeMap::new();
    for run in &runs {
        for metric in run.metrics.iter().filter(|m| metrics.is_empty() || metrics.contains(&m.key)) {
            let points = store.metric_history(&run.info.run_id, &metric.key)?;
            series
                .entry(metric.key.clone())
                .or_default()
                .push(MetricSeries { run_id: run.info.run_id.clone(), points });
        }
    }
    if series.is_empty() {
        return Err(Error::refused(
            format!("the runs have none of the metrics {}", metrics.join(", ")),
            Some("list a run's metrics with `cairn exp show --json`"),
        ));
    }
    Ok(Plot { runs, metrics: series })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_keys_or_prefixes() {
        let columns = vec!["train.*".to_owned(), "lr".to_owned()];
        assert!(chosen(&columns, "train.loss"));
        assert!(chosen(&columns, "lr"));
        assert!(!chosen(&columns, "lr2"));
        assert!(chosen(&[], "anything"));
    }

    #[test]
    fn sorting_puts_runs_without_the_value_last() {
        let run = |id: &str, acc: Option<f64>| cairn_meta::Run {
            info: cairn_meta::RunInfo { run_id: id.into(), ..Default::default() },
            metrics: acc
                .map(|v| cairn_meta::Metric { key: "acc".into(), value: v, timestamp: 0, step: 0 })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let mut runs = vec![run("a", Some(0.5)), run("b", None), run("c", Some(0.9))];
        sort_runs(&mut runs, "-acc");
        let order: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        sort_runs(&mut runs, "acc");
        let order: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(order, ["a", "c", "b"]);
    }
}
