//! Experiments: `cairn exp run` (params overrides, sweeps, a queue), `apply`, `branch`,
//! `remove`, `push` and `pull`.
//!
//! An experiment runs in a workspace of its own, `.cairn/state/exps/<run id>/`: a copy of
//! the work tree as Git sees it (tracked and untracked files, not ignored ones) taken when
//! the experiment is created, with the overrides written into its params files. The copy is
//! a Git repository of its own (so that Cairn finds it as a project) that shares this
//! project's cache and metadata store; tracked data is linked in from the cache, and stage
//! outputs come back from the run cache where their inputs match, so only what the
//! overrides change runs. Nothing is committed and the user's work tree is not touched.
//!
//! An experiment is a recorded run (source `cairn exp run`): queued (`SCHEDULED`), then run
//! with `cairn run --record-as ID` inside its workspace. Afterwards its `cairn.lock` and
//! changed params files are stored in the cache and listed in the run's records (direction
//! `file`), which is what `apply` and `branch` bring back, and `push` shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn_meta::{IoRecord, NewRun, Run, RunStatus, RunUpdate, Store, View, now_ms};
use cairn_pipeline::params;
use cairn_repo::Repo;
use serde::Serialize;
use serde_json::{Value, json};

use crate::runs::{find_run, short_id};
use crate::{Error, Result, Workspace};

/// Where experiment workspaces live.
const EXPS_DIR: &str = ".cairn/state/exps";
/// Tags on an experiment's run.
const TAG_OVERRIDES: &str = "cairn.exp.overrides";
const TAG_FILES: &str = "cairn.exp.files";
const SOURCE: &str = "cairn exp run";

/// One `-S` option: a key in a params file and the values to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub file: String,
    pub key: String,
    pub values: Vec<String>,
}

/// Parses `[FILE:]KEY=VALUES`; VALUES is a comma-separated list or `range(start, stop[, step])`.
pub fn parse_override(text: &str) -> Result<Override> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "invalid -S `{text}`: {why}; write KEY=VALUE, FILE:KEY=VALUE, KEY=a,b,c or KEY=range(1,5)"
        ))
    };
    let (target, values) = text.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let (file, key) = match target.rsplit_once(':') {
        Some((file, key)) => (file.to_owned(), key.to_owned()),
        None => (cairn_pipeline::spec::DEFAULT_PARAMS.to_owned(), target.to_owned()),
    };
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad("the key is empty or has an empty part"));
    }
    Ok(Override { file, key, values: expand(values).map_err(|e| bad(&e))? })
}

/// `a,b,c` → three values; `range(3,8)` → 3..=7; `range(0, 1, 0.25)` → 0, 0.25, 0.5, 0.75.
fn expand(values: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut parts = Vec::new();
    for c in values.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    for part in parts {
        let part = part.trim();
        if let Some(inner) = part.strip_prefix("range(").and_then(|r| r.strip_suffix(')')) {
            let numbers: Vec<&str> = inner.split(',').map(str::trim).collect();
            let parse = |t: &str| t.parse::<f64>().map_err(|_| format!("`{t}` in `{part}` is not a number"));
            let (start, stop, step) = match numbers.as_slice() {
                [stop] => (0.0, parse(stop)?, 1.0),
                [start, stop] => (parse(start)?, parse(stop)?, 1.0),
                [start, stop, step] => (parse(start)?, parse(stop)?, parse(step)?),
                _ => return Err(format!("`{part}` takes 1 to 3 numbers")),
            };
            if step <= 0.0 {
                return Err(format!("the step of `{part}` must be positive"));
            }
            let integers = numbers.iter().all(|n| n.parse::<i64>().is_ok());
            let count = ((stop - start) / step).ceil().max(0.0) as usize;
            if count > 10_000 {
                return Err(format!("`{part}` makes {count} values; the limit is 10000"));
            }
            for i in 0..count {
                let value = start + step * i as f64;
                out.push(if integers {
                    format!("{}", value as i64)
                } else {
                    format!("{}", (value * 1e12).round() / 1e12)
                });
            }
        } else {
            out.push(part.to_owned());
        }
    }
    if out.is_empty() || out.iter().any(String::is_empty) {
        return Err("a value is empty".into());
    }
    Ok(out)
}

/// Every combination of the overrides' values (the sweep grid), in order.
pub fn grid(overrides: &[Override]) -> Vec<Vec<(String, String, String)>> {
    let mut combos: Vec<Vec<(String, String, String)>> = vec![Vec::new()];
    for o in overrides {
        combos = combos
            .into_iter()
            .flat_map(|combo| {
                o.values.iter().map(move |v| {
                    let mut next = combo.clone();
                    next.retain(|(f, k, _)| !(f == &o.file && k == &o.key));
                    next.push((o.file.clone(), o.key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    combos
}

fn describe(combo: &[(String, String, String)]) -> String {
    combo
        .iter()
        .map(|(file, key, value)| {
            if file == cairn_pipeline::spec::DEFAULT_PARAMS {
                format!("{key}={value}")
            } else {
                format!("{file}:{key}={value}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn workspace(repo: &Repo, run_id: &str) -> PathBuf {
    repo.root().join(EXPS_DIR).join(run_id)
}

/// Copies the work tree as Git sees it (not ignored files, no `.git`) into `to`.
fn copy_work_tree(from: &Path, to: &Path) -> Result<u64> {
    let io = |action: &str, path: &Path, e: std::io::Error| {
        Error::refused(format!("cannot {action} `{}`: {e}", path.display()), None)
    };
    let mut copied = 0;
    let walker = ignore::WalkBuilder::new(from)
        .hidden(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(true)
        .require_git(false)
        .filter_entry(|entry| entry.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| Error::refused(format!("cannot list the work tree: {e}"), None))?;
        let rel = entry.path().strip_prefix(from).unwrap_or(entry.path());
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = to.join(rel);
        let kind = entry.file_type();
        if kind.is_some_and(|k| k.is_dir()) {
            std::fs::create_dir_all(&target).map_err(|e| io("create", &target, e))?;
        } else if kind.is_some_and(|k| k.is_symlink()) {
            let link = std::fs::read_link(entry.path()).map_err(|e| io("read", entry.path(), e))?;
            std::os::unix::fs::symlink(link, &target).map_err(|e| io("create", &target, e))?;
        } else {
            reflink_copy::reflink_or_copy(entry.path(), &target).map_err(|e| io("copy", entry.path(), e))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// A params file's values; a missing file has none.
fn read_params(path: &Path, file: &str) -> Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) => params::parse_file(file, &bytes).map_err(|e| Error::refused(e, None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Default::default())),
        Err(e) => Err(Error::refused(format!("cannot read `{}`: {e}", path.display()), None)),
    }
}

/// Writes the overrides into the workspace's params files; returns the files changed.
fn apply_overrides(ws: &Path, combo: &[(String, String, String)]) -> Result<Vec<String>> {
    let mut files: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (file, key, value) in combo {
        files.entry(file).or_default().push((key, value));
    }
    for (file, sets) in &files {
        let path = ws.join(file);
        let mut root = read_params(&path, file)?;
        for (key, value) in sets {
            params::set(&mut root, key, params::scalar(value))
                .map_err(|e| Error::refused(format!("cannot set `{key}` in `{file}`: {e}"), None))?;
        }
        let bytes = params::write_file(file, &root).map_err(|e| Error::refused(e, None))?;
        cairn_fs::write(&path, &bytes).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(files.keys().map(|f| (*f).to_owned()).collect())
}

/// Creates a queued experiment: its run record and its workspace snapshot.
fn create(
    ws_: &Workspace,
    store: &Store,
    combo: &[(String, String, String)],
    name: Option<&str>,
) -> Result<String> {
    let repo = ws_.repo();
    let git = cairn_git::GitRepo::discover(repo.root())?;
    let (commit, dirty) = match git.head_state()? {
        Some((commit, dirty)) => (Some(commit), dirty),
        None => (None, true),
    };
    let summary = describe(combo);
    let user = ws_.user();
    let run = NewRun {
        experiment_id: 0,
        name: name
            .map(str::to_owned)
            .unwrap_or_else(|| if summary.is_empty() { "exp".to_owned() } else { format!("exp {summary}") }),
        // The run it varies: the last `cairn run` at the commit it starts from.
        parent_run_id: commit.as_deref().and_then(|c| store.latest_run_at("cairn run", c).ok().flatten()),
        user,
        git_commit: commit,
        git_dirty: dirty,
        start_time: now_ms(),
        source: SOURCE.into(),
        artifact_uri: String::new(),
        owner: None,
    };
    let tags = vec![("cairn.source".to_owned(), SOURCE.to_owned()), (TAG_OVERRIDES.to_owned(), summary)];
    let run_id = store.create_run_with_tags(&run, &tags)?;
    let ws = workspace(repo, &run_id);
    let made = (|| -> Result<()> {
        std::fs::create_dir_all(&ws)
            .map_err(|e| Error::refused(format!("cannot create `{}`: {e}", ws.display()), None))?;
        copy_work_tree(repo.root(), &ws)?;
        let changed = apply_overrides(&ws, combo)?;
        cairn_git::GitRepo::init(&ws)?;
        // The workspace shares this project's cache and metadata store.
        let mut config = cairn_repo::config::ConfigFile::load(&ws.join(".cairn/config"))?;
        config.set("cache.dir", &repo.store().root().display().to_string())?;
        let meta = repo.meta_location();
        let meta = if meta.contains("://") { meta } else { repo.root().join(meta).display().to_string() };
        config.set("meta.url", &meta)?;
        let mut files = changed;
        files.push(cairn_pipeline::lock::LOCK_FILE.to_owned());
        let update = RunUpdate { status: Some(RunStatus::Scheduled), ..Default::default() };
        store.update_run(&run_id, &update)?;
        store.log_batch(&run_id, &[], &[], &[(TAG_FILES.to_owned(), files.join("\n"))])?;
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&ws);
        let _ = store.purge_run(&run_id);
        return Err(e);
    }
    Ok(run_id)
}

fn tag<'r>(run: &'r Run, key: &str) -> Option<&'r str> {
    run.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Runs one queued experiment in its workspace; `log` gets its output when several run at
/// once. Returns whether the pipeline succeeded.
fn execute(repo: &Repo, store: &Store, run: &Run, log: Option<&Path>, options: &Execution) -> Result<bool> {
    let quiet = options.quiet;
    let run_id = &run.info.run_id;
    let ws = workspace(repo, run_id);
    if !ws.is_dir() {
        return Err(Error::refused(
            format!("the workspace of experiment {} is gone ({})", &run_id[..8], ws.display()),
            Some("remove it with `cairn exp remove ID` and queue it again"),
        ));
    }
    let exe = &options.cairn;
    let output = |command: &mut Command| -> Result<()> {
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::refused(format!("cannot open `{}`: {e}", log.display()), None))?;
            let err = file
                .try_clone()
                .map_err(|e| Error::refused(format!("cannot open `{}`: {e}", log.display()), None))?;
            command.stdout(file).stderr(err);
        } else if quiet {
            command.stdout(Stdio::null());
        }
        Ok(())
    };
    // Tracked data comes from the cache (links, not copies, where the strategy allows).
    let mut checkout = Command::new(exe);
    checkout.arg("-C").arg(&ws).args(["-q", "checkout"]);
    output(&mut checkout)?;
    if log.is_none() {
        checkout.stdout(Stdio::null());
    }
    let status =
        checkout.status().map_err(|e| Error::refused(format!("cannot start `cairn checkout`: {e}"), None))?;
    if !status.success() {
        store.end_run(run_id, RunStatus::Failed, now_ms())?;
        return Ok(false);
    }
    let mut command = Command::new(exe);
    command.arg("-C").arg(&ws).arg("run").arg("--record-as").arg(run_id);
    if quiet {
        command.arg("-q");
    }
    output(&mut command)?;
    let status =
        command.status().map_err(|e| Error::refused(format!("cannot start `cairn run`: {e}"), None))?;
    // Keep what `apply` and `branch` need: the lock and the changed params files.
    let files: Vec<String> = tag(run, TAG_FILES)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut records = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(ws.join(&file)) else { continue };
        let digest = repo.store().put_bytes(&bytes).map_err(cairn_repo::RepoError::from)?;
        records.push(IoRecord { direction: "file".into(), path: file, digest, size: bytes.len() as i64 });
    }
    store.record_io(run_id, &records)?;
    let ran = store.run(run_id)?;
    if ran.as_ref().is_some_and(|r| matches!(r.info.status, RunStatus::Scheduled | RunStatus::Running)) {
        // `cairn run` could not record (or was killed): the experiment did not finish.
        store.end_run(
            run_id,
            if status.success() { RunStatus::Finished } else { RunStatus::Failed },
            now_ms(),
        )?;
    }
    if status.success() {
        let _ = std::fs::remove_dir_all(&ws);
    }
    Ok(status.success())
}

/// What `exp run` creates.
#[derive(Debug, Default)]
pub struct QueueRequest {
    /// `-S` overrides: `[FILE:]KEY=VALUES`.
    pub set: Vec<String>,
    /// One experiment's name (a sweep names each by its params).
    pub name: Option<String>,
    /// Overrides may add keys the params file lacks.
    pub add_keys: bool,
}

/// A queued experiment.
#[derive(Debug, Serialize)]
pub struct Queued {
    pub run_id: String,
    /// Its overrides, as `key=value` words.
    pub overrides: String,
}

/// Refuses, before anything is created or run, an override of a key its params file does
/// not have (a typo would otherwise run a copy of the baseline), naming the closest key.
fn check_keys(repo: &Repo, overrides: &[Override]) -> Result<()> {
    for o in overrides {
        let root = read_params(&repo.root().join(&o.file), &o.file)?;
        if params::lookup(&root, &o.key).is_none() {
            return Err(Error::refused(
                params::missing_key(&o.file, &o.key, &root),
                Some("fix the key, or pass --add to add it to the experiment's params"),
            ));
        }
    }
    Ok(())
}

/// Creates one queued experiment per combination of the overrides' values: its run record
/// (`SCHEDULED`) and its workspace snapshot.
pub fn queue(ws: &Workspace, request: &QueueRequest) -> Result<Vec<Queued>> {
    let store = ws.meta()?;
    let overrides: Vec<Override> = request.set.iter().map(|s| parse_override(s)).collect::<Result<_>>()?;
    if !request.add_keys {
        check_keys(ws.repo(), &overrides)?;
    }
    let combos = grid(&overrides);
    if combos.len() > 1 && request.name.is_some() {
        return Err(Error::Usage("--name names one experiment; a sweep names each by its params".into()));
    }
    let mut queued = Vec::new();
    for combo in &combos {
        let run_id = create(ws, &store, combo, request.name.as_deref())?;
        queued.push(Queued { run_id, overrides: describe(combo) });
    }
    Ok(queued)
}

/// The queued experiments, oldest first.
pub fn queued(ws: &Workspace) -> Result<Vec<String>> {
    let store = ws.meta()?;
    let mut queued: Vec<Run> = store
        .runs(&[0], View::Active)?
        .into_iter()
        .filter(|r| r.info.source == SOURCE && r.info.status == RunStatus::Scheduled)
        .collect();
    queued.sort_by_key(|r| r.info.start_time);
    Ok(queued.into_iter().map(|r| r.info.run_id).collect())
}

/// How queued experiments run.
pub struct Execution {
    /// The `cairn` binary that checks out and runs each experiment's workspace.
    pub cairn: PathBuf,
    /// Experiments at once; with more than one, each one's output goes to its `exp.log`.
    pub jobs: usize,
    /// No progress output from the experiments' runs.
    pub quiet: bool,
}

/// How an experiment's run ended.
#[derive(Debug, Serialize)]
pub struct Ran {
    pub run_id: String,
    /// `FINISHED` or `FAILED`.
    pub status: RunStatus,
}

/// Runs queued experiments, each in its workspace (`jobs` at once); `started` hears of each
/// as it starts when several run at once.
pub fn run_queued(
    ws: &Workspace,
    ids: &[String],
    options: &Execution,
    started: &(dyn Fn(&str, &str) + Sync),
) -> Result<Vec<Ran>> {
    let repo = ws.repo();
    let store = ws.meta()?;
    let parallel = options.jobs > 1 && ids.len() > 1;
    let results: Vec<(String, Result<bool>)> = if parallel {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        let push = |id: String, result: Result<bool>| {
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((id, result));
        };
        std::thread::scope(|scope| {
            for _ in 0..options.jobs.min(ids.len()) {
                scope.spawn(|| {
                    // Each worker has its own connection to the store.
                    let store = match ws.meta() {
                        Ok(store) => store,
                        Err(e) => return push(String::new(), Err(e)),
                    };
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(id) = ids.get(i) else { break };
                        push(id.clone(), run_one(repo, &store, id, true, options, started));
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
    } else {
        ids.iter().map(|id| (id.clone(), run_one(repo, &store, id, false, options, started))).collect()
    };
    let mut ran = Vec::new();
    for (run_id, result) in results {
        ran.push(Ran { run_id, status: if result? { RunStatus::Finished } else { RunStatus::Failed } });
    }
    Ok(ran)
}

/// The error for experiments that failed (their workspaces are kept).
pub fn failed(ran: &[Ran]) -> Option<Error> {
    let failed: Vec<&str> =
        ran.iter().filter(|r| r.status != RunStatus::Finished).map(|r| short_id(&r.run_id)).collect();
    (!failed.is_empty()).then(|| {
        Error::refused(
            format!("{} experiment(s) failed: {}", failed.len(), failed.join(", ")),
            Some(
                "their workspaces are kept under .cairn/state/exps/ with exp.log; fix and queue again, or `cairn exp remove`",
            ),
        )
    })
}

/// An experiment as `exp run` reports it once it ran.
#[derive(Debug, Serialize)]
pub struct ExperimentSummary {
    pub run_id: String,
    pub status: RunStatus,
    pub overrides: String,
    pub metrics: Vec<(String, f64)>,
}

/// The experiments `ids` as they are now.
pub fn summaries(ws: &Workspace, ids: &[String]) -> Result<Vec<ExperimentSummary>> {
    let store = ws.meta()?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(run) = store.run(id)? {
            out.push(ExperimentSummary {
                overrides: tag(&run, TAG_OVERRIDES).unwrap_or_default().to_owned(),
                metrics: run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect(),
                run_id: run.info.run_id,
                status: run.info.status,
            });
        }
    }
    Ok(out)
}

fn run_one(
    repo: &Repo,
    store: &Store,
    id: &str,
    parallel: bool,
    options: &Execution,
    started: &(dyn Fn(&str, &str) + Sync),
) -> Result<bool> {
    let run = store
        .run(id)?
        .ok_or_else(|| Error::refused(format!("experiment {id} vanished from the store"), None))?;
    let log = workspace(repo, id).join("exp.log");
    if parallel {
        started(id, tag(&run, TAG_OVERRIDES).unwrap_or_default());
    }
    execute(repo, store, &run, parallel.then_some(log.as_path()), options)
}

/// An experiment's kept files: `(path, bytes)`.
fn kept_files(repo: &Repo, store: &Store, run: &Run) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for record in store.io(&run.info.run_id)? {
        if record.direction != "file" {
            continue;
        }
        let digest = record.digest;
        let bytes = repo.store().read_verified(&digest).map_err(|e| {
            Error::refused(
                format!(
                    "`{}` of experiment {} is not in the cache: {e}",
                    record.path,
                    short_id(&run.info.run_id)
                ),
                Some("fetch it with `cairn exp pull REMOTE`"),
            )
        })?;
        files.push((record.path, bytes));
    }
    if files.is_empty() {
        return Err(Error::refused(
            format!("run {} has no experiment files to bring back", short_id(&run.info.run_id)),
            Some("only runs made by `cairn exp run` that have run can be applied or branched"),
        ));
    }
    Ok(files)
}

/// The experiment (any run) that `reference` names: an id prefix or a name.
pub fn find(store: &Store, reference: &str) -> Result<Run> {
    // A whole run id is one lookup; anything else is matched against every run's id and
    // name (only those are read), and the run it names is then read whole.
    if reference.len() == 32
        && reference.bytes().all(|b| b.is_ascii_hexdigit())
        && let Some(run) = store.run(reference)?
    {
        return Ok(run);
    }
    let runs = store.runs_with(View::All, &cairn_meta::Columns::default())?;
    let found = find_run(store, &runs, reference)?;
    Ok(store.run(&found.info.run_id)?.unwrap_or(found))
}

/// What `exp apply` brought back.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub run_id: String,
    pub overrides: String,
    /// The params files and lock written into the work tree.
    pub files: Vec<String>,
    /// Pipeline outputs restored from the cache.
    pub restored: usize,
}

/// `exp apply ID`: the experiment's params files and lock into the work tree, and its
/// outputs from the cache.
pub fn apply(ws: &Workspace, id: &str, reporter: &dyn cairn_repo::Reporter) -> Result<Applied> {
    let repo = ws.repo();
    let store = ws.meta()?;
    let run = find(&store, id)?;
    let files = kept_files(repo, &store, &run)?;
    let mut written = Vec::new();
    for (path, bytes) in &files {
        // The record names repository-relative files; one that would leave the repository
        // (`..`, or a symbolic link on the way) is refused before anything is written.
        let rel = cairn_pipeline::spec::repo_path("", path).map_err(|e| {
            Error::refused(format!("experiment {} names a file it cannot write: {e}", run.info.run_id), None)
        })?;
        let target = repo.prepare_write(rel.as_bytes())?;
        cairn_fs::write(&target, bytes).map_err(|e| Error::io("write", &target, e))?;
        written.push(path.clone());
    }
    let restored = crate::content::checkout_outputs(repo, false, reporter)?.len();
    Ok(Applied {
        overrides: tag(&run, TAG_OVERRIDES).unwrap_or_default().to_owned(),
        run_id: run.info.run_id,
        files: written,
        restored,
    })
}

/// What `exp branch` made.
#[derive(Debug, Serialize)]
pub struct Branched {
    pub branch: String,
    pub commit: String,
    pub run_id: String,
    /// The commit it started from, when it started from uncommitted changes (which the
    /// branch does not hold).
    pub dirty_base: Option<String>,
}

/// `exp branch ID NAME`: a Git branch with the experiment's params and lock committed on top
/// of the commit it started from.
pub fn branch(ws: &Workspace, id: &str, name: &str) -> Result<Branched> {
    let repo = ws.repo();
    let store = ws.meta()?;
    let run = find(&store, id)?;
    let files = kept_files(repo, &store, &run)?;
    let base = run.info.git_commit.clone().ok_or_else(|| {
        Error::refused(
            format!("experiment {} started in a repository without commits", short_id(&run.info.run_id)),
            Some("use `cairn exp apply` and commit by hand"),
        )
    })?;
    let git = cairn_git::GitRepo::discover(repo.root())?;
    let message = format!(
        "cairn experiment {}\n\n{}\n",
        short_id(&run.info.run_id),
        tag(&run, TAG_OVERRIDES).unwrap_or("no overrides")
    );
    let commit = git.commit_files_to_branch(&base, &files, name, &message).map_err(|e| {
        Error::refused(e.to_string(), Some("choose another branch name, or delete the branch first"))
    })?;
    Ok(Branched {
        branch: name.to_owned(),
        commit,
        dirty_base: run.info.git_dirty.then_some(base),
        run_id: run.info.run_id,
    })
}

/// A removed experiment.
#[derive(Debug, Serialize)]
pub struct Removed {
    pub run_id: String,
    pub name: String,
}

/// `exp remove`: runs (the named ones, and with `queued` every queued experiment) and their
/// workspaces.
pub fn remove(ws: &Workspace, ids: &[String], queued: bool) -> Result<Vec<Removed>> {
    let store = ws.meta()?;
    let mut targets: Vec<Run> = ids.iter().map(|id| find(&store, id)).collect::<Result<_>>()?;
    if queued {
        targets.extend(
            store
                .runs(&[], View::All)?
                .into_iter()
                .filter(|r| r.info.source == SOURCE && r.info.status == RunStatus::Scheduled),
        );
    }
    if targets.is_empty() && !queued {
        return Err(Error::Usage(
            "name experiments to remove (IDs from `cairn exp show`), or --queued".into(),
        ));
    }
    let mut removed = Vec::new();
    for run in targets {
        let dir = workspace(ws.repo(), &run.info.run_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
        }
        store.purge_run(&run.info.run_id)?;
        removed.push(Removed { run_id: run.info.run_id, name: run.info.name });
    }
    Ok(removed)
}

/// A run as a document for `exps-v1/` on a remote.
pub fn export(store: &Store, run: &Run) -> Result<Value> {
    let id = &run.info.run_id;
    let mut history = Vec::new();
    for m in &run.metrics {
        for point in store.metric_history(id, &m.key)? {
            history.push(json!([point.key, cairn_meta_value(point.value), point.timestamp, point.step]));
        }
    }
    let stages: Vec<Value> = store
        .stages(id)?
        .into_iter()
        .map(|s| {
            json!({"stage": s.stage, "action": s.action, "start_time": s.start_time, "wall_ms": s.wall_ms,
                   "cpu_ms": s.cpu_ms, "max_rss_kb": s.max_rss_kb, "fingerprint": s.fingerprint, "log": s.log,
                   "error": s.error})
        })
        .collect();
    let io: Vec<Value> = store
        .io(id)?
        .into_iter()
        .map(|r| json!({"direction": r.direction, "path": r.path, "digest": r.digest, "size": r.size}))
        .collect();
    let info = &run.info;
    Ok(json!({
        "format": "cairn-exp-v1",
        "run_id": id,
        "name": info.name,
        "parent_run_id": info.parent_run_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "user": info.user,
        "git_commit": info.git_commit,
        "git_dirty": info.git_dirty,
        "source": info.source,
        "params": run.params,
        "tags": run.tags,
        "metrics": history,
        "stages": stages,
        "io": io,
    }))
}

fn cairn_meta_value(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { json!(v.to_string()) }
}

/// The remote directory holding experiment documents, one `<run id>.json` each.
const EXPS_REMOTE_DIR: &str = "exps-v1";

/// The content an experiment needs on the other side: its kept files and its lock's outputs.
fn content_of(repo: &Repo, io: &[IoRecord], label: &str) -> Vec<(String, cairn_repo::Tracked)> {
    use cairn_repo::pointer::{Pointer, PointerKind};
    let mut out = Vec::new();
    for record in io.iter().filter(|r| r.direction == "file") {
        let digest = record.digest;
        let pointer =
            Pointer { kind: PointerKind::File { executable: false }, digest, size: record.size as u64 };
        out.push((
            format!("{} of {label}", record.path),
            cairn_repo::Tracked { rel: record.path.as_bytes().to_vec(), pointer },
        ));
        if record.path != cairn_pipeline::lock::LOCK_FILE {
            continue;
        }
        let Ok(bytes) = repo.store().read_verified(&digest) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let Ok(lock) = cairn_pipeline::lock::LockFile::parse(Path::new(&record.path), &text) else {
            continue;
        };
        for (stage, locked) in &lock.stages {
            for (path, content) in &locked.outs {
                let pointer = content.to_pointer();
                out.push((
                    format!("{path} (stage {stage} of {label})"),
                    cairn_repo::Tracked { rel: path.as_bytes().to_vec(), pointer },
                ));
            }
        }
    }
    out
}

fn selection(extra: Vec<(String, cairn_repo::Tracked)>) -> cairn_repo::Selection {
    cairn_repo::Selection {
        paths: Vec::new(),
        revs: Vec::new(),
        all_branches: false,
        all_tags: false,
        all_commits: false,
        extra,
        extra_only: true,
    }
}

/// `cairn exp push REMOTE [ID...]`: experiment records and their content (all experiments
/// that have run, or the named ones). Objects go first, records last.
pub fn push(
    ws: &Workspace,
    remote: &str,
    ids: &[String],
    reporter: &dyn cairn_repo::Reporter,
) -> Result<Pushed> {
    let repo = ws.repo();
    let store = ws.meta()?;
    let runs: Vec<Run> = if ids.is_empty() {
        store
            .runs(&[], View::Active)?
            .into_iter()
            .filter(|r| r.info.source == SOURCE && !matches!(r.info.status.as_str(), "SCHEDULED" | "RUNNING"))
            .collect()
    } else {
        ids.iter().map(|id| find(&store, id)).collect::<Result<_>>()?
    };
    let remote = ws.remote(Some(remote), None)?;
    let _claim = remote.claim_push()?;
    let mut extra = Vec::new();
    let mut documents = Vec::new();
    for run in &runs {
        let io = store.io(&run.info.run_id)?;
        extra.extend(content_of(repo, &io, &format!("experiment {}", short_id(&run.info.run_id))));
        let document = export(&store, run)?;
        documents.push((
            format!("{}.json", run.info.run_id),
            serde_json::to_vec_pretty(&document).unwrap_or_default(),
        ));
    }
    let outcome = repo.push(&remote, &selection(extra), reporter)?;
    if !outcome.problems.is_empty() {
        let first = &outcome.problems[0];
        return Err(Error::refused(
            format!(
                "pushing experiments to `{}` is incomplete: {} file(s) could not be sent (first: {}: {})",
                outcome.remote,
                outcome.problems.len(),
                first.path,
                first.reason
            ),
            Some("the records were not pushed; fetch the missing content into this clone and push again"),
        ));
    }
    let count = documents.len();
    remote.put_documents(EXPS_REMOTE_DIR, documents)?;
    Ok(Pushed { experiments: count, objects_sent: outcome.report.objects_sent, remote: outcome.remote })
}

/// What `exp push` sent.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub experiments: usize,
    pub objects_sent: u64,
    pub remote: String,
}

/// What `exp pull` brought.
#[derive(Debug, Serialize)]
pub struct Pulled {
    pub experiments: usize,
    pub remote: String,
    /// Files of pulled experiments the remote does not have (`exp apply` needs them).
    pub missing_files: usize,
}

/// A document from `exps-v1/` as the store's types.
/// A pulled run: the run, its metric history, stages and records.
type Imported = (Run, Vec<cairn_meta::Metric>, Vec<cairn_meta::StageRecord>, Vec<IoRecord>);

fn import(document: &Value) -> Result<Imported, String> {
    if document["format"] != "cairn-exp-v1" {
        return Err(format!("unknown format {}", document["format"]));
    }
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let run_id = text(&document["run_id"]).ok_or("no run_id")?;
    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|p| Some((p.get(0)?.as_str()?.to_owned(), p.get(1)?.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    let history: Vec<cairn_meta::Metric> = document["metrics"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    Some(cairn_meta::Metric {
                        key: m.get(0)?.as_str()?.to_owned(),
                        value: number(m.get(1)?)?,
                        timestamp: m.get(2)?.as_i64()?,
                        step: m.get(3)?.as_i64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let stages = document["stages"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|s| {
                    Some(cairn_meta::StageRecord {
                        stage: s["stage"].as_str()?.to_owned(),
                        action: s["action"].as_str()?.to_owned(),
                        start_time: s["start_time"].as_i64()?,
                        wall_ms: s["wall_ms"].as_i64()?,
                        cpu_ms: s["cpu_ms"].as_i64(),
                        max_rss_kb: s["max_rss_kb"].as_i64(),
                        fingerprint: text(&s["fingerprint"]),
                        log: text(&s["log"]),
                        error: text(&s["error"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let io = document["io"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| {
                    Some(IoRecord {
                        direction: r["direction"].as_str()?.to_owned(),
                        path: r["path"].as_str()?.to_owned(),
                        digest: r["digest"].as_str()?.parse().ok()?,
                        size: r["size"].as_i64()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let run = Run {
        info: cairn_meta::RunInfo {
            run_id: run_id.clone(),
            experiment_id: 0,
            name: text(&document["name"]).unwrap_or_default(),
            parent_run_id: text(&document["parent_run_id"]),
            status: text(&document["status"])
                .and_then(|s| RunStatus::parse(&s))
                .unwrap_or(RunStatus::Finished),
            start_time: document["start_time"].as_i64().unwrap_or(0),
            end_time: document["end_time"].as_i64(),
            user: text(&document["user"]).unwrap_or_default(),
            git_commit: text(&document["git_commit"]),
            git_dirty: document["git_dirty"].as_bool().unwrap_or(false),
            source: text(&document["source"]).unwrap_or_else(|| SOURCE.into()),
            artifact_uri: format!("mlflow-artifacts:/0/{run_id}/artifacts"),
            lifecycle_stage: "active".into(),
        },
        params: pairs(&document["params"]),
        tags: pairs(&document["tags"]),
        metrics: Vec::new(),
        inputs: Vec::new(),
        models: Vec::new(),
    };
    Ok((run, history, stages, io))
}

/// `cairn exp pull REMOTE`: the experiments recorded there that this clone lacks, and their
/// content (kept files and outputs).
pub fn pull(ws: &Workspace, remote: &str, reporter: &dyn cairn_repo::Reporter) -> Result<Pulled> {
    let repo = ws.repo();
    let store = ws.meta()?;
    let remote = ws.remote(Some(remote), None)?;
    let local: std::collections::HashSet<String> =
        store.runs(&[], View::All)?.into_iter().map(|r| r.info.run_id).collect();
    let wanted: Vec<String> = remote
        .list_documents(EXPS_REMOTE_DIR)?
        .into_iter()
        .filter(|key| key.strip_suffix(".json").is_some_and(|id| !local.contains(id)))
        .collect();
    let mut extra = Vec::new();
    let mut imported = 0;
    for (key, bytes) in remote.get_documents(EXPS_REMOTE_DIR, &wanted)? {
        let parsed =
            serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()).and_then(|d| import(&d));
        let (run, history, stages, io) = match parsed {
            Ok(parts) => parts,
            Err(e) => {
                reporter.warn(&format!("skipped `{EXPS_REMOTE_DIR}/{key}` on the remote: {e}"));
                continue;
            }
        };
        extra.extend(content_of(
            repo,
            &io,
            &format!("experiment {}", &run.info.run_id[..8.min(run.info.run_id.len())]),
        ));
        if store.import_run(&run, &history, &stages, &io)? {
            imported += 1;
        }
    }
    // The lock's outputs are known only once the lock itself is here: fetch in two rounds.
    let first = repo.fetch(&remote, &selection(extra.clone()), reporter)?;
    let mut more: Vec<(String, cairn_repo::Tracked)> = Vec::new();
    for key in &wanted {
        let Some(id) = key.strip_suffix(".json") else { continue };
        let io = store.io(id)?;
        more.extend(content_of(repo, &io, &format!("experiment {}", &id[..8.min(id.len())])));
    }
    let second = repo.fetch(&remote, &selection(more), reporter)?;
    let missing_files = first.problems.len() + second.problems.len();
    Ok(Pulled { experiments: imported, remote: first.remote, missing_files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_name_a_file_a_key_and_values() {
        let o = parse_override("train.yaml:model.lr=0.1,0.2").unwrap();
        assert_eq!((o.file.as_str(), o.key.as_str()), ("train.yaml", "model.lr"));
        assert_eq!(o.values, ["0.1", "0.2"]);
        let o = parse_override("epochs=range(1, 4)").unwrap();
        assert_eq!(o.file, cairn_pipeline::spec::DEFAULT_PARAMS);
        assert_eq!(o.values, ["1", "2", "3"]);
        assert_eq!(parse_override("x=range(0, 1, 0.25)").unwrap().values, ["0", "0.25", "0.5", "0.75"]);
        for bad in ["no-equals", "a..b=1", "x=", "x=range(1,2,0)", "x=range(0,100000)"] {
            assert!(matches!(parse_override(bad), Err(Error::Usage(_))), "{bad} was accepted");
        }
    }

    #[test]
    fn the_grid_is_every_combination_in_order() {
        let a = parse_override("a=1,2").unwrap();
        let b = parse_override("b=x,y").unwrap();
        let words: Vec<String> = grid(&[a, b]).iter().map(|c| describe(c)).collect();
        assert_eq!(words, ["a=1 b=x", "a=1 b=y", "a=2 b=x", "a=2 b=y"]);
        assert_eq!(grid(&[]), vec![Vec::new()]);
    }
}
