//! Parallel scan of a data directory: every regular file with its `stat`.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use cairn_store::FileStat;
use rayon::prelude::*;

use crate::confine::Confinement;
use crate::error::{RepoError, Result};

/// A file found under a scanned directory.
#[derive(Debug, Clone)]
pub struct ScannedFile {
    /// Path relative to the scanned directory, `/`-separated.
    pub rel: Vec<u8>,
    pub abs: PathBuf,
    pub stat: FileStat,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whether the scanned path is a directory (else it is one file with an empty `rel`).
    pub is_dir: bool,
    /// Regular files, sorted by `rel`.
    pub files: Vec<ScannedFile>,
    /// Temporary files a killed Cairn process left behind (`.cairn-tmp-*`); not data.
    pub leftovers: Vec<PathBuf>,
}

enum Found {
    File(ScannedFile),
    Leftover(PathBuf),
}

/// Lists every regular file under `root` (following symbolic links that `confine` allows,
/// detecting loops), stat-ing entries in parallel. Cairn's own leftover temporary files are
/// reported apart.
pub(crate) fn scan_dir(root: &Path, confine: &Confinement) -> Result<Scan> {
    let meta = fs::metadata(root).map_err(|e| RepoError::io("read", root, e))?;
    let found = visit(root, &[], &[(meta_dev_ino(&meta))], confine)?;
    let mut scan = Scan { is_dir: true, ..Scan::default() };
    for item in found {
        match item {
            Found::File(file) => scan.files.push(file),
            Found::Leftover(path) => scan.leftovers.push(path),
        }
    }
    scan.files.par_sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    Ok(scan)
}

fn meta_dev_ino(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

fn visit(dir: &Path, prefix: &[u8], ancestors: &[(u64, u64)], confine: &Confinement) -> Result<Vec<Found>> {
    let entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| RepoError::io("list", dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| RepoError::io("list", dir, e))?;
    let nested: Vec<Vec<Found>> = entries
        .par_iter()
        .map(|entry| -> Result<Vec<Found>> {
            let name = entry.file_name();
            let name = name.as_bytes();
            if name.starts_with(cairn_store::WORKTREE_TMP_PREFIX.as_bytes()) {
                return Ok(vec![Found::Leftover(entry.path())]);
            }
            let abs = entry.path();
            let mut rel = Vec::with_capacity(prefix.len() + 1 + name.len());
            if !prefix.is_empty() {
                rel.extend_from_slice(prefix);
                rel.push(b'/');
            }
            rel.extend_from_slice(name);
            let file_type = entry.file_type().map_err(|e| RepoError::io("stat", &abs, e))?;
            let meta = if file_type.is_symlink() {
                confine.check_scanned_link(&abs)?;
                match fs::metadata(&abs) {
                    Ok(meta) => meta,
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                        return Err(RepoError::SymlinkLoop { path: abs });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(RepoError::BrokenSymlink { path: abs });
                    }
                    Err(e) => return Err(RepoError::io("stat", &abs, e)),
                }
            } else {
                entry.metadata().map_err(|e| RepoError::io("stat", &abs, e))?
            };
            if meta.is_dir() {
                let id = meta_dev_ino(&meta);
                if ancestors.contains(&id) {
                    return Err(RepoError::SymlinkLoop { path: abs });
                }
                let mut chain = ancestors.to_vec();
                chain.push(id);
                visit(&abs, &rel, &chain, confine)
            } else if meta.is_file() {
                Ok(vec![Found::File(ScannedFile { rel, abs, stat: FileStat::from_metadata(&meta) })])
            } else {
                Err(RepoError::UnsupportedFileType { path: abs })
            }
        })
        .collect::<Result<_>>()?;
    Ok(nested.into_iter().flatten().collect())
}
