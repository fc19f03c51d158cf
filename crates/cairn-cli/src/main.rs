//! `cairn`: version data and models with code.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod alerts;
mod args;
mod context;
mod data;
mod env;
mod exp;
mod failure;
mod identity;
mod model;
mod monitor;
mod output;
mod pipelines;
mod plots;
mod progress;
mod remotes;
mod runs;
mod serve;
mod supervise;
mod tracking;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, PlotsCommand};
use cairn_repo::Reporter;
pub(crate) use context::Context;
use failure::{EXIT_INTERNAL, Failure};
use progress::Progress;

fn main() -> ExitCode {
    // `cairn __supervise USAGE-FILE PROGRAM ARGS...`: how `cairn run` measures a stage's
    // commands (not a user command).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "__supervise") {
        return supervise::supervise(&args[2..]);
    }
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error in cairn (this is a bug; please report it): {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { failure::EXIT_USAGE } else { 0 });
        }
    };
    let reporter = Progress::new(cli.quiet);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli, &reporter))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            reporter.finish();
            eprintln!("error: {}", failure.message);
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(failure.code)
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}

/// Runs one command: each area's module does the work; this only dispatches.
fn run(cli: Cli, reporter: &Progress) -> Result<(), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::user(format!("cannot read the current directory: {e}"), None))?;
    let context = Context { cwd: cli.directory.as_ref().map_or_else(|| cwd.clone(), |dir| cwd.join(dir)) };
    let quiet = cli.quiet;
    match cli.command {
        Command::Init => data::init(&context),
        Command::Add { paths, follow_external_symlinks, output } => {
            data::add(&context, paths, follow_external_symlinks, output, reporter)
        }
        Command::Commit { path, output } => data::commit(&context, path, output, reporter),
        Command::Status { path, output } => data::status(&context, path, output, reporter),
        Command::Checkout { path, force, output } => data::checkout(&context, path, force, output, reporter),
        Command::Diff { old, new, output } => data::diff(&context, old, new, output, reporter),
        Command::Ls { path, rev, output } => data::ls(&context, path, rev, output),
        Command::Cat { path, rev } => data::cat(&context, path, rev),
        Command::Rm { paths } => data::rm(&context, paths, reporter),
        Command::Unprotect { paths } => data::unprotect(&context, paths, reporter),
        Command::Remote(command) => remotes::run_remote(&context, command),
        Command::Push(args) => remotes::push(&context, args, reporter),
        Command::Fetch(args) => remotes::fetch(&context, args, reporter),
        Command::Pull(args) => remotes::pull(&context, args, reporter),
        Command::Gc { cloud: true, remote, all_commits, workspace: _, force, output } => {
            remotes::gc_cloud(&context, remote.as_deref(), all_commits, force, &output, reporter)
        }
        Command::Gc { cloud: false, remote: _, all_commits, workspace, force, output } => {
            data::gc(&context, all_commits, workspace, force, output, reporter)
        }
        Command::Fsck { output } => data::fsck(&context, output, reporter),
        Command::Run(args) => pipelines::run(&context, args, quiet, reporter),
        Command::Explain { stage, output } => pipelines::explain(&context, &stage, &output),
        Command::Params(command) => pipelines::params_command(&context, command),
        Command::Metrics(command) => pipelines::metrics_command(&context, command),
        Command::Lineage { path, output } => pipelines::lineage(&context, &path, &output),
        Command::Partitions(command) => pipelines::partitions_command(&context, command),
        Command::Pipeline(args::PipelineCommand::Schema) => pipelines::schema(),
        Command::Exp(command) => exp::command(&context, command, quiet, reporter),
        Command::Model(command) => model::command(&context, command, reporter),
        Command::Plots(PlotsCommand::Show { runs, metrics, output }) => plots::show(
            &context.workspace()?,
            &plots::PlotRequest { runs, metrics, output: output.map(|o| context.cwd.join(o)) },
        ),
        Command::Server { host, port, max_artifact_size, run_quota, auth, insecure_no_auth } => {
            let uploads = cairn_server::UploadLimits {
                max_artifact_bytes: max_artifact_size,
                run_quota_bytes: run_quota,
            };
            tracking::serve(
                context.workspace()?,
                &tracking::Listen { host, port, auth, insecure_no_auth },
                uploads,
                quiet,
            )
        }
        Command::User(command) => identity::user(&context.workspace()?, command, quiet),
        Command::Token(command) => identity::token(&context.workspace()?, command, quiet),
        Command::Audit { since, user, object, output } => identity::audit(
            &context.workspace()?,
            &cairn_app::identity::AuditRequest { since, user, object },
            output.json,
        ),
        Command::Ui { host, port, insecure_no_auth } => tracking::ui(
            context.workspace()?,
            &tracking::Listen { host, port, auth: false, insecure_no_auth },
            quiet,
        ),
        Command::Serve(args) => {
            let ws = context.workspace()?;
            let (listen, settings) = args.resolve(&context.cwd, ws.repo())?;
            serve::serve(&ws, listen, settings, quiet)
        }
        Command::Monitor { action: Some(action), .. } => monitor::command(&context, action, reporter),
        Command::Monitor { action: None, model, select, html, window, output } => monitor::monitor(
            &context.workspace()?,
            monitor::MonitorRequest {
                select: select.resolve(model.unwrap_or_default(), &context.cwd),
                html: html.map(|h| context.cwd.join(h)),
                window,
                json: output.json,
            },
        ),
        Command::Alerts { action, all, model, log_dir, output } => {
            alerts::command(&context, action, alerts::ListFilter { all, model, log_dir }, output)
        }
        Command::Trace { id, log_dir, remote, output } => serve::trace(
            &context.workspace()?,
            &cairn_app::serving::TraceRequest {
                trace_id: id,
                log_dir: log_dir.map(|d| context.cwd.join(d)),
                remote,
            },
            output.json,
        ),
        Command::Completions { shell } => data::completions(shell),
        Command::Man => data::man(),
        Command::Config { key, value, user, unset, list } => {
            data::config(&context, key, value, user, unset, list)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command a user can run shows at least one example in its `--help`, and no
    /// example line is so long that the terminal wraps it mid-way (a JSON body split in two
    /// cannot be copied).
    #[test]
    fn every_command_has_an_example_that_fits_the_terminal() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>, long: &mut Vec<String>) {
            let leaves: Vec<&clap::Command> =
                command.get_subcommands().filter(|c| c.get_name() != "help" && !c.is_hide_set()).collect();
            if leaves.is_empty() {
                let after = command.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                if !after.contains("Example") {
                    missing.push(path.to_owned());
                }
                let examples = after.lines().skip_while(|l| !l.starts_with("Example"));
                for line in examples.filter(|l| l.starts_with("  ")) {
                    if line.chars().count() > 100 {
                        long.push(format!("{path}: {line}"));
                    }
                }
            }
            for sub in leaves {
                walk(sub, &format!("{path} {}", sub.get_name()), missing, long);
            }
        }
        let (mut missing, mut long) = (Vec::new(), Vec::new());
        walk(&super::Cli::command(), "cairn", &mut missing, &mut long);
        assert!(missing.is_empty(), "commands without an example in --help: {missing:?}");
        assert!(long.is_empty(), "example lines that wrap in an 100-column terminal:\n{}", long.join("\n"));
    }
}
