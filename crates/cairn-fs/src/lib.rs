//! Replacing a file so that a reader, or the file system after a crash, sees either the old
//! content or the new, never a part of it.
//!
//! Every write goes the same way: a temporary file in the target's own directory (so the
//! rename never crosses file systems), named `.<name>.<pid>-<n>.tmp` and created exclusively;
//! the bytes; `fsync` of the file; `rename` over the target; and, for
//! [`Durability::Durable`], `fsync` of the directory so the rename itself survives a power
//! loss. Derived data its reader checks (the stat cache) skips the sync
//! ([`Durability::Derived`]). A failed write removes its temporary file and leaves the target as it was.
//!
//! Library rule: nothing here prints or reads the environment.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a finished write promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The content is on disk before it replaces the old (a crash leaves old or new, whole).
    #[default]
    Atomic,
    /// Also the replacement itself: once the call returns, a power loss keeps the new file.
    Durable,
    /// Derived data its reader checks and rebuilds (a cache): replaced by rename, not synced,
    /// so a crash may leave the old content or a damaged file, never a half-visible write
    /// to a running reader.
    Derived,
}

/// How to write.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub durability: Durability,
    /// The new file's permission bits (default: 0o666 less the umask, as `File::create`).
    /// Set exactly, whatever the umask.
    pub mode: Option<u32>,
}

/// Replaces `path` with `bytes` ([`Durability::Atomic`]).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, Options::default(), |file| file.write_all(bytes))
}

/// Replaces `path`, a cache its reader checks, with `bytes` (no sync: see [`Durability::Derived`]).
pub fn write_derived(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, Options { durability: Durability::Derived, mode: None }, |file| file.write_all(bytes))
}

/// Replaces `path` with `bytes` and makes the replacement durable.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, Options { durability: Durability::Durable, mode: None }, |file| file.write_all(bytes))
}

/// Replaces `path` with what `fill` writes into the new file.
pub fn write_with(
    path: &Path,
    options: Options,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temporary_beside(path);
    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = options.mode {
            open.mode(mode);
        }
        let mut file = open.open(&tmp)?;
        fill(&mut file)?;
        file.flush()?;
        if let Some(mode) = options.mode {
            // The umask may have narrowed the mode asked for.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if options.durability != Durability::Derived {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    if options.durability == Durability::Durable {
        sync_directory(path)?;
    }
    Ok(())
}

/// Makes the entries of `path`'s directory (a rename, a new file) durable.
pub fn sync_directory(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// A fresh name for a temporary file in `path`'s directory: `.<name>.<pid>-<n>.tmp`.
pub fn temporary_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        write_durable(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        write_derived(&path, b"cache").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"cache");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_content_and_removes_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        write(&path, b"kept").unwrap();
        let error = write_with(&path, Options::default(), |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(error.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_mode_is_set_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_with(&path, Options { mode: Some(0o600), ..Options::default() }, |f| f.write_all(b"x"))
            .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_stray_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/file");
        assert_eq!(write(&path, b"x").unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
