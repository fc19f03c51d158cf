//! `cairn run`, `explain`, `params`, `metrics`, `lineage`, `pipeline schema`, and the
//! pipeline part of `status`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use cairn_app::pipeline::{LineageNode, PlanEntry, Resources};
use cairn_pipeline::Observer;
use cairn_pipeline::engine::{Action, Decision};
use cairn_pipeline::exec::OutputSink;
use serde_json::Value;

use crate::Context;
use crate::args::{MetricsCommand, OutputArgs, ParamsCommand, PartitionsCommand, RunArgs};
use crate::failure::Failure;
use crate::output::{self, out};

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

fn decision_text(p: &PlanEntry) -> &'static str {
    match p.decision {
        Decision::Fresh => "up to date",
        Decision::Record => "would be recorded from the run cache",
        Decision::Restore => "would be restored from the run cache",
        Decision::Run => "would run",
        Decision::AfterUpstream => "would run if its inputs change",
    }
}

fn print_plan(plan: &[PlanEntry], explain: bool) -> Result<(), Failure> {
    for p in plan {
        out(format!("{}: {}", p.stage, decision_text(p)))?;
        if explain && p.reasons.is_empty() {
            out("    its command, deps, params, env and outputs match cairn.lock")?;
        }
        for reason in &p.reasons {
            out(format!("    {reason}"))?;
        }
    }
    Ok(())
}

/// Machine resources the scheduler may hand out (`CAIRN_CPUS`, `CAIRN_GPUS` and
/// `CAIRN_MEMORY` (bytes) override what is detected, for shared machines and tests).
fn machine() -> Resources {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok());
    let detected = Resources::detect();
    Resources {
        cpus: from_env("CAIRN_CPUS").map_or(detected.cpus, |n| n.max(1) as u32),
        gpus: from_env("CAIRN_GPUS").map_or(detected.gpus, |n| n as u32),
        memory: from_env("CAIRN_MEMORY").unwrap_or(detected.memory),
    }
}

pub fn run(context: &Context, args: RunArgs, quiet: bool, reporter: &crate::Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let partitions =
        cairn_pipeline::engine::PartitionRequest { keys: args.partition, ranges: args.partitions };
    if args.dry {
        let plan = cairn_app::pipeline::plan(ws.repo(), &args.stages, args.force, partitions)?;
        if args.output.json {
            return output::json(&plan);
        }
        return print_plan(&plan, false);
    }
    let _lock = ws.repo().lock(reporter)?;
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
    let printer = Printer { quiet, json: args.output.json };
    let request = cairn_app::pipeline::RunRequest {
        targets: args.stages,
        jobs: args.jobs,
        keep_going: args.keep_going,
        force: args.force,
        partitions,
        record_as: args.record_as,
        resources: machine(),
        cancel,
        supervisor: std::env::current_exe().ok(),
    };
    let completed = cairn_app::pipeline::run(&ws, request, &printer)?;
    if let Some(run_id) = &completed.recorded_as
        && !quiet
    {
        let _ = writeln!(std::io::stderr().lock(), "recorded as run {run_id}");
    }
    let run = completed.result?;
    if args.output.json {
        return output::json(&run);
    }
    out(format!(
        "{} stage(s): {} ran, {} restored from the run cache, {} up to date",
        run.stages.len(),
        run.count(Action::Ran),
        run.count(Action::Restored) + run.count(Action::Recorded),
        run.count(Action::Fresh)
    ))
}

pub fn explain(context: &Context, stage: &str, output: &OutputArgs) -> Result<(), Failure> {
    let repo = context.open()?;
    let plan = cairn_app::pipeline::explain(&repo, stage)?;
    if output.json {
        return output::json(&plan);
    }
    print_plan(&plan, true)
}

pub fn print_stale(stale: &[PlanEntry], total_hint: bool) -> Result<(), Failure> {
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
    let rev = rev.unwrap_or_else(|| "HEAD".into());
    let rows = cairn_app::pipeline::params_diff(&repo, &rev, all)?;
    if output.json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        return out(format!("no param differs from {rev}"));
    }
    out(format!("{:<40} {:>14} {:>14}", "param", rev, "workspace"))?;
    for row in rows {
        let key = format!("{}:{}", row.file, row.param);
        out(format!("{key:<40} {:>14} {:>14}", show_value(row.old.as_ref()), show_value(row.new.as_ref())))?;
    }
    Ok(())
}

pub fn metrics_command(context: &Context, command: MetricsCommand) -> Result<(), Failure> {
    let repo = context.open()?;
    match command {
        MetricsCommand::Show { output } => {
            let by_file = cairn_app::pipeline::metrics_show(&repo)?;
            if output.json {
                return output::json(&by_file);
            }
            if by_file.values().all(|m| m.is_empty()) {
                return out(
                    "no metrics: declare metrics files in cairn.yaml (`metrics: [metrics.json]`) and run the pipeline",
                );
            }
            for (file, metrics) in &by_file {
                for (key, value) in metrics {
                    out(format!("{:<40} {}", format!("{file}:{key}"), show_value(Some(value))))?;
                }
            }
            Ok(())
        }
        MetricsCommand::Diff { rev, output } => {
            let rev = rev.unwrap_or_else(|| "HEAD".into());
            let rows = cairn_app::pipeline::metrics_diff(&repo, &rev)?;
            if output.json {
                return output::json(&rows);
            }
            if rows.is_empty() {
                return out(format!("no metric differs from {rev}"));
            }
            out(format!("{:<40} {:>12} {:>12} {:>12}", "metric", rev, "workspace", "change"))?;
            for row in &rows {
                let delta = row.change.map(|d| format!("{d:+.6}")).unwrap_or_else(|| "-".into());
                out(format!(
                    "{:<40} {:>12} {:>12} {:>12}",
                    format!("{}:{}", row.file, row.metric),
                    show_value(row.old.as_ref()),
                    show_value(row.new.as_ref()),
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
    let lineage = cairn_app::pipeline::lineage(&repo, &rel)?;
    if output.json {
        return output::json(&lineage);
    }
    if let (Some(commit), Some(dirty)) = (&lineage.commit, lineage.dirty) {
        out(format!(
            "commit {}{}",
            &commit[..12.min(commit.len())],
            if dirty { " (work tree has changes)" } else { "" }
        ))?;
    }
    print_node(&lineage.node, 0)
}

fn short_digest(digest: Option<&cairn_hash::Digest>) -> String {
    match digest {
        Some(d) => format!(" {}", d.hex().chars().take(12).collect::<String>()),
        None => " (not produced yet)".into(),
    }
}

fn print_node(node: &LineageNode, depth: usize) -> Result<(), Failure> {
    let pad = "    ".repeat(depth);
    match node {
        LineageNode::Stage { path, digest, stage, cmd, params, ran, inputs, .. } => {
            out(format!("{pad}{path}{}  ← stage `{stage}`", short_digest(digest.as_ref())))?;
            out(format!("{pad}    cmd: {}", cmd.join(" && ")))?;
            for (file, keys) in params.iter().flatten() {
                for (k, v) in keys {
                    out(format!("{pad}    param {k} = {v} ({file})"))?;
                }
            }
            if !ran {
                out(format!("{pad}    (has not run: `cairn run {stage}`)"))?;
            }
            for input in inputs {
                print_node(input, depth + 1)?;
            }
            Ok(())
        }
        LineageNode::Repeated { path, stage, .. } => {
            out(format!("{pad}{path} (not produced yet)  ← stage `{stage}`"))
        }
        LineageNode::Source { path, digest, source } => {
            out(format!("{pad}{path}{}  ({source})", short_digest(digest.as_ref())))
        }
        LineageNode::Datums { path, source } => out(format!("{pad}{path} (not produced yet)  ({source})")),
    }
}

pub fn partitions_command(context: &Context, command: PartitionsCommand) -> Result<(), Failure> {
    let repo = context.open()?;
    match command {
        PartitionsCommand::List { stage, state, output } => {
            let list = cairn_app::pipeline::partitions(&repo, &stage, state.as_deref())?;
            if output.json {
                return output::json(&list);
            }
            let mut lines = String::new();
            for entry in &list.partitions {
                lines.push_str(&format!("{}\t{}\n", entry.partition, entry.state.name()));
            }
            std::io::stdout()
                .lock()
                .write_all(lines.as_bytes())
                .map_err(|e| Failure::user(format!("cannot write to stdout: {e}"), None))?;
            let summary: Vec<String> = list.summary.iter().map(|(k, v)| format!("{v} {k}")).collect();
            out(format!("{} partition(s): {}", list.total, summary.join(", ")))
        }
        PartitionsCommand::Add { stage, keys } => edit_dynamic(&repo, &stage, &keys, true),
        PartitionsCommand::Remove { stage, keys } => edit_dynamic(&repo, &stage, &keys, false),
    }
}

fn edit_dynamic(repo: &cairn_repo::Repo, stage: &str, keys: &[String], add: bool) -> Result<(), Failure> {
    let edit = cairn_app::pipeline::edit_partitions(repo, stage, keys, add)?;
    out(format!(
        "{} {} key(s) {} `{stage}` ({} in all); commit {}",
        if add { "added" } else { "removed" },
        edit.changed,
        if add { "to" } else { "from" },
        edit.total,
        edit.file.display()
    ))
}
