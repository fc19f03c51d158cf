//! Moving data between the cache and a remote: `push`, `fetch`, `pull` and `gc --cloud`, with
//! everything pipelines add to what a transfer covers (`cairn.lock`'s outputs and parts, the
//! run cache's entries) and everything garbage collection on a remote must keep.

use cairn_hash::Digest;
use cairn_remote::Remote;
use cairn_repo::{FetchOutcome, Reporter, Selection, Tracked, TransferProblem};
use serde::Serialize;

use crate::content::{Labelled, kept_content, local_runs, lock_content};
use crate::runcache::{fetch_runs, push_runs};
use crate::{Result, Workspace};

/// Which pointers a transfer covers (beyond what pipelines add).
#[derive(Debug, Default, Clone)]
pub struct Scope {
    /// Only these tracked paths (repository-relative); empty: all of them.
    pub paths: Vec<Vec<u8>>,
    /// Also the pointers of these Git revisions.
    pub revs: Vec<String>,
    pub all_branches: bool,
    pub all_tags: bool,
    pub all_commits: bool,
}

/// A file a transfer could not move.
#[derive(Debug, Serialize)]
pub struct Problem {
    pub path: String,
    pub digest: String,
    pub reason: String,
}

fn problems(list: &[TransferProblem]) -> Vec<Problem> {
    list.iter()
        .map(|p| Problem { path: p.path.clone(), digest: p.digest.to_string(), reason: p.reason.clone() })
        .collect()
}

/// What `push` sent (`--json`).
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub remote: String,
    pub objects_sent: u64,
    pub bytes_sent: u64,
    pub objects_skipped: u64,
    pub bytes_skipped: u64,
    pub chunks_deduplicated: u64,
    pub bytes_deduplicated: u64,
    pub packs: u64,
    pub run_cache_entries_sent: usize,
    /// Files that could not be sent (the push is incomplete when there are any).
    pub problems: Vec<Problem>,
}

fn selection(repo: &cairn_repo::Repo, scope: Scope, runs: &[(Digest, Vec<Labelled>)]) -> Result<Selection> {
    let mut extra = lock_content(repo)?;
    extra.extend(runs.iter().flat_map(|(_, records)| records.iter().cloned()));
    Ok(Selection {
        paths: scope.paths,
        revs: scope.revs,
        all_branches: scope.all_branches,
        all_tags: scope.all_tags,
        all_commits: scope.all_commits,
        extra,
        extra_only: false,
    })
}

/// `push`: the pointers in `scope`, `cairn.lock`'s outputs and (without paths) the run
/// cache's complete entries. Run-cache entries go up only after every object they name did.
pub fn push(
    ws: &Workspace,
    remote: Option<&str>,
    jobs: Option<usize>,
    scope: Scope,
    reporter: &dyn Reporter,
) -> Result<Pushed> {
    let repo = ws.repo();
    let runs = if scope.paths.is_empty() { local_runs(repo) } else { Vec::new() };
    let selection = selection(repo, scope, &runs)?;
    let remote = ws.remote(remote, jobs)?;
    let _claim = remote.claim_push()?;
    let outcome = repo.push(&remote, &selection, reporter)?;
    let run_cache_entries_sent = if outcome.problems.is_empty() {
        let fingerprints: Vec<Digest> = runs.iter().map(|(fp, _)| *fp).collect();
        push_runs(repo, &remote, &fingerprints)?
    } else {
        0
    };
    let report = &outcome.report;
    Ok(Pushed {
        objects_sent: report.objects_sent,
        bytes_sent: report.bytes_sent,
        objects_skipped: report.objects_skipped,
        bytes_skipped: report.bytes_skipped,
        chunks_deduplicated: report.chunks_deduplicated,
        bytes_deduplicated: report.bytes_deduplicated,
        packs: report.packs,
        run_cache_entries_sent,
        problems: problems(&outcome.problems),
        remote: outcome.remote,
    })
}

/// What `fetch` or `pull` brought (`--json`).
#[derive(Debug, Serialize)]
pub struct Fetched {
    pub remote: String,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
    pub bytes_transferred: u64,
    pub already_present: u64,
    /// Files written into the work tree (`pull`).
    pub files_checked_out: u64,
    /// Files that could not be fetched (the fetch is incomplete when there are any).
    pub problems: Vec<Problem>,
    /// Whether anything was checked out (`pull`).
    #[serde(skip)]
    pub checked_out: bool,
}

impl From<FetchOutcome> for Fetched {
    fn from(outcome: FetchOutcome) -> Self {
        let report = &outcome.report;
        Fetched {
            objects_fetched: report.objects_fetched,
            bytes_fetched: report.bytes_fetched,
            bytes_transferred: report.bytes_transferred,
            already_present: report.already_present,
            files_checked_out: outcome.checkout.iter().map(|c| c.written).sum(),
            checked_out: !outcome.checkout.is_empty(),
            problems: problems(&outcome.problems),
            remote: outcome.remote,
        }
    }
}

/// A datum or partitioned stage names its parts in a parts list, a cache object: a clone
/// learns which files the parts have only once the first transfer brought the list. When
/// the lock now names more than the `listed` it named before, fetches those too.
fn fetch_parts(
    repo: &cairn_repo::Repo,
    remote: &Remote,
    listed: usize,
    outcome: &mut FetchOutcome,
    reporter: &dyn Reporter,
) -> Result<()> {
    let extra = lock_content(repo)?;
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

/// `fetch`: the objects of the pointers in `scope` and of `cairn.lock`'s outputs (and their
/// parts), and the remote's run-cache entries.
pub fn fetch(
    ws: &Workspace,
    remote: Option<&str>,
    jobs: Option<usize>,
    scope: Scope,
    reporter: &dyn Reporter,
) -> Result<Fetched> {
    let repo = ws.repo();
    let whole = scope.paths.is_empty();
    let selection = selection(repo, scope, &[])?;
    let listed = selection.extra.len();
    let remote = ws.remote(remote, jobs)?;
    let mut outcome = repo.fetch(&remote, &selection, reporter)?;
    fetch_runs(repo, &remote)?;
    if whole {
        fetch_parts(repo, &remote, listed, &mut outcome, reporter)?;
    }
    Ok(outcome.into())
}

/// `pull`: fetch, then check out the data (and, without paths, the pipeline's outputs). A
/// work-tree change that is not in the cache is overwritten only with `force`. The caller
/// holds the repository lock.
pub fn pull(
    ws: &Workspace,
    remote: Option<&str>,
    jobs: Option<usize>,
    paths: Vec<Vec<u8>>,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<Fetched> {
    let repo = ws.repo();
    let remote = ws.remote(remote, jobs)?;
    let whole = paths.is_empty();
    let extra = if whole { lock_content(repo)? } else { Vec::new() };
    let listed = extra.len();
    let mut outcome = repo.pull(&remote, &paths, extra, force, reporter)?;
    fetch_runs(repo, &remote)?;
    if whole {
        fetch_parts(repo, &remote, listed, &mut outcome, reporter)?;
        crate::content::checkout_outputs(repo, force, reporter)?;
    }
    Ok(outcome.into())
}

/// What `gc --cloud` did or would do (`--json`).
#[derive(Debug, Serialize)]
pub struct CloudCollected {
    /// Versions (`path@commit`) whose data neither side has: with any, nothing is deleted.
    pub unknown: Vec<String>,
    pub remote: String,
    pub packs: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub objects_kept: u64,
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub deleted: bool,
}

/// `gc --cloud`: removes (with `force`) what nothing on any branch or tag (every commit, with
/// `all_commits`), no pipeline, run, experiment or registered model needs from the remote.
/// The outputs of every run-cache entry on the remote stay, so other clones can restore them.
pub fn gc_cloud(
    ws: &Workspace,
    remote: Option<&str>,
    all_commits: bool,
    force: bool,
    reporter: &dyn Reporter,
) -> Result<CloudCollected> {
    let repo = ws.repo();
    let remote = ws.remote(remote, None)?;
    // Deleting while another clone pushes could remove what its index is about to name.
    let _claim = if force { Some(remote.claim_gc()?) } else { None };
    fetch_runs(repo, &remote)?;
    let extra = kept_content(ws)?
        .into_iter()
        .map(|(label, pointer)| (label, Tracked { rel: Vec::new(), pointer }))
        .collect();
    let cairn_repo::CloudGc { report, unknown } =
        repo.gc_cloud(&remote, all_commits, force, extra, reporter)?;
    Ok(CloudCollected {
        unknown,
        remote: remote.name().to_owned(),
        packs: report.packs,
        packs_deleted: report.packs_deleted,
        packs_rewritten: report.packs_rewritten,
        objects_kept: report.objects_kept,
        objects_removed: report.objects_removed,
        bytes_freed: report.bytes_freed,
        deleted: report.deleted,
    })
}

/// Whether a remote option's value is a credential: never shown, never written to the
/// project's config.
pub fn is_secret(key: &str) -> bool {
    ["secret", "token", "password"].iter().any(|word| key.contains(word))
}

/// A configured remote (`remote list --json`), credentials masked.
#[derive(Debug, Serialize)]
pub struct RemoteSummary {
    pub name: String,
    pub url: String,
    /// The one transfers use without `-r`.
    pub default: bool,
    /// Its options; a credential's value is `***`.
    pub options: std::collections::BTreeMap<String, String>,
}

/// The remotes the project and user configs define.
pub fn remotes(repo: &cairn_repo::Repo) -> Vec<RemoteSummary> {
    let settings = repo.settings();
    let default = settings.default_remote.as_deref();
    settings
        .remotes
        .values()
        .map(|spec| RemoteSummary {
            name: spec.name.clone(),
            url: spec.url.clone(),
            default: default == Some(spec.name.as_str())
                || (default.is_none() && settings.remotes.len() == 1),
            options: spec
                .options
                .iter()
                .map(|(k, v)| (k.clone(), if is_secret(k) { "***".to_owned() } else { v.clone() }))
                .collect(),
        })
        .collect()
}
