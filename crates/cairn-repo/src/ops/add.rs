//! `add` and `commit`: storing data and writing pointers.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cairn_hash::{Manifest, ManifestEntry};
use cairn_store::FileStat;
use rayon::prelude::*;

use super::*;
use crate::pointer::{POINTER_SUFFIX, Pointer, PointerKind};
use crate::walk::ScannedFile;
use crate::{Repo, RepoError, Reporter, Result, Tracked, gitignore, is_under, join_rel, now_ns};

impl Repo {
    /// `pointers` holds every pointer in the work tree, read once (on first need) for all the
    /// paths of one `add`.
    /// Files named `*.cairn` that are not pointers are data when they lie inside the
    /// directory being added (they become part of it, like any other file).
    fn check_addable(&self, rel: &[u8], pointers: &mut Option<(Vec<Tracked>, Vec<RepoError>)>) -> Result<()> {
        let path = self.abs(rel);
        if rel.is_empty() {
            return Err(RepoError::RootNotTrackable { path });
        }
        if rel.ends_with(POINTER_SUFFIX.as_bytes()) {
            return Err(RepoError::IsPointer { path });
        }
        if let Some(owner) = self.tracked_containing(rel)?
            && owner.rel != rel
        {
            return Err(RepoError::InsideTracked { path, tracked: self.abs(&owner.rel) });
        }
        if let Ok(text) = std::str::from_utf8(rel)
            && let Some(entry) = self.git().indexed_at_or_under(text)?
        {
            return Err(RepoError::TrackedByGit { path, entry });
        }
        if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            let (all, unreadable) = pointers.get_or_insert_with(|| self.tracked_lenient(None));
            let outside = |error: &RepoError| match error {
                RepoError::InvalidPointer { path: pointer, .. } => !pointer.starts_with(&path),
                _ => true,
            };
            if let Some(index) = unreadable.iter().position(outside) {
                return Err(unreadable.swap_remove(index));
            }
            if let Some(inner) = all.iter().find(|t| t.rel != rel && is_under(&t.rel, rel)) {
                return Err(RepoError::ContainsTracked { path, pointer: self.pointer_path(&inner.rel) });
            }
        }
        Ok(())
    }

    /// Tracks `rels` (repository-relative paths of files or directories).
    pub fn add(&self, rels: &[Vec<u8>], reporter: &dyn Reporter) -> Result<Vec<AddOutcome>> {
        let mut pointers = None;
        for rel in rels {
            self.check_addable(rel, &mut pointers)?;
        }
        let mut cache = self.stat_cache();
        let mut outcomes = Vec::new();
        for outcome in self.store_and_link(rels, &mut cache, reporter)? {
            let pointer_path = self.pointer_path(&outcome.rel);
            let rendered = outcome.pointer.render();
            let changed = fs::read(&pointer_path).ok().as_deref() != Some(rendered.as_bytes());
            if changed {
                write_atomically(&pointer_path, rendered.as_bytes())?;
            }
            gitignore::ensure_ignored(&self.root, &outcome.rel)?;
            outcomes.push(AddOutcome { changed, ..outcome });
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(outcomes)
    }

    /// Stores pipeline outputs: like `add`, but the content record goes to the caller (for
    /// `cairn.lock` and the run cache) instead of a pointer file.
    pub fn store_outputs(&self, rels: &[Vec<u8>], reporter: &dyn Reporter) -> Result<Vec<Pointer>> {
        let mut cache = self.stat_cache();
        let stored = self.store_and_link(rels, &mut cache, reporter)?;
        self.save_stat_cache(&mut cache, reporter);
        Ok(stored.into_iter().map(|o| o.pointer).collect())
    }

    /// Adds `rel` to the `.gitignore` beside it (once).
    pub fn ignore_in_git(&self, rel: &[u8]) -> Result<()> {
        gitignore::ensure_ignored(&self.root, rel)
    }

    /// Every object of `rels` into the cache, one sync, then (with a sharing strategy) the
    /// work-tree files replaced by links. Pointers are not written.
    fn store_and_link(
        &self,
        rels: &[Vec<u8>],
        cache: &mut StatCache,
        reporter: &dyn Reporter,
    ) -> Result<Vec<AddOutcome>> {
        let hashed_at = now_ns();
        // Phase 1: every object into the cache.
        let mut prepared = Vec::new();
        for rel in rels {
            let abs = self.abs(rel);
            let scan = scan_data(&abs, &self.confinement())?.ok_or(RepoError::NotFound { path: abs })?;
            prepared.push(self.store_files(rel, scan.is_dir, scan.files, cache, hashed_at, reporter)?);
        }

        // Phase 2: one sync. A crash before this point leaves only objects, and the work tree
        // as it was.
        self.store.sync()?;

        // Phase 3: with a linking strategy, replace work-tree files by links to the now
        // durable objects.
        let mut outcomes = Vec::new();
        for (outcome, to_link) in prepared {
            for (key, stat, digest) in self.link_stored(to_link)? {
                cache.record(key, stat, digest);
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Stores the files of one data path. Returns the outcome (its pointer not yet written)
    /// and, when the link strategy shares objects, the work-tree files to replace by links.
    fn store_files(
        &self,
        rel: &[u8],
        is_dir: bool,
        files: Vec<ScannedFile>,
        cache: &mut StatCache,
        hashed_at: i128,
        reporter: &dyn Reporter,
    ) -> Result<(AddOutcome, Vec<ToLink>)> {
        let stored = self.store_each(rel, files, cache, hashed_at, reporter)?;
        let store = &self.store;

        let (mut hashed, mut new_objects, mut new_bytes) = (0, 0, 0);
        for s in &stored {
            if s.hashed {
                hashed += 1;
                let key = join_rel(rel, &s.entry.path);
                if s.adopted {
                    // Checked unchanged and not racy by `adopt_file`; its fresh ctime is ours.
                    cache.record(key, s.stat, s.entry.digest);
                } else {
                    cache.record_hashed(key, s.stat, s.entry.digest, hashed_at);
                }
            }
            if s.new {
                new_objects += 1;
                new_bytes += s.stat.size;
            }
        }

        // Files not yet sharing their object's inode, when the strategy shares objects.
        let to_link: Vec<ToLink> = if self.settings.link.preferred().shares_object() {
            stored
                .iter()
                .filter(|s| !s.entry.executable && !s.outside)
                .filter(|s| {
                    let object = fs::metadata(store.object_path(&s.entry.digest));
                    !object.is_ok_and(|m| m.dev() == s.stat.dev && m.ino() == s.stat.ino)
                })
                .map(|s| ToLink {
                    key: join_rel(rel, &s.entry.path),
                    abs: s.abs.clone(),
                    digest: s.entry.digest,
                })
                .collect()
        } else {
            Vec::new()
        };

        let files = stored.len() as u64;
        let pointer = self.pointer_for(is_dir, stored)?;
        let outcome =
            AddOutcome { rel: rel.to_vec(), pointer, changed: false, files, hashed, new_objects, new_bytes };
        Ok((outcome, to_link))
    }

    /// Hashes (or finds in the stat cache) and stores every file, in parallel.
    fn store_each(
        &self,
        rel: &[u8],
        files: Vec<ScannedFile>,
        cache: &StatCache,
        hashed_at: i128,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Stored>> {
        let total_bytes = files.iter().map(|f| f.stat.size).sum();
        reporter.start(&format!("adding {}", crate::display_bytes(rel)), files.len() as u64, total_bytes);
        let store = &self.store;
        let read_only_cache = cache;
        // Sharing strategies turn work-tree files into objects without copying them.
        let adopt = self.settings.link.preferred().shares_object();
        let racy_before = hashed_at - crate::statcache::RACY_WINDOW_NS;
        let stored = self.install(|| {
            files
                .into_par_iter()
                .map(|file| -> Result<Stored> {
                    let key = join_rel(rel, &file.rel);
                    // Only where the user let reads leave the repository can a file be outside.
                    let outside = self.settings.follow_external_symlinks
                        && !file.abs.canonicalize().is_ok_and(|real| real.starts_with(&self.root));
                    let known = read_only_cache.lookup(&key, &file.stat);
                    let (digest, stat, hashed, new, adopted) = match known {
                        Some(digest) if store.contains(&digest)? => (digest, file.stat, false, false, false),
                        _ => {
                            let progress = |n| reporter.advance(0, n);
                            let put = if adopt && !outside {
                                store.adopt_file(&file.abs, &file.stat, racy_before, &progress)?
                            } else {
                                store.put_file(&file.abs, Some(&file.stat), &progress)?
                            };
                            (put.digest, put.stat, true, put.new, put.adopted)
                        }
                    };
                    reporter.advance(1, if hashed { 0 } else { stat.size });
                    Ok(Stored {
                        entry: ManifestEntry {
                            path: file.rel,
                            digest,
                            size: stat.size,
                            executable: stat.executable(),
                        },
                        abs: file.abs,
                        stat,
                        hashed,
                        new,
                        adopted,
                        outside,
                    })
                })
                .collect::<Result<_>>()
        })?;
        reporter.finish();
        Ok(stored)
    }

    /// The pointer of a stored data path: the file's own digest, or a directory's manifest.
    fn pointer_for(&self, is_dir: bool, stored: Vec<Stored>) -> Result<Pointer> {
        let store = &self.store;
        Ok(if is_dir {
            let entries: Vec<ManifestEntry> = stored.into_iter().map(|s| s.entry).collect();
            let manifest = Manifest::new(entries).map_err(|e| {
                RepoError::Internal(format!("a directory scan produced an invalid manifest: {e}"))
            })?;
            Pointer {
                kind: PointerKind::Directory { files: manifest.len() as u64 },
                digest: store.put_bytes(&manifest.encode())?,
                size: manifest.total_size(),
            }
        } else {
            let s = stored.into_iter().next().expect("a file scan yields one file");
            Pointer {
                kind: PointerKind::File { executable: s.entry.executable },
                digest: s.entry.digest,
                size: s.entry.size,
            }
        })
    }

    /// Replaces work-tree files by links to their (durable) objects.
    fn link_stored(&self, to_link: Vec<ToLink>) -> Result<Vec<Recorded>> {
        let (store, strategy) = (&self.store, &self.settings.link);
        self.install(|| {
            to_link
                .into_par_iter()
                .map(|l| -> Result<Recorded> {
                    let (_, stat) = store.materialize(&l.digest, &l.abs, false, strategy)?;
                    Ok((l.key, stat, l.digest))
                })
                .collect()
        })
    }

    /// Records changes to already-tracked data (all of it, or what is at or below `scope`).
    pub fn commit(&self, scope: Option<&[u8]>, reporter: &dyn Reporter) -> Result<Vec<AddOutcome>> {
        let mut rels: Vec<Vec<u8>> = match scope {
            Some(scope) => {
                let mut rels: Vec<Vec<u8>> = self.tracked(Some(scope))?.into_iter().map(|t| t.rel).collect();
                if rels.is_empty() {
                    return Err(RepoError::NotTracked { path: self.abs(scope) });
                }
                rels.dedup();
                rels
            }
            None => self.tracked(None)?.into_iter().map(|t| t.rel).collect(),
        };
        rels.retain(|rel| {
            let exists = fs::symlink_metadata(self.abs(rel)).is_ok();
            if !exists {
                reporter.warn(&format!(
                    "`{}` is missing from the work tree; run `cairn checkout` to restore it or `cairn rm` to stop tracking it",
                    self.abs(rel).display()
                ));
            }
            exists
        });
        self.add(&rels, reporter)
    }
}

/// One file as `add` stored it.
struct Stored {
    entry: ManifestEntry,
    abs: PathBuf,
    stat: FileStat,
    hashed: bool,
    new: bool,
    adopted: bool,
    /// Reached through a link out of the repository (`--follow-external-symlinks`):
    /// read, never adopted or replaced by a link.
    outside: bool,
}
