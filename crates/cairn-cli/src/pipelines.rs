//! `cairn run`, `explain`, `params`, `metrics`, `lineage`, `pipeline schema`, and the
//! pipeline part of `status`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_pipeline::engine::{Decision, Planned, RunOptions};
use cairn_pipeline::exec::OutputSink;
use cairn_pipeline::lock::{LOCK_FILE, LockFile};
use cairn_pipeline::spec::{OutKind, PIPELINE_FILE};
use cairn_pipeline::{Observer, PipelineError, Project, params};
use cairn_repo::Repo;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::{self, out};
use crate::{Context, OutputArgs};

#[derive(Args)]
pub struct RunArgs {
    /// Stages to run, with everything they depend on (default: all). A foreach or matrix
    /// stage's name selects every stage it generates.
    #[arg(value_name = "STAGE")]
    stages: Vec<String>,
    /// Print the plan — which stages would run, be restored or are fresh, and why — and run
    /// nothing.
    #[arg(long)]
    dry: bool,
    /// Commands to run at once (default: the number of CPUs).
    #[arg(short, long)]
    jobs: Option<usize>,
    /// After a failure, keep running stages that do not depend on it.
    #[arg(short, long)]
    keep_going: bool,
    /// Run the named stages (or all) even if they are fresh or in the run cache.
    #[arg(short, long)]
    force: bool,
    /// Partitioned stages: run this partition (repeatable; `2026-01-05`, or `2026-01-05|us`
    /// with several dimensions).
    #[arg(long, value_name = "KEY")]
    partition: Vec<String>,
    /// Partitioned stages: run a range of partitions (backfill): `A..B`, or `DIM=A..B` for
    /// one dimension.
    #[arg(long, value_name = "RANGE")]
    partitions: Vec<String>,
    /// Record into this existing (queued) run instead of a new one: how `cairn exp run` runs
    /// an experiment's workspace.
    #[arg(long, hide = true, value_name = "RUN_ID")]
    pub record_as: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Subcommand)]
pub enum ParamsCommand {
    /// Params read by the pipeline's stages that differ between a revision and the work tree.
    #[command(after_help = "Examples:\n  cairn params diff\n  cairn params diff v1 --json")]
    Diff {
        /// The revision to compare with (default HEAD).
        rev: Option<String>,
        /// Show every param, changed or not.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum MetricsCommand {
    /// The metrics files the stages declare (JSON, YAML, TOML, CSV), flattened.
    #[command(after_help = "Examples:\n  cairn metrics show\n  cairn metrics show --json")]
    Show {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Metrics that differ between a revision and the work tree, with the change.
    #[command(after_help = "Examples:\n  cairn metrics diff\n  cairn metrics diff v1 --json")]
    Diff {
        /// The revision to compare with (default HEAD).
        rev: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Subcommand)]
pub enum PipelineCommand {
    /// Print the JSON Schema of cairn.yaml (for editors: `# yaml-language-server: $schema=...`).
    #[command(after_help = "Example:\n  cairn pipeline schema > docs/cairn.schema.json")]
    Schema,
}

/// Prints stage output with a `[stage]` prefix and state changes on stderr.
struct Printer {
    quiet: bool,
    /// With --json, stage output goes to stderr so stdout is only JSON.
    json: bool,
}

impl OutputSink for Printer {
    fn line(&self, stage: &str, line: &str, stderr: bool) {
        if stderr || self.json {
            let _ = writeln!(std::io::stderr().lock(), "[{stage}] {line}");
        } else {
            let _ = writeln!(std::io::stdout().lock(), "[{stage}] {line}");
        }
    }
}

impl Observer for Printer {
    fn stage(&self, stage: &str, what: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{stage}: {what}");
        }
    }

    fn warn(&self, message: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "warning: {message}");
        }
    }
}

/// The default remote, for run-cache entries and outputs this clone lacks.
struct RemoteSource<'a> {
    repo: &'a Repo,
    printer: Printer,
}

impl RemoteSource<'_> {
    fn remote(&self) -> Option<cairn_remote::Remote> {
        match self.repo.open_remote(None, &crate::remotes::aws_environment(), None) {
            Ok(remote) => Some(remote),
            Err(e) => {
                self.printer.warn(&format!("cannot use the default remote for the run cache: {e}"));
                None
            }
        }
    }
}

impl cairn_pipeline::engine::ContentSource for RemoteSource<'_> {
    fn fetch(&self, records: &[(String, cairn_repo::pointer::Pointer)]) -> bool {
        let Some(remote) = self.remote() else { return false };
        let extra = records
            .iter()
            .map(|(label, pointer)| {
                (
                    label.clone(),
                    cairn_repo::Tracked { rel: label.as_bytes().to_vec(), pointer: pointer.clone() },
                )
            })
            .collect();
        let selection = cairn_repo::Selection { extra, extra_only: true, ..Default::default() };
        match self.repo.fetch(&remote, &selection, &cairn_repo::NoReporter) {
            Ok(outcome) => outcome.problems.is_empty(),
            Err(e) => {
                self.printer.warn(&format!("could not fetch run-cache outputs: {e}"));
                false
            }
        }
    }

    fn refresh_runs(&self) -> bool {
        let Some(remote) = self.remote() else { return false };
        match fetch_runs(self.repo, &remote) {
            Ok(_) => true,
            Err(e) => {
                self.printer.warn(&format!("could not read the remote's run cache: {}", e.message));
                false
            }
        }
    }
}

fn decision_text(p: &Planned) -> &'static str {
    match p.decision {
        Decision::Fresh => "up to date",
        Decision::Record => "would be recorded from the run cache",
        Decision::Restore => "would be restored from the run cache",
        Decision::Run => "would run",
        Decision::AfterUpstream => "would run if its inputs change",
    }
}

fn plan_json(plan: &[Planned]) -> Value {
    Value::Array(
        plan.iter()
            .map(|p| json!({"stage": p.stage, "decision": p.decision.name(), "reasons": p.reasons}))
            .collect(),
    )
}

/// Machine resources the scheduler may hand out (`CAIRN_CPUS`, `CAIRN_GPUS` and
/// `CAIRN_MEMORY` (bytes) override what is detected, for shared machines and tests).
fn machine() -> (u32, u32, u64) {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let (cpus, gpus, memory) = detected();
    (
        from_env("CAIRN_CPUS").map_or(cpus, |n| n.max(1) as u32),
        from_env("CAIRN_GPUS").map_or(gpus, |n| n as u32),
        from_env("CAIRN_MEMORY").unwrap_or(memory),
    )
}

fn detected() -> (u32, u32, u64) {
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
    (cpus, gpus, memory)
}

pub fn run(context: &Context, args: RunArgs, quiet: bool, reporter: &crate::Progress) -> Result<(), Failure> {
    let repo = context.open()?;
    let request = cairn_pipeline::engine::PartitionRequest { keys: args.partition, ranges: args.partitions };
    if args.dry {
        let mut project = Project::load(&repo)?;
        project.set_partitions(request);
        let plan = project.plan(&args.stages, args.force)?;
        if args.output.json {
            return output::json(&plan_json(&plan));
        }
        for p in &plan {
            out(format!("{}: {}", p.stage, decision_text(p)))?;
            for reason in &p.reasons {
                out(format!("    {reason}"))?;
            }
        }
        return Ok(());
    }
    let _lock = repo.lock(reporter)?;
    let mut project = Project::load(&repo)?;
    if repo.remote_spec(None).is_ok() {
        project.set_source(Box::new(RemoteSource {
            repo: &repo,
            printer: Printer { quiet, json: args.output.json },
        }));
    }
    let cancel = Arc::new(AtomicBool::new(false));
    if args.record_as.is_some() {
        // Started by `cairn exp run` for one experiment: if that process dies (even by
        // SIGKILL), this run is stopped as by Ctrl-C and recorded KILLED, not left running.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    }
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, cancel.clone())
            .map_err(|e| Failure::user(format!("cannot handle Ctrl-C: {e}"), None))?;
    }
    let (cpus, gpus, memory) = machine();
    let printer = Printer { quiet, json: args.output.json };
    let recorder = crate::record::Recorder::start(&repo, &mut project, args.record_as.as_deref(), &printer);
    // Stages reach the run through MLflow's client: a tracking server for this run's length.
    let server = recorder.as_ref().and_then(|_| crate::tracking::background(&repo, &|m| printer.warn(m)));
    let mut extra_env = Vec::new();
    if let (Some(recorder), Some(server)) = (&recorder, &server) {
        extra_env.push(("MLFLOW_TRACKING_URI".to_owned(), server.url()));
        extra_env.push(("MLFLOW_RUN_ID".to_owned(), recorder.run_id.clone()));
        extra_env.push(("MLFLOW_EXPERIMENT_ID".to_owned(), "0".to_owned()));
        extra_env.push(("CAIRN_RUN_ID".to_owned(), recorder.run_id.clone()));
    }
    let options = RunOptions {
        targets: args.stages,
        jobs: args.jobs.unwrap_or(cpus as usize).max(1),
        keep_going: args.keep_going,
        force: args.force,
        cpus,
        gpus,
        memory,
        cancel,
        partitions: request,
        supervisor: std::env::current_exe().ok(),
        extra_env,
    };
    let follower = recorder.as_ref().and_then(|recorder| {
        let store = cairn_meta::open(&repo.meta_location()).ok()?;
        let warn_printer = Printer { quiet, json: args.output.json };
        Some(crate::live::Follower::start(
            repo.root().join(cairn_pipeline::LIVE_METRICS_DIR),
            store,
            recorder.run_id.clone(),
            Box::new(move |m| warn_printer.warn(m)),
        ))
    });
    let heartbeat = recorder.as_ref().map(crate::record::Recorder::heartbeat);
    let result = project.run(&options, &printer);
    drop(heartbeat);
    drop(follower);
    drop(server);
    // A run that changed nothing (every stage up to date), or that was refused before any
    // stage started, is not an experiment: it leaves no row in `exp show`. An experiment's
    // own run (`--record-as`) is always kept.
    let did_nothing = args.record_as.is_none()
        && match &result {
            Ok(report) => report.stages.iter().all(|s| s.action == cairn_pipeline::engine::Action::Fresh),
            Err(PipelineError::Interrupted) => false,
            Err(_) => project.last_report().is_none_or(|r| r.stages.is_empty()),
        };
    if let Some(recorder) = &recorder {
        if did_nothing {
            recorder.discard(&printer);
        } else {
            let status = match &result {
                Ok(_) => "FINISHED",
                Err(PipelineError::Interrupted) => "KILLED",
                Err(_) => "FAILED",
            };
            recorder.finish(&repo, &project, project.last_report(), status, &printer);
            if !quiet {
                let _ = writeln!(std::io::stderr().lock(), "recorded as run {}", recorder.run_id);
            }
        }
    }
    let report = result?;
    if args.output.json {
        let stages: Vec<Value> = report
            .stages
            .iter()
            .map(|s| {
                let mut v = json!({"stage": s.stage, "action": s.action.name(), "reasons": s.reasons, "seconds": s.seconds});
                if let Some(p) = s.parts {
                    v["parts"] = json!({"ran": p.ran, "restored": p.restored, "fresh": p.fresh, "removed": p.removed, "missing": p.missing});
                }
                v
            })
            .collect();
        let run_id = recorder.as_ref().filter(|_| !did_nothing).map(|r| &r.run_id);
        return output::json(&json!({ "run_id": run_id, "stages": stages }));
    }
    let count = |a: cairn_pipeline::engine::Action| report.stages.iter().filter(|s| s.action == a).count();
    use cairn_pipeline::engine::Action;
    out(format!(
        "{} stage(s): {} ran, {} restored from the run cache, {} up to date",
        report.stages.len(),
        count(Action::Ran),
        count(Action::Restored) + count(Action::Recorded),
        count(Action::Fresh)
    ))
}

pub fn explain(context: &Context, stage: &str, output: &OutputArgs) -> Result<(), Failure> {
    let repo = context.open()?;
    let mut project = Project::load(&repo)?;
    let plan = project.explain(stage)?;
    if output.json {
        return output::json(&plan_json(&plan));
    }
    for p in &plan {
        out(format!("{}: {}", p.stage, decision_text(p)))?;
        if p.reasons.is_empty() {
            out("    its command, deps, params, env and outputs match cairn.lock")?;
        }
        for reason in &p.reasons {
            out(format!("    {reason}"))?;
        }
    }
    Ok(())
}

/// Stages that are not up to date, for `cairn status` (`None` without a cairn.yaml).
pub fn stale_stages(repo: &Repo) -> Result<Option<Vec<Planned>>, Failure> {
    if !repo.root().join(PIPELINE_FILE).exists() {
        return Ok(None);
    }
    // A broken pipeline must not hide the data status: it is reported as a stage-less line.
    let plan = Project::load(repo).and_then(|mut project| project.plan(&[], false));
    match plan {
        Ok(plan) => Ok(Some(plan.into_iter().filter(|p| p.decision != Decision::Fresh).collect())),
        Err(error) => Ok(Some(vec![Planned {
            stage: "(pipeline)".into(),
            decision: Decision::AfterUpstream,
            reasons: vec![format!("cannot be planned: {error} (see `cairn run --dry`)")],
        }])),
    }
}

pub fn print_stale(stale: &[Planned], total_hint: bool) -> Result<(), Failure> {
    if stale.is_empty() {
        if total_hint {
            out("pipeline: every stage is up to date")?;
        }
        return Ok(());
    }
    out("pipeline:")?;
    for p in stale {
        out(format!(
            "\t{}: {}{}",
            p.stage,
            decision_text(p),
            p.reasons.first().map(|r| format!(" ({r})")).unwrap_or_default()
        ))?;
    }
    out("run `cairn run` to bring them up to date, `cairn explain STAGE` for every reason")
}

pub fn schema() -> Result<(), Failure> {
    let text = cairn_pipeline::spec::json_schema();
    out(text.trim_end())
}

/// Param values per file for every param key the stages read: at `rev`, or in the work
/// tree (`None`).
fn param_values(
    repo: &Repo,
    project: &Project,
    rev: Option<&str>,
) -> Result<BTreeMap<String, Value>, Failure> {
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for stage in &project.pipeline.stages {
        for key in &stage.params {
            files.entry(key.file.clone()).or_default().push(key.key.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (file, keys) in files {
        let Some(bytes) = read_at(repo, rev, &file)? else { continue };
        let root = params::parse_file(&file, &bytes).map_err(|m| Failure::user(m, None))?;
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

fn read_at(repo: &Repo, rev: Option<&str>, file: &str) -> Result<Option<Vec<u8>>, Failure> {
    match rev {
        None => match std::fs::read(repo.root().join(file)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::user(format!("cannot read `{file}`: {e}"), None)),
        },
        Some(rev) => {
            let git = cairn_git::GitRepo::discover(repo.root()).map_err(PipelineError::from)?;
            Ok(git.read_file(rev, file).map_err(PipelineError::from)?)
        }
    }
}

fn show_value(v: Option<&Value>) -> String {
    match v {
        None => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn params_command(context: &Context, command: ParamsCommand) -> Result<(), Failure> {
    let ParamsCommand::Diff { rev, all, output } = command;
    let repo = context.open()?;
    let project = Project::load(&repo)?;
    let rev = rev.unwrap_or_else(|| "HEAD".into());
    let old = param_values(&repo, &project, Some(&rev))?;
    let new = param_values(&repo, &project, None)?;
    let rows = diff_rows(&old, &new, all);
    if output.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(k, o, n)| {
                let (file, key) = k.split_once(':').unwrap_or(("", k));
                json!({"file": file, "param": key, "old": o, "new": n})
            })
            .collect();
        return output::json(&Value::Array(list));
    }
    if rows.is_empty() {
        return out(format!("no param differs from {rev}"));
    }
    out(format!("{:<40} {:>14} {:>14}", "param", rev, "workspace"))?;
    for (key, old, new) in rows {
        out(format!("{:<40} {:>14} {:>14}", key, show_value(old.as_ref()), show_value(new.as_ref())))?;
    }
    Ok(())
}

fn diff_rows(
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
    all: bool,
) -> Vec<(String, Option<Value>, Option<Value>)> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| all || old.get(*k) != new.get(*k))
        .map(|k| (k.clone(), old.get(k).cloned(), new.get(k).cloned()))
        .collect()
}

/// Every metric of every declared metrics file, flattened: `file:key -> value`.
fn metric_values(
    repo: &Repo,
    project: &Project,
    rev: Option<&str>,
) -> Result<BTreeMap<String, Value>, Failure> {
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
        let root = params::parse_file(file, &bytes).map_err(|m| Failure::user(m, None))?;
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
    let pointer = content.to_pointer()?;
    repo.store().read_verified(&pointer.digest).ok()
}

pub fn metrics_command(context: &Context, command: MetricsCommand) -> Result<(), Failure> {
    let repo = context.open()?;
    let project = Project::load(&repo)?;
    match command {
        MetricsCommand::Show { output } => {
            let values = metric_values(&repo, &project, None)?;
            if output.json {
                let mut by_file: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
                for (k, v) in values {
                    let (file, key) = k.split_once(':').unwrap_or(("", &k));
                    by_file.entry(file.to_owned()).or_default().insert(key.to_owned(), v.clone());
                }
                return output::json(&by_file);
            }
            if values.is_empty() {
                return out(
                    "no metrics: declare metrics files in cairn.yaml (`metrics: [metrics.json]`) and run the pipeline",
                );
            }
            for (key, value) in values {
                out(format!("{key:<40} {}", show_value(Some(&value))))?;
            }
            Ok(())
        }
        MetricsCommand::Diff { rev, output } => {
            let rev = rev.unwrap_or_else(|| "HEAD".into());
            let old = metric_values(&repo, &project, Some(&rev))?;
            let new = metric_values(&repo, &project, None)?;
            let rows = diff_rows(&old, &new, false);
            let change = |o: &Option<Value>, n: &Option<Value>| match (
                o.as_ref().and_then(Value::as_f64),
                n.as_ref().and_then(Value::as_f64),
            ) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            if output.json {
                let list: Vec<Value> = rows
                    .iter()
                    .map(|(k, o, n)| {
                        let (file, key) = k.split_once(':').unwrap_or(("", k));
                        json!({"file": file, "metric": key, "old": o, "new": n, "change": change(o, n)})
                    })
                    .collect();
                return output::json(&Value::Array(list));
            }
            if rows.is_empty() {
                return out(format!("no metric differs from {rev}"));
            }
            out(format!("{:<40} {:>12} {:>12} {:>12}", "metric", rev, "workspace", "change"))?;
            for (key, o, n) in &rows {
                let delta = change(o, n).map(|d| format!("{d:+.6}")).unwrap_or_else(|| "-".into());
                out(format!(
                    "{:<40} {:>12} {:>12} {:>12}",
                    key,
                    show_value(o.as_ref()),
                    show_value(n.as_ref()),
                    delta
                ))?;
            }
            Ok(())
        }
    }
}

/// `cairn lineage PATH`: the chain of stages from an output back to raw data and code.
pub fn lineage(context: &Context, path: &std::path::Path, output: &OutputArgs) -> Result<(), Failure> {
    let repo = context.open()?;
    let rel = String::from_utf8_lossy(&context.rel(&repo, path)?).into_owned();
    let project = Project::load(&repo)?;
    let git = cairn_git::GitRepo::discover(repo.root()).map_err(PipelineError::from)?;
    let commit = git.head_state().map_err(PipelineError::from)?;
    let node = lineage_node(&repo, &project, &rel, &mut Vec::new())?;
    if output.json {
        let mut value = node;
        value["commit"] = json!(commit.as_ref().map(|(c, _)| c));
        value["dirty"] = json!(commit.as_ref().map(|(_, d)| d));
        return output::json(&value);
    }
    if let Some((commit, dirty)) = &commit {
        out(format!(
            "commit {}{}",
            &commit[..12.min(commit.len())],
            if *dirty { " (work tree has changes)" } else { "" }
        ))?;
    }
    print_node(&node, 0)
}

fn lineage_node(
    repo: &Repo,
    project: &Project,
    path: &str,
    seen: &mut Vec<String>,
) -> Result<Value, Failure> {
    let producer = project
        .pipeline
        .stages
        .iter()
        .find(|s| s.outs.iter().any(|o| cairn_pipeline::graph::is_under(path, &o.path)));
    let Some(stage) = producer else {
        // Raw data or code: its digest now, and whether Cairn or Git tracks it.
        let record = repo.digest_paths(&[path.as_bytes().to_vec()], &cairn_repo::NoReporter)?.pop().flatten();
        let tracked = repo.read_pointer(path.as_bytes()).ok().flatten().is_some();
        return Ok(json!({
            "path": path,
            "digest": record.map(|r| r.digest.to_string()),
            "source": if tracked { "tracked by cairn" } else { "work tree (Git)" },
        }));
    };
    if seen.contains(&stage.name) {
        return Ok(json!({"path": path, "stage": stage.name, "repeated": true}));
    }
    seen.push(stage.name.clone());
    let locked = project.lock.stages.get(&stage.name);
    let out =
        stage.outs.iter().find(|o| cairn_pipeline::graph::is_under(path, &o.path)).map(|o| o.path.clone());
    let digest = locked.and_then(|l| out.as_ref().and_then(|o| l.outs.get(o))).map(|c| c.digest.clone());
    let mut inputs = Vec::new();
    for dep in &stage.deps {
        inputs.push(lineage_node(repo, project, dep, seen)?);
    }
    if let Some(glob) = &stage.datums {
        inputs.push(json!({"path": glob, "source": "datums"}));
    }
    seen.pop();
    Ok(json!({
        "path": path,
        "digest": digest,
        "stage": stage.name,
        "cmd": stage.cmd,
        "fingerprint": locked.map(|l| &l.fingerprint),
        "params": locked.map(|l| &l.params),
        "ran": locked.is_some(),
        "inputs": inputs,
    }))
}

fn print_node(node: &Value, depth: usize) -> Result<(), Failure> {
    let pad = "    ".repeat(depth);
    let digest =
        node["digest"].as_str().map(|d| d.trim_start_matches("blake3:").chars().take(12).collect::<String>());
    let digest = digest.map(|d| format!(" {d}")).unwrap_or_else(|| " (not produced yet)".into());
    match node["stage"].as_str() {
        Some(stage) => {
            out(format!("{pad}{}{digest}  ← stage `{stage}`", node["path"].as_str().unwrap_or("")))?;
            if let Some(cmd) = node["cmd"].as_array() {
                let cmd: Vec<&str> = cmd.iter().filter_map(Value::as_str).collect();
                out(format!("{pad}    cmd: {}", cmd.join(" && ")))?;
            }
            if let Some(params) = node["params"].as_object() {
                for (file, keys) in params {
                    for (k, v) in keys.as_object().into_iter().flatten() {
                        out(format!("{pad}    param {k} = {v} ({file})"))?;
                    }
                }
            }
            if node["ran"] == false {
                out(format!("{pad}    (has not run: `cairn run {stage}`)"))?;
            }
            for input in node["inputs"].as_array().into_iter().flatten() {
                print_node(input, depth + 1)?;
            }
        }
        None => out(format!(
            "{pad}{}{digest}  ({})",
            node["path"].as_str().unwrap_or(""),
            node["source"].as_str().unwrap_or("")
        ))?,
    }
    Ok(())
}

/// The pipeline outputs recorded in `cairn.lock` (outputs and datum outputs), labelled.
pub fn lock_content(repo: &Repo) -> Result<Vec<(String, cairn_repo::Tracked)>, Failure> {
    let lock = LockFile::load(&repo.root().join(LOCK_FILE))?;
    let mut out = Vec::new();
    for (name, stage) in &lock.stages {
        for (path, content) in &stage.outs {
            if let Some(pointer) = content.to_pointer() {
                out.push((
                    format!("{path} (stage {name})"),
                    cairn_repo::Tracked { rel: path.as_bytes().to_vec(), pointer },
                ));
            }
        }
        // Datum and partitioned stages: the parts list (a cache object) and each part's files.
        let base = stage.outs.keys().next().cloned().unwrap_or_default();
        let Some(digest) = stage.parts.as_deref().and_then(|d| cairn_hash::Digest::parse_bytes(d.as_bytes()))
        else {
            continue;
        };
        let file = |size| cairn_repo::pointer::Pointer {
            kind: cairn_repo::pointer::PointerKind::File { executable: false },
            digest,
            size,
        };
        let Ok(bytes) = repo.store().read_verified(&digest) else {
            // Not here yet (a clone that has not pulled): the list itself is still wanted.
            out.push((
                format!("{base} (parts of stage {name})"),
                cairn_repo::Tracked { rel: base.as_bytes().to_vec(), pointer: file(0) },
            ));
            continue;
        };
        out.push((
            format!("{base} (parts of stage {name})"),
            cairn_repo::Tracked { rel: base.as_bytes().to_vec(), pointer: file(bytes.len() as u64) },
        ));
        let parts: cairn_pipeline::lock::PartsFile = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::user(format!("the parts list {digest} of stage `{name}` is damaged: {e}"), None)
        })?;
        for (key, part) in &parts.parts {
            if let Some(pointer) = part.outs.to_pointer() {
                out.push((
                    format!("{base} (stage {name}, part {key})"),
                    cairn_repo::Tracked { rel: base.as_bytes().to_vec(), pointer },
                ));
            }
        }
    }
    Ok(out)
}

/// Run-cache entries whose outputs are all in the local cache: (fingerprint, their outputs).
pub fn local_runs(repo: &Repo) -> Vec<(cairn_hash::Digest, Vec<(String, cairn_repo::Tracked)>)> {
    let runs = cairn_pipeline::runcache::RunCache::new(repo.store().root());
    let mut out = Vec::new();
    for fingerprint in runs.list() {
        let Some(entry) = runs.get(&fingerprint) else { continue };
        let mut records = Vec::new();
        let mut complete = true;
        for (path, content) in &entry.outs {
            match content.to_pointer() {
                Some(pointer) if repo.has_content(&pointer).unwrap_or(false) => records.push((
                    format!("{path} (run cache of `{}`)", entry.stage),
                    cairn_repo::Tracked { rel: path.as_bytes().to_vec(), pointer },
                )),
                _ => complete = false,
            }
        }
        if complete {
            out.push((fingerprint, records));
        }
    }
    out
}

const RUNS: &str = cairn_pipeline::runcache::RUNS_DIR;

/// Uploads the run-cache entries the remote lacks (after their objects were pushed).
pub fn push_runs(
    repo: &Repo,
    remote: &cairn_remote::Remote,
    runs: &[cairn_hash::Digest],
) -> Result<usize, Failure> {
    if runs.is_empty() {
        return Ok(0);
    }
    let there: std::collections::HashSet<String> =
        remote.list_documents(RUNS).map_err(cairn_repo::RepoError::from)?.into_iter().collect();
    let cache = cairn_pipeline::runcache::RunCache::new(repo.store().root());
    let documents: Vec<(String, Vec<u8>)> = runs
        .iter()
        .map(cairn_pipeline::runcache::RunCache::key)
        .filter(|key| !there.contains(key))
        .filter_map(|key| {
            let fp = cairn_pipeline::runcache::RunCache::fingerprint_of(&key)?;
            cache.read_raw(&fp).map(|bytes| (key, bytes))
        })
        .collect();
    let count = documents.len();
    remote.put_documents(RUNS, documents).map_err(cairn_repo::RepoError::from)?;
    Ok(count)
}

/// Downloads the run-cache entries this clone lacks (small: outputs stay on the remote
/// until a run needs them).
pub fn fetch_runs(repo: &Repo, remote: &cairn_remote::Remote) -> Result<usize, Failure> {
    let cache = cairn_pipeline::runcache::RunCache::new(repo.store().root());
    let local: std::collections::HashSet<String> =
        cache.list().iter().map(cairn_pipeline::runcache::RunCache::key).collect();
    let wanted: Vec<String> = remote
        .list_documents(RUNS)
        .map_err(cairn_repo::RepoError::from)?
        .into_iter()
        .filter(|k| !local.contains(k))
        .collect();
    let mut stored = 0;
    for (key, bytes) in remote.get_documents(RUNS, &wanted).map_err(cairn_repo::RepoError::from)? {
        let Some(fp) = cairn_pipeline::runcache::RunCache::fingerprint_of(&key) else {
            continue;
        };
        if cache.put_raw(&fp, &bytes)? {
            stored += 1;
        }
    }
    Ok(stored)
}

/// Makes pipeline outputs match `cairn.lock` (after `git checkout` or `pull`). An output
/// whose current content is not in the cache is left alone unless `force`. Returns what was
/// restored, each as `PATH (stage NAME)`.
pub fn checkout_outputs(
    repo: &Repo,
    force: bool,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<Vec<String>, Failure> {
    let outs: Vec<(String, cairn_repo::Tracked)> = lock_content(repo)?
        .into_iter()
        .filter(|(label, _)| !label.contains(", part ") && !label.contains("(parts of stage "))
        .collect();
    if outs.is_empty() {
        return Ok(Vec::new());
    }
    let rels: Vec<Vec<u8>> = outs.iter().map(|(_, t)| t.rel.clone()).collect();
    let current = repo.digest_paths(&rels, reporter)?;
    let mut restore = Vec::new();
    let mut restored = Vec::new();
    for ((label, tracked), now) in outs.into_iter().zip(current) {
        if now.as_ref().is_some_and(|n| n.digest == tracked.pointer.digest) {
            continue;
        }
        if let Some(now) = &now
            && !force
            && !repo.has_content(now)?
        {
            reporter.warn(&format!(
                "left `{}` as it is: it differs from cairn.lock and its content is not in the cache (use --force to replace it)",
                String::from_utf8_lossy(&tracked.rel)
            ));
            continue;
        }
        if !repo.has_content(&tracked.pointer)? {
            reporter
                .warn(&format!("cannot restore {label}: its data is not in the cache (run `cairn pull`)"));
            continue;
        }
        restore.push(tracked);
        restored.push(label);
    }
    if !restore.is_empty() {
        repo.restore_outputs(restore, reporter)?;
    }
    Ok(restored)
}

/// Everything pipelines keep alive in caches: the lock's outputs and the run cache's.
pub fn kept_content(repo: &Repo) -> Result<Vec<(String, cairn_repo::pointer::Pointer)>, Failure> {
    let mut out: Vec<(String, cairn_repo::pointer::Pointer)> =
        lock_content(repo)?.into_iter().map(|(l, t)| (l, t.pointer)).collect();
    let runs = cairn_pipeline::runcache::RunCache::new(repo.store().root());
    for fingerprint in runs.list() {
        if let Some(entry) = runs.get(&fingerprint) {
            for (path, content) in entry.outs {
                if let Some(pointer) = content.to_pointer() {
                    out.push((format!("{path} (run cache of `{}`)", entry.stage), pointer));
                }
            }
        }
    }
    // Run artifacts (stage logs, `mlflow.log_artifact`) and experiments' kept files.
    let store = crate::exp::open_store(repo)?;
    for (label, digest, size) in store.referenced_objects().map_err(|e| Failure::user(e.to_string(), None))? {
        let Some(digest) = cairn_hash::Digest::parse_bytes(digest.as_bytes()) else { continue };
        let kind = cairn_repo::pointer::PointerKind::File { executable: false };
        out.push((label, cairn_repo::pointer::Pointer { kind, digest, size: size as u64 }));
    }
    // Registered model versions (a directory's manifest keeps its files).
    for model in store.models().map_err(|e| Failure::user(e.to_string(), None))? {
        for v in store.model_versions(&model.name).map_err(|e| Failure::user(e.to_string(), None))? {
            let Some(digest) = cairn_hash::Digest::parse_bytes(v.digest.as_bytes()) else { continue };
            let kind = match v.kind.as_str() {
                "file" => cairn_repo::pointer::PointerKind::File { executable: false },
                "directory" => cairn_repo::pointer::PointerKind::Directory { files: 0 },
                _ => continue,
            };
            out.push((
                format!("{}@{}", v.name, v.version),
                cairn_repo::pointer::Pointer { kind, digest, size: v.size as u64 },
            ));
        }
    }
    Ok(out)
}

#[derive(Subcommand)]
pub enum PartitionsCommand {
    /// Every partition of a stage: fresh, stale, or never materialized.
    #[command(
        after_help = "Examples:\n  cairn partitions list ingest\n  cairn partitions list ingest --state missing\n  cairn partitions list ingest --json | jq .summary"
    )]
    List {
        stage: String,
        /// Only partitions in this state (fresh, stale, missing).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Add keys to a stage's dynamic partition dimension.
    #[command(
        after_help = "Example:\n  cairn partitions add per_customer acme globex\n  git add .cairn/partitions"
    )]
    Add {
        stage: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Remove keys from a stage's dynamic partition dimension (their outputs go at the next run).
    #[command(after_help = "Example:\n  cairn partitions remove ingest customer-42 customer-43")]
    Remove {
        stage: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub fn partitions_command(context: &Context, command: PartitionsCommand) -> Result<(), Failure> {
    let repo = context.open()?;
    match command {
        PartitionsCommand::List { stage, state, output } => {
            let mut project = Project::load(&repo)?;
            let states = project.partition_states(&stage)?;
            let mut counts = BTreeMap::new();
            for (_, s) in &states {
                *counts.entry(s.name()).or_insert(0u64) += 1;
            }
            let shown: Vec<&(String, cairn_pipeline::engine::PartitionState)> =
                states.iter().filter(|(_, s)| state.as_deref().is_none_or(|w| w == s.name())).collect();
            if output.json {
                let list: Vec<Value> =
                    shown.iter().map(|(k, s)| json!({"partition": k, "state": s.name()})).collect();
                return output::json(&json!({"stage": stage, "summary": counts, "partitions": list}));
            }
            let mut lines = String::new();
            for (key, s) in &shown {
                lines.push_str(&format!("{key}\t{}\n", s.name()));
            }
            std::io::stdout()
                .lock()
                .write_all(lines.as_bytes())
                .map_err(|e| Failure::user(format!("cannot write to stdout: {e}"), None))?;
            let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            out(format!("{} partition(s): {}", states.len(), summary.join(", ")))
        }
        PartitionsCommand::Add { stage, keys } => edit_dynamic(&repo, &stage, &keys, true),
        PartitionsCommand::Remove { stage, keys } => edit_dynamic(&repo, &stage, &keys, false),
    }
}

fn edit_dynamic(repo: &Repo, stage: &str, keys: &[String], add: bool) -> Result<(), Failure> {
    let project = Project::load(repo)?;
    let dims = project
        .pipeline
        .stage(stage)
        .ok_or_else(|| Failure::user(format!("no stage named `{stage}` in cairn.yaml"), None))?
        .partitions
        .clone()
        .ok_or_else(|| Failure::user(format!("stage `{stage}` is not partitioned"), None))?;
    if !dims.iter().any(|(_, d)| *d == cairn_pipeline::partitions::Dimension::Dynamic) {
        return Err(Failure::user(
            format!("stage `{stage}` has no dynamic partition dimension"),
            Some("declare one in cairn.yaml: `partitions: {customer: {dynamic: true}}`"),
        ));
    }
    if let Some(bad) = keys.iter().find(|k| !cairn_pipeline::partitions::valid_key(k)) {
        return Err(Failure::user(
            format!("`{bad}` is not a valid partition key: {}", cairn_pipeline::partitions::KEY_RULE),
            None,
        ));
    }
    let mut current = cairn_pipeline::partitions::dynamic_keys(repo.root(), stage);
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
    let file = cairn_pipeline::partitions::dynamic_file(repo.root(), stage);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure::user(format!("cannot create `{}`: {e}", parent.display()), None))?;
    }
    let mut text = current.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let tmp = file.with_extension("txt.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| Failure::user(format!("cannot write `{}`: {e}", file.display()), None))?;
    out(format!(
        "{} {} key(s) {} `{stage}` ({} in all); commit {}",
        if add { "added" } else { "removed" },
        current.len().abs_diff(before),
        if add { "to" } else { "from" },
        current.len(),
        file.strip_prefix(repo.root()).unwrap_or(&file).display()
    ))
}
