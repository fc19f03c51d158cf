//! `cairn remote`, `push`, `fetch`, `pull` and `gc --cloud`.

use cairn_app::transfer::{Fetched, Problem, is_secret};
use cairn_repo::Repo;

use crate::Context;
use crate::args::{OutputArgs, PullArgs, RemoteCommand, TransferArgs};
use crate::failure::Failure;
use crate::output::{json, out};
use crate::progress::{Progress, human_bytes};

fn check_url(name: &str, url: &str) -> Result<(), Failure> {
    // Relative directories are kept relative (to the repository root) so the config travels.
    let probe = if url.contains("://") || url.starts_with('/') { url.to_owned() } else { format!("/{url}") };
    cairn_remote::Location::parse(&probe).map(drop).map_err(|reason| {
        Failure::user(
            format!("remote `{name}`: unusable URL `{url}`: {reason}"),
            Some("use a directory path or s3://BUCKET/PREFIX"),
        )
    })
}

fn split_option(option: &str) -> Result<(&str, &str), Failure> {
    option.split_once('=').ok_or_else(|| Failure::usage(format!("`{option}` is not KEY=VALUE")))
}

pub fn run_remote(context: &Context, command: RemoteCommand) -> Result<(), Failure> {
    match command {
        RemoteCommand::Add { name, url, default, options, user } => {
            add(context, &name, &url, default, &options, user)
        }
        RemoteCommand::List { output } => list(context, output.json),
        RemoteCommand::Remove { name, user } => {
            let mut file = context.config_file(user)?;
            if !file.remove_remote(&name)? {
                return Err(Failure::user(
                    format!("no remote named `{name}` in {}", file.path().display()),
                    Some("list remotes with `cairn remote list`"),
                ));
            }
            out(format!("removed remote {name}"))
        }
        RemoteCommand::Default { name: None, user: _ } => out(context.open()?.remote_spec(None)?.name),
        RemoteCommand::Default { name: Some(name), user } => set_default(context, name, user),
        RemoteCommand::Modify { name, key, value, unset, user } => {
            modify(context, &name, &key, value, unset, user)
        }
    }
}

/// `cairn remote add NAME URL [-o KEY=VALUE]... [--default]`.
fn add(
    context: &Context,
    name: &str,
    url: &str,
    default: bool,
    options: &[String],
    user: bool,
) -> Result<(), Failure> {
    check_url(name, url)?;
    let parsed = options.iter().map(|o| split_option(o)).collect::<Result<Vec<_>, _>>()?;
    for (key, value) in &parsed {
        cairn_remote::check_option(name, key, value).map_err(remote_failure)?;
    }
    let mut file = context.config_file(user)?;
    file.add_remote(name, url)?;
    for (key, value) in parsed {
        file.set_remote_option(name, key, Some(value), false)?;
    }
    if default {
        file.set("core.remote", name)?;
    }
    out(format!("added remote {name} -> {url}{}", if default { " (default)" } else { "" }))
}

/// `cairn remote list`: credentials are never printed.
fn list(context: &Context, as_json: bool) -> Result<(), Failure> {
    let remotes = cairn_app::transfer::remotes(&context.open()?);
    if as_json {
        return json(&remotes);
    }
    for remote in remotes {
        out(format!("{}\t{}{}", remote.name, remote.url, if remote.default { "\t(default)" } else { "" }))?;
    }
    Ok(())
}

/// `cairn remote default NAME`.
fn set_default(context: &Context, name: String, user: bool) -> Result<(), Failure> {
    let repo = context.open()?;
    if !repo.settings().remotes.contains_key(&name) {
        let known = repo.settings().remotes.keys().cloned().collect();
        return Err(cairn_repo::RepoError::UnknownRemote { name, known }.into());
    }
    let mut file = context.config_file(user)?;
    file.set("core.remote", &name)?;
    out(format!("default remote: {name}"))
}

/// `cairn remote modify NAME KEY [VALUE | --unset]`: a credential goes to the user config only.
fn modify(
    context: &Context,
    name: &str,
    key: &str,
    value: Option<String>,
    unset: bool,
    user: bool,
) -> Result<(), Failure> {
    let mut file = context.config_file(user)?;
    if !unset && value.is_none() {
        return Err(Failure::usage("give a VALUE, or --unset"));
    }
    if value.is_some() && !user && is_secret(key) {
        return Err(Failure::user(
            format!("`{key}` is a credential: written to `.cairn/config`, it would be committed to Git"),
            Some(&format!("keep it in your user config: cairn remote modify --user {name} {key} VALUE")),
        ));
    }
    if let Some(value) = &value {
        if key == "url" {
            check_url(name, value)?;
        } else {
            cairn_remote::check_option(name, key, value).map_err(remote_failure)?;
        }
    }
    // The user file may add options (credentials) to a remote the project defines.
    let changed = file.set_remote_option(name, key, value.as_deref(), user)?;
    if unset && !changed {
        return Err(Failure::user(format!("`{key}` is not set for remote `{name}`"), None));
    }
    Ok(())
}

fn remote_failure(error: cairn_remote::RemoteError) -> Failure {
    cairn_repo::RepoError::from(error).into()
}

impl TransferArgs {
    /// What the transfer covers, paths relative to the repository.
    fn scope(&self, context: &Context, repo: &Repo) -> Result<cairn_app::transfer::Scope, Failure> {
        Ok(cairn_app::transfer::Scope {
            paths: self.paths.iter().map(|p| context.rel(repo, p)).collect::<Result<_, _>>()?,
            revs: self.rev.clone(),
            all_branches: self.all_branches,
            all_tags: self.all_tags,
            all_commits: self.all_commits,
        })
    }
}

/// The error for a transfer that left files behind, listing them.
fn incomplete(what: &str, remote: &str, problems: &[Problem], hint: &str) -> Failure {
    let mut lines: Vec<String> =
        problems.iter().take(20).map(|p| format!("  {}: {} ({})", p.path, p.reason, p.digest)).collect();
    if problems.len() > 20 {
        lines.push(format!("  … and {} more", problems.len() - 20));
    }
    Failure::user(
        format!(
            "{what} `{remote}` is incomplete; {} file(s) affected:\n{}",
            problems.len(),
            lines.join("\n")
        ),
        Some(hint),
    )
}

pub fn push(context: &Context, args: TransferArgs, reporter: &Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let scope = args.scope(context, ws.repo())?;
    let pushed = cairn_app::transfer::push(&ws, args.remote.as_deref(), args.jobs, scope, reporter)?;
    if args.output.json {
        json(&pushed)?;
    } else {
        let runs_sent = pushed.run_cache_entries_sent;
        if runs_sent > 0 {
            out(format!("pushed {runs_sent} run-cache entr{}", if runs_sent == 1 { "y" } else { "ies" }))?;
        }
        out(format!(
            "pushed {} object(s) to {} ({} sent in {} pack(s)); {} already there ({}); {} chunk(s) deduplicated ({})",
            pushed.objects_sent,
            pushed.remote,
            human_bytes(pushed.bytes_sent),
            pushed.packs,
            pushed.objects_skipped,
            human_bytes(pushed.bytes_skipped),
            pushed.chunks_deduplicated,
            human_bytes(pushed.bytes_deduplicated),
        ))?;
    }
    if pushed.problems.is_empty() {
        Ok(())
    } else {
        Err(incomplete(
            "push to",
            &pushed.remote,
            &pushed.problems,
            "these files are not in this clone's cache: fetch them from where they were added (`cairn fetch -r OTHER`), or re-add them",
        ))
    }
}

fn fetch_summary(fetched: &Fetched, json_output: bool) -> Result<(), Failure> {
    if json_output {
        return json(fetched);
    }
    out(format!(
        "fetched {} object(s) from {} ({}, {} transferred); {} already in the cache",
        fetched.objects_fetched,
        fetched.remote,
        human_bytes(fetched.bytes_fetched),
        human_bytes(fetched.bytes_transferred),
        fetched.already_present
    ))?;
    if fetched.checked_out {
        out(format!("checked out {} file(s)", fetched.files_checked_out))?;
    }
    Ok(())
}

const FETCH_HINT: &str = "push these files from a clone that has them, or check that you are fetching from the right remote (`cairn remote list`); damaged data was not stored";

fn fetched(what: &str, fetched: Fetched, json: bool) -> Result<(), Failure> {
    fetch_summary(&fetched, json)?;
    if fetched.problems.is_empty() {
        Ok(())
    } else {
        Err(incomplete(what, &fetched.remote, &fetched.problems, FETCH_HINT))
    }
}

pub fn fetch(context: &Context, args: TransferArgs, reporter: &Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let scope = args.scope(context, ws.repo())?;
    let outcome = cairn_app::transfer::fetch(&ws, args.remote.as_deref(), args.jobs, scope, reporter)?;
    fetched("fetch from", outcome, args.output.json)
}

pub fn pull(context: &Context, args: PullArgs, reporter: &Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let paths: Vec<Vec<u8>> =
        args.paths.iter().map(|p| context.rel(ws.repo(), p)).collect::<Result<_, _>>()?;
    let _lock = ws.repo().lock(reporter)?;
    let outcome =
        cairn_app::transfer::pull(&ws, args.remote.as_deref(), args.jobs, paths, args.force, reporter)?;
    fetched("pull from", outcome, args.output.json)
}

pub fn gc_cloud(
    context: &Context,
    remote: Option<&str>,
    all_commits: bool,
    force: bool,
    output: &OutputArgs,
    reporter: &Progress,
) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let gc = cairn_app::transfer::gc_cloud(&ws, remote, all_commits, force, reporter)?;
    if !gc.unknown.is_empty() {
        crate::output::warn(&format!(
            "{} need{} data that neither this cache nor `{}` has, so `--force` will refuse to delete anything until \
             it is pushed from a clone that has it (`cairn push --all-branches --all-tags`) or the branch or tag is deleted",
            gc.unknown.join(", "),
            if gc.unknown.len() == 1 { "s" } else { "" },
            gc.remote
        ));
    }
    if output.json {
        return json(&gc);
    }
    let summary = format!(
        "{} object(s) in {} pack(s) deleted, {} pack(s) rewritten, {} freed; {} object(s) kept",
        gc.objects_removed,
        gc.packs_deleted,
        gc.packs_rewritten,
        human_bytes(gc.bytes_freed),
        gc.objects_kept
    );
    let name = &gc.remote;
    if gc.deleted {
        out(format!("{name}: {summary}"))
    } else if gc.objects_removed == 0 && gc.packs_deleted == 0 {
        out(format!("{name}: nothing to remove; {} object(s) are referenced", gc.objects_kept))
    } else {
        out(format!(
            "{name}: would be {summary}\nrun `cairn gc --cloud -r {name} --force{}` to delete them",
            if all_commits { " --all-commits" } else { "" }
        ))
    }
}
