//! `cairn remote`, `push`, `fetch`, `pull` and `gc --cloud`.

use std::path::PathBuf;

use cairn_hash::Digest;
use cairn_repo::{Repo, Selection, Tracked, TransferProblem};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::failure::Failure;
use crate::output::{json, out};
use crate::progress::{Progress, human_bytes};
use crate::{Context, OutputArgs};

#[derive(Subcommand)]
pub enum RemoteCommand {
    /// Add a remote: a directory (local disk, NFS) or s3://BUCKET/PREFIX.
    #[command(
        after_help = "Examples:\n  cairn remote add origin s3://ml-data/churn --default\n  cairn remote add minio s3://bucket/proj -o endpoint=http://127.0.0.1:9000\n  cairn remote add nas /mnt/nas/cairn"
    )]
    Add {
        name: String,
        url: String,
        /// Make it the default remote (`core.remote`).
        #[arg(short, long)]
        default: bool,
        /// Remote options as KEY=VALUE (see `cairn remote modify --help`).
        #[arg(short = 'o', long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Write to the user config instead of the project's.
        #[arg(long)]
        user: bool,
    },
    /// List remotes with their URLs.
    #[command(after_help = "Examples:\n  cairn remote list\n  cairn remote list --json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Remove a remote from the config (its data stays where it is).
    #[command(after_help = "Example:\n  cairn remote remove old-nas")]
    Remove {
        name: String,
        #[arg(long)]
        user: bool,
    },
    /// Show or set the default remote.
    #[command(after_help = "Examples:\n  cairn remote default\n  cairn remote default origin")]
    Default {
        name: Option<String>,
        #[arg(long)]
        user: bool,
    },
    /// Set or unset an option of a remote.
    #[command(after_help = remote_options_help())]
    Modify {
        name: String,
        /// `url` or an option name.
        key: String,
        value: Option<String>,
        #[arg(long, conflicts_with = "value")]
        unset: bool,
        /// Write to the user config (for credentials: it is not committed to Git).
        #[arg(long)]
        user: bool,
    },
}

/// Options whose values are credentials: never printed, never written to the project config.
pub fn is_secret(key: &str) -> bool {
    ["secret", "token", "password"].iter().any(|word| key.contains(word))
}

fn remote_options_help() -> String {
    let mut text = String::from("Options:\n  url                  the remote's location\n");
    for (key, help) in cairn_remote::OPTIONS {
        text.push_str(&format!("  {key:<20} {help}\n"));
    }
    text.push_str(
        "\nCredentials come from remote options, then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /\nAWS_SESSION_TOKEN, then the profile (AWS_PROFILE or `profile`) in ~/.aws/credentials.\n\nExample:\n  cairn remote modify --user origin access-key-id AKIA...",
    );
    text
}

/// Which pointers a transfer covers, and how.
#[derive(Args)]
pub struct TransferArgs {
    /// Only these tracked paths (default: all of them).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The remote (default: `core.remote`, or the only one).
    #[arg(short, long)]
    remote: Option<String>,
    /// Also the pointers of this Git revision (repeatable).
    #[arg(long, value_name = "REV")]
    rev: Vec<String>,
    /// Also the pointers at the tip of every local branch.
    #[arg(long, short = 'a')]
    all_branches: bool,
    /// Also the pointers at every tag.
    #[arg(long, short = 'T')]
    all_tags: bool,
    /// Also the pointers of every commit reachable from any branch or tag.
    #[arg(long, short = 'A')]
    all_commits: bool,
    /// Concurrent transfers (default: the remote's `jobs` option, else 8).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    #[command(flatten)]
    output: OutputArgs,
}

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
            check_url(&name, &url)?;
            let parsed = options.iter().map(|o| split_option(o)).collect::<Result<Vec<_>, _>>()?;
            for (key, value) in &parsed {
                cairn_remote::check_option(&name, key, value).map_err(remote_failure)?;
            }
            let mut file = context.config_file(user)?;
            file.add_remote(&name, &url)?;
            for (key, value) in parsed {
                file.set_remote_option(&name, key, Some(value), false)?;
            }
            if default {
                file.set("core.remote", &name)?;
            }
            out(format!("added remote {name} -> {url}{}", if default { " (default)" } else { "" }))
        }
        RemoteCommand::List { output } => {
            let repo = context.open()?;
            let settings = repo.settings();
            #[derive(Serialize)]
            struct RemoteJson<'a> {
                name: &'a str,
                url: &'a str,
                default: bool,
                options: std::collections::BTreeMap<&'a str, &'a str>,
            }
            let default = settings.default_remote.as_deref();
            let list: Vec<RemoteJson> = settings
                .remotes
                .values()
                .map(|spec| RemoteJson {
                    name: &spec.name,
                    url: &spec.url,
                    default: default == Some(spec.name.as_str())
                        || (default.is_none() && settings.remotes.len() == 1),
                    // Never print secrets.
                    options: spec
                        .options
                        .iter()
                        .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
                        .collect(),
                })
                .collect();
            if output.json {
                return json(&list);
            }
            for remote in list {
                out(format!(
                    "{}\t{}{}",
                    remote.name,
                    remote.url,
                    if remote.default { "\t(default)" } else { "" }
                ))?;
            }
            Ok(())
        }
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
        RemoteCommand::Default { name: None, user: _ } => {
            let repo = context.open()?;
            let spec = repo.remote_spec(None)?;
            out(spec.name)
        }
        RemoteCommand::Default { name: Some(name), user } => {
            let repo = context.open()?;
            if !repo.settings().remotes.contains_key(&name) {
                return Err(cairn_repo::RepoError::UnknownRemote {
                    name,
                    known: repo.settings().remotes.keys().cloned().collect(),
                }
                .into());
            }
            let mut file = context.config_file(user)?;
            file.set("core.remote", &name)?;
            out(format!("default remote: {name}"))
        }
        RemoteCommand::Modify { name, key, value, unset, user } => {
            let mut file = context.config_file(user)?;
            if !unset && value.is_none() {
                return Err(Failure::usage("give a VALUE, or --unset"));
            }
            if value.is_some() && !user && is_secret(&key) {
                return Err(Failure::user(
                    format!(
                        "`{key}` is a credential: written to `.cairn/config`, it would be committed to Git"
                    ),
                    Some(&format!(
                        "keep it in your user config: cairn remote modify --user {name} {key} VALUE"
                    )),
                ));
            }
            if let Some(value) = &value {
                if key == "url" {
                    check_url(&name, value)?;
                } else {
                    cairn_remote::check_option(&name, &key, value).map_err(remote_failure)?;
                }
            }
            // The user file may add options (credentials) to a remote the project defines.
            let changed = file.set_remote_option(&name, &key, value.as_deref(), user)?;
            if unset && !changed {
                return Err(Failure::user(format!("`{key}` is not set for remote `{name}`"), None));
            }
            Ok(())
        }
    }
}

fn remote_failure(error: cairn_remote::RemoteError) -> Failure {
    cairn_repo::RepoError::from(error).into()
}

/// The pointers to transfer, plus pipeline outputs: those in `cairn.lock` and, with
/// `runs`, those of the run cache's entries.
fn selection(
    context: &Context,
    repo: &Repo,
    args: &TransferArgs,
    runs: &[(Digest, Vec<(String, Tracked)>)],
) -> Result<Selection, Failure> {
    let mut extra = cairn_app::content::lock_content(repo)?;
    extra.extend(runs.iter().flat_map(|(_, records)| records.iter().cloned()));
    Ok(Selection {
        paths: args.paths.iter().map(|p| context.rel(repo, p)).collect::<Result<_, _>>()?,
        revs: args.rev.clone(),
        all_branches: args.all_branches,
        all_tags: args.all_tags,
        all_commits: args.all_commits,
        extra,
        extra_only: false,
    })
}

#[derive(Serialize)]
struct ProblemJson<'a> {
    path: &'a str,
    digest: String,
    reason: &'a str,
}

fn problems_json(problems: &[TransferProblem]) -> Vec<ProblemJson<'_>> {
    problems
        .iter()
        .map(|p| ProblemJson { path: &p.path, digest: p.digest.to_string(), reason: &p.reason })
        .collect()
}

/// The error for a transfer that left files behind, listing them.
fn incomplete(what: &str, remote: &str, problems: &[TransferProblem], hint: &str) -> Failure {
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
    let repo = ws.repo();
    let runs = if args.paths.is_empty() { cairn_app::content::local_runs(repo) } else { Vec::new() };
    let selection = selection(context, repo, &args, &runs)?;
    let remote = ws.remote(args.remote.as_deref(), args.jobs)?;
    let _claim = remote.claim_push().map_err(cairn_repo::RepoError::from)?;
    let outcome = repo.push(&remote, &selection, reporter)?;
    // Run-cache entries go up only after every object they name did.
    let runs_sent = if outcome.problems.is_empty() {
        let fingerprints: Vec<Digest> = runs.iter().map(|(fp, _)| *fp).collect();
        cairn_app::runcache::push_runs(repo, &remote, &fingerprints)?
    } else {
        0
    };
    let report = &outcome.report;
    if args.output.json {
        json(&serde_json::json!({
            "remote": outcome.remote,
            "objects_sent": report.objects_sent,
            "bytes_sent": report.bytes_sent,
            "objects_skipped": report.objects_skipped,
            "bytes_skipped": report.bytes_skipped,
            "chunks_deduplicated": report.chunks_deduplicated,
            "bytes_deduplicated": report.bytes_deduplicated,
            "packs": report.packs,
            "run_cache_entries_sent": runs_sent,
            "problems": problems_json(&outcome.problems),
        }))?;
    } else {
        if runs_sent > 0 {
            out(format!("pushed {runs_sent} run-cache entr{}", if runs_sent == 1 { "y" } else { "ies" }))?;
        }
        out(format!(
            "pushed {} object(s) to {} ({} sent in {} pack(s)); {} already there ({}); {} chunk(s) deduplicated ({})",
            report.objects_sent,
            outcome.remote,
            human_bytes(report.bytes_sent),
            report.packs,
            report.objects_skipped,
            human_bytes(report.bytes_skipped),
            report.chunks_deduplicated,
            human_bytes(report.bytes_deduplicated),
        ))?;
    }
    if outcome.problems.is_empty() {
        Ok(())
    } else {
        Err(incomplete(
            "push to",
            &outcome.remote,
            &outcome.problems,
            "these files are not in this clone's cache: fetch them from where they were added (`cairn fetch -r OTHER`), or re-add them",
        ))
    }
}

fn fetch_summary(outcome: &cairn_repo::FetchOutcome, json_output: bool) -> Result<(), Failure> {
    let report = &outcome.report;
    let written: u64 = outcome.checkout.iter().map(|c| c.written).sum();
    if json_output {
        return json(&serde_json::json!({
            "remote": outcome.remote,
            "objects_fetched": report.objects_fetched,
            "bytes_fetched": report.bytes_fetched,
            "bytes_transferred": report.bytes_transferred,
            "already_present": report.already_present,
            "files_checked_out": written,
            "problems": problems_json(&outcome.problems),
        }));
    }
    out(format!(
        "fetched {} object(s) from {} ({}, {} transferred); {} already in the cache",
        report.objects_fetched,
        outcome.remote,
        human_bytes(report.bytes_fetched),
        human_bytes(report.bytes_transferred),
        report.already_present
    ))?;
    if !outcome.checkout.is_empty() {
        out(format!("checked out {written} file(s)"))?;
    }
    Ok(())
}

const FETCH_HINT: &str = "push these files from a clone that has them, or check that you are fetching from the right remote (`cairn remote list`); damaged data was not stored";

pub fn fetch(context: &Context, args: TransferArgs, reporter: &Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let repo = ws.repo();
    let selection = selection(context, repo, &args, &[])?;
    let listed = selection.extra.len();
    let remote = ws.remote(args.remote.as_deref(), args.jobs)?;
    let mut outcome = repo.fetch(&remote, &selection, reporter)?;
    cairn_app::runcache::fetch_runs(repo, &remote)?;
    if args.paths.is_empty() {
        fetch_parts(repo, &remote, listed, &mut outcome, reporter)?;
    }
    fetch_summary(&outcome, args.output.json)?;
    if outcome.problems.is_empty() {
        Ok(())
    } else {
        Err(incomplete("fetch from", &outcome.remote, &outcome.problems, FETCH_HINT))
    }
}

#[derive(Args)]
pub struct PullArgs {
    /// Only these tracked paths (default: all of them).
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// The remote (default: `core.remote`, or the only one).
    #[arg(short, long)]
    remote: Option<String>,
    /// Concurrent transfers.
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Overwrite work-tree changes that are not in the cache.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// A datum or partitioned stage names its parts in a parts list, a cache object: a clone
/// learns which files the parts have only once the first transfer brought the list. When
/// the lock now names more than the `listed` it named before, fetches those too.
fn fetch_parts(
    repo: &Repo,
    remote: &cairn_remote::Remote,
    listed: usize,
    outcome: &mut cairn_repo::FetchOutcome,
    reporter: &Progress,
) -> Result<(), Failure> {
    let extra = cairn_app::content::lock_content(repo)?;
    if extra.len() <= listed {
        return Ok(());
    }
    let selection = Selection { extra, extra_only: true, ..Default::default() };
    let more = repo.fetch(remote, &selection, reporter)?;
    let (report, added) = (&mut outcome.report, &more.report);
    report.objects_fetched += added.objects_fetched;
    report.bytes_fetched += added.bytes_fetched;
    report.bytes_transferred += added.bytes_transferred;
    // Objects the first round fetched are "already present" now: not counted twice.
    report.missing.extend(added.missing.iter().copied());
    report.corrupt.extend(added.corrupt.iter().cloned());
    outcome.problems.extend(more.problems);
    Ok(())
}

pub fn pull(context: &Context, args: PullArgs, reporter: &Progress) -> Result<(), Failure> {
    let ws = context.workspace()?;
    let repo = ws.repo();
    let paths: Vec<Vec<u8>> = args.paths.iter().map(|p| context.rel(repo, p)).collect::<Result<_, _>>()?;
    let remote = ws.remote(args.remote.as_deref(), args.jobs)?;
    let _lock = repo.lock(reporter)?;
    let extra = if paths.is_empty() { cairn_app::content::lock_content(repo)? } else { Vec::new() };
    let listed = extra.len();
    let mut outcome = repo.pull(&remote, &paths, extra, args.force, reporter)?;
    cairn_app::runcache::fetch_runs(repo, &remote)?;
    if paths.is_empty() {
        fetch_parts(repo, &remote, listed, &mut outcome, reporter)?;
        cairn_app::content::checkout_outputs(repo, args.force, reporter)?;
    }
    fetch_summary(&outcome, args.output.json)?;
    if outcome.problems.is_empty() {
        Ok(())
    } else {
        Err(incomplete("pull from", &outcome.remote, &outcome.problems, FETCH_HINT))
    }
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
    let repo = ws.repo();
    let remote = ws.remote(remote, None)?;
    // Deleting while another clone pushes could remove what its index is about to name.
    let _claim = if force { Some(remote.claim_gc().map_err(cairn_repo::RepoError::from)?) } else { None };
    // Outputs of every run-cache entry on the remote stay, so other clones can restore them.
    cairn_app::runcache::fetch_runs(repo, &remote)?;
    let kept = cairn_app::content::kept_content(&ws)?;
    let extra =
        kept.into_iter().map(|(label, pointer)| (label, Tracked { rel: Vec::new(), pointer })).collect();
    let cairn_repo::CloudGc { report, unknown } =
        repo.gc_cloud(&remote, all_commits, force, extra, reporter)?;
    if !unknown.is_empty() {
        crate::output::warn(&format!(
            "{} need{} data that neither this cache nor `{}` has, so `--force` will refuse to delete anything until \
             it is pushed from a clone that has it (`cairn push --all-branches --all-tags`) or the branch or tag is deleted",
            unknown.join(", "),
            if unknown.len() == 1 { "s" } else { "" },
            remote.name()
        ));
    }
    if output.json {
        return json(&serde_json::json!({
            "unknown": unknown,
            "remote": remote.name(),
            "packs": report.packs,
            "packs_deleted": report.packs_deleted,
            "packs_rewritten": report.packs_rewritten,
            "objects_kept": report.objects_kept,
            "objects_removed": report.objects_removed,
            "bytes_freed": report.bytes_freed,
            "deleted": report.deleted,
        }));
    }
    let summary = format!(
        "{} object(s) in {} pack(s) deleted, {} pack(s) rewritten, {} freed; {} object(s) kept",
        report.objects_removed,
        report.packs_deleted,
        report.packs_rewritten,
        human_bytes(report.bytes_freed),
        report.objects_kept
    );
    if report.deleted {
        out(format!("{}: {summary}", remote.name()))
    } else if report.objects_removed == 0 && report.packs_deleted == 0 {
        out(format!("{}: nothing to remove; {} object(s) are referenced", remote.name(), report.objects_kept))
    } else {
        out(format!(
            "{}: would be {summary}\nrun `cairn gc --cloud -r {} --force{}` to delete them",
            remote.name(),
            remote.name(),
            if all_commits { " --all-commits" } else { "" }
        ))
    }
}
