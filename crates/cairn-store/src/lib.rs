//! Cairn's content-addressed cache.
//!
//! # Layout (version 1)
//!
//! ```text
//! <cache>/objects-v1/<first 2 hex digits>/<remaining 62 hex digits>   read-only objects
//! <cache>/tmp/                                                       in-flight writes
//! ```
//!
//! An object's file name is its BLAKE3 digest, so an object is valid exactly when the BLAKE3
//! of its bytes equals its name; `cairn fsck` checks that. Objects are hashed from the very
//! bytes that are written, created read-only in `tmp/` (same filesystem) — as an unnamed
//! `O_TMPFILE` inode linked into place when complete, or as a named temporary file renamed
//! into place where that is unsupported and for large files. An object that already exists is success. Nothing in the
//! cache is modified in place, so a process killed at any moment leaves at worst an orphaned
//! file in `tmp/` (removed by `cairn gc`).
//!
//! Durability is batched: writers call [`Store::sync`] once per command (one `syncfs`) before
//! anything that references the new objects, such as a pointer file, is written.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let store = cairn_store::Store::open(dir.path()).unwrap();
//! let stored = store.put_bytes(b"hello\n").unwrap();
//! assert!(store.contains(&stored).unwrap());
//! assert_eq!(std::fs::read(store.object_path(&stored)).unwrap(), b"hello\n");
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod link;
mod stat;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_hash::{CountingReader, Digest, LARGE_FILE_THRESHOLD, hash_bytes, hash_reader};

pub use link::{LinkKind, LinkStrategy, ParseLinkError, tmp_beside};
pub use stat::FileStat;

/// Receives progress from long operations (here and in the crates above: the repository,
/// remotes). Every method has a no-op default; front ends draw progress bars from it.
pub trait Reporter: Sync {
    /// A phase begins: `items` files and `bytes` bytes are expected (0 if unknown).
    fn start(&self, _label: &str, _items: u64, _bytes: u64) {}
    /// Some files and bytes of the current phase are done.
    fn advance(&self, _items: u64, _bytes: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
    /// Something the user should know that is not an error.
    fn warn(&self, _message: &str) {}
}

/// A [`Reporter`] that ignores everything.
pub struct NoReporter;
impl Reporter for NoReporter {}

/// Errors from the object cache. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} `{path}`: {source}")]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("`{path}` changed while it was being read; nothing was stored for it")]
    ChangedWhileReading { path: PathBuf },
    #[error("cache object {digest} is missing (expected at `{path}`)")]
    MissingObject { digest: Digest, path: PathBuf },
    #[error("cache object {expected} is corrupt: its content hashes to {actual}")]
    Corrupt { expected: Digest, actual: Digest },
    #[error("no link strategy in `{strategy}` could place `{path}`: {source}")]
    LinkFailed { strategy: String, path: PathBuf, source: io::Error },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io { action, path: path.into(), source }
    }

    /// The underlying I/O error, if this is one (for classifying "no space left" and
    /// "permission denied" in front ends).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            StoreError::Io { source, .. } | StoreError::LinkFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A file that was stored: its digest, length and the `stat` it had while it was read.
#[derive(Clone, Copy, Debug)]
pub struct StoredFile {
    pub digest: Digest,
    pub size: u64,
    pub stat: FileStat,
    /// False when the cache already had the object.
    pub new: bool,
    /// The file at the stored path is now the object's own (read-only) inode.
    pub adopted: bool,
}

/// The object cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    objects: PathBuf,
    tmp: PathBuf,
    /// Set after the first reflink fails as unsupported, so later files skip the attempt.
    reflink_unsupported: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when `O_TMPFILE` + `linkat` does not work here; writes then use named temporaries.
    tmpfile_unsupported: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Prefix of in-flight files in `tmp/`.
pub const TMP_PREFIX: &str = ".tmp-";

/// Prefix of the temporary files Cairn writes beside work-tree files before renaming them
/// into place; one left behind by a killed process is not data.
pub const WORKTREE_TMP_PREFIX: &str = ".cairn-tmp-";

/// A unique name for a temporary file: process id plus a per-process counter.
pub fn unique_tmp_name(prefix: &str) -> String {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}-{n}", PID.get_or_init(std::process::id))
}

impl Store {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let objects = root.join("objects-v1");
        let tmp = root.join("tmp");
        for dir in [&objects, &tmp] {
            fs::create_dir_all(dir).map_err(|e| StoreError::io("create directory", dir, e))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            objects,
            tmp,
            reflink_unsupported: Default::default(),
            tmpfile_unsupported: Default::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object named `digest` lives (whether or not it exists).
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, digest: &Digest) -> Result<bool> {
        let path = self.object_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("look up", path, e)),
        }
    }

    /// Stores `bytes` as an object and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = hash_bytes(bytes);
        if !self.contains(&digest)? {
            self.write_object(&digest, bytes)?;
        }
        Ok(digest)
    }

    /// Writes an object whose bytes are in memory. Where the filesystem supports `O_TMPFILE`
    /// the object is an unnamed inode until it is complete and then linked into place (one
    /// directory entry, nothing to clean up after a crash); elsewhere a named temporary file
    /// in `tmp/` is renamed into place. Returns false if the object already existed.
    fn write_object(&self, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        use rustix::fs::{AtFlags, CWD, Mode, OFlags};
        use std::os::fd::AsRawFd;
        if !self.tmpfile_unsupported.load(Ordering::Relaxed) {
            let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
            match rustix::fs::openat(CWD, &self.tmp, flags, Mode::from_bits_truncate(0o444)) {
                Ok(fd) => {
                    let mut file = File::from(fd);
                    file.write_all(bytes).map_err(|e| StoreError::io("write an object in", &self.tmp, e))?;
                    let target = self.object_path(digest);
                    let handle = format!("/proc/self/fd/{}", file.as_raw_fd());
                    let link = || rustix::fs::linkat(CWD, &handle, CWD, &target, AtFlags::SYMLINK_FOLLOW);
                    let mut result = link();
                    if result == Err(rustix::io::Errno::NOENT) {
                        // First object in this shard (or no /proc: then the retry fails too).
                        let parent = target.parent().expect("object paths have a shard directory");
                        fs::create_dir_all(parent)
                            .map_err(|e| StoreError::io("create directory", parent, e))?;
                        result = link();
                    }
                    match result {
                        Ok(()) => return Ok(true),
                        Err(rustix::io::Errno::EXIST) => return Ok(false),
                        Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => return Err(StoreError::io("link into the cache", &target, e.into())),
                    }
                }
                Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {}
                Err(e) => return Err(StoreError::io("create an object in", &self.tmp, e.into())),
            }
            self.tmpfile_unsupported.store(true, Ordering::Relaxed);
        }
        let (mut file, tmp) = self.create_tmp()?;
        file.write_all(bytes).map_err(|e| StoreError::io("write", &tmp, e))?;
        drop(file);
        self.finalize(&tmp, digest)?;
        Ok(true)
    }

    /// Stores bytes that arrived from elsewhere (a remote) under the digest they are supposed
    /// to have. They are hashed first; if they do not match, nothing is stored and
    /// [`StoreError::Corrupt`] is returned. Returns false if the object already existed.
    pub fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<bool> {
        let actual = hash_bytes(bytes);
        if actual != *expected {
            return Err(StoreError::Corrupt { expected: *expected, actual });
        }
        if self.contains(expected)? {
            return Ok(false);
        }
        self.write_object(expected, bytes)
    }

    /// A new, empty object file to be filled in any order (for example by parallel ranged
    /// downloads) and then committed under its digest with [`PartialObject::commit`]. Dropped
    /// uncommitted, it is deleted.
    pub fn partial(&self) -> Result<PartialObject> {
        let (file, path) = self.create_tmp()?;
        Ok(PartialObject { store: self.clone(), file, path: Some(path) })
    }

    /// Stores the regular file at `path` (following symlinks). The object is hashed from the
    /// bytes actually copied; if the file's `stat` after reading differs from `expected` (the
    /// `stat` the caller saw when it listed the file; taken from the open file if `None`), the
    /// copy is discarded and [`StoreError::ChangedWhileReading`] is returned.
    ///
    /// `progress` receives byte counts that add up to the file's size: for a large new file
    /// as the copy into the cache proceeds, otherwise once.
    pub fn put_file(
        &self,
        path: &Path,
        expected: Option<&FileStat>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<StoredFile> {
        let mut file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let before = match expected {
            Some(stat) => *stat,
            None => FileStat::of_file(&file).map_err(|e| StoreError::io("stat", path, e))?,
        };
        let changed = || StoreError::ChangedWhileReading { path: path.to_path_buf() };
        let check_after = |file: &File, read: u64| -> Result<()> {
            let after = FileStat::of_file(file).map_err(|e| StoreError::io("stat", path, e))?;
            if after != before || read != before.size { Err(changed()) } else { Ok(()) }
        };

        if before.size < LARGE_FILE_THRESHOLD {
            let bytes = read_small(&mut file, before.size).map_err(|e| StoreError::io("read", path, e))?;
            check_after(&file, bytes.len() as u64)?;
            let digest = hash_bytes(&bytes);
            let new = !self.contains(&digest)? && self.write_object(&digest, &bytes)?;
            progress(before.size);
            return Ok(StoredFile { digest, size: before.size, stat: before, new, adopted: false });
        }

        // Large file: hash first; copy only if the cache lacks it, hashing the copy again so the
        // object is named by the bytes it really holds.
        let (digest, read) =
            hash_reader(&mut file, before.size, None).map_err(|e| StoreError::io("read", path, e))?;
        check_after(&file, read)?;
        if self.contains(&digest)? {
            progress(read);
            return Ok(StoredFile { digest, size: read, stat: before, new: false, adopted: false });
        }
        let mut source = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let (mut out, tmp) = self.create_tmp()?;
        let copied = hash_reader(CountingReader::new(&mut source, progress), before.size, Some(&mut out));
        drop(out);
        let discard = |error| {
            let _ = fs::remove_file(&tmp);
            error
        };
        let (copied_digest, copied_len) =
            copied.map_err(|e| discard(StoreError::io("copy into the cache", path, e)))?;
        if copied_digest != digest || copied_len != read {
            return Err(discard(changed()));
        }
        check_after(&source, copied_len).map_err(discard)?;
        self.finalize(&tmp, &digest)?;
        Ok(StoredFile { digest, size: read, stat: before, new: true, adopted: false })
    }

    /// Stores the regular file at `path` by making its own inode the object: the file is
    /// hashed, made read-only, hard-linked into the cache, and checked again — no data is
    /// copied. This is what `add` does when the link strategy shares objects (`hardlink`,
    /// `symlink`); the work-tree file then *is* the read-only object.
    ///
    /// The content is trusted to be what was hashed only if the inode's size and mtime are
    /// unchanged after the link and its mtime is older than the racy window (the same rule as
    /// the stat cache); otherwise, and for files on another filesystem or with other links,
    /// the file is copied with [`Store::put_file`] instead.
    pub fn adopt_file(
        &self,
        path: &Path,
        expected: &FileStat,
        racy_before_ns: i128,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<StoredFile> {
        use std::os::unix::fs::MetadataExt;
        let copy = || self.put_file(path, Some(expected), progress);
        let racy = expected.mtime_ns >= racy_before_ns;
        if racy || expected.executable() || fs::metadata(path).map(|m| m.nlink()).unwrap_or(0) != 1 {
            return copy();
        }
        let mut file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let (digest, read) = hash_reader(CountingReader::new(&mut file, progress), expected.size, None)
            .map_err(|e| StoreError::io("read", path, e))?;
        let after = FileStat::of_file(&file).map_err(|e| StoreError::io("stat", path, e))?;
        if after != *expected || read != expected.size {
            return Err(StoreError::ChangedWhileReading { path: path.to_path_buf() });
        }
        if self.contains(&digest)? {
            return Ok(StoredFile { digest, size: read, stat: after, new: false, adopted: false });
        }
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| StoreError::io("make read-only", path, e))?;
        let tmp = self.tmp.join(unique_tmp_name(TMP_PREFIX));
        match fs::hard_link(path, &tmp) {
            Ok(()) => {}
            // Another filesystem, or links not allowed: fall back to a copy (and give the file
            // its mode back, since it stays an ordinary work-tree file).
            Err(_) => {
                let _ = file.set_permissions(fs::Permissions::from_mode(expected.mode & 0o7777));
                return copy();
            }
        }
        let linked = fs::metadata(&tmp).map_err(|e| StoreError::io("stat", &tmp, e))?;
        let unchanged = linked.ino() == expected.ino
            && linked.len() == expected.size
            && FileStat::from_metadata(&linked).mtime_ns == expected.mtime_ns;
        if !unchanged {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::ChangedWhileReading { path: path.to_path_buf() });
        }
        self.finalize(&tmp, &digest)?;
        let stat = FileStat::of_file(&file).map_err(|e| StoreError::io("stat", path, e))?;
        Ok(StoredFile { digest, size: read, stat, new: true, adopted: true })
    }

    /// A new temporary file in `tmp/`, created read-only (the open handle can still write).
    ///
    /// Measured on ext4: creating temporaries in the 256 shard directories instead made a
    /// 100,000-file add twice as slow (inodes spread over many block groups), so every write
    /// goes through the one `tmp/` directory and is renamed into its shard.
    fn create_tmp(&self) -> Result<(File, PathBuf)> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.tmp.join(unique_tmp_name(TMP_PREFIX));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)
            .map_err(|e| StoreError::io("create", &tmp, e))?;
        Ok((file, tmp))
    }

    /// Renames the finished, read-only `tmp` to the object path of `digest`.
    fn finalize(&self, tmp: &Path, digest: &Digest) -> Result<()> {
        let target = self.object_path(digest);
        let result = match fs::rename(tmp, &target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // First object in this shard.
                let parent = target.parent().expect("object paths have a shard directory");
                fs::create_dir_all(parent)
                    .and_then(|()| fs::rename(tmp, &target))
                    .map_err(|e| StoreError::io("rename into the cache", &target, e))
            }
            other => other.map_err(|e| StoreError::io("rename into the cache", &target, e)),
        };
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result
    }

    /// Reads a whole object, verifying its digest.
    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.object_path(digest);
        let bytes = fs::read(&path).map_err(|e| self.map_missing(digest, &path, e, "read"))?;
        let actual = hash_bytes(&bytes);
        if actual != *digest {
            return Err(StoreError::Corrupt { expected: *digest, actual });
        }
        Ok(bytes)
    }

    /// Opens an object for streaming.
    pub fn open_object(&self, digest: &Digest) -> Result<File> {
        let path = self.object_path(digest);
        File::open(&path).map_err(|e| self.map_missing(digest, &path, e, "open"))
    }

    fn map_missing(&self, digest: &Digest, path: &Path, e: io::Error, action: &'static str) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::MissingObject { digest: *digest, path: path.to_path_buf() }
        } else {
            StoreError::io(action, path, e)
        }
    }

    /// Hashes an object's content and compares it with its name.
    pub fn verify(&self, digest: &Digest) -> Result<()> {
        let mut file = self.open_object(digest)?;
        let path = self.object_path(digest);
        let size = file.metadata().map_err(|e| StoreError::io("stat", &path, e))?.len();
        let (actual, _) = hash_reader(&mut file, size, None).map_err(|e| StoreError::io("read", &path, e))?;
        if actual != *digest {
            return Err(StoreError::Corrupt { expected: *digest, actual });
        }
        Ok(())
    }

    /// Every object in the cache with its size. Files whose names are not digests are skipped.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let mut out = Vec::new();
        let shards = fs::read_dir(&self.objects).map_err(|e| StoreError::io("list", &self.objects, e))?;
        for shard in shards {
            let shard = shard.map_err(|e| StoreError::io("list", &self.objects, e))?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str().filter(|s| s.len() == 2) else { continue };
            let entries = fs::read_dir(shard.path()).map_err(|e| StoreError::io("list", shard.path(), e))?;
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io("list", shard.path(), e))?;
                let name = entry.file_name();
                let Some(rest) = name.to_str() else { continue };
                let Ok(digest) = format!("blake3:{prefix}{rest}").parse::<Digest>() else {
                    continue;
                };
                let size = entry.metadata().map_err(|e| StoreError::io("stat", entry.path(), e))?.len();
                out.push((digest, size));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes an object. Missing objects are not an error.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.object_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("delete", path, e)),
        }
    }

    /// Removes temporary files older than `min_age` left by interrupted writers; returns how
    /// many bytes were freed.
    pub fn clean_tmp(&self, min_age: std::time::Duration) -> Result<u64> {
        let mut freed = 0;
        let entries = fs::read_dir(&self.tmp).map_err(|e| StoreError::io("list", &self.tmp, e))?;
        let now = std::time::SystemTime::now();
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let old = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            if old && fs::remove_file(entry.path()).is_ok() {
                freed += meta.len();
            }
        }
        Ok(freed)
    }

    /// Makes every write to the cache's filesystem durable (one `syncfs`), so that pointers
    /// written afterwards never reference objects a crash could lose.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.objects).map_err(|e| StoreError::io("open", &self.objects, e))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| StoreError::io("sync the filesystem of", &self.objects, e.into()))
    }

    /// Places a copy or link of the object `digest` at `dest`, atomically replacing whatever is
    /// there, trying the kinds of `strategy` in order. Returns the kind used and the new file's
    /// `stat`. Executable files are never hard- or symlinked (the shared object is read-only
    /// and not executable), so they fall through to reflink or copy, with copy as the last
    /// resort even when the strategy does not name it.
    pub fn materialize(
        &self,
        digest: &Digest,
        dest: &Path,
        executable: bool,
        strategy: &LinkStrategy,
    ) -> Result<(LinkKind, FileStat)> {
        let object = self.object_path(digest);
        link::place(&object, dest, executable, strategy, &self.reflink_unsupported).map_err(|e| match e {
            StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound && !object.exists() => {
                StoreError::MissingObject { digest: *digest, path: object.clone() }
            }
            other => other,
        })
    }
}

/// An object being assembled in `tmp/`; see [`Store::partial`].
#[derive(Debug)]
pub struct PartialObject {
    store: Store,
    file: File,
    /// `None` once committed.
    path: Option<PathBuf>,
}

impl PartialObject {
    /// The open, writable file (use positional writes to fill it in any order).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the object is being assembled (for messages).
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(&self.store.tmp)
    }

    /// Hashes the assembled file and moves it into the cache if it hashes to `expected`;
    /// otherwise deletes it and returns [`StoreError::Corrupt`].
    pub fn commit(mut self, expected: &Digest) -> Result<()> {
        let path = self.path.take().expect("a partial object is committed once");
        let discard = |error: StoreError| {
            let _ = fs::remove_file(&path);
            error
        };
        let mut reader = File::open(&path).map_err(|e| discard(StoreError::io("open", &path, e)))?;
        let size = reader.metadata().map_err(|e| discard(StoreError::io("stat", &path, e)))?.len();
        let (actual, _) =
            hash_reader(&mut reader, size, None).map_err(|e| discard(StoreError::io("read", &path, e)))?;
        if actual != *expected {
            return Err(discard(StoreError::Corrupt { expected: *expected, actual }));
        }
        self.store.finalize(&path, expected)
    }
}

impl Drop for PartialObject {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Reads a file expected to hold `size` bytes without the size probing of `read_to_end`;
/// returns what was really there (more or fewer bytes if it changed).
fn read_small(file: &mut File, size: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; size as usize];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            // Probe for growth past the expected size.
            let mut probe = [0u8; 1];
            match file.read(&mut probe) {
                Ok(0) => return Ok(bytes),
                Ok(_) => {
                    bytes.push(probe[0]);
                    file.read_to_end(&mut bytes)?;
                    return Ok(bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => {
                bytes.truncate(filled);
                return Ok(bytes);
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_file_small_and_large_store_verified_read_only_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        for size in [0usize, 10, (LARGE_FILE_THRESHOLD as usize) + 17] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            fs::write(&path, &data).unwrap();
            let stored = store.put_file(&path, None, &|_| {}).unwrap();
            assert!(stored.new);
            assert_eq!(stored.digest, hash_bytes(&data));
            assert_eq!(stored.size, size as u64);
            store.verify(&stored.digest).unwrap();
            let mode = fs::metadata(store.object_path(&stored.digest)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o444);
            assert!(!store.put_file(&path, None, &|_| {}).unwrap().new, "second put deduplicates");
        }
        assert_eq!(store.list().unwrap().len(), 3);
        assert_eq!(fs::read_dir(dir.path().join("cache/tmp")).unwrap().count(), 0);
    }

    #[test]
    fn named_temporary_fallback_writes_the_same_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.tmpfile_unsupported.store(true, Ordering::Relaxed);
        let digest = store.put_bytes(b"via rename").unwrap();
        store.verify(&digest).unwrap();
        assert_eq!(store.put_bytes(b"via rename").unwrap(), digest);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn adopt_links_old_files_and_copies_racy_ones() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let old = dir.path().join("old");
        fs::write(&old, b"settled content").unwrap();
        let stat = FileStat::of_path(&old).unwrap();
        let stored = store.adopt_file(&old, &stat, stat.mtime_ns + 1, &|_| {}).unwrap();
        assert!(stored.adopted && stored.new);
        let object = fs::metadata(store.object_path(&stored.digest)).unwrap();
        assert_eq!(object.ino(), stat.ino);
        assert!(object.permissions().readonly());
        store.verify(&stored.digest).unwrap();

        let fresh = dir.path().join("fresh");
        fs::write(&fresh, b"just written").unwrap();
        let stat = FileStat::of_path(&fresh).unwrap();
        let stored = store.adopt_file(&fresh, &stat, stat.mtime_ns, &|_| {}).unwrap();
        assert!(!stored.adopted, "racy files are copied");
        assert_ne!(fs::metadata(store.object_path(&stored.digest)).unwrap().ino(), stat.ino);

        let changed = dir.path().join("changed");
        fs::write(&changed, b"one").unwrap();
        let stale = FileStat::of_path(&changed).unwrap();
        fs::write(&changed, b"two, longer").unwrap();
        let error = store.adopt_file(&changed, &stale, stale.mtime_ns + 1, &|_| {}).unwrap_err();
        assert!(matches!(error, StoreError::ChangedWhileReading { .. }));
    }

    #[test]
    fn corruption_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = store.put_bytes(b"good").unwrap();
        let path = store.object_path(&digest);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"evil").unwrap();
        assert!(matches!(store.verify(&digest), Err(StoreError::Corrupt { .. })));
        assert!(matches!(store.read_verified(&digest), Err(StoreError::Corrupt { .. })));
        store.remove(&digest).unwrap();
        assert!(matches!(store.verify(&digest), Err(StoreError::MissingObject { .. })));
    }
}
