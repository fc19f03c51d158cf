//! Cairn's content-addressed cache.
//!
//! # Layout (version 1)
//!
//! ```text
//! <cache>/objects-v1/<first 2 hex digits>/<remaining 62 hex digits>   read-only objects
//! <cache>/packs-v1/<name>.pack, <name>.idx                           small objects, packed
//! <cache>/tmp/                                                       in-flight writes
//! ```
//!
//! Objects arriving in batches (a fetch) may be stored in packs instead of one file each; the
//! format, its guarantees and a test vector are in the `pack` module's docs (`src/pack.rs`).
//! Every read finds an object loose or packed alike.
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
mod pack;
mod stat;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_hash::{CountingReader, Digest, LARGE_FILE_THRESHOLD, hash_bytes, hash_reader};

pub use link::{LinkKind, LinkStrategy, ParseLinkError, tmp_beside};
/// The local pack index decoder, for readers of the format and for fuzzing.
pub use pack::decode_index as decode_pack_index;
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
    #[error(
        "cache object {digest} (`{object}`) is corrupt: its content hashes to {actual}; `{dest}` was left as it was"
    )]
    CorruptObject { digest: Digest, actual: Digest, object: PathBuf, dest: PathBuf },
    #[error("pack `{path}` is damaged: {reason}; run `cairn fsck`, then fetch again what it reports missing")]
    DamagedPack { path: PathBuf, reason: String },
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
    packs: std::sync::Arc<pack::Packs>,
    /// Whether [`Store::put_verified_batch`] writes packs (false: loose objects, for link
    /// strategies that share objects with the work tree).
    packing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Where an object was found.
enum Found {
    Loose(PathBuf),
    Packed(std::sync::Arc<pack::PackFile>, u64, u64),
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A cache object opened for reading: yields its bytes and checks them against the digest
/// when the end is reached (see [`Store::open_object`]).
#[derive(Debug)]
pub struct VerifiedReader {
    file: File,
    hasher: blake3::Hasher,
    expected: Digest,
    path: PathBuf,
    done: bool,
}

impl VerifiedReader {
    /// The object's file (for its length or `stat`).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read(buf)?;
        if read > 0 {
            self.hasher.update(&buf[..read]);
        } else if !buf.is_empty() && !self.done {
            self.done = true;
            let actual = Digest::blake3(*self.hasher.finalize().as_bytes());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cache object {} (`{}`) is corrupt: its content hashes to {actual}",
                        self.expected,
                        self.path.display()
                    ),
                ));
            }
        }
        Ok(read)
    }
}

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
            packs: std::sync::Arc::new(pack::Packs::new(root.join("packs-v1"))),
            packing: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// The directory loose objects live in (`<cache>/objects-v1`).
    pub fn objects_dir(&self) -> &Path {
        &self.objects
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the object named `digest` lives as a loose file (whether or not it exists; it
    /// may be in a pack instead, see [`Store::loose_path`]).
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    /// Whether the cache has the object, loose or packed.
    pub fn contains(&self, digest: &Digest) -> Result<bool> {
        Ok(self.find(digest, pack::Refresh::IfChanged)?.is_some())
    }

    /// Finds an object: in a loaded pack, then as a loose file, then in packs written by
    /// others since the last look, as far as `refresh` says.
    fn find(&self, digest: &Digest, refresh: pack::Refresh) -> Result<Option<Found>> {
        if let Some((pack, offset, length)) = self.packs.locate(digest, pack::Refresh::Never)? {
            return Ok(Some(Found::Packed(pack, offset, length)));
        }
        let path = self.object_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok(Some(Found::Loose(path))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("look up", path, e)),
        }
        Ok(self
            .packs
            .locate(digest, refresh)?
            .map(|(pack, offset, length)| Found::Packed(pack, offset, length)))
    }

    /// The size of the object, or `None` if the cache lacks it.
    pub fn object_size(&self, digest: &Digest) -> Result<Option<u64>> {
        // One `stat` for a loose object (the common case when pushing what was added here).
        if let Some((_, _, length)) = self.packs.locate(digest, pack::Refresh::Never)? {
            return Ok(Some(length));
        }
        let path = self.object_path(digest);
        match fs::metadata(&path) {
            Ok(meta) => return Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("stat", path, e)),
        }
        Ok(self.packs.locate(digest, pack::Refresh::IfChanged)?.map(|(_, _, length)| length))
    }

    /// Whether [`Store::put_verified_batch`] writes packs (the default) or loose objects.
    /// Loose objects suit link strategies that share objects with the work tree (hard and
    /// symbolic links, reflinks), which need a file per object anyway.
    pub fn set_packing(&self, packing: bool) {
        self.packing.store(packing, Ordering::Relaxed);
    }

    /// Stores objects that arrived from elsewhere, each under the digest it is supposed to
    /// have, as one pack (or as loose objects, see [`Store::set_packing`]). Each is hashed
    /// first; those that do not match are not stored and are returned with the digest their
    /// bytes really have. Objects the cache already has are skipped.
    pub fn put_verified_batch(&self, objects: &[(Digest, &[u8])]) -> Result<Vec<(Digest, Digest)>> {
        let mut corrupt = Vec::new();
        if !self.packing.load(Ordering::Relaxed) {
            for (digest, bytes) in objects {
                match self.put_verified(digest, bytes) {
                    Ok(_) => {}
                    Err(StoreError::Corrupt { expected, actual }) => corrupt.push((expected, actual)),
                    Err(other) => return Err(other),
                }
            }
            return Ok(corrupt);
        }
        let mut good = Vec::with_capacity(objects.len());
        for &(digest, bytes) in objects {
            let actual = hash_bytes(bytes);
            if actual != digest {
                corrupt.push((digest, actual));
            } else if self.packs.locate(&digest, pack::Refresh::Never)?.is_none() {
                good.push((digest, bytes));
            }
        }
        if !good.is_empty() {
            self.packs.write(&self.tmp, &good)?;
        }
        Ok(corrupt)
    }

    /// The path of the object as a loose file, writing it out of its pack first if it is
    /// packed (for readers that need a file: streaming, links, uploads).
    pub fn loose_path(&self, digest: &Digest) -> Result<PathBuf> {
        match self.find(digest, pack::Refresh::Always)? {
            Some(Found::Loose(path)) => Ok(path),
            Some(Found::Packed(pack, offset, length)) => {
                let bytes = pack.read(digest, offset, length)?;
                self.write_object(digest, &bytes)?;
                Ok(self.object_path(digest))
            }
            None => Err(StoreError::MissingObject { digest: *digest, path: self.object_path(digest) }),
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
        // Only a regular file with one name is adopted: a symbolic link would make the cache
        // object a link (and its target read-only, wherever it is).
        let sole_regular_file =
            fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1);
        if racy || expected.executable() || !sole_regular_file {
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
        if let Some((pack, offset, length)) = self.packs.locate(digest, pack::Refresh::Never)? {
            return pack.read(digest, offset, length);
        }
        let path = self.object_path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some((pack, offset, length)) = self.packs.locate(digest, pack::Refresh::Always)? {
                    return pack.read(digest, offset, length);
                }
                return Err(self.map_missing(digest, &path, e, "read"));
            }
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        let actual = hash_bytes(&bytes);
        if actual != *digest {
            return Err(StoreError::Corrupt { expected: *digest, actual });
        }
        Ok(bytes)
    }

    /// Opens an object for streaming (a packed object is written out as a loose file first).
    /// The reader hashes what it yields and fails at the end of the object with
    /// `InvalidData` (naming the object) if the bytes were not what its name says: a
    /// consumer that stops on errors never treats a corrupt object as complete.
    pub fn open_object(&self, digest: &Digest) -> Result<VerifiedReader> {
        let path = self.loose_path(digest)?;
        let file = File::open(&path).map_err(|e| self.map_missing(digest, &path, e, "open"))?;
        Ok(VerifiedReader { file, hasher: blake3::Hasher::new(), expected: *digest, path, done: false })
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
        let path = match self.find(digest, pack::Refresh::Always)? {
            Some(Found::Packed(pack, offset, length)) => return pack.read(digest, offset, length).map(drop),
            Some(Found::Loose(path)) => path,
            None => {
                return Err(StoreError::MissingObject { digest: *digest, path: self.object_path(digest) });
            }
        };
        let mut file = File::open(&path).map_err(|e| self.map_missing(digest, &path, e, "open"))?;
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
        out.extend(self.packs.list()?);
        out.sort_unstable();
        out.dedup_by_key(|(digest, _)| *digest);
        Ok(out)
    }

    /// Deletes an object, loose and packed. Missing objects are not an error.
    pub fn remove(&self, digest: &Digest) -> Result<()> {
        self.remove_many(std::slice::from_ref(digest))
    }

    /// Deletes objects, loose and packed: packs holding some of them are rewritten without
    /// them (the new pack is complete before the old one goes). Missing objects are not an
    /// error.
    pub fn remove_many(&self, digests: &[Digest]) -> Result<()> {
        for digest in digests {
            let path = self.object_path(digest);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("delete", path, e)),
            }
        }
        let doomed: rustc_hash::FxHashSet<Digest> = digests.iter().copied().collect();
        self.packs.remove(&self.tmp, &doomed).map(drop)
    }

    /// Pack indexes that cannot be used (damaged or without their pack), with why; their
    /// objects count as absent. Up to date as of the last [`Store::list`].
    pub fn damaged_packs(&self) -> Vec<(PathBuf, String)> {
        self.packs.damaged()
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
        Ok(freed + self.packs.clean_orphans(min_age)?)
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
        if let Some((pack, offset, length)) = self.packs.locate(digest, pack::Refresh::Never)? {
            return self.materialize_packed(digest, &pack, offset, length, dest, executable, strategy);
        }
        let object = self.object_path(digest);
        match link::place(&object, digest, dest, executable, strategy, &self.reflink_unsupported) {
            Err(StoreError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && !object.exists() =>
            {
                match self.packs.locate(digest, pack::Refresh::Always)? {
                    Some((pack, offset, length)) => {
                        self.materialize_packed(digest, &pack, offset, length, dest, executable, strategy)
                    }
                    None => Err(StoreError::MissingObject { digest: *digest, path: object.clone() }),
                }
            }
            other => other,
        }
    }

    /// [`Store::materialize`] for a packed object. A pack holds no file to clone or link, so
    /// where the strategy's first usable kind is a copy the object's bytes are written
    /// straight from the pack (verified); otherwise the object is first written out as a loose
    /// file and placed from there.
    #[allow(clippy::too_many_arguments)]
    fn materialize_packed(
        &self,
        digest: &Digest,
        pack: &pack::PackFile,
        offset: u64,
        length: u64,
        dest: &Path,
        executable: bool,
        strategy: &LinkStrategy,
    ) -> Result<(LinkKind, FileStat)> {
        let reflink_known_unsupported = self.reflink_unsupported.load(Ordering::Relaxed);
        let first = strategy.kinds().iter().copied().find(|kind| match kind {
            LinkKind::Reflink => !reflink_known_unsupported,
            LinkKind::Hardlink | LinkKind::Symlink => !executable,
            LinkKind::Copy => true,
        });
        if matches!(first, Some(LinkKind::Copy)) || (first.is_none() && executable) {
            let bytes = pack.read(digest, offset, length)?;
            let stat = link::write_new(&bytes, dest, executable)?;
            return Ok((LinkKind::Copy, stat));
        }
        let object = self.loose_path(digest)?;
        link::place(&object, digest, dest, executable, strategy, &self.reflink_unsupported)
    }

    /// Whether reflinks work in this cache's filesystem (tried once, with two empty
    /// temporaries; remembered for the rest of the process).
    pub fn reflinks_work(&self) -> bool {
        if self.reflink_unsupported.load(Ordering::Relaxed) {
            return false;
        }
        let works = (|| -> io::Result<bool> {
            let (source, source_path) = self.create_tmp().map_err(|_| io::Error::other("tmp"))?;
            let (dest, dest_path) = self.create_tmp().map_err(|_| io::Error::other("tmp"))?;
            let result = reflink_copy::reflink_file(&source, &dest);
            let _ = fs::remove_file(source_path);
            let _ = fs::remove_file(dest_path);
            Ok(result.is_ok())
        })()
        .unwrap_or(false);
        if !works {
            self.reflink_unsupported.store(true, Ordering::Relaxed);
        }
        works
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
pub(crate) fn read_small(file: &mut File, size: u64) -> io::Result<Vec<u8>> {
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
        // A streamed read fails at the end instead of passing the bad bytes off as complete.
        let mut streamed = Vec::new();
        let error = store.open_object(&digest).unwrap().read_to_end(&mut streamed).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains(&digest.to_string()), "{error}");
        // Every link kind refuses to place it, and what was at the destination stays.
        for text in ["reflink,copy", "copy", "hardlink", "symlink"] {
            let strategy: LinkStrategy = text.parse().unwrap();
            let dest = dir.path().join(format!("out-{text}"));
            fs::write(&dest, b"kept").unwrap();
            let error = store.materialize(&digest, &dest, false, &strategy).unwrap_err();
            assert!(matches!(error, StoreError::CorruptObject { .. }), "{text}: {error}");
            assert!(error.to_string().contains(&dest.display().to_string()), "{error}");
            assert_eq!(fs::read(&dest).unwrap(), b"kept", "{text}");
        }
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(WORKTREE_TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        store.remove(&digest).unwrap();
        assert!(matches!(store.verify(&digest), Err(StoreError::MissingObject { .. })));
    }
}

#[cfg(test)]
mod pack_tests {
    use super::*;

    fn packed_store(dir: &Path) -> (Store, Vec<(Digest, Vec<u8>)>) {
        let store = Store::open(&dir.join("cache")).unwrap();
        let objects: Vec<(Digest, Vec<u8>)> = (0..50u32)
            .map(|i| {
                let bytes = format!("object {i} ").repeat(i as usize + 1).into_bytes();
                (hash_bytes(&bytes), bytes)
            })
            .collect();
        let batch: Vec<(Digest, &[u8])> = objects.iter().map(|(d, b)| (*d, b.as_slice())).collect();
        assert!(store.put_verified_batch(&batch).unwrap().is_empty());
        (store, objects)
    }

    #[test]
    fn packed_objects_are_found_read_listed_and_checked_out() {
        let dir = tempfile::tempdir().unwrap();
        let (store, objects) = packed_store(dir.path());
        assert_eq!(fs::read_dir(store.root().join("packs-v1")).unwrap().count(), 2, "one pack, one index");
        assert_eq!(fs::read_dir(store.root().join("objects-v1")).unwrap().count(), 0, "nothing loose");
        for (digest, bytes) in &objects {
            assert!(store.contains(digest).unwrap());
            assert_eq!(store.object_size(digest).unwrap(), Some(bytes.len() as u64));
            assert_eq!(&store.read_verified(digest).unwrap(), bytes);
            store.verify(digest).unwrap();
        }
        let listed: Vec<Digest> = store.list().unwrap().into_iter().map(|(d, _)| d).collect();
        let mut expected: Vec<Digest> = objects.iter().map(|(d, _)| *d).collect();
        expected.sort();
        assert_eq!(listed, expected);

        // Copies come straight from the pack; links need a loose file, written on demand.
        let (digest, bytes) = &objects[7];
        let copy = dir.path().join("copy");
        let (kind, stat) = store.materialize(digest, &copy, false, &"copy".parse().unwrap()).unwrap();
        assert_eq!((kind, fs::read(&copy).unwrap()), (LinkKind::Copy, bytes.clone()));
        assert_eq!(stat, FileStat::of_path(&copy).unwrap());
        assert!(!store.object_path(digest).exists());
        let exe = dir.path().join("exe");
        let (kind, stat) = store.materialize(digest, &exe, true, &"hardlink".parse().unwrap()).unwrap();
        assert!(kind == LinkKind::Copy && stat.executable());
        let link = dir.path().join("link");
        let (kind, _) = store.materialize(digest, &link, false, &"hardlink".parse().unwrap()).unwrap();
        assert_eq!(kind, LinkKind::Hardlink);
        assert_eq!(fs::read(&link).unwrap(), *bytes);
        assert!(store.object_path(digest).exists(), "the hard link needed a loose object");
        let mut streamed = Vec::new();
        store.open_object(&objects[8].0).unwrap().read_to_end(&mut streamed).unwrap();
        assert_eq!(streamed, objects[8].1);
    }

    #[test]
    fn another_process_sees_packs_written_after_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let early = Store::open(&dir.path().join("cache")).unwrap();
        let digest = hash_bytes(b"late");
        assert!(!early.contains(&digest).unwrap());
        let writer = Store::open(&dir.path().join("cache")).unwrap();
        writer.put_verified_batch(&[(digest, b"late")]).unwrap();
        assert_eq!(early.read_verified(&digest).unwrap(), b"late");
    }

    #[test]
    fn damaged_input_is_refused_and_damaged_packs_are_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let good = hash_bytes(b"good");
        let claimed = hash_bytes(b"claimed");
        let corrupt = store.put_verified_batch(&[(good, b"good"), (claimed, b"forged")]).unwrap();
        assert_eq!(corrupt, vec![(claimed, hash_bytes(b"forged"))]);
        assert!(store.contains(&good).unwrap() && !store.contains(&claimed).unwrap());

        // Bytes damaged inside the pack: the read fails, nothing wrong reaches a file.
        let pack = fs::read_dir(store.root().join("packs-v1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        fs::set_permissions(&pack, fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = fs::read(&pack).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&pack, &bytes).unwrap();
        let fresh = Store::open(&dir.path().join("cache")).unwrap();
        assert!(matches!(fresh.verify(&good), Err(StoreError::Corrupt { .. })));
        let dest = dir.path().join("out");
        assert!(fresh.materialize(&good, &dest, false, &LinkStrategy::default()).is_err());
        assert!(!dest.exists());

        // A damaged index makes its objects absent and is reported, without breaking the rest.
        let index = pack.with_extension("idx");
        fs::set_permissions(&index, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&index, b"CAIRNLI\x01 truncated").unwrap();
        let other = fresh.put_bytes(b"loose one").unwrap();
        let fresh = Store::open(&dir.path().join("cache")).unwrap();
        assert_eq!(fresh.list().unwrap().len(), 1);
        assert!(fresh.contains(&other).unwrap() && !fresh.contains(&good).unwrap());
        assert_eq!(fresh.damaged_packs().len(), 1);
    }

    #[test]
    fn removing_some_packed_objects_rewrites_the_pack_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, objects) = packed_store(dir.path());
        let doomed: Vec<Digest> = objects.iter().step_by(2).map(|(d, _)| *d).collect();
        store.remove_many(&doomed).unwrap();
        for (i, (digest, bytes)) in objects.iter().enumerate() {
            if i % 2 == 0 {
                assert!(!store.contains(digest).unwrap());
            } else {
                assert_eq!(&store.read_verified(digest).unwrap(), bytes);
            }
        }
        assert_eq!(fs::read_dir(store.root().join("packs-v1")).unwrap().count(), 2, "the old pack is gone");
        let rest: Vec<Digest> = objects.iter().skip(1).step_by(2).map(|(d, _)| *d).collect();
        store.remove_many(&rest).unwrap();
        assert_eq!(fs::read_dir(store.root().join("packs-v1")).unwrap().count(), 0);
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn a_pack_left_without_its_index_is_cleaned_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = packed_store(dir.path());
        let packs = store.root().join("packs-v1");
        let index = fs::read_dir(&packs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "idx"))
            .unwrap();
        fs::remove_file(&index).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store.clean_tmp(std::time::Duration::from_secs(3600)).unwrap(), 0, "too recent");
        assert!(store.clean_tmp(std::time::Duration::ZERO).unwrap() > 0);
        assert_eq!(fs::read_dir(&packs).unwrap().count(), 0);
    }

    #[test]
    fn without_packing_a_batch_is_stored_loose() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_packing(false);
        let digest = hash_bytes(b"loose");
        store.put_verified_batch(&[(digest, b"loose")]).unwrap();
        assert!(store.object_path(&digest).exists());
        assert!(!dir.path().join("packs-v1").exists());
    }
}
