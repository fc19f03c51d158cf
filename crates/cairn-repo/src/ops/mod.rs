//! Repository operations: add, commit, status, checkout, diff, ls, cat, rm, unprotect, gc, fsck.
//!
//! This module holds the result types and the pieces every operation shares (scanning a data
//! path, digesting it through the stat cache, comparing it with its pointer); each submodule
//! adds one family of commands to `Repo`.

mod add;
mod checkout;
mod inspect;
mod maintenance;
mod outputs;
mod remote;

pub use remote::{CloudGc, FetchOutcome, PushOutcome, Selection, TransferProblem};

use std::fs::{self, File};
use std::io::{self};
use std::path::{Path, PathBuf};

use cairn_hash::{CountingReader, Digest, ManifestEntry, hash_reader};
use cairn_store::FileStat;
use rayon::prelude::*;

use crate::confine::Confinement;
use crate::pointer::Pointer;
use crate::statcache::StatCache;
use crate::walk::{Scan, ScannedFile, scan_dir};
use crate::{Repo, RepoError, Reporter, Result, Tracked, join_rel};

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
    /// What was kept, by where its references came from: (what, pointers read).
    pub kept_for: Vec<(String, u64)>,
}

/// Which references `cairn gc` keeps the data of. Each scope includes the narrower ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GcScope {
    /// Only the work tree's pointers (and what the caller adds: pipeline outputs, the run
    /// cache, experiment records).
    WorkTree,
    /// Also the pointers at HEAD and at the tip of every branch and tag: the default, so
    /// that nothing a `git checkout` of a branch or tag needs, or `push --all-tags` sends,
    /// is removed.
    #[default]
    Refs,
    /// Also every commit reachable from a branch, tag or HEAD.
    AllCommits,
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
    /// The path is a directory (false if it is a file or does not exist).
    is_dir: bool,
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
    cairn_fs::write(path, content).map_err(|e| RepoError::io("write", path, e))
}

/// The data path's files as the work tree has them: `Ok(None)` if it does not exist. No
/// symbolic link on the way, or inside, may lead where `confine` forbids reading.
fn scan_data(abs: &Path, confine: &Confinement) -> Result<Option<Scan>> {
    confine.check_scan_root(abs)?;
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
        Ok(Some(scan_dir(abs, confine)?))
    } else if meta.is_file() {
        let file =
            ScannedFile { rel: Vec::new(), abs: abs.to_path_buf(), stat: FileStat::from_metadata(&meta) };
        Ok(Some(Scan { is_dir: false, files: vec![file], leftovers: Vec::new() }))
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
                || scan_data(&self.abs(&tracked.rel), &self.confinement()),
            )
        });
        let (expected, scan) = (expected?, scan?);
        Ok((expected, self.digest_scan(&tracked.rel, scan, cache, reporter)?))
    }

    /// The data path's files with their digests (`None` if it does not exist), the fresh
    /// hashes to record, and leftover temporary files from killed runs.
    fn current_files(&self, rel: &[u8], cache: &StatCache, reporter: &dyn Reporter) -> Result<Current> {
        self.digest_scan(rel, scan_data(&self.abs(rel), &self.confinement())?, cache, reporter)
    }

    fn digest_scan(
        &self,
        rel: &[u8],
        scan: Option<Scan>,
        cache: &StatCache,
        reporter: &dyn Reporter,
    ) -> Result<Current> {
        Ok(match scan {
            None => Current { files: None, is_dir: false, recorded: Vec::new(), leftovers: Vec::new() },
            Some(scan) => {
                let (work, recorded) = self.digest_files(rel, scan.files, cache, reporter)?;
                Current { files: Some(work), is_dir: scan.is_dir, recorded, leftovers: scan.leftovers }
            }
        })
    }

    fn record_all(cache: &mut StatCache, recorded: Vec<Recorded>, hashed_at: i128) {
        for (key, stat, digest) in recorded {
            cache.record_hashed(key, stat, digest, hashed_at);
        }
    }
}
