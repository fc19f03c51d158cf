//! Repository operations: add, commit, status, checkout, diff, ls, cat, rm, unprotect, gc, fsck.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_hash::{CountingReader, Digest, Manifest, ManifestEntry, hash_reader};
use cairn_store::{FileStat, StoreError};
use rayon::prelude::*;

use crate::pointer::{POINTER_SUFFIX, Pointer, PointerKind};
use crate::statcache::StatCache;
use crate::walk::{Scan, ScannedFile, scan_dir};
use crate::{
    Repo, RepoError, Reporter, Result, Tracked, bytes_to_path, gitignore, is_under, join_rel, now_ns,
};

/// How a file differs between two states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Deleted => "deleted",
        }
    }
}

/// One changed file of a tracked path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// Repository-relative path.
    pub path: Vec<u8>,
    pub change: Change,
}

/// `cairn status` for one tracked path.
#[derive(Clone, Debug)]
pub struct TrackedStatus {
    pub rel: Vec<u8>,
    /// The data is absent from the work tree altogether.
    pub missing: bool,
    /// The directory's manifest is not in the cache (for example a pointer that arrived with
    /// `git pull` while its data was never fetched), so its files cannot be compared.
    pub not_in_cache: bool,
    pub changes: Vec<FileChange>,
}

/// What `add` or `commit` recorded for one path.
#[derive(Clone, Debug)]
pub struct AddOutcome {
    pub rel: Vec<u8>,
    pub pointer: Pointer,
    /// Whether the pointer file changed.
    pub changed: bool,
    pub files: u64,
    /// Files that had to be read (the rest were known from the stat cache).
    pub hashed: u64,
    pub new_objects: u64,
    pub new_bytes: u64,
}

/// What `checkout` did for one tracked path.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOutcome {
    pub rel: Vec<u8>,
    pub written: u64,
    pub written_bytes: u64,
    pub removed: u64,
    pub unchanged: u64,
}

/// One side of a diff.
#[derive(Clone, Debug)]
pub enum Side {
    Rev(String),
    Workspace,
}

#[derive(Clone, Debug)]
pub struct DiffEntry {
    pub path: Vec<u8>,
    pub change: Change,
    pub old: Option<(Digest, u64)>,
    pub new: Option<(Digest, u64)>,
}

#[derive(Clone, Debug)]
pub struct ListedFile {
    pub path: Vec<u8>,
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub kept: u64,
    pub unreferenced: Vec<(Digest, u64)>,
    pub deleted: bool,
    pub tmp_bytes_freed: u64,
}

impl GcReport {
    pub fn unreferenced_bytes(&self) -> u64 {
        self.unreferenced.iter().map(|(_, size)| size).sum()
    }
}

#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub objects: u64,
    pub bytes: u64,
    pub pointers: u64,
    pub problems: Vec<String>,
}

/// A work-tree file to replace by a link to its object.
struct ToLink {
    key: Vec<u8>,
    abs: PathBuf,
    digest: Digest,
}

/// A workspace file with its current digest.
#[derive(Clone, Debug)]
struct WorkFile {
    rel: Vec<u8>,
    abs: PathBuf,
    stat: FileStat,
    digest: Digest,
}

/// A fresh hash to record in the stat cache: key, stat, digest.
type Recorded = (Vec<u8>, FileStat, Digest);

/// A data path as the work tree has it.
struct Current {
    /// `None` if the path does not exist.
    files: Option<Vec<WorkFile>>,
    recorded: Vec<Recorded>,
    /// Temporary files left by a killed run.
    leftovers: Vec<PathBuf>,
}

/// Hashes a work-tree file, reporting its bytes as they are read.
fn hash_file(abs: &Path, stat: &FileStat, reporter: &dyn Reporter) -> Result<Digest> {
    let file = File::open(abs).map_err(|e| RepoError::io("open", abs, e))?;
    let counted = CountingReader::new(file, |n| reporter.advance(0, n));
    let (digest, _) = hash_reader(counted, stat.size, None).map_err(|e| RepoError::io("read", abs, e))?;
    reporter.advance(1, 0);
    Ok(digest)
}

fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(cairn_store::unique_tmp_name(".cairn-tmp-"));
    let result = fs::write(&tmp, content)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| RepoError::io("write", path, e));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The data path's files as the work tree has them: `Ok(None)` if it does not exist.
fn scan_data(abs: &Path) -> Result<Option<Scan>> {
    let meta = match fs::metadata(abs) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match fs::symlink_metadata(abs) {
                Ok(_) => Err(RepoError::BrokenSymlink { path: abs.to_path_buf() }),
                Err(_) => Ok(None),
            };
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(RepoError::SymlinkLoop { path: abs.to_path_buf() });
        }
        Err(e) => return Err(RepoError::io("stat", abs, e)),
    };
    if meta.is_dir() {
        Ok(Some(scan_dir(abs)?))
    } else if meta.is_file() {
        let file =
            ScannedFile { rel: Vec::new(), abs: abs.to_path_buf(), stat: FileStat::from_metadata(&meta) };
        Ok(Some(Scan { files: vec![file], leftovers: Vec::new() }))
    } else {
        Err(RepoError::UnsupportedFileType { path: abs.to_path_buf() })
    }
}

/// Compares expected entries with current files (both sorted by `rel`).
fn compare(base: &[u8], expected: &[ManifestEntry], current: &[WorkFile]) -> Vec<FileChange> {
    let mut changes = Vec::new();
    let (mut i, mut j) = (0, 0);
    let push = |changes: &mut Vec<FileChange>, rel: &[u8], change| {
        changes.push(FileChange { path: join_rel(base, rel), change })
    };
    while i < expected.len() || j < current.len() {
        match (expected.get(i), current.get(j)) {
            (Some(e), Some(c)) if e.path == c.rel => {
                if e.digest != c.digest || e.executable != c.stat.executable() {
                    push(&mut changes, &e.path, Change::Modified);
                }
                i += 1;
                j += 1;
            }
            (Some(e), Some(c)) if e.path < c.rel => {
                push(&mut changes, &e.path, Change::Deleted);
                i += 1;
            }
            (Some(e), None) => {
                push(&mut changes, &e.path, Change::Deleted);
                i += 1;
            }
            (_, Some(c)) => {
                push(&mut changes, &c.rel, Change::Added);
                j += 1;
            }
            (None, None) => break,
        }
    }
    changes
}

impl Repo {
    fn stat_cache(&self) -> StatCache {
        StatCache::load(&self.state_path("stat-cache-v1"))
    }

    fn save_stat_cache(&self, cache: &mut StatCache, reporter: &dyn Reporter) {
        // The stat cache only saves work; failing to write it must not fail the command.
        if let Err(error) = cache.save() {
            reporter.warn(&format!("could not update the stat cache: {error}"));
        }
    }

    /// Digests of the scanned files, from the stat cache where their stat is unchanged and by
    /// hashing (in parallel) otherwise. Returns the files and the fresh hashes to record.
    fn digest_files(
        &self,
        base: &[u8],
        files: Vec<ScannedFile>,
        cache: &StatCache,
        reporter: &dyn Reporter,
    ) -> Result<(Vec<WorkFile>, Vec<Recorded>)> {
        // One stat-cache lookup per file, in parallel; then hash only the misses.
        let known: Vec<Option<Digest>> = self
            .install(|| files.par_iter().map(|f| cache.lookup(&join_rel(base, &f.rel), &f.stat)).collect());
        let misses: Vec<usize> = (0..files.len()).filter(|&i| known[i].is_none()).collect();
        let miss_bytes = misses.iter().map(|&i| files[i].stat.size).sum();
        if !misses.is_empty() {
            reporter.start("hashing", misses.len() as u64, miss_bytes);
        }
        let hashed: Vec<Digest> = self.install(|| {
            misses
                .par_iter()
                .map(|&i| hash_file(&files[i].abs, &files[i].stat, reporter))
                .collect::<Result<_>>()
        })?;
        if !misses.is_empty() {
            reporter.finish();
        }
        let mut recorded = Vec::with_capacity(misses.len());
        for (&i, digest) in misses.iter().zip(&hashed) {
            recorded.push((join_rel(base, &files[i].rel), files[i].stat, *digest));
        }
        let mut fresh = hashed.into_iter();
        let work = files
            .into_iter()
            .zip(known)
            .map(|(file, known)| {
                let digest = known.unwrap_or_else(|| fresh.next().expect("one fresh digest per miss"));
                WorkFile { rel: file.rel, abs: file.abs, stat: file.stat, digest }
            })
            .collect();
        Ok((work, recorded))
    }

    /// What the pointer expects and what the work tree has, read concurrently (decoding a large
    /// manifest overlaps with scanning the directory).
    fn expected_and_current(
        &self,
        tracked: &Tracked,
        cache: &StatCache,
        reporter: &dyn Reporter,
    ) -> Result<(Vec<ManifestEntry>, Current)> {
        let pointer_path = self.pointer_path(&tracked.rel);
        let (expected, scan) = self.install(|| {
            rayon::join(
                || self.expected_files(&pointer_path, &tracked.pointer),
                || scan_data(&self.abs(&tracked.rel)),
            )
        });
        let (expected, scan) = (expected?, scan?);
        let current = match scan {
            None => Current { files: None, recorded: Vec::new(), leftovers: Vec::new() },
            Some(scan) => {
                let (work, recorded) = self.digest_files(&tracked.rel, scan.files, cache, reporter)?;
                Current { files: Some(work), recorded, leftovers: scan.leftovers }
            }
        };
        Ok((expected, current))
    }

    /// The data path's files with their digests (`None` if it does not exist), the fresh
    /// hashes to record, and leftover temporary files from killed runs.
    fn current_files(&self, rel: &[u8], cache: &StatCache, reporter: &dyn Reporter) -> Result<Current> {
        match scan_data(&self.abs(rel))? {
            None => Ok(Current { files: None, recorded: Vec::new(), leftovers: Vec::new() }),
            Some(scan) => {
                let (work, recorded) = self.digest_files(rel, scan.files, cache, reporter)?;
                Ok(Current { files: Some(work), recorded, leftovers: scan.leftovers })
            }
        }
    }

    fn record_all(cache: &mut StatCache, recorded: Vec<Recorded>, hashed_at: i128) {
        for (key, stat, digest) in recorded {
            cache.record_hashed(key, stat, digest, hashed_at);
        }
    }

    // ----------------------------------------------------------------------------- status

    /// Tracked data that differs from its pointer.
    pub fn status(&self, scope: Option<&[u8]>, reporter: &dyn Reporter) -> Result<Vec<TrackedStatus>> {
        let hashed_at = now_ns();
        let (mut cache, tracked) = self.install(|| rayon::join(|| self.stat_cache(), || self.tracked(scope)));
        let mut out = Vec::new();
        for tracked in tracked? {
            let (expected, Current { files: current, recorded, leftovers: _ }) =
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

    // -------------------------------------------------------------------------------- add

    fn check_addable(&self, rel: &[u8]) -> Result<()> {
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
        if fs::metadata(&path).is_ok_and(|m| m.is_dir())
            && let Some(inner) = self.tracked(Some(rel))?.into_iter().find(|t| t.rel != rel)
        {
            return Err(RepoError::ContainsTracked { path, pointer: self.pointer_path(&inner.rel) });
        }
        Ok(())
    }

    /// Tracks `rels` (repository-relative paths of files or directories).
    pub fn add(&self, rels: &[Vec<u8>], reporter: &dyn Reporter) -> Result<Vec<AddOutcome>> {
        for rel in rels {
            self.check_addable(rel)?;
        }
        let mut cache = self.stat_cache();
        let hashed_at = now_ns();

        // Phase 1: every object into the cache.
        let mut prepared = Vec::new();
        for rel in rels {
            let abs = self.abs(rel);
            let files = scan_data(&abs)?.ok_or_else(|| RepoError::NotFound { path: abs.clone() })?.files;
            let is_dir = fs::metadata(&abs).map_err(|e| RepoError::io("stat", &abs, e))?.is_dir();
            prepared.push(self.store_files(rel, is_dir, files, &mut cache, hashed_at, reporter)?);
        }

        // Phase 2: one sync. A crash before this point leaves only objects, and the work tree
        // as it was.
        self.store.sync()?;

        // Phase 3: with a linking strategy, replace work-tree files by links to the now
        // durable objects; then write the pointers.
        let mut outcomes = Vec::new();
        for (outcome, to_link) in prepared {
            for (key, stat, digest) in self.link_stored(to_link)? {
                cache.record(key, stat, digest);
            }
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
        let total_bytes = files.iter().map(|f| f.stat.size).sum();
        reporter.start(&format!("adding {}", crate::display_bytes(rel)), files.len() as u64, total_bytes);
        let store = &self.store;
        let read_only_cache = &*cache;
        struct Stored {
            entry: ManifestEntry,
            abs: PathBuf,
            stat: FileStat,
            hashed: bool,
            new: bool,
        }
        let stored: Vec<Stored> = self.install(|| {
            files
                .into_par_iter()
                .map(|file| -> Result<Stored> {
                    let key = join_rel(rel, &file.rel);
                    let known = read_only_cache.lookup(&key, &file.stat);
                    let (digest, stat, hashed, new) = match known {
                        Some(digest) if store.contains(&digest)? => (digest, file.stat, false, false),
                        _ => {
                            let put =
                                store.put_file(&file.abs, Some(&file.stat), &|n| reporter.advance(0, n))?;
                            (put.digest, put.stat, true, put.new)
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
                    })
                })
                .collect::<Result<_>>()
        })?;
        reporter.finish();

        let (mut hashed, mut new_objects, mut new_bytes) = (0, 0, 0);
        for s in &stored {
            if s.hashed {
                hashed += 1;
                cache.record_hashed(join_rel(rel, &s.entry.path), s.stat, s.entry.digest, hashed_at);
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
                .filter(|s| !s.entry.executable)
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
        let pointer = if is_dir {
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
        };
        let outcome =
            AddOutcome { rel: rel.to_vec(), pointer, changed: false, files, hashed, new_objects, new_bytes };
        Ok((outcome, to_link))
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

    // --------------------------------------------------------------------------- checkout

    /// Makes the work tree match the pointers (all of them, or at or below `scope`).
    /// Refuses, before changing anything, to overwrite or delete a file whose content is not
    /// in the cache, unless `force`.
    pub fn checkout(
        &self,
        scope: Option<&[u8]>,
        force: bool,
        reporter: &dyn Reporter,
    ) -> Result<Vec<CheckoutOutcome>> {
        let mut cache = self.stat_cache();
        let hashed_at = now_ns();
        let tracked = self.tracked(scope)?;
        if tracked.is_empty()
            && let Some(scope) = scope
        {
            return Err(RepoError::NotTracked { path: self.abs(scope) });
        }

        struct Plan {
            tracked: Tracked,
            writes: Vec<ManifestEntry>,
            deletes: Vec<PathBuf>,
            unchanged: u64,
            /// The data path exists with the wrong type (file vs. directory).
            replace_root: bool,
        }
        let mut plans = Vec::new();
        let mut conflicts = Vec::new();
        let mut missing: Option<(PathBuf, Digest, usize)> = None;
        for tracked in tracked {
            let pointer_path = self.pointer_path(&tracked.rel);
            let (mut expected, Current { files: current, recorded, leftovers }) =
                self.expected_and_current(&tracked, &cache, reporter)?;
            Self::record_all(&mut cache, recorded, hashed_at);
            let mut current = current.unwrap_or_default();
            if let Some(scope) = scope {
                expected.retain(|e| is_under(&join_rel(&tracked.rel, &e.path), scope));
                current.retain(|c| is_under(&join_rel(&tracked.rel, &c.rel), scope));
            }
            let abs = self.abs(&tracked.rel);
            let on_disk = fs::metadata(&abs).ok();
            let replace_root = match (&tracked.pointer.kind, &on_disk) {
                (PointerKind::File { .. }, Some(m)) => m.is_dir(),
                (PointerKind::Directory { .. }, Some(m)) => !m.is_dir(),
                _ => false,
            };
            let mut plan =
                Plan { tracked, writes: Vec::new(), deletes: leftovers, unchanged: 0, replace_root };
            let current_by_rel: BTreeMap<&[u8], &WorkFile> =
                current.iter().map(|c| (c.rel.as_slice(), c)).collect();
            let mut would_lose = |c: &WorkFile| -> Result<()> {
                if !force && !self.store.contains(&c.digest)? {
                    conflicts.push(c.abs.clone());
                }
                Ok(())
            };
            for e in &expected {
                match current_by_rel.get(e.path.as_slice()) {
                    Some(c) if c.digest == e.digest && c.stat.executable() == e.executable => {
                        plan.unchanged += 1;
                        continue;
                    }
                    Some(c) => would_lose(c)?,
                    None => {}
                }
                plan.writes.push(e.clone());
            }
            let expected_rels: HashSet<&[u8]> = expected.iter().map(|e| e.path.as_slice()).collect();
            for c in &current {
                if !expected_rels.contains(c.rel.as_slice()) {
                    would_lose(c)?;
                    plan.deletes.push(c.abs.clone());
                }
            }
            let absent: Vec<&ManifestEntry> =
                plan.writes.iter().filter(|e| !self.store.contains(&e.digest).unwrap_or(false)).collect();
            if let Some(first) = absent.first()
                && missing.is_none()
            {
                missing = Some((pointer_path, first.digest, absent.len()));
            }
            plans.push(plan);
        }
        if !conflicts.is_empty() {
            return Err(RepoError::WouldOverwrite { paths: conflicts });
        }
        if let Some((pointer, first, count)) = missing {
            return Err(RepoError::MissingObjects { pointer, first, count });
        }

        let strategy = &self.settings.link;
        let mut outcomes = Vec::new();
        for plan in plans {
            let rel = &plan.tracked.rel;
            let root_abs = self.abs(rel);
            for path in &plan.deletes {
                fs::remove_file(path).map_err(|e| RepoError::io("delete", path, e))?;
            }
            if plan.replace_root {
                // What is left of the wrong kind of entry (its files were deleted above).
                let removed = match fs::symlink_metadata(&root_abs) {
                    Ok(meta) if meta.is_dir() => fs::remove_dir_all(&root_abs),
                    Ok(_) => fs::remove_file(&root_abs),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                };
                removed.map_err(|e| RepoError::io("replace", &root_abs, e))?;
            }
            prune_empty_parents(&plan.deletes, &root_abs);
            let mut dirs: Vec<PathBuf> = plan
                .writes
                .iter()
                .filter_map(|e| root_abs.join(bytes_to_path(&e.path)).parent().map(Path::to_path_buf))
                .collect();
            if plan.tracked.pointer.is_directory() {
                dirs.push(root_abs.clone());
            }
            dirs.sort();
            dirs.dedup();
            for dir in &dirs {
                fs::create_dir_all(dir).map_err(|e| RepoError::io("create directory", dir, e))?;
            }
            let bytes: u64 = plan.writes.iter().map(|e| e.size).sum();
            reporter.start(
                &format!("checking out {}", crate::display_bytes(rel)),
                plan.writes.len() as u64,
                bytes,
            );
            let store = &self.store;
            let written: Vec<Recorded> = self.install(|| {
                plan.writes
                    .par_iter()
                    .map(|e| -> Result<Recorded> {
                        let dest = if e.path.is_empty() {
                            root_abs.clone()
                        } else {
                            root_abs.join(bytes_to_path(&e.path))
                        };
                        let (_, stat) = store.materialize(&e.digest, &dest, e.executable, strategy)?;
                        reporter.advance(1, e.size);
                        Ok((join_rel(rel, &e.path), stat, e.digest))
                    })
                    .collect::<Result<_>>()
            })?;
            reporter.finish();
            for (key, stat, digest) in written {
                cache.record(key, stat, digest);
            }
            gitignore::ensure_ignored(&self.root, rel)?;
            outcomes.push(CheckoutOutcome {
                rel: rel.clone(),
                written: plan.writes.len() as u64,
                written_bytes: bytes,
                removed: plan.deletes.len() as u64,
                unchanged: plan.unchanged,
            });
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(outcomes)
    }

    // ------------------------------------------------------------------------ diff, ls, cat

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
            let Current { files: current, recorded, leftovers: _ } =
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

    // ------------------------------------------------------------------ rm and unprotect

    /// Stops tracking `rel`: removes its pointer and `.gitignore` line and leaves the data in
    /// place as ordinary, writable files.
    pub fn rm(&self, rel: &[u8], reporter: &dyn Reporter) -> Result<()> {
        if self.read_pointer(rel)?.is_none() {
            return Err(RepoError::NotTracked { path: self.abs(rel) });
        }
        self.unprotect(rel, reporter)?;
        let pointer = self.pointer_path(rel);
        fs::remove_file(&pointer).map_err(|e| RepoError::io("delete", &pointer, e))?;
        gitignore::remove_ignored(&self.root, rel)?;
        let mut cache = self.stat_cache();
        cache.forget_under(rel);
        self.save_stat_cache(&mut cache, reporter);
        Ok(())
    }

    /// Replaces hard- or symbolic links to the cache at or below `rel` with writable copies.
    /// Returns how many files were unprotected.
    pub fn unprotect(&self, rel: &[u8], reporter: &dyn Reporter) -> Result<u64> {
        let owners: Vec<Tracked> = match self.tracked_containing(rel)? {
            Some(owner) => vec![owner],
            None => self.tracked(Some(rel))?,
        };
        if owners.is_empty() {
            return Err(RepoError::NotTracked { path: self.abs(rel) });
        }
        let mut cache = self.stat_cache();
        let mut count = 0;
        for owner in owners {
            let Some(scan) = scan_data(&self.abs(&owner.rel))? else { continue };
            let targets: Vec<ScannedFile> =
                scan.files.into_iter().filter(|f| is_under(&join_rel(&owner.rel, &f.rel), rel)).collect();
            let done: Vec<Option<Vec<u8>>> = self.install(|| {
                targets
                    .par_iter()
                    .map(|f| -> Result<Option<Vec<u8>>> {
                        let link =
                            fs::symlink_metadata(&f.abs).map_err(|e| RepoError::io("stat", &f.abs, e))?;
                        let shared = link.file_type().is_symlink()
                            || link.nlink() > 1
                            || link.permissions().readonly();
                        if !shared {
                            return Ok(None);
                        }
                        let mode = if f.stat.executable() { 0o755 } else { 0o644 };
                        let tmp = f.abs.with_file_name(cairn_store::unique_tmp_name(".cairn-tmp-"));
                        let copied = fs::copy(&f.abs, &tmp)
                            .and_then(|_| fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)))
                            .and_then(|()| fs::rename(&tmp, &f.abs));
                        if let Err(e) = copied {
                            let _ = fs::remove_file(&tmp);
                            return Err(RepoError::io("unprotect", &f.abs, e));
                        }
                        Ok(Some(join_rel(&owner.rel, &f.rel)))
                    })
                    .collect::<Result<_>>()
            })?;
            for key in done.into_iter().flatten() {
                // The copy has a new inode; forget the old entry so the next status rehashes it.
                cache.forget_under(&key);
                count += 1;
            }
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(count)
    }

    // ------------------------------------------------------------------------ gc and fsck

    fn referenced(&self, all_commits: bool, reporter: &dyn Reporter) -> Result<HashSet<Digest>> {
        let mut pointers: Vec<(PathBuf, Pointer)> =
            self.tracked(None)?.into_iter().map(|t| (self.pointer_path(&t.rel), t.pointer)).collect();
        if all_commits {
            for file in self.git().files_with_suffix_all_commits(POINTER_SUFFIX.as_bytes())? {
                let label = PathBuf::from(format!("(history):{}", crate::display_bytes(&file.path)));
                pointers.push((label.clone(), crate::parse_pointer_bytes(&label, &file.content)?));
            }
        }
        let mut set = HashSet::new();
        for (path, pointer) in pointers {
            set.insert(pointer.digest);
            if pointer.is_directory() {
                match self.expected_files(&path, &pointer) {
                    Ok(entries) => set.extend(entries.into_iter().map(|e| e.digest)),
                    // A directory whose manifest this cache never had (say, a teammate's commit
                    // whose data was not fetched): its files cannot be named, and objects only
                    // it references are unreachable here until the manifest arrives anyway.
                    Err(RepoError::MissingObjects { .. }) => reporter.warn(&format!(
                        "the manifest of `{}` ({}) is not in the cache; objects only it references cannot be told apart",
                        path.display(),
                        pointer.digest
                    )),
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(set)
    }

    /// Finds cache objects referenced by no pointer in the work tree (and, with
    /// `all_commits`, in no commit reachable from a branch, tag or HEAD); deletes them if
    /// `force`.
    pub fn gc(&self, all_commits: bool, force: bool, reporter: &dyn Reporter) -> Result<GcReport> {
        let referenced = self.referenced(all_commits, reporter)?;
        let mut report = GcReport::default();
        for (digest, size) in self.store.list()? {
            if referenced.contains(&digest) {
                report.kept += 1;
            } else {
                report.unreferenced.push((digest, size));
            }
        }
        if force {
            reporter.start(
                "removing unreferenced objects",
                report.unreferenced.len() as u64,
                report.unreferenced_bytes(),
            );
            for (digest, size) in &report.unreferenced {
                self.store.remove(digest)?;
                reporter.advance(1, *size);
            }
            reporter.finish();
            report.tmp_bytes_freed = self.store.clean_tmp(std::time::Duration::from_secs(3600))?;
            report.deleted = true;
        }
        Ok(report)
    }

    /// Verifies every cache object's hash and that every pointer's objects are present.
    pub fn fsck(&self, reporter: &dyn Reporter) -> Result<FsckReport> {
        let objects = self.store.list()?;
        let mut report = FsckReport {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|(_, size)| size).sum(),
            ..FsckReport::default()
        };
        reporter.start("verifying objects", report.objects, report.bytes);
        let store = &self.store;
        let corrupt: Vec<String> = self.install(|| {
            objects
                .par_iter()
                .filter_map(|(digest, size)| {
                    let result = store.verify(digest);
                    reporter.advance(1, *size);
                    result.err().map(|e| e.to_string())
                })
                .collect()
        });
        reporter.finish();
        report.problems.extend(corrupt);
        let present: HashSet<Digest> = objects.iter().map(|(d, _)| *d).collect();
        let (tracked, invalid) = self.tracked_lenient(None);
        report.problems.extend(invalid.into_iter().map(|e| e.to_string()));
        for t in tracked {
            report.pointers += 1;
            let pointer_path = self.pointer_path(&t.rel);
            match self.expected_files(&pointer_path, &t.pointer) {
                Ok(entries) => {
                    let absent: Vec<_> = entries.iter().filter(|e| !present.contains(&e.digest)).collect();
                    if let Some(first) = absent.first() {
                        report.problems.push(format!(
                            "pointer `{}` references {} object(s) missing from the cache (first {})",
                            pointer_path.display(),
                            absent.len(),
                            first.digest
                        ));
                    }
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        Ok(report)
    }
}

/// Removes directories left empty by deletions, up to (not including) `stop`.
fn prune_empty_parents(deleted: &[PathBuf], stop: &Path) {
    let mut dirs: Vec<&Path> = deleted.iter().filter_map(|p| p.parent()).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for dir in dirs {
        let mut cursor = Some(dir);
        while let Some(d) = cursor {
            if d == stop || !d.starts_with(stop) || fs::remove_dir(d).is_err() {
                break;
            }
            cursor = d.parent();
        }
    }
}
