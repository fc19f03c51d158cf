//! The data commands: `init`, `add`, `commit`, `status`, `checkout`, `diff`, `ls`, `cat`,
//! `rm`, `unprotect`, `gc`, `fsck` (over `cairn_repo`, plus what `cairn_app` adds: pipeline
//! outputs and gc roots), and `config`, `completions`, `man`.

use std::path::PathBuf;

use cairn_repo::{InitOutcome, Repo, Side, display_bytes};

use crate::args::{Cli, OutputArgs};
use crate::context::Context;
use crate::failure::Failure;
use crate::output::{self, json, out, write_stdout};
use crate::pipelines;
use crate::progress::{Progress, human_bytes};

/// `cairn init`.
pub fn init(context: &Context) -> Result<(), Failure> {
    let outcome = Repo::init(&context.cwd)?;
    let repo = context.open()?;
    match outcome {
        InitOutcome::Created => out(format!(
            "Initialized Cairn in {}\nCommit .cairn/config and .cairn/.gitignore to Git.",
            repo.root().join(cairn_repo::DOT_DIR).display()
        )),
        InitOutcome::AlreadyInitialized => {
            out(format!("Cairn is already initialized in {}", repo.root().display()))
        }
    }
}

/// `cairn add PATH...`.
pub fn add(
    context: &Context,
    paths: Vec<PathBuf>,
    follow_external_symlinks: bool,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let mut repo = context.open()?;
    if follow_external_symlinks {
        repo.follow_external_symlinks(true);
    }
    let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
    let _lock = repo.lock(reporter)?;
    let outcomes = repo.add(&rels, reporter)?;
    output::added(&outcomes, output.json)
}

/// `cairn commit [PATH]`.
pub fn commit(
    context: &Context,
    path: Option<PathBuf>,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let repo = context.open()?;
    let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
    let _lock = repo.lock(reporter)?;
    let outcomes = repo.commit(scope.as_deref(), reporter)?;
    output::added(&outcomes, output.json)
}

/// `cairn status [PATH]`: data, then stale pipeline stages.
pub fn status(
    context: &Context,
    path: Option<PathBuf>,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let repo = context.open()?;
    let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
    let statuses = repo.status(scope.as_deref(), reporter)?;
    let stale = if scope.is_none() { cairn_app::pipeline::stale_stages(&repo) } else { None };
    if output.json {
        return output::status_with_stages(&statuses, stale.as_deref());
    }
    output::status(&statuses, false)?;
    match stale {
        Some(stale) => pipelines::print_stale(&stale, true),
        None => Ok(()),
    }
}

/// `cairn checkout [PATH]`: data, then pipeline outputs.
pub fn checkout(
    context: &Context,
    path: Option<PathBuf>,
    force: bool,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let repo = context.open()?;
    let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
    let _lock = repo.lock(reporter)?;
    let outcomes = repo.checkout(scope.as_deref(), force, reporter)?;
    let restored = if scope.is_none() {
        cairn_app::content::checkout_outputs(&repo, force, reporter)?
    } else {
        Vec::new()
    };
    output::checkout(&outcomes, output.json)?;
    if !output.json {
        for label in restored {
            out(format!("restored pipeline output {label}"))?;
        }
    }
    Ok(())
}

/// `cairn diff [OLD [NEW]]`.
pub fn diff(
    context: &Context,
    old: Option<String>,
    new: Option<String>,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let repo = context.open()?;
    let old = Side::Rev(old.unwrap_or_else(|| "HEAD".to_owned()));
    let new = new.map(Side::Rev).unwrap_or(Side::Workspace);
    let entries = repo.diff(&old, &new, reporter)?;
    output::diff(&entries, output.json)
}

/// `cairn ls [PATH]`.
pub fn ls(
    context: &Context,
    path: Option<PathBuf>,
    rev: Option<String>,
    output: OutputArgs,
) -> Result<(), Failure> {
    let repo = context.open()?;
    let scope = path.map(|p| context.rel(&repo, &p)).transpose()?;
    let files = repo.ls(rev.as_deref(), scope.as_deref())?;
    output::files(&files, output.json)
}

/// `cairn cat PATH`; a reader that stopped early (`| head`) is not an error.
pub fn cat(context: &Context, path: PathBuf, rev: Option<String>) -> Result<(), Failure> {
    let repo = context.open()?;
    let rel = context.rel(&repo, &path)?;
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    match repo.cat(&rel, rev.as_deref(), &mut lock) {
        Err(error) if error.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => Ok(()),
        result => Ok(result?),
    }
}

/// `cairn rm PATH...`.
pub fn rm(context: &Context, paths: Vec<PathBuf>, reporter: &Progress) -> Result<(), Failure> {
    let repo = context.open()?;
    let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
    let _lock = repo.lock(reporter)?;
    for rel in rels {
        repo.rm(&rel, reporter)?;
        out(format!(
            "stopped tracking {}; remove its pointer from Git with `git rm --cached {}.cairn`",
            display_bytes(&rel),
            display_bytes(&rel)
        ))?;
    }
    Ok(())
}

/// `cairn unprotect PATH...`.
pub fn unprotect(context: &Context, paths: Vec<PathBuf>, reporter: &Progress) -> Result<(), Failure> {
    let repo = context.open()?;
    let rels = paths.iter().map(|p| context.rel(&repo, p)).collect::<Result<Vec<_>, _>>()?;
    let _lock = repo.lock(reporter)?;
    for rel in rels {
        let count = repo.unprotect(&rel, reporter)?;
        out(format!("{}: {count} file(s) made editable", display_bytes(&rel)))?;
    }
    Ok(())
}

/// `cairn gc` (local).
pub fn gc(
    context: &Context,
    all_commits: bool,
    workspace: bool,
    force: bool,
    output: OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let _lock = ws.repo().lock(reporter)?;
    let scope = match (workspace, all_commits) {
        (true, _) => cairn_repo::GcScope::WorkTree,
        (false, true) => cairn_repo::GcScope::AllCommits,
        (false, false) => cairn_repo::GcScope::Refs,
    };
    let summary = cairn_app::content::gc(&ws, scope, force, reporter)?;
    if output.json {
        return json(&summary);
    }
    out(output::gc(&summary))
}

/// `cairn fsck`: a damaged object or pointer is exit code 1.
pub fn fsck(context: &Context, output: OutputArgs, reporter: &Progress) -> Result<(), Failure> {
    let repo = context.open()?;
    let report = repo.fsck(reporter)?;
    if output.json {
        json(&serde_json::json!({
            "objects": report.objects,
            "bytes": report.bytes,
            "pointers": report.pointers,
            "problems": report.problems,
        }))?;
    } else {
        for problem in &report.problems {
            out(format!("problem: {problem}"))?;
        }
        out(format!(
            "checked {} object(s) ({}) and {} pointer(s): {}",
            report.objects,
            human_bytes(report.bytes),
            report.pointers,
            if report.problems.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        ))?;
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(cairn_repo::RepoError::FsckFailed(report.problems.len()).into())
    }
}

/// `cairn completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "cairn", &mut script);
    write_stdout(&script)
}

/// `cairn man`.
pub fn man() -> Result<(), Failure> {
    let command = <Cli as clap::CommandFactory>::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| Failure::user(format!("cannot render the manual page: {e}"), None))?;
    write_stdout(&page)
}

/// `cairn config KEY [VALUE]`, `--unset`, `--list`.
pub fn config(
    context: &Context,
    key: Option<String>,
    value: Option<String>,
    user: bool,
    unset: bool,
    list: bool,
) -> Result<(), Failure> {
    let mut file = context.config_file(user)?;
    let path = file.path().to_path_buf();
    match (key, value) {
        _ if list => {
            for (key, value) in file.list() {
                // A metadata URL may carry a password: `--list` shows it redacted (ask for the
                // key itself to see it).
                let shown = if key == "meta.url" { cairn_meta::redact(&value) } else { value };
                out(format!("{key} = {shown}"))?;
            }
            Ok(())
        }
        (Some(key), None) if unset => {
            if !file.unset(&key)? {
                return Err(Failure::user(format!("`{key}` is not set in {}", path.display()), None));
            }
            Ok(())
        }
        (Some(_), Some(_)) if unset => Err(Failure::usage("--unset takes a key, not a value")),
        (Some(key), Some(value)) => Ok(file.set(&key, &value)?),
        (Some(key), None) => match file.get(&key)? {
            Some(value) => out(value),
            None => Err(Failure::user(
                format!("`{key}` is not set in {}", path.display()),
                Some("set it with `cairn config KEY VALUE`"),
            )),
        },
        (None, _) => Err(Failure::usage("name a KEY, or use --list (see `cairn config --help`)")),
    }
}
