//! `push`, `fetch`, `pull` and `gc --cloud`: which objects a selection of pointers needs, and
//! moving them through a [`cairn_remote::Remote`].

use std::collections::{HashMap, HashSet};

use cairn_hash::Digest;
use cairn_remote::{AwsEnvironment, FetchReport, PushReport, Remote, RemoteIndex, RemoteSpec};

use crate::pointer::{POINTER_SUFFIX, Pointer};
use crate::{CheckoutOutcome, Repo, RepoError, Reporter, Result, Tracked, display_bytes, is_under, join_rel};

/// Which pointers a transfer covers: the work tree's (optionally only some paths), plus
/// those of Git revisions.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Repository-relative paths; empty means every tracked path.
    pub paths: Vec<Vec<u8>>,
    /// Git revisions whose pointers are included too.
    pub revs: Vec<String>,
    /// Include the tip of every local branch.
    pub all_branches: bool,
    /// Include the tip of every tag.
    pub all_tags: bool,
    /// Include every commit reachable from any branch, tag or HEAD.
    pub all_commits: bool,
    /// More content to include, with a label for messages: pipeline outputs recorded in
    /// `cairn.lock` and in the run cache.
    pub extra: Vec<(String, Tracked)>,
    /// Only `extra`: no work-tree pointers.
    pub extra_only: bool,
}

/// A file or directory whose data could not be transferred, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferProblem {
    /// `path` (work tree) or `path@rev`, and for files in a directory `dir/file`.
    pub path: String,
    pub digest: Digest,
    pub reason: String,
}

#[derive(Clone, Debug)]
pub struct PushOutcome {
    pub remote: String,
    pub report: PushReport,
    /// Objects the selection needs that the local cache does not have.
    pub problems: Vec<TransferProblem>,
}

#[derive(Clone, Debug)]
pub struct FetchOutcome {
    pub remote: String,
    pub report: FetchReport,
    /// Files the remote lacks or holds damaged; they were not stored.
    pub problems: Vec<TransferProblem>,
    /// With `pull`: what checkout did for the paths whose data is complete.
    pub checkout: Vec<CheckoutOutcome>,
}

/// An object and the path (for messages) that needs it.
type Labeled = (Digest, String);

/// What `gc --cloud` did, or would do.
#[derive(Debug)]
pub struct CloudGc {
    pub report: cairn_remote::CloudGcReport,
    /// Versions (`path@commit`) whose directory listing is on neither side, so the objects
    /// they need are unknown: a dry run reports them, and `force` refuses to delete anything.
    pub unknown: Vec<String>,
}

/// The objects a selection needs, once the manifests the cache lacked were fetched.
struct Needed {
    objects: Vec<Labeled>,
    /// Sources whose directory manifest is on neither side.
    unknown: Vec<usize>,
    /// What fetching the manifests did.
    manifests: FetchReport,
    /// The manifests that fetch was asked for.
    fetched: HashSet<Digest>,
}

/// One pointer of the selection.
struct Source {
    label: String,
    rel: Vec<u8>,
    pointer: Pointer,
}

impl Repo {
    /// The remote `name`, or the default one (`core.remote`, or the only one configured).
    pub fn remote_spec(&self, name: Option<&str>) -> Result<RemoteSpec> {
        let remotes = &self.settings.remotes;
        let name = match name {
            Some(name) => name.to_owned(),
            None => match (&self.settings.default_remote, remotes.len()) {
                (Some(name), _) => name.clone(),
                (None, 1) => remotes.keys().next().expect("one remote").clone(),
                (None, 0) => return Err(RepoError::NoRemote),
                (None, _) => {
                    return Err(RepoError::NoDefaultRemote { names: remotes.keys().cloned().collect() });
                }
            },
        };
        let mut spec = remotes.get(&name).cloned().ok_or_else(|| RepoError::UnknownRemote {
            name: name.clone(),
            known: remotes.keys().cloned().collect(),
        })?;
        if spec.url.is_empty() {
            return Err(RepoError::Config(crate::config::ConfigError::BadRemote {
                name,
                path: self.project_config_path(),
                reason: "it has no `url`".into(),
            }));
        }
        // A relative directory is relative to the repository root, wherever Cairn runs.
        if !spec.url.contains("://") && !std::path::Path::new(&spec.url).is_absolute() {
            spec.url = self.root.join(&spec.url).display().to_string();
        }
        Ok(spec)
    }

    /// Opens a remote (see [`Repo::remote_spec`]). Its index copy lives in
    /// `.cairn/state/remotes-v1/<hash of its URL>/`, so renaming a remote keeps it and
    /// pointing a name at another URL does not confuse two remotes.
    pub fn open_remote(
        &self,
        name: Option<&str>,
        aws: &AwsEnvironment,
        jobs: Option<usize>,
    ) -> Result<Remote> {
        let spec = self.remote_spec(name)?;
        let key = cairn_hash::hash_bytes(spec.url.as_bytes()).hex();
        let state = self.state_path("remotes-v1").join(&key[..16]);
        let mut remote = Remote::open(&spec, aws, &state)?;
        if let Some(jobs) = jobs {
            remote.set_jobs(jobs);
        }
        Ok(remote)
    }

    fn selected(&self, selection: &Selection) -> Result<Vec<Source>> {
        let mut sources = Vec::new();
        let wanted = |rel: &[u8]| {
            selection.paths.is_empty() || selection.paths.iter().any(|p| is_under(rel, p) || is_under(p, rel))
        };
        let work_tree = if selection.extra_only { Vec::new() } else { self.tracked(None)? };
        for tracked in work_tree {
            if wanted(&tracked.rel) {
                sources.push(Source {
                    label: display_bytes(&tracked.rel),
                    rel: tracked.rel,
                    pointer: tracked.pointer,
                });
            }
        }
        for (label, tracked) in &selection.extra {
            if wanted(&tracked.rel) {
                sources.push(Source {
                    label: label.clone(),
                    rel: tracked.rel.clone(),
                    pointer: tracked.pointer.clone(),
                });
            }
        }
        if let Some(missing) = selection
            .paths
            .iter()
            .find(|p| !sources.iter().any(|s| is_under(p, &s.rel) || is_under(&s.rel, p)))
        {
            // A named path must be tracked in the work tree (the common case), or at a named revision.
            if selection.revs.is_empty()
                && !selection.all_branches
                && !selection.all_tags
                && !selection.all_commits
            {
                return Err(RepoError::NotTracked { path: self.abs(missing) });
            }
        }
        let mut revs = selection.revs.clone();
        if selection.all_branches || selection.all_tags {
            revs.extend(self.git().ref_tips(selection.all_branches, selection.all_tags)?);
        }
        let mut files = Vec::new();
        for rev in &revs {
            let short: String = rev.chars().take(12).collect();
            files.extend(
                self.git()
                    .files_with_suffix(rev, POINTER_SUFFIX.as_bytes())?
                    .into_iter()
                    .map(|f| (short.clone(), f)),
            );
        }
        if selection.all_commits {
            files.extend(
                self.git()
                    .files_with_suffix_all_commits(POINTER_SUFFIX.as_bytes())?
                    .into_iter()
                    .map(|f| ("history".to_owned(), f)),
            );
        }
        for (rev, file) in files {
            let rel = file.path[..file.path.len() - POINTER_SUFFIX.len()].to_vec();
            if !wanted(&rel) {
                continue;
            }
            let label = format!("{}@{rev}", display_bytes(&rel));
            let pointer = crate::parse_pointer_bytes(std::path::Path::new(&label), &file.content)?;
            sources.push(Source { label, rel, pointer });
        }
        // The same pointer content at several revisions needs its objects once.
        let mut seen = HashSet::new();
        sources.retain(|s| seen.insert((s.rel.clone(), s.pointer.digest)));
        Ok(sources)
    }

    /// Every object the sources need: pointer digests, and for directories the manifest's
    /// files. Returns the objects with a label for each, and the directories whose manifest
    /// is not in the cache.
    fn needed<'a>(
        &self,
        sources: impl IntoIterator<Item = &'a Source>,
    ) -> Result<(Vec<Labeled>, Vec<usize>)> {
        let mut objects = Vec::new();
        let mut unknown = Vec::new();
        for (i, source) in sources.into_iter().enumerate() {
            objects.push((source.pointer.digest, source.label.clone()));
            if !source.pointer.is_directory() {
                continue;
            }
            let path = self.pointer_path(&source.rel);
            match self.expected_files(&path, &source.pointer) {
                Ok(entries) => {
                    for entry in entries {
                        objects.push((entry.digest, display_bytes(&join_rel(&source.rel, &entry.path))));
                    }
                }
                Err(RepoError::MissingObjects { .. }) => unknown.push(i),
                Err(other) => return Err(other),
            }
        }
        Ok((objects, unknown))
    }

    /// [`Repo::needed`], first fetching the directory manifests the cache lacks (they say which
    /// files the directories hold). Returns the objects, the sources whose manifest is still
    /// unknown (not on the remote either), and what fetching the manifests did.
    fn needed_fetching_manifests(
        &self,
        remote: &Remote,
        index: &RemoteIndex,
        sources: &[Source],
        reporter: &dyn Reporter,
    ) -> Result<Needed> {
        self.store.set_packing(self.packs_fetched_objects());
        let (mut objects, unknown) = self.needed(sources)?;
        if unknown.is_empty() {
            return Ok(Needed {
                objects,
                unknown,
                manifests: FetchReport::default(),
                fetched: HashSet::new(),
            });
        }
        let manifests: Vec<Digest> = unknown.iter().map(|&i| sources[i].pointer.digest).collect();
        let report = remote.fetch(index, &self.store, &manifests, reporter)?;
        let (more, still) = self.needed(unknown.iter().map(|&i| &sources[i]))?;
        // The manifests themselves are already in `objects`.
        let fetched: HashSet<Digest> = manifests.into_iter().collect();
        objects.extend(more.into_iter().filter(|(d, _)| !fetched.contains(d)));
        let unknown = still.into_iter().map(|j| unknown[j]).collect();
        Ok(Needed { objects, unknown, manifests: report, fetched })
    }

    /// Whether fetched small objects go into local packs. A pack holds no file per object, so
    /// where the work tree shares objects (hard or symbolic links, or reflinks where they
    /// work) the objects are written loose instead, as checkout would need them anyway.
    fn packs_fetched_objects(&self) -> bool {
        use cairn_store::LinkKind;
        let kinds = self.settings.link.kinds();
        match kinds.first() {
            Some(LinkKind::Hardlink | LinkKind::Symlink) => false,
            Some(LinkKind::Reflink) => !self.store.reflinks_work(),
            _ => true,
        }
    }

    /// Uploads the objects of the selected pointers that the remote lacks.
    pub fn push(
        &self,
        remote: &Remote,
        selection: &Selection,
        reporter: &dyn Reporter,
    ) -> Result<PushOutcome> {
        let sources = self.selected(selection)?;
        let (objects, unknown) = self.needed(&sources)?;
        let index = remote.index()?;
        let digests: Vec<Digest> = objects.iter().map(|(d, _)| *d).collect();
        let report = remote.push(&index, &self.store, &digests, reporter)?;
        let missing: HashSet<Digest> = report.missing_locally.iter().copied().collect();
        let mut problems = problems_for(&objects, &missing, "not in the local cache");
        for i in unknown {
            let source = &sources[i];
            if !index.contains(&source.pointer.digest) {
                problems.push(TransferProblem {
                    path: source.label.clone(),
                    digest: source.pointer.digest,
                    reason: "its directory manifest is not in the local cache, so its files are unknown"
                        .into(),
                });
            }
        }
        Ok(PushOutcome { remote: remote.name().to_owned(), report, problems })
    }

    /// Downloads the objects of the selected pointers that the cache lacks.
    pub fn fetch(
        &self,
        remote: &Remote,
        selection: &Selection,
        reporter: &dyn Reporter,
    ) -> Result<FetchOutcome> {
        let sources = self.selected(selection)?;
        self.fetch_sources(remote, &sources, reporter)
    }

    fn fetch_sources(
        &self,
        remote: &Remote,
        sources: &[Source],
        reporter: &dyn Reporter,
    ) -> Result<FetchOutcome> {
        let index = remote.index()?;
        let Needed { objects, unknown: still_unknown, manifests: mut report, fetched } =
            self.needed_fetching_manifests(remote, &index, sources, reporter)?;
        let digests: Vec<Digest> = objects.iter().map(|(d, _)| *d).filter(|d| !fetched.contains(d)).collect();
        let files = remote.fetch(&index, &self.store, &digests, reporter)?;
        merge(&mut report, files);
        let missing: HashSet<Digest> = report.missing.iter().copied().collect();
        let mut problems = problems_for(&objects, &missing, "not on the remote");
        let corrupt: HashMap<Digest, &String> =
            report.corrupt.iter().map(|(d, reason)| (*d, reason)).collect();
        for (digest, label) in &objects {
            if let Some(reason) = corrupt.get(digest) {
                problems.push(TransferProblem {
                    path: label.clone(),
                    digest: *digest,
                    reason: format!("damaged on the remote: {reason}"),
                });
            }
        }
        for i in still_unknown {
            let source = &sources[i];
            if !problems.iter().any(|p| p.digest == source.pointer.digest) {
                problems.push(TransferProblem {
                    path: source.label.clone(),
                    digest: source.pointer.digest,
                    reason: "its directory manifest is not on the remote".into(),
                });
            }
        }
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        problems.dedup();
        Ok(FetchOutcome { remote: remote.name().to_owned(), report, problems, checkout: Vec::new() })
    }

    /// `fetch` for the work tree's pointers (the caller holds the repository lock), then `checkout` of every path whose data is now
    /// complete. Paths with missing or damaged data are left as they are and reported.
    /// `extra` is fetched too (pipeline outputs), but checking it out is the caller's.
    pub fn pull(
        &self,
        remote: &Remote,
        paths: &[Vec<u8>],
        extra: Vec<(String, Tracked)>,
        force: bool,
        reporter: &dyn Reporter,
    ) -> Result<FetchOutcome> {
        let selection = Selection { paths: paths.to_vec(), extra, ..Default::default() };
        let sources = self.selected(&selection)?;
        let mut outcome = self.fetch_sources(remote, &sources, reporter)?;
        let failed = |rel: &[u8]| {
            let label = display_bytes(rel);
            outcome.problems.iter().any(|p| p.path == label || p.path.starts_with(&format!("{label}/")))
        };
        let pointers: Vec<&Source> =
            sources.iter().filter(|s| self.read_pointer(&s.rel).ok().flatten().is_some()).collect();
        let complete: Vec<&Source> = pointers.iter().copied().filter(|s| !failed(&s.rel)).collect();
        let mut checkout = Vec::new();
        if complete.len() == pointers.len() && paths.is_empty() {
            checkout = self.checkout(None, force, reporter)?;
        } else {
            let scopes: Vec<Vec<u8>> = if paths.is_empty() {
                complete.iter().map(|s| s.rel.clone()).collect()
            } else {
                paths
                    .iter()
                    .filter(|p| complete.iter().any(|s| is_under(p, &s.rel) || is_under(&s.rel, p)))
                    .cloned()
                    .collect()
            };
            for scope in scopes {
                checkout.extend(self.checkout(Some(&scope), force, reporter)?);
            }
        }
        outcome.checkout = checkout;
        Ok(outcome)
    }

    /// Objects referenced by the work tree, the tips of all branches and tags, and (with
    /// `all_commits`) every commit; then (with `force`) removes everything else from the
    /// remote. Manifests missing locally are fetched first so their files count as live.
    /// `extra` is kept too (pipeline outputs: the lock's and the run cache's).
    pub fn gc_cloud(
        &self,
        remote: &Remote,
        all_commits: bool,
        force: bool,
        extra: Vec<(String, Tracked)>,
        reporter: &dyn Reporter,
    ) -> Result<CloudGc> {
        let selection =
            Selection { all_branches: true, all_tags: true, all_commits, extra, ..Default::default() };
        let mut sources = self.selected(&selection)?;
        let head = self.git().head()?;
        if let Some(head) = head {
            let files = self.git().files_with_suffix(&head, POINTER_SUFFIX.as_bytes())?;
            for file in files {
                let rel = file.path[..file.path.len() - POINTER_SUFFIX.len()].to_vec();
                let label = format!("{}@HEAD", display_bytes(&rel));
                let pointer = crate::parse_pointer_bytes(std::path::Path::new(&label), &file.content)?;
                sources.push(Source { label, rel, pointer });
            }
        }
        let index = remote.index()?;
        let Needed { objects, unknown, .. } =
            self.needed_fetching_manifests(remote, &index, &sources, reporter)?;
        let unknown: Vec<String> = unknown.iter().map(|&i| sources[i].label.clone()).collect();
        if force && !unknown.is_empty() {
            // Deleting anything now could delete files of those directories.
            return Err(RepoError::UnknownListings { remote: remote.name().to_owned(), versions: unknown });
        }
        let live: HashSet<Digest> = objects.into_iter().map(|(d, _)| d).collect();
        let report = remote.gc(&index, &live, force, reporter)?;
        Ok(CloudGc { report, unknown })
    }
}

fn merge(into: &mut FetchReport, other: FetchReport) {
    into.objects_fetched += other.objects_fetched;
    into.bytes_fetched += other.bytes_fetched;
    into.bytes_transferred += other.bytes_transferred;
    into.already_present += other.already_present;
    into.missing.extend(other.missing);
    into.corrupt.extend(other.corrupt);
    into.missing.sort();
    into.missing.dedup();
}

fn problems_for(
    objects: &[(Digest, String)],
    digests: &HashSet<Digest>,
    reason: &str,
) -> Vec<TransferProblem> {
    if digests.is_empty() {
        return Vec::new();
    }
    objects
        .iter()
        .filter(|(d, _)| digests.contains(d))
        .map(|(digest, label)| TransferProblem {
            path: label.clone(),
            digest: *digest,
            reason: reason.to_owned(),
        })
        .collect()
}
