//! Read-only views: `status`, `diff`, `ls`, `cat`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

use cairn_hash::hash_reader;
use cairn_store::StoreError;

use super::*;
use crate::pointer::{POINTER_SUFFIX, Pointer};
use crate::{Repo, RepoError, Reporter, Result, Tracked, is_under, join_rel, now_ns};

impl Repo {
    /// Tracked data that differs from its pointer.
    pub fn status(&self, scope: Option<&[u8]>, reporter: &dyn Reporter) -> Result<Vec<TrackedStatus>> {
        let hashed_at = now_ns();
        let (mut cache, tracked) = self.install(|| rayon::join(|| self.stat_cache(), || self.tracked(scope)));
        let mut out = Vec::new();
        let tracked = tracked?;
        if let Some(scope) = scope
            && tracked.is_empty()
        {
            return Err(RepoError::NotTracked { path: self.abs(scope) });
        }
        for tracked in tracked {
            let (expected, Current { files: current, recorded, .. }) =
                match self.expected_and_current(&tracked, &cache, reporter) {
                    Err(RepoError::MissingObjects { .. }) => {
                        let missing = fs::symlink_metadata(self.abs(&tracked.rel)).is_err();
                        let rel = tracked.rel;
                        out.push(TrackedStatus { rel, missing, not_in_cache: true, changes: Vec::new() });
                        continue;
                    }
                    other => other?,
                };
            Self::record_all(&mut cache, recorded, hashed_at);
            let (missing, mut changes) = match current {
                None => (true, compare(&tracked.rel, &expected, &[])),
                Some(current) => (false, compare(&tracked.rel, &expected, &current)),
            };
            if let Some(scope) = scope {
                changes.retain(|c| is_under(&c.path, scope));
            }
            out.push(TrackedStatus { rel: tracked.rel, missing, not_in_cache: false, changes });
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(out)
    }

    /// Every tracked file at `rev` (repository-relative path -> entry).
    fn listing_at(&self, rev: &str) -> Result<BTreeMap<Vec<u8>, ListedFile>> {
        let mut out = BTreeMap::new();
        for (rel, pointer) in self.pointers_at(rev)? {
            let label = PathBuf::from(format!("{rev}:{}{POINTER_SUFFIX}", crate::display_bytes(&rel)));
            for e in self.expected_files(&label, &pointer)? {
                let path = join_rel(&rel, &e.path);
                out.insert(
                    path.clone(),
                    ListedFile { path, digest: e.digest, size: e.size, executable: e.executable },
                );
            }
        }
        Ok(out)
    }

    fn pointers_at(&self, rev: &str) -> Result<Vec<(Vec<u8>, Pointer)>> {
        // Before the first commit, HEAD names an empty tree rather than an error.
        let git = self.git();
        if rev == "HEAD" && git.head()?.is_none() {
            return Ok(Vec::new());
        }
        git.files_with_suffix(rev, POINTER_SUFFIX.as_bytes())?
            .into_iter()
            .map(|file| {
                let rel = file.path[..file.path.len() - POINTER_SUFFIX.len()].to_vec();
                let label = PathBuf::from(format!("{rev}:{}", crate::display_bytes(&file.path)));
                Ok((rel, crate::parse_pointer_bytes(&label, &file.content)?))
            })
            .collect()
    }

    fn listing_workspace(&self, reporter: &dyn Reporter) -> Result<BTreeMap<Vec<u8>, ListedFile>> {
        let mut cache = self.stat_cache();
        let hashed_at = now_ns();
        let mut out = BTreeMap::new();
        for tracked in self.tracked(None)? {
            let Current { files: current, recorded, .. } =
                self.current_files(&tracked.rel, &cache, reporter)?;
            Self::record_all(&mut cache, recorded, hashed_at);
            for c in current.unwrap_or_default() {
                let path = join_rel(&tracked.rel, &c.rel);
                out.insert(
                    path.clone(),
                    ListedFile { path, digest: c.digest, size: c.stat.size, executable: c.stat.executable() },
                );
            }
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(out)
    }

    fn listing(&self, side: &Side, reporter: &dyn Reporter) -> Result<BTreeMap<Vec<u8>, ListedFile>> {
        match side {
            Side::Rev(rev) => self.listing_at(rev),
            Side::Workspace => self.listing_workspace(reporter),
        }
    }

    /// Files added, modified or deleted from `old` to `new`.
    pub fn diff(&self, old: &Side, new: &Side, reporter: &dyn Reporter) -> Result<Vec<DiffEntry>> {
        let a = self.listing(old, reporter)?;
        let b = self.listing(new, reporter)?;
        let mut out = Vec::new();
        for (path, before) in &a {
            match b.get(path) {
                None => out.push(DiffEntry {
                    path: path.clone(),
                    change: Change::Deleted,
                    old: Some((before.digest, before.size)),
                    new: None,
                }),
                Some(after) if after.digest != before.digest || after.executable != before.executable => out
                    .push(DiffEntry {
                        path: path.clone(),
                        change: Change::Modified,
                        old: Some((before.digest, before.size)),
                        new: Some((after.digest, after.size)),
                    }),
                Some(_) => {}
            }
        }
        for (path, after) in &b {
            if !a.contains_key(path) {
                out.push(DiffEntry {
                    path: path.clone(),
                    change: Change::Added,
                    old: None,
                    new: Some((after.digest, after.size)),
                });
            }
        }
        out.sort_by(|x, y| x.path.cmp(&y.path));
        Ok(out)
    }

    /// Tracked files as the pointers (at `rev`, or in the work tree) describe them.
    pub fn ls(&self, rev: Option<&str>, scope: Option<&[u8]>) -> Result<Vec<ListedFile>> {
        let listing = match rev {
            Some(rev) => self.listing_at(rev)?,
            None => {
                let mut out = BTreeMap::new();
                for tracked in self.tracked(scope)? {
                    for e in self.expected_files(&self.pointer_path(&tracked.rel), &tracked.pointer)? {
                        let path = join_rel(&tracked.rel, &e.path);
                        out.insert(
                            path.clone(),
                            ListedFile { path, digest: e.digest, size: e.size, executable: e.executable },
                        );
                    }
                }
                out
            }
        };
        Ok(listing.into_values().filter(|f| scope.is_none_or(|s| is_under(&f.path, s))).collect())
    }

    /// Streams the bytes of tracked file `rel` (as of `rev`, or the work tree's pointers) to
    /// `out`, verifying them against their digest.
    pub fn cat(&self, rel: &[u8], rev: Option<&str>, out: &mut dyn Write) -> Result<()> {
        let rev_label = rev.unwrap_or("the work tree's pointers").to_owned();
        let (owner, pointer_path) = match rev {
            None => {
                let owner = self.tracked_containing(rel)?.ok_or_else(|| RepoError::NotATrackedFile {
                    path: self.abs(rel),
                    rev: rev_label.clone(),
                })?;
                let path = self.pointer_path(&owner.rel);
                (owner, path)
            }
            Some(rev) => {
                let (owner_rel, pointer) = self
                    .pointers_at(rev)?
                    .into_iter()
                    .filter(|(p, _)| is_under(rel, p))
                    .max_by_key(|(p, _)| p.len())
                    .ok_or_else(|| RepoError::NotATrackedFile {
                        path: self.abs(rel),
                        rev: rev_label.clone(),
                    })?;
                let label =
                    PathBuf::from(format!("{rev}:{}{POINTER_SUFFIX}", crate::display_bytes(&owner_rel)));
                (Tracked { rel: owner_rel, pointer }, label)
            }
        };
        let inner: &[u8] = if rel == owner.rel.as_slice() { b"" } else { &rel[owner.rel.len() + 1..] };
        let entries = self.expected_files(&pointer_path, &owner.pointer)?;
        let Some(entry) = entries.iter().find(|e| e.path == inner) else {
            let is_dir = entries.iter().any(|e| inner.is_empty() || is_under(&e.path, inner));
            return Err(if is_dir {
                RepoError::IsADirectory { path: self.abs(rel) }
            } else {
                RepoError::NotATrackedFile { path: self.abs(rel), rev: rev_label }
            });
        };
        let object = self.store.open_object(&entry.digest)?;
        let object_path = self.store.object_path(&entry.digest);
        // The digest of the bytes as they are streamed out: corruption is reported at the end.
        let (actual, _) = hash_reader(object, entry.size, Some(out))
            .map_err(|e| RepoError::io("stream", &object_path, e))?;
        if actual != entry.digest {
            return Err(StoreError::Corrupt { expected: entry.digest, actual }.into());
        }
        Ok(())
    }
}
