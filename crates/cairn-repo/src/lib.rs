//! The Cairn workspace: Git-native data versioning on one machine.
//!
//! A repository is a Git work tree with a `.cairn/` directory. Tracking `data/raw` stores its
//! files in the content-addressed cache ([`cairn_store`]), writes the pointer `data/raw.cairn`
//! (see [`pointer`]) for Git, and ignores `data/raw` in `data/.gitignore`.
//!
//! ```text
//! .cairn/
//!   .gitignore            ignores cache/, state/ and predictions/ (committed)
//!   config                project configuration, TOML (committed)
//!   cache/objects-v1/     content-addressed objects (see cairn_store)
//!   cache/packs-v1/       fetched small objects, many to a file (see cairn_store)
//!   cache/tmp/            in-flight object writes
//!   state/lock            held by any Cairn process changing this repository
//!   state/stat-cache-v1   path -> (stat, digest), see [`statcache`]
//! ```
//!
//! Library rule: nothing here prints, reads the environment or exits. Progress goes through a
//! [`Reporter`]; settings arrive as [`config::Settings`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod confine;
mod error;
mod gitignore;
mod lock;
mod ops;
pub mod pointer;
pub mod statcache;
mod walk;

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use cairn_git::GitRepo;
use cairn_hash::{Digest, Manifest, ManifestEntry};
use cairn_store::Store;

pub use cairn_git::GitError;
pub use error::{RepoError, Result};
pub use ops::{
    AddOutcome, Change, CheckoutOutcome, CloudGc, DiffEntry, FetchOutcome, FileChange, FsckReport, GcReport,
    GcScope, ListedFile, PushOutcome, Selection, Side, TrackedStatus, TransferProblem,
};
use pointer::{POINTER_SUFFIX, Pointer, PointerKind};
pub use walk::ScannedFile;

pub use cairn_store::{NoReporter, Reporter};

/// A tracked path: its pointer and where it lives.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// Data path relative to the repository root, `/`-separated raw bytes.
    pub rel: Vec<u8>,
    pub pointer: Pointer,
}

/// The options a repository is opened with.
#[derive(Debug, Default, Clone)]
pub struct OpenOptions {
    /// The user-level config file (the CLI passes e.g. `~/.config/cairn/config.toml`).
    pub user_config: Option<PathBuf>,
}

/// An open Cairn repository.
pub struct Repo {
    root: PathBuf,
    dot: PathBuf,
    /// libgit2 handles are not `Sync`; the mutex lets worker threads share `&Repo`.
    git: std::sync::Mutex<GitRepo>,
    store: Store,
    settings: config::Settings,
    pool: rayon::ThreadPool,
    /// Canonical directories no symbolic link in the work tree may lead into.
    reserved: Vec<(PathBuf, &'static str)>,
}

/// Name of Cairn's directory at the root of the work tree.
pub const DOT_DIR: &str = ".cairn";

/// What `init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyInitialized,
}

pub(crate) fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(bytes.to_vec()))
}

/// Lossy text for a path (for messages and JSON).
pub fn display_bytes(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn join_rel(base: &[u8], rel: &[u8]) -> Vec<u8> {
    match (base.is_empty(), rel.is_empty()) {
        (_, true) => base.to_vec(),
        (true, false) => rel.to_vec(),
        (false, false) => [base, b"/", rel].concat(),
    }
}

/// True if `path` is `ancestor` or lies below it (component-wise).
pub(crate) fn is_under(path: &[u8], ancestor: &[u8]) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || (path.starts_with(ancestor) && path.get(ancestor.len()) == Some(&b'/'))
}

impl Repo {
    /// Makes `.cairn/.gitignore` ignore `.cairn/<dir>/` (`/predictions/`, say) if it doesn't.
    pub fn ignore_local(&self, line: &str) -> Result<()> {
        ensure_ignored(&self.root.join(DOT_DIR), &[line])
    }

    /// Creates `.cairn/` in the Git work tree containing `path`. Safe to run again.
    pub fn init(path: &Path) -> Result<InitOutcome> {
        let git = GitRepo::discover(path)?;
        let root = git.workdir().to_path_buf();
        let dot = root.join(DOT_DIR);
        let existed = dot.join("config").exists();
        for dir in [dot.join("cache"), dot.join("state")] {
            std::fs::create_dir_all(&dir).map_err(|e| RepoError::io("create", &dir, e))?;
        }
        let files: [(&str, &str); 2] = [
            (
                ".gitignore",
                "# Written by cairn init: the cache, local state and prediction logs stay out of Git.\n/cache/\n/state/\n/predictions/\n",
            ),
            ("config", "# Cairn project configuration (TOML). Edit with `cairn config KEY VALUE`.\n"),
        ];
        for (name, content) in files {
            let file = dot.join(name);
            if !file.exists() {
                std::fs::write(&file, content).map_err(|e| RepoError::io("write", &file, e))?;
            }
        }
        // Older repositories: add the lines a later version ignores.
        ensure_ignored(&dot, &["/cache/", "/state/", "/predictions/"])?;
        Store::open(&dot.join("cache"))?;
        Ok(if existed { InitOutcome::AlreadyInitialized } else { InitOutcome::Created })
    }

    /// Opens the repository containing `path`.
    pub fn open(path: &Path, options: &OpenOptions) -> Result<Self> {
        let git = GitRepo::discover(path)?;
        let root = git.workdir().canonicalize().map_err(|e| RepoError::io("resolve", git.workdir(), e))?;
        let dot = root.join(DOT_DIR);
        // A clone that commits a link in place of Cairn's own directories would have the
        // cache, the state (lock, logs, stat cache) or the config live wherever it points.
        for rel in [DOT_DIR, ".cairn/cache", ".cairn/state", ".cairn/predictions"] {
            let abs = root.join(rel);
            if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink())
                && git.is_in_index(rel)?
            {
                return Err(RepoError::UnsafeLink {
                    access: "use",
                    target: std::fs::read_link(&abs).unwrap_or_default(),
                    path: abs.clone(),
                    link: abs,
                    reason: "committed to Git in place of Cairn's own directory",
                });
            }
        }
        if !dot.join("config").is_file() {
            return Err(RepoError::NotInitialized { root });
        }
        // A fresh clone has `.cairn/config` from Git but not the ignored state directory.
        let state = dot.join("state");
        std::fs::create_dir_all(&state).map_err(|e| RepoError::io("create", &state, e))?;
        let project = config::ConfigFile::load(&dot.join("config"))?;
        let user = options.user_config.as_deref().map(config::ConfigFile::load).transpose()?;
        let mut files: Vec<&config::ConfigFile> = user.iter().collect();
        files.push(&project);
        let settings = config::resolve(&files, &root)?;
        let cache_dir = settings.cache_dir.clone().unwrap_or_else(|| dot.join("cache"));
        let store = Store::open(&cache_dir)?;
        let mut builder = rayon::ThreadPoolBuilder::new();
        if let Some(jobs) = settings.jobs {
            builder = builder.num_threads(jobs);
        }
        let pool = builder
            .build()
            .map_err(|e| RepoError::io("start worker threads for", &root, std::io::Error::other(e)))?;
        let canonical = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let reserved = vec![
            (canonical(git.git_dir()), "inside Git's own directory"),
            (canonical(&dot), "inside `.cairn`"),
            (canonical(store.root()), "inside the cache"),
        ];
        Ok(Repo { root, dot, git: std::sync::Mutex::new(git), store, settings, pool, reserved })
    }

    /// Lets reads (`add`, `status`) follow symbolic links that leave the repository, as
    /// `cairn add --follow-external-symlinks` asks (writes never do).
    pub fn follow_external_symlinks(&mut self, follow: bool) {
        self.settings.follow_external_symlinks = follow;
    }

    /// The link rules for one operation (see [`confine`]).
    pub fn confinement(&self) -> confine::Confinement {
        let objects = self.store.objects_dir();
        confine::Confinement::new(
            self.root.clone(),
            self.reserved.clone(),
            objects.canonicalize().unwrap_or_else(|_| objects.to_path_buf()),
            self.settings.follow_external_symlinks,
        )
    }

    /// Checks that writing or deleting the repository-relative `rel` goes through no
    /// symbolic link leading out of the repository (or into `.git`, `.cairn` or the cache),
    /// creates its missing parent directories, and returns its absolute path. For front
    /// ends and the pipeline engine, before they write a work-tree path themselves.
    pub fn prepare_write(&self, rel: &[u8]) -> Result<PathBuf> {
        let abs = self.abs(rel);
        let confine = self.confinement();
        confine.check_leading(&abs, confine::Access::Write)?;
        if let Some(parent) = abs.parent() {
            confine.create_dir_all(parent)?;
        }
        Ok(abs)
    }

    /// Like [`Repo::prepare_write`] for a path that is about to be read: links inside the
    /// repository are followed, links leading out are refused (unless allowed by the user).
    pub fn check_read(&self, rel: &[u8]) -> Result<PathBuf> {
        let abs = self.abs(rel);
        self.confinement().check_scan_root(&abs)?;
        Ok(abs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &config::Settings {
        &self.settings
    }

    pub fn project_config_path(&self) -> PathBuf {
        self.dot.join("config")
    }

    fn state_path(&self, name: &str) -> PathBuf {
        self.dot.join("state").join(name)
    }

    /// Absolute path of a repository-relative path.
    pub fn abs(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() { self.root.clone() } else { self.root.join(bytes_to_path(rel)) }
    }

    /// Path of the pointer file for the data path `rel`.
    pub fn pointer_path(&self, rel: &[u8]) -> PathBuf {
        self.abs(&[rel, POINTER_SUFFIX.as_bytes()].concat())
    }

    /// Converts a user-supplied absolute path into a repository-relative one, resolving `..`
    /// and symbolic links in the existing part of its parent. Rejects paths outside the work
    /// tree and inside `.git` or `.cairn`.
    pub fn rel_path(&self, path: &Path) -> Result<Vec<u8>> {
        let mut clean = PathBuf::new();
        for component in path.components() {
            match component {
                Component::ParentDir => {
                    clean.pop();
                }
                Component::CurDir => {}
                other => clean.push(other),
            }
        }
        // Resolve symlinks in the longest existing ancestor (not the final name: it may itself
        // be a symlink the user means to track).
        let mut resolved = None;
        let mut tail = Vec::new();
        let mut cursor = clean.parent().map(Path::to_path_buf);
        if let Some(name) = clean.file_name() {
            tail.push(name.to_os_string());
        }
        while let Some(dir) = cursor {
            if let Ok(real) = dir.canonicalize() {
                resolved = Some(real);
                break;
            }
            if let Some(name) = dir.file_name() {
                tail.push(name.to_os_string());
            }
            cursor = dir.parent().map(Path::to_path_buf);
        }
        let mut full = resolved.unwrap_or_else(|| clean.clone());
        for name in tail.iter().rev() {
            full.push(name);
        }
        let outside = || RepoError::OutsideRepository { path: path.to_path_buf(), root: self.root.clone() };
        let rel = full.strip_prefix(&self.root).map_err(|_| outside())?;
        let bytes = rel.as_os_str().as_bytes().to_vec();
        for (reserved, name) in [(&b".git"[..], ".git"), (DOT_DIR.as_bytes(), DOT_DIR)] {
            if is_under(&bytes, reserved) && !bytes.is_empty() {
                return Err(RepoError::ReservedPath { path: path.to_path_buf(), inside: name });
            }
        }
        Ok(bytes)
    }

    /// Reads the pointer for the data path `rel`, if it exists.
    pub fn read_pointer(&self, rel: &[u8]) -> Result<Option<Pointer>> {
        let path = self.pointer_path(rel);
        let text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RepoError::io("read", path, e)),
        };
        parse_pointer_bytes(&path, &text).map(Some)
    }

    /// Every pointer in the work tree (Git-ignored paths are skipped, which also skips the
    /// tracked data itself), optionally only those at or below `scope` or containing it.
    pub fn tracked(&self, scope: Option<&[u8]>) -> Result<Vec<Tracked>> {
        let (tracked, mut errors) = self.tracked_lenient(scope);
        match errors.is_empty() {
            true => Ok(tracked),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Like [`Repo::tracked`], but collects unreadable pointers instead of stopping at the first.
    pub fn tracked_lenient(&self, scope: Option<&[u8]>) -> (Vec<Tracked>, Vec<RepoError>) {
        let mut walker = ignore::WalkBuilder::new(&self.root);
        walker
            .hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .ignore(false)
            .parents(false)
            .require_git(false)
            .filter_entry(|entry| {
                let name = entry.file_name();
                !(entry.depth() == 1 && (name == ".git" || name == DOT_DIR))
            });
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for entry in walker.build() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    errors.push(RepoError::io("scan", &self.root, std::io::Error::other(e)));
                    continue;
                }
            };
            let name = entry.file_name().as_bytes();
            if !(name.ends_with(POINTER_SUFFIX.as_bytes()) && name.len() > POINTER_SUFFIX.len()) {
                continue;
            }
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let rel_pointer = entry
                .path()
                .strip_prefix(&self.root)
                .expect("the walk starts at the root")
                .as_os_str()
                .as_bytes();
            let rel = rel_pointer[..rel_pointer.len() - POINTER_SUFFIX.len()].to_vec();
            if let Some(scope) = scope
                && !(is_under(&rel, scope) || is_under(scope, &rel))
            {
                continue;
            }
            let parsed = std::fs::read(entry.path())
                .map_err(|e| RepoError::io("read", entry.path(), e))
                .and_then(|text| parse_pointer_bytes(entry.path(), &text));
            match parsed {
                Ok(pointer) => out.push(Tracked { rel, pointer }),
                Err(e) => errors.push(e),
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        (out, errors)
    }

    /// The tracked item whose data is `rel` or contains it.
    pub fn tracked_containing(&self, rel: &[u8]) -> Result<Option<Tracked>> {
        let mut candidate = rel;
        loop {
            if !candidate.is_empty()
                && let Some(pointer) = self.read_pointer(candidate)?
            {
                return Ok(Some(Tracked { rel: candidate.to_vec(), pointer }));
            }
            match candidate.iter().rposition(|&b| b == b'/') {
                Some(index) => candidate = &candidate[..index],
                None => return Ok(None),
            }
        }
    }

    /// The files a pointer says its data has: one entry with an empty path for a file, the
    /// manifest for a directory.
    pub fn expected_files(&self, pointer_path: &Path, pointer: &Pointer) -> Result<Vec<ManifestEntry>> {
        match pointer.kind {
            PointerKind::File { executable } => Ok(vec![ManifestEntry {
                path: Vec::new(),
                digest: pointer.digest,
                size: pointer.size,
                executable,
            }]),
            PointerKind::Directory { .. } => {
                Ok(self.load_manifest(pointer_path, &pointer.digest)?.into_entries())
            }
        }
    }

    fn load_manifest(&self, pointer_path: &Path, digest: &Digest) -> Result<Manifest> {
        let bytes = self.store.read_verified(digest).map_err(|e| match e {
            cairn_store::StoreError::MissingObject { .. } => {
                RepoError::MissingObjects { pointer: pointer_path.to_path_buf(), first: *digest, count: 1 }
            }
            other => RepoError::Store(other),
        })?;
        Manifest::decode(&bytes).map_err(|source| RepoError::InvalidManifest {
            path: pointer_path.to_path_buf(),
            digest: *digest,
            source,
        })
    }

    /// The Git repository (a poisoned lock only means another thread panicked mid-read;
    /// libgit2 reads leave no state behind, so the handle is still usable).
    pub(crate) fn git(&self) -> std::sync::MutexGuard<'_, GitRepo> {
        self.git.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on this repository's worker threads.
    pub(crate) fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.pool.install(f)
    }

    /// Where run records go: `meta.url`, or SQLite under `.cairn/state/`.
    pub fn meta_location(&self) -> String {
        match &self.settings.meta_url {
            Some(url) => url.clone(),
            None => self.state_path("meta-v1.sqlite").display().to_string(),
        }
    }

    /// Takes the repository lock, waiting up to `core.lock-timeout`.
    pub fn lock(&self, reporter: &dyn Reporter) -> Result<lock::RepoLock> {
        lock::RepoLock::acquire(&self.state_path("lock"), self.settings.lock_timeout, reporter)
    }
}

pub use lock::RepoLock;

pub(crate) fn parse_pointer_bytes(path: &Path, bytes: &[u8]) -> Result<Pointer> {
    let text = std::str::from_utf8(bytes).map_err(|_| RepoError::InvalidPointer {
        path: path.to_path_buf(),
        source: pointer::PointerError::Syntax("it is not UTF-8 text".into()),
    })?;
    Pointer::parse(text).map_err(|source| RepoError::InvalidPointer { path: path.to_path_buf(), source })
}

/// Nanoseconds since the Unix epoch, for racy-stat checks.
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Appends to `.cairn/.gitignore` whichever of `lines` it lacks.
fn ensure_ignored(dot: &Path, lines: &[&str]) -> Result<()> {
    let file = dot.join(".gitignore");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(RepoError::io("read", &file, e)),
    };
    let missing: Vec<&str> =
        lines.iter().copied().filter(|l| !text.lines().any(|t| t.trim() == *l)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    for line in missing {
        new.push_str(line);
        new.push('\n');
    }
    cairn_fs::write(&file, new.as_bytes()).map_err(|e| RepoError::io("write", &file, e))
}
