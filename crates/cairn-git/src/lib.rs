//! The only crate in Cairn that talks to Git (through libgit2).
//!
//! Cairn keeps pointer files (`*.cairn`) in Git and data in its cache. This crate finds the
//! work tree, resolves revisions, and reads pointer files as they were in any commit, so that
//! `cairn diff`, `cairn ls --rev`, `cairn cat --rev` and `cairn gc --all-commits` can see
//! history without checking anything out.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("`{path}` is not inside a Git work tree")]
    NotAWorkTree { path: PathBuf },
    #[error("the Git repository at `{path}` has no work tree (it is bare)")]
    Bare { path: PathBuf },
    #[error("unknown Git revision `{rev}`: {message}")]
    UnknownRevision { rev: String, message: String },
    #[error("Git failed while {action}: {source}")]
    Git { action: String, source: git2::Error },
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;

fn git_err(action: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let action = action.into();
    move |source| GitError::Git { action, source }
}

/// A pointer file found in a commit: its path in the repository and its bytes.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// `/`-separated path relative to the repository root (raw bytes).
    pub path: Vec<u8>,
    pub content: Vec<u8>,
}

/// A Git work tree.
pub struct GitRepo {
    repo: Repository,
    workdir: PathBuf,
}

impl GitRepo {
    /// Finds the work tree containing `path` (searching upwards, like `git` does).
    pub fn discover(path: &Path) -> Result<Self> {
        let repo = Repository::discover(path).map_err(|e| match e.code() {
            git2::ErrorCode::NotFound => GitError::NotAWorkTree { path: path.to_path_buf() },
            _ => {
                GitError::Git { action: format!("opening the repository at `{}`", path.display()), source: e }
            }
        })?;
        let workdir =
            repo.workdir().ok_or_else(|| GitError::Bare { path: repo.path().to_path_buf() })?.to_path_buf();
        Ok(GitRepo { repo, workdir })
    }

    /// Creates an empty repository with a work tree at `path` (an experiment's workspace, so
    /// that it is a work tree of its own and not part of the one around it).
    pub fn init(path: &Path) -> Result<Self> {
        let repo = Repository::init(path)
            .map_err(git_err(format!("creating a repository at `{}`", path.display())))?;
        Ok(GitRepo { repo, workdir: path.to_path_buf() })
    }

    /// Makes a commit whose tree is `base`'s with `files` (`/`-separated path, bytes)
    /// written over it, and points the new branch `branch` at it; returns the commit id.
    /// Fails if the branch exists. The work tree and HEAD are not touched.
    pub fn commit_files_to_branch(
        &self,
        base: &str,
        files: &[(String, Vec<u8>)],
        branch: &str,
        message: &str,
    ) -> Result<String> {
        let resolve = |e: git2::Error| GitError::UnknownRevision {
            rev: base.to_owned(),
            message: e.message().to_owned(),
        };
        let parent = self.repo.revparse_single(base).and_then(|o| o.peel_to_commit()).map_err(resolve)?;
        let mut index = git2::Index::new().map_err(git_err("creating an index"))?;
        index
            .read_tree(&parent.tree().map_err(git_err("reading the base tree"))?)
            .map_err(git_err("reading the base tree"))?;
        for (path, bytes) in files {
            let blob = self.repo.blob(bytes).map_err(git_err(format!("storing `{path}`")))?;
            let mode = index.get_path(Path::new(path), 0).map_or(0o100644, |e| e.mode);
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: bytes.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).map_err(git_err(format!("adding `{path}`")))?;
        }
        let tree_id = index.write_tree_to(&self.repo).map_err(git_err("writing the tree"))?;
        let tree = self.repo.find_tree(tree_id).map_err(git_err("reading the new tree"))?;
        let signature = self
            .repo
            .signature()
            .or_else(|_| git2::Signature::now("cairn", "cairn@localhost"))
            .map_err(git_err("making a signature"))?;
        let commit = self
            .repo
            .commit(None, &signature, &signature, message, &tree, &[&parent])
            .map_err(git_err("writing the commit"))?;
        let commit_object = self.repo.find_commit(commit).map_err(git_err("reading the new commit"))?;
        self.repo
            .branch(branch, &commit_object, false)
            .map_err(git_err(format!("creating branch `{branch}`")))?;
        Ok(commit.to_string())
    }

    /// The root of the work tree.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The user Git would record for a commit made here: `user.name` (or `user.email`) from
    /// this repository's config, the user's and the system's.
    pub fn user_name(&self) -> Option<String> {
        let config = self.repo.config().ok()?;
        ["user.name", "user.email"]
            .iter()
            .find_map(|key| config.get_string(key).ok().filter(|v| !v.is_empty()))
    }

    /// `user.name` (or `user.email`) from the user's and the system's Git config, outside
    /// any repository.
    pub fn global_user_name() -> Option<String> {
        let config = git2::Config::open_default().ok()?;
        ["user.name", "user.email"]
            .iter()
            .find_map(|key| config.get_string(key).ok().filter(|v| !v.is_empty()))
    }

    /// Whether `path` (relative to the work tree, `/`-separated) is in Git's index.
    pub fn is_in_index(&self, path: &str) -> Result<bool> {
        let index = self.repo.index().map_err(git_err("reading the index".to_owned()))?;
        Ok(index.get_path(Path::new(path), 0).is_some())
    }

    /// A path in Git's index that is `path` or lies under it (`path` relative to the work
    /// tree, `/`-separated), if there is one.
    pub fn indexed_at_or_under(&self, path: &str) -> Result<Option<String>> {
        let index = self.repo.index().map_err(git_err("reading the index".to_owned()))?;
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(index
            .iter()
            .map(|entry| entry.path)
            .find(|entry| entry == path.as_bytes() || entry.starts_with(prefix.as_bytes()))
            .map(|entry| String::from_utf8_lossy(&entry).into_owned()))
    }

    /// Git's own directory (`.git`, or wherever a linked work tree's lives).
    pub fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    /// The commit id of HEAD, or `None` in a repository without commits.
    pub fn head(&self) -> Result<Option<String>> {
        match self.repo.head() {
            Ok(head) => Ok(head.target().map(|oid| oid.to_string())),
            Err(e) if e.code() == git2::ErrorCode::UnbornBranch => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(git_err("reading HEAD")(e)),
        }
    }

    /// Commit ids at the tips of local branches and/or tags, each once, sorted.
    pub fn ref_tips(&self, branches: bool, tags: bool) -> Result<Vec<String>> {
        let mut tips = std::collections::BTreeSet::new();
        let references = self.repo.references().map_err(git_err("listing refs"))?;
        for reference in references {
            let reference = reference.map_err(git_err("listing refs"))?;
            if !((branches && reference.is_branch()) || (tags && reference.is_tag())) {
                continue;
            }
            // Tags may point at non-commits (a tagged blob); those hold no pointers.
            if let Ok(commit) = reference.peel_to_commit() {
                tips.insert(commit.id().to_string());
            }
        }
        Ok(tips.into_iter().collect())
    }

    fn commit_tree(&self, rev: &str) -> Result<Tree<'_>> {
        let object = self.repo.revparse_single(rev).map_err(|e| GitError::UnknownRevision {
            rev: rev.to_owned(),
            message: e.message().to_owned(),
        })?;
        object
            .peel_to_tree()
            .map_err(|e| GitError::UnknownRevision { rev: rev.to_owned(), message: e.message().to_owned() })
    }

    /// The bytes of the file at `path` (`/`-separated, relative to the root) in revision
    /// `rev`, or `None` if that revision has no such file.
    pub fn read_file(&self, rev: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let tree = self.commit_tree(rev)?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_err(format!("reading `{path}` at {rev}"))(e)),
        };
        let object = entry.to_object(&self.repo).map_err(git_err(format!("reading `{path}` at {rev}")))?;
        Ok(object.as_blob().map(|blob| blob.content().to_vec()))
    }

    /// The commit id of HEAD and whether the work tree differs from it (untracked
    /// files not ignored count as changes).
    pub fn head_state(&self) -> Result<Option<(String, bool)>> {
        let Some(head) = self.head()? else { return Ok(None) };
        Ok(Some((head, !self.changed_paths()?.is_empty())))
    }

    /// Work-tree paths that differ from HEAD or are untracked (ignored files excluded), as
    /// `/`-separated strings.
    pub fn changed_paths(&self) -> Result<Vec<String>> {
        let mut options = git2::StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true);
        let statuses =
            self.repo.statuses(Some(&mut options)).map_err(git_err("reading the work tree status"))?;
        let mut paths: Vec<String> =
            statuses.iter().filter_map(|e| e.path().ok().map(str::to_owned)).collect();
        paths.sort();
        Ok(paths)
    }

    /// Every file in revision `rev` whose name ends with `suffix` (for example `.cairn`).
    pub fn files_with_suffix(&self, rev: &str, suffix: &[u8]) -> Result<Vec<TreeFile>> {
        let tree = self.commit_tree(rev)?;
        let mut out = Vec::new();
        self.collect(&tree, &mut Vec::new(), suffix, &mut None, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The files ending in `suffix` in every commit reachable from any branch, tag or HEAD.
    /// Subtrees shared between commits are read once, so the cost follows the number of
    /// distinct trees, not commits × files. Returns distinct (path, content) pairs.
    pub fn files_with_suffix_all_commits(&self, suffix: &[u8]) -> Result<Vec<TreeFile>> {
        let mut walk = self.repo.revwalk().map_err(git_err("walking history"))?;
        walk.push_glob("refs/*").map_err(git_err("listing refs"))?;
        if self.head()?.is_some() {
            walk.push_head().map_err(git_err("reading HEAD"))?;
        }
        let mut seen = Some(HashSet::new());
        let mut out = Vec::new();
        for oid in walk {
            let oid = oid.map_err(git_err("walking history"))?;
            let commit = self.repo.find_commit(oid).map_err(git_err(format!("reading commit {oid}")))?;
            let tree = commit.tree().map_err(git_err(format!("reading the tree of {oid}")))?;
            self.collect(&tree, &mut Vec::new(), suffix, &mut seen, &mut out)?;
        }
        out.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.content.cmp(&b.content)));
        out.dedup_by(|a, b| a.path == b.path && a.content == b.content);
        Ok(out)
    }

    fn collect(
        &self,
        tree: &Tree<'_>,
        prefix: &mut Vec<u8>,
        suffix: &[u8],
        seen: &mut Option<HashSet<(Vec<u8>, Oid)>>,
        out: &mut Vec<TreeFile>,
    ) -> Result<()> {
        // Trees are keyed by (path, id): the same tree at another path holds other pointers.
        if let Some(seen) = seen
            && !seen.insert((prefix.clone(), tree.id()))
        {
            return Ok(());
        }
        for entry in tree.iter() {
            let name = entry.name_bytes();
            let len = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(name);
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let subtree = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(git_err(format!("reading tree {}", entry.id())))?;
                    self.collect(&subtree, prefix, suffix, seen, out)?;
                }
                Some(ObjectType::Blob) if name.ends_with(suffix) && name.len() > suffix.len() => {
                    let blob = self
                        .repo
                        .find_blob(entry.id())
                        .map_err(git_err(format!("reading blob {}", entry.id())))?;
                    out.push(TreeFile { path: prefix.clone(), content: blob.content().to_vec() });
                }
                _ => {}
            }
            prefix.truncate(len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn reads_pointer_files_across_history() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        assert!(GitRepo::discover(root).unwrap().head().unwrap().is_none());
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/data.cairn"), "v1").unwrap();
        std::fs::write(root.join("other.txt"), "x").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "one"]);
        std::fs::write(root.join("sub/data.cairn"), "v2").unwrap();
        git(root, &["commit", "-qam", "two"]);

        let repo = GitRepo::discover(&root.join("sub")).unwrap();
        assert_eq!(repo.workdir().canonicalize().unwrap(), root.canonicalize().unwrap());
        let head = repo.files_with_suffix("HEAD", b".cairn").unwrap();
        assert_eq!(head.len(), 1);
        assert_eq!(
            (head[0].path.as_slice(), head[0].content.as_slice()),
            (&b"sub/data.cairn"[..], &b"v2"[..])
        );
        let old = repo.files_with_suffix("HEAD~1", b".cairn").unwrap();
        assert_eq!(old[0].content, b"v1");
        git(root, &["tag", "v2"]);
        assert_eq!(repo.ref_tips(true, true).unwrap().len(), 1, "branch and tag share a commit");
        assert_eq!(repo.ref_tips(false, false).unwrap().len(), 0);
        let all = repo.files_with_suffix_all_commits(b".cairn").unwrap();
        assert_eq!(all.len(), 2);
        assert!(matches!(repo.files_with_suffix("nope", b".cairn"), Err(GitError::UnknownRevision { .. })));
    }

    #[test]
    fn outside_a_work_tree_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(GitRepo::discover(dir.path()), Err(GitError::NotAWorkTree { .. })));
    }
}
