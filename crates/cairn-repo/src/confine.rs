//! Keeping every work-tree access inside the repository, judged by the real file system.
//!
//! A path from a pointer file, a manifest, `cairn.yaml` or the run cache is repository-relative
//! and already free of `..`, but that is only half of it: a symbolic link on the way (`data`
//! → `/home/me/.ssh`, committed to Git by a hostile clone) would carry a write, a delete or a
//! read somewhere else. Git refuses to write "beyond a symbolic link"; Cairn does the same:
//!
//! * **Writes and deletes** never go through a link in a *leading* component that resolves
//!   outside the repository or into `.git`, `.cairn` or the cache. The final component may be
//!   a link: it is replaced or removed itself (rename and unlink do not follow it).
//! * **Reads** (scans for `add`, `status`, checkout's comparison, a stage's deps) follow
//!   links inside the repository, and links into the cache that the `symlink` link strategy
//!   made; a link leaving the repository is refused unless the user allowed it
//!   (`core.follow-external-symlinks`, or `cairn add --follow-external-symlinks`), because its
//!   target would be stored and pushed.
//!
//! Each link is resolved with `canonicalize` (the kernel's view) and compared with the
//! canonical repository root. The check runs right before the operation; it does not defend
//! against a concurrent process swapping a directory for a link in between (see the security
//! section of ARCHITECTURE.md).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::{RepoError, Result};

/// What is about to be done with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The rules for one operation, with the directories it has already found safe.
pub struct Confinement {
    /// The canonical work-tree root.
    root: PathBuf,
    /// Canonical directories no link may lead into: `.git`, `.cairn`, the cache.
    reserved: Vec<(PathBuf, &'static str)>,
    /// The cache's objects directory: the `symlink` link strategy's targets.
    objects: PathBuf,
    allow_external_reads: bool,
    /// Directories (absolute, as joined from the root) checked by this operation.
    checked: Mutex<HashSet<PathBuf>>,
}

impl Confinement {
    pub(crate) fn new(
        root: PathBuf,
        reserved: Vec<(PathBuf, &'static str)>,
        objects: PathBuf,
        allow_external_reads: bool,
    ) -> Self {
        Confinement { root, reserved, objects, allow_external_reads, checked: Mutex::new(HashSet::new()) }
    }

    /// Checks every existing component of `abs` between the root and `abs` itself (not
    /// `abs`): none may be a link that leads out. Components that do not exist yet are fine:
    /// Cairn creates them as real directories.
    pub fn check_leading(&self, abs: &Path, access: Access) -> Result<()> {
        // The root itself has no leading components inside the repository.
        if abs == self.root {
            return Ok(());
        }
        let Some(parent) = abs.parent() else { return Ok(()) };
        self.check_dir(parent, abs, access)
    }

    /// Checks `dir` and each of its ancestors below the root as directories that `target`
    /// will be reached through.
    fn check_dir(&self, dir: &Path, target: &Path, access: Access) -> Result<()> {
        let Ok(rel) = dir.strip_prefix(&self.root) else {
            return Err(RepoError::OutsideRepository { path: target.to_path_buf(), root: self.root.clone() });
        };
        let mut current = self.root.clone();
        for component in rel.components() {
            match component {
                Component::Normal(name) => current.push(name),
                Component::CurDir => continue,
                // Repository-relative paths are normalized before they get here.
                _ => {
                    return Err(RepoError::OutsideRepository {
                        path: target.to_path_buf(),
                        root: self.root.clone(),
                    });
                }
            }
            if self.is_checked(&current) {
                continue;
            }
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    self.check_link_as_dir(&current, target, access)?;
                }
                Ok(meta) if meta.is_dir() => {}
                // A file where a directory belongs, or nothing yet: the operation itself
                // reports the first, and creates real directories for the second.
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(RepoError::io("inspect", &current, e)),
            }
            self.mark_checked(current.clone());
        }
        Ok(())
    }

    /// A link that a leading component is: it may lead only inside the repository, and never
    /// into `.git`, `.cairn` or the cache.
    fn check_link_as_dir(&self, link: &Path, target: &Path, access: Access) -> Result<()> {
        let resolved = self.resolve(link, target, access)?;
        if let Some(reason) = self.why_refused(&resolved, access, false) {
            return Err(RepoError::UnsafeLink {
                access: access.verb(),
                path: target.to_path_buf(),
                link: link.to_path_buf(),
                target: resolved,
                reason,
            });
        }
        Ok(())
    }

    /// Checks a link met while scanning (a tracked path that is a link, or a link inside a
    /// tracked directory): what it resolves to is what would be read and stored.
    pub(crate) fn check_scanned_link(&self, link: &Path) -> Result<()> {
        if self.points_at_object(link) {
            return Ok(());
        }
        let resolved = self.resolve(link, link, Access::Read)?;
        if let Some(reason) = self.why_refused(&resolved, Access::Read, true) {
            return Err(RepoError::UnsafeLink {
                access: Access::Read.verb(),
                path: link.to_path_buf(),
                link: link.to_path_buf(),
                target: resolved,
                reason,
            });
        }
        Ok(())
    }

    /// Checks a path about to be scanned: its leading components, and the path itself when
    /// it is a link.
    pub(crate) fn check_scan_root(&self, abs: &Path) -> Result<()> {
        self.check_leading(abs, Access::Read)?;
        match fs::symlink_metadata(abs) {
            Ok(meta) if meta.file_type().is_symlink() => self.check_scanned_link(abs),
            _ => Ok(()),
        }
    }

    /// Creates `dir` and its missing parents as real directories, refusing links that lead
    /// out on the way.
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.check_dir(dir, dir, Access::Write)?;
        fs::create_dir_all(dir).map_err(|e| RepoError::io("create directory", dir, e))?;
        // What the check saw as missing was created just now, by us, as directories.
        self.mark_checked(dir.to_path_buf());
        Ok(())
    }

    fn resolve(&self, link: &Path, target: &Path, access: Access) -> Result<PathBuf> {
        match link.canonicalize() {
            Ok(resolved) => Ok(resolved),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling link: writing through it would create its target, wherever that is.
                let points_to = fs::read_link(link).unwrap_or_default();
                match access {
                    Access::Write => Err(RepoError::UnsafeLink {
                        access: access.verb(),
                        path: target.to_path_buf(),
                        link: link.to_path_buf(),
                        target: points_to,
                        reason: "which does not exist (a dangling link is never written through)",
                    }),
                    Access::Read => Err(RepoError::BrokenSymlink { path: link.to_path_buf() }),
                }
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                Err(RepoError::SymlinkLoop { path: link.to_path_buf() })
            }
            Err(e) => Err(RepoError::io("resolve the symbolic link", link, e)),
        }
    }

    fn why_refused(&self, resolved: &Path, access: Access, scanned: bool) -> Option<&'static str> {
        if scanned && resolved.starts_with(&self.objects) {
            return None;
        }
        if let Some((_, reason)) = self.reserved.iter().find(|(dir, _)| resolved.starts_with(dir)) {
            return Some(reason);
        }
        if resolved.starts_with(&self.root) || (access == Access::Read && self.allow_external_reads) {
            return None;
        }
        Some("outside the repository")
    }

    /// Whether `link` is one the `symlink` link strategy made: an absolute link to a file in
    /// the objects directory, by plain names (checked without resolving every component).
    fn points_at_object(&self, link: &Path) -> bool {
        let Ok(target) = fs::read_link(link) else { return false };
        target.is_absolute()
            && target.starts_with(&self.objects)
            && target
                .strip_prefix(&self.objects)
                .is_ok_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))))
    }

    fn is_checked(&self, dir: &Path) -> bool {
        self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(dir)
    }

    fn mark_checked(&self, dir: PathBuf) {
        self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dir);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn setup() -> (tempfile::TempDir, Confinement, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("repo");
        let outside = base.join("outside");
        for d in [
            root.join(".git/hooks"),
            root.join(".cairn/cache/objects-v1"),
            root.join("inner"),
            outside.clone(),
        ] {
            fs::create_dir_all(d).unwrap();
        }
        let confine = Confinement::new(
            root.clone(),
            vec![(root.join(".git"), "inside `.git`"), (root.join(".cairn"), "inside `.cairn`")],
            root.join(".cairn/cache/objects-v1"),
            false,
        );
        (dir, confine, root)
    }

    #[test]
    fn links_out_of_the_repository_are_refused_for_writes() {
        let (dir, confine, root) = setup();
        let outside = dir.path().canonicalize().unwrap().join("outside");
        symlink(&outside, root.join("out")).unwrap();
        symlink("inner", root.join("in")).unwrap();
        symlink(".git/hooks", root.join("hooks")).unwrap();
        symlink("/nonexistent/place", root.join("dangling")).unwrap();
        let error = confine.check_leading(&root.join("out/authorized_keys"), Access::Write).unwrap_err();
        assert!(matches!(error, RepoError::UnsafeLink { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains("out") && text.contains("outside the repository"), "{text}");
        assert!(confine.create_dir_all(&root.join("out/x")).is_err());
        assert!(!outside.join("x").exists());
        assert!(confine.check_leading(&root.join("hooks/pre-commit"), Access::Write).is_err());
        assert!(confine.check_leading(&root.join("dangling/f"), Access::Write).is_err());
        // Links inside the repository, and paths that do not exist yet, are fine.
        confine.check_leading(&root.join("in/f"), Access::Write).unwrap();
        confine.create_dir_all(&root.join("new/deeper")).unwrap();
        assert!(root.join("new/deeper").is_dir());
        // The final component may be a link: it is replaced, not written through.
        confine.check_leading(&root.join("out"), Access::Write).unwrap();
        // The root itself (a dep on the whole repository) has nothing to check.
        confine.check_leading(&root, Access::Read).unwrap();
        confine.check_scan_root(&root).unwrap();
    }

    #[test]
    fn scanned_links_may_not_leave_the_repository_unless_allowed() {
        let (dir, confine, root) = setup();
        let outside = dir.path().canonicalize().unwrap().join("outside");
        fs::write(outside.join("secret"), "x").unwrap();
        symlink(outside.join("secret"), root.join("inner/secret")).unwrap();
        assert!(confine.check_scanned_link(&root.join("inner/secret")).is_err());
        let object = root.join(".cairn/cache/objects-v1/ab");
        fs::write(&object, "o").unwrap();
        symlink(&object, root.join("inner/object")).unwrap();
        confine.check_scanned_link(&root.join("inner/object")).unwrap();
        let lenient = Confinement::new(root.clone(), Vec::new(), root.join(".cairn/cache/objects-v1"), true);
        lenient.check_scanned_link(&root.join("inner/secret")).unwrap();
        // Writes stay refused even where reads are allowed.
        symlink(&outside, root.join("out")).unwrap();
        assert!(lenient.check_leading(&root.join("out/f"), Access::Write).is_err());
    }
}
