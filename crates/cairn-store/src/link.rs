use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_hash::{Digest, hash_bytes, hash_reader};

use crate::{FileStat, StoreError, unique_tmp_name};

/// How a workspace file is made from a cache object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A copy-on-write clone (btrfs, XFS, APFS): instant, no extra space, editable.
    Reflink,
    /// A hard link to the read-only object: instant, no extra space, read-only.
    Hardlink,
    /// A symbolic link to the read-only object.
    Symlink,
    /// A plain copy: works everywhere, uses space, editable.
    Copy,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Reflink => "reflink",
            LinkKind::Hardlink => "hardlink",
            LinkKind::Symlink => "symlink",
            LinkKind::Copy => "copy",
        }
    }

    /// Whether the workspace file shares the cache object, and so must stay read-only.
    pub fn shares_object(self) -> bool {
        matches!(self, LinkKind::Hardlink | LinkKind::Symlink)
    }
}

/// An ordered list of link kinds to try, written `reflink,copy` (the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStrategy(Vec<LinkKind>);

impl Default for LinkStrategy {
    fn default() -> Self {
        LinkStrategy(vec![LinkKind::Reflink, LinkKind::Copy])
    }
}

impl LinkStrategy {
    pub fn kinds(&self) -> &[LinkKind] {
        &self.0
    }

    /// The first kind in the list: what `add` uses for the file it just stored.
    pub fn preferred(&self) -> LinkKind {
        self.0[0]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a link strategy: use a comma-separated list of reflink, hardlink, symlink, copy (for example `reflink,copy`)"
)]
pub struct ParseLinkError(String);

impl FromStr for LinkStrategy {
    type Err = ParseLinkError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let kind = match part {
                "reflink" => LinkKind::Reflink,
                "hardlink" => LinkKind::Hardlink,
                "symlink" => LinkKind::Symlink,
                "copy" => LinkKind::Copy,
                _ => return Err(ParseLinkError(text.to_owned())),
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(ParseLinkError(text.to_owned()));
        }
        Ok(LinkStrategy(kinds))
    }
}

impl fmt::Display for LinkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.0.iter().map(|k| k.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// A temporary path beside `dest`, so the final rename stays on one filesystem. Its name
/// starts with [`crate::WORKTREE_TMP_PREFIX`], which scans of tracked directories skip.
pub fn tmp_beside(dest: &Path) -> PathBuf {
    let name = unique_tmp_name(crate::WORKTREE_TMP_PREFIX);
    match dest.parent() {
        Some(parent) => parent.join(name),
        None => PathBuf::from(name),
    }
}

/// Writes `bytes` as a new file at `dest`, atomically replacing whatever is there, and
/// returns its `stat`. The file is written completely under a temporary name beside `dest`
/// and renamed into place, so a killed process never leaves a partial file at `dest`.
pub(crate) fn write_new(bytes: &[u8], dest: &Path, executable: bool) -> Result<FileStat, StoreError> {
    use std::io::Write;
    let tmp = tmp_beside(dest);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).map(|()| file));
    let file = match written {
        Ok(file) => file,
        Err(error) => {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("write", dest, error));
        }
    };
    if let Err(error) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io("replace", dest, error));
    }
    // Stat after the rename: it changes the ctime the stat cache compares.
    FileStat::of_file(&file).map_err(|e| StoreError::io("stat", dest, e))
}

/// Why placing one link kind failed: the file system refused (try the next kind), or the
/// object's bytes are not what its name says (stop: no kind can fix that).
enum KindError {
    Io(io::Error),
    Corrupt(Digest),
}

impl From<io::Error> for KindError {
    fn from(error: io::Error) -> Self {
        KindError::Io(error)
    }
}

/// Hashes `object` and compares it with `expected`: what a link shares must be verified
/// before the work tree sees it (a copy is verified while it is written instead).
fn verify_object(object: &Path, expected: &Digest) -> Result<(), KindError> {
    let mut file = File::open(object)?;
    let size = file.metadata()?.len();
    let actual = if size <= WHOLE_READ_LIMIT {
        hash_bytes(&crate::read_small(&mut file, size)?)
    } else {
        hash_reader(file, size, None)?.0
    };
    if actual != *expected { Err(KindError::Corrupt(actual)) } else { Ok(()) }
}

/// Objects up to this size are read in one piece, hashed and written (a few syscalls, no
/// streaming buffer); larger ones stream through the hasher.
const WHOLE_READ_LIMIT: u64 = 1 << 20;

/// Copies `source` (of `size` bytes) into `dest`, hashing what is written; the digest of the
/// bytes copied.
fn copy_hashed(mut source: File, dest: &mut File, size: u64) -> io::Result<Digest> {
    use std::io::Write;
    if size <= WHOLE_READ_LIMIT {
        let bytes = crate::read_small(&mut source, size)?;
        let digest = hash_bytes(&bytes);
        dest.write_all(&bytes)?;
        return Ok(digest);
    }
    Ok(hash_reader(source, size, Some(dest))?.0)
}

/// Creates `tmp` from `object` by one link kind; returns the new file, still open for copies.
/// A copy hashes the bytes it writes and fails with [`KindError::Corrupt`] when they are not
/// `expected`; the shared kinds (reflink, hard and symbolic links) verify the object first.
fn try_kind(
    kind: LinkKind,
    object: &Path,
    tmp: &Path,
    executable: bool,
    reflink_unsupported: &AtomicBool,
    expected: &Digest,
) -> Result<Option<File>, KindError> {
    match kind {
        LinkKind::Reflink | LinkKind::Copy => {
            if kind == LinkKind::Reflink && reflink_unsupported.load(Ordering::Relaxed) {
                return Err(
                    io::Error::new(io::ErrorKind::Unsupported, "reflink is not supported here").into()
                );
            }
            if kind == LinkKind::Reflink {
                verify_object(object, expected)?;
            }
            let source = File::open(object)?;
            // Created with its final mode: no chmod afterwards.
            let mut dest = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if executable { 0o755 } else { 0o644 })
                .open(tmp)?;
            if kind == LinkKind::Reflink {
                if let Err(error) = reflink_copy::reflink_file(&source, &dest) {
                    if is_unsupported(&error) {
                        reflink_unsupported.store(true, Ordering::Relaxed);
                    }
                    return Err(error.into());
                }
            } else {
                let size = source.metadata()?.len();
                let actual = copy_hashed(source, &mut dest, size)?;
                if actual != *expected {
                    return Err(KindError::Corrupt(actual));
                }
            }
            Ok(Some(dest))
        }
        LinkKind::Hardlink | LinkKind::Symlink if executable => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "executable files are not linked to read-only cache objects",
        )
        .into()),
        LinkKind::Hardlink => {
            verify_object(object, expected)?;
            fs::hard_link(object, tmp)?;
            Ok(None)
        }
        LinkKind::Symlink => {
            verify_object(object, expected)?;
            std::os::unix::fs::symlink(object, tmp)?;
            Ok(None)
        }
    }
}

/// Errors after which the next kind in the strategy is worth trying.
fn is_unsupported(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(error.kind(), Unsupported | CrossesDevices | InvalidInput | PermissionDenied)
        || matches!(error.raw_os_error(), Some(code) if code == rustix::io::Errno::XDEV.raw_os_error()
            || code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
            || code == rustix::io::Errno::MLINK.raw_os_error())
}

/// Places `object` (whose name is `expected`) at `dest` by the first kind of `strategy` that
/// works. The bytes are verified against `expected` on the way; a corrupt object leaves
/// `dest` as it was and fails with [`StoreError::CorruptObject`].
pub(crate) fn place(
    object: &Path,
    expected: &Digest,
    dest: &Path,
    executable: bool,
    strategy: &LinkStrategy,
    reflink_unsupported: &AtomicBool,
) -> Result<(LinkKind, FileStat), StoreError> {
    let mut last_error = None;
    // Executables cannot share the read-only object, so they always have a copy to fall to.
    let mut kinds = strategy.kinds().to_vec();
    if executable && !kinds.contains(&LinkKind::Copy) {
        kinds.push(LinkKind::Copy);
    }
    for kind in kinds {
        let tmp = tmp_beside(dest);
        match try_kind(kind, object, &tmp, executable, reflink_unsupported, expected) {
            Ok(file) => {
                if let Err(error) = fs::rename(&tmp, dest) {
                    let _ = fs::remove_file(&tmp);
                    return Err(StoreError::io("replace", dest, error));
                }
                // Stat after the rename: it changes the ctime the stat cache compares.
                let stat = match file {
                    Some(file) => FileStat::of_file(&file),
                    None => FileStat::of_path(dest),
                };
                return Ok((kind, stat.map_err(|e| StoreError::io("stat", dest, e))?));
            }
            Err(KindError::Corrupt(actual)) => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::CorruptObject {
                    digest: *expected,
                    actual,
                    object: object.to_path_buf(),
                    dest: dest.to_path_buf(),
                });
            }
            Err(KindError::Io(error)) => {
                let _ = fs::remove_file(&tmp);
                if !is_unsupported(&error) {
                    let action = if error.kind() == io::ErrorKind::NotFound {
                        "read cache object for"
                    } else {
                        "write"
                    };
                    return Err(StoreError::io(action, dest, error));
                }
                last_error = Some(error);
            }
        }
    }
    Err(StoreError::LinkFailed {
        strategy: strategy.to_string(),
        path: dest.to_path_buf(),
        source: last_error.unwrap_or_else(|| io::Error::other("empty strategy")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn parse_and_display() {
        let strategy: LinkStrategy = "hardlink, copy".parse().unwrap();
        assert_eq!(strategy.kinds(), &[LinkKind::Hardlink, LinkKind::Copy]);
        assert_eq!(strategy.to_string(), "hardlink,copy");
        assert!("hardlinks".parse::<LinkStrategy>().is_err());
        assert!("".parse::<LinkStrategy>().is_err());
    }

    #[test]
    fn every_kind_places_the_right_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let digest = store.put_bytes(b"payload").unwrap();
        for text in ["reflink,copy", "hardlink", "symlink", "copy"] {
            let strategy: LinkStrategy = text.parse().unwrap();
            let dest = dir.path().join(format!("out-{text}"));
            fs::write(&dest, b"old").unwrap();
            let (kind, _) = store.materialize(&digest, &dest, false, &strategy).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"payload", "{text}");
            let readonly = fs::metadata(&dest).unwrap().permissions().readonly();
            assert_eq!(readonly, kind.shares_object(), "{text}");
        }
        // Executables fall through to a copy they own.
        let dest = dir.path().join("exe");
        let strategy: LinkStrategy = "hardlink,copy".parse().unwrap();
        let (kind, stat) = store.materialize(&digest, &dest, true, &strategy).unwrap();
        assert_eq!(kind, LinkKind::Copy);
        assert!(stat.executable());
    }
}
