//! The run cache on remotes: entries (`runs-v1/<fingerprint>`, small documents) travel
//! separately from the objects they name, always after them, so a clone that sees an entry
//! can fetch its outputs.

use std::collections::HashSet;

use cairn_hash::Digest;
use cairn_pipeline::Observer;
use cairn_pipeline::runcache::{RUNS_DIR, RunCache};
use cairn_remote::Remote;
use cairn_repo::{NoReporter, Repo, Selection, Tracked};

use crate::{Result, Workspace};

/// Uploads the run-cache entries the remote lacks (after their objects were pushed);
/// returns how many went up.
pub fn push_runs(repo: &Repo, remote: &Remote, runs: &[Digest]) -> Result<usize> {
    if runs.is_empty() {
        return Ok(0);
    }
    let there: HashSet<String> = remote.list_documents(RUNS_DIR)?.into_iter().collect();
    let cache = RunCache::new(repo.store().root());
    let documents: Vec<(String, Vec<u8>)> = runs
        .iter()
        .map(RunCache::key)
        .filter(|key| !there.contains(key))
        .filter_map(|key| {
            let fp = RunCache::fingerprint_of(&key)?;
            cache.read_raw(&fp).map(|bytes| (key, bytes))
        })
        .collect();
    let count = documents.len();
    remote.put_documents(RUNS_DIR, documents)?;
    Ok(count)
}

/// Downloads the run-cache entries this clone lacks (small: outputs stay on the remote
/// until a run needs them); returns how many were stored.
pub fn fetch_runs(repo: &Repo, remote: &Remote) -> Result<usize> {
    let cache = RunCache::new(repo.store().root());
    let local: HashSet<String> = cache.list().iter().map(RunCache::key).collect();
    let wanted: Vec<String> =
        remote.list_documents(RUNS_DIR)?.into_iter().filter(|k| !local.contains(k)).collect();
    let mut stored = 0;
    for (key, bytes) in remote.get_documents(RUNS_DIR, &wanted)? {
        let Some(fp) = RunCache::fingerprint_of(&key) else { continue };
        if cache.put_raw(&fp, &bytes)? {
            stored += 1;
        }
    }
    Ok(stored)
}

/// The default remote as a pipeline's source of run-cache entries and outputs this clone
/// lacks. Every failure is a warning: the stage then runs instead.
pub struct RemoteSource<'a> {
    pub workspace: &'a Workspace,
    pub observer: &'a dyn Observer,
}

impl RemoteSource<'_> {
    fn remote(&self) -> Option<Remote> {
        match self.workspace.remote(None, None) {
            Ok(remote) => Some(remote),
            Err(e) => {
                self.observer.warn(&format!("cannot use the default remote for the run cache: {e}"));
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
                (label.clone(), Tracked { rel: label.as_bytes().to_vec(), pointer: pointer.clone() })
            })
            .collect();
        let selection = Selection { extra, extra_only: true, ..Default::default() };
        match self.workspace.repo().fetch(&remote, &selection, &NoReporter) {
            Ok(outcome) => outcome.problems.is_empty(),
            Err(e) => {
                self.observer.warn(&format!("could not fetch run-cache outputs: {e}"));
                false
            }
        }
    }

    fn refresh_runs(&self) -> bool {
        let Some(remote) = self.remote() else { return false };
        match fetch_runs(self.workspace.repo(), &remote) {
            Ok(_) => true,
            Err(e) => {
                self.observer.warn(&format!("could not read the remote's run cache: {e}"));
                false
            }
        }
    }
}
