//! `cairn exp run`, `apply`, `branch`, `remove`, `push` and `pull`: the CLI's side of
//! [`cairn_app::experiments`] (how experiments are created, run and shared is documented
//! there).

use std::io::Write;

use cairn_app::Workspace;
use cairn_app::experiments::{self, Execution, QueueRequest};
use cairn_app::runs::short_id;
use serde_json::json;

use crate::failure::Failure;
use crate::output::{json, out, warn};

pub struct RunRequest {
    pub set: Vec<String>,
    pub queue: bool,
    pub run_all: bool,
    pub jobs: usize,
    pub name: Option<String>,
    /// `--add`: -S may add keys the params file lacks.
    pub add_keys: bool,
    pub json: bool,
}

/// `cairn exp run`.
pub fn run(ws: &Workspace, request: RunRequest, quiet: bool) -> Result<(), Failure> {
    let ids: Vec<String> = if request.run_all {
        if !request.set.is_empty() {
            return Err(Failure::usage("--run-all runs the queue; queue new experiments with --queue first"));
        }
        let queued = experiments::queued(ws)?;
        if queued.is_empty() {
            return out("no queued experiments (queue some with `cairn exp run --queue -S KEY=VALUE`)");
        }
        queued
    } else {
        let queue = QueueRequest { set: request.set, name: request.name, add_keys: request.add_keys };
        let queued = experiments::queue(ws, &queue)?;
        let ids: Vec<String> = queued.iter().map(|q| q.run_id.clone()).collect();
        if request.queue {
            if request.json {
                return json(&json!({"queued": ids}));
            }
            for q in &queued {
                out(format!("queued experiment {}  {}", short_id(&q.run_id), q.overrides))?;
            }
            return out("run the queue with `cairn exp run --run-all --jobs N`");
        }
        ids
    };
    let cairn = std::env::current_exe()
        .map_err(|e| Failure::user(format!("cannot find the cairn binary: {e}"), None))?;
    let execution = Execution { cairn, jobs: request.jobs, quiet };
    let started = |id: &str, overrides: &str| {
        if !quiet {
            let _ = writeln!(std::io::stderr().lock(), "running experiment {}  {overrides}", short_id(id));
        }
    };
    let ran = experiments::run_queued(ws, &ids, &execution, &started)?;
    if request.json {
        json(&json!({"experiments": ran}))?;
    } else {
        for summary in experiments::summaries(ws, &ids)? {
            let metrics: Vec<String> = summary.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out(format!(
                "experiment {}  {:<8}  {}  {}",
                short_id(&summary.run_id),
                summary.status,
                summary.overrides,
                metrics.join(" ")
            ))?;
        }
    }
    match experiments::failed(&ran) {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// `cairn exp apply ID`.
pub fn apply(ws: &Workspace, id: &str, reporter: &dyn cairn_repo::Reporter) -> Result<(), Failure> {
    let applied = experiments::apply(ws, id, reporter)?;
    for path in &applied.files {
        out(format!("wrote {path}"))?;
    }
    out(format!(
        "applied experiment {} ({}); restored {} output(s); commit with git when you like it",
        short_id(&applied.run_id),
        applied.overrides,
        applied.restored
    ))
}

/// `cairn exp branch ID NAME`.
pub fn branch(ws: &Workspace, id: &str, name: &str) -> Result<(), Failure> {
    let branched = experiments::branch(ws, id, name)?;
    if let Some(base) = &branched.dirty_base {
        warn(&format!(
            "experiment {} started from uncommitted changes; the branch holds only its params and lock on top of {}",
            short_id(&branched.run_id),
            &base[..base.len().min(8)]
        ));
    }
    out(format!(
        "created branch {} at {} (experiment {})",
        branched.branch,
        &branched.commit[..8.min(branched.commit.len())],
        short_id(&branched.run_id)
    ))
}

/// `cairn exp remove`.
pub fn remove(ws: &Workspace, ids: &[String], queued: bool) -> Result<(), Failure> {
    let removed = experiments::remove(ws, ids, queued)?;
    if removed.is_empty() {
        return out("no queued experiments");
    }
    for r in removed {
        out(format!("removed {} ({})", short_id(&r.run_id), r.name))?;
    }
    Ok(())
}

/// `cairn exp push REMOTE [ID...]`.
pub fn push(
    ws: &Workspace,
    remote: &str,
    ids: &[String],
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    let pushed = experiments::push(ws, remote, ids, reporter)?;
    out(format!(
        "pushed {} experiment(s) and {} object(s) to {}",
        pushed.experiments, pushed.objects_sent, pushed.remote
    ))
}

/// `cairn exp pull REMOTE`.
pub fn pull(ws: &Workspace, remote: &str, reporter: &dyn cairn_repo::Reporter) -> Result<(), Failure> {
    let pulled = experiments::pull(ws, remote, reporter)?;
    if pulled.missing_files > 0 {
        warn(&format!(
            "{} file(s) of pulled experiments are not on the remote; `cairn exp apply` needs them",
            pulled.missing_files
        ));
    }
    out(format!("pulled {} experiment(s) from {}", pulled.experiments, pulled.remote))
}

/// `cairn exp ...`.
pub fn command(
    context: &crate::context::Context,
    command: crate::args::ExpCommand,
    quiet: bool,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    use crate::args::ExpCommand;
    use crate::runs;
    let ws = context.workspace()?;
    match command {
        ExpCommand::Show { limit, sort, filter, columns, csv, output } => {
            let format = match (output.json, csv) {
                (true, _) => runs::Format::Json,
                (false, true) => runs::Format::Csv,
                (false, false) => runs::Format::Table,
            };
            runs::show(&ws, &cairn_app::runs::ShowRequest { limit, sort, filter, columns }, format)
        }
        ExpCommand::Run { set, queue, run_all, jobs, name, add, output } => run(
            &ws,
            RunRequest { set, queue, run_all, jobs: jobs.max(1), name, add_keys: add, json: output.json },
            quiet,
        ),
        ExpCommand::Apply { id } => apply(&ws, &id, reporter),
        ExpCommand::Branch { id, name } => branch(&ws, &id, &name),
        ExpCommand::Remove { ids, queued } => remove(&ws, &ids, queued),
        ExpCommand::Push { remote, ids } => push(&ws, &remote, &ids, reporter),
        ExpCommand::Pull { remote } => pull(&ws, &remote, reporter),
        ExpCommand::Diff { a, b, all, output } => runs::diff(&ws, &a, &b, all, output.json),
    }
}
