//! Cairn remotes: share the object cache through a directory (local disk, NFS) or
//! S3-compatible storage.
//!
//! # Layout on the remote (version 1)
//!
//! ```text
//! <url>/packs/<pack digest hex>.pack   objects, chunks and recipes, back to back
//! <url>/packs/<pack digest hex>.idx    the pack's index, written after the pack
//! <url>/runs-v1/<2 hex>/<62 hex>       run-cache entries (see cairn-pipeline), uploaded
//!                                      after the objects they name
//! ```
//!
//! Formats: [`pack`] (packs, indexes, recipes) and [`chunk`] (how large objects are cut).
//! Nothing on the remote is ever modified: a push adds packs, `gc --cloud` removes or rewrites
//! whole packs. Because an index is uploaded only after its pack, and packs are named by
//! their content, a push killed at any moment leaves at worst a pack without an index (never
//! read, removed by `gc --cloud` after a grace period), and two clones pushing at once each
//! add their own packs and lose nothing — at worst an object is stored twice.
//!
//! # The remote index, kept locally
//!
//! Each clone keeps copies of the remote's pack indexes (the caller chooses the directory,
//! one per remote URL). Knowing what the remote has costs one `LIST` of `packs/` plus a
//! download of indexes that are new since the last time, so a push after changing 100 files
//! sends 100 objects and reads almost nothing.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_remote::{AwsEnvironment, Remote, RemoteSpec};
//! let dir = tempfile::tempdir()?;
//! let (cache, remote_dir, state) = (dir.path().join("cache"), dir.path().join("remote"), dir.path().join("state"));
//! std::fs::create_dir(&remote_dir)?;
//! let store = cairn_store::Store::open(&cache)?;
//! let digest = store.put_bytes(b"hello")?;
//! let spec = RemoteSpec { name: "origin".into(), url: remote_dir.display().to_string(), ..Default::default() };
//! let remote = Remote::open(&spec, &AwsEnvironment::default(), &state)?;
//! let index = remote.index()?;
//! let pushed = remote.push(&index, &store, &[digest], &cairn_store::NoReporter)?;
//! assert_eq!(pushed.objects_sent, 1);
//! assert!(remote.index()?.contains(&digest));
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod chunk;
mod documents;
mod gc;
mod index;
pub mod locks;
pub mod pack;
mod storage;
mod transfer;

use std::path::PathBuf;

use cairn_hash::Digest;

pub use gc::CloudGcReport;
pub use index::RemoteIndex;
pub use storage::{AwsEnvironment, Failure, Location, OPTIONS, RemoteSpec, check_option, ini_value};
pub use transfer::{FetchReport, PushReport};

/// Errors from remotes. Each names the remote and, where it applies, its URL and the key.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{remote}` has an unusable URL `{url}`: {reason}")]
    InvalidUrl { remote: String, url: String, reason: String },
    #[error("the directory of remote `{remote}`, `{path}`, does not exist")]
    DirectoryMissing { remote: String, path: PathBuf },
    #[error("remote `{remote}` has an invalid value `{value}` for `{key}`: {reason}")]
    BadOption { remote: String, key: String, value: String, reason: String },
    #[error("unknown option `{key}` for remote `{remote}`; known options: {known}")]
    UnknownOption { remote: String, key: String, known: String },
    #[error("no usable credentials for remote `{remote}` ({url}): {reason}")]
    Credentials { remote: String, url: String, reason: String },
    #[error("remote `{remote}` ({url}): cannot {action}: {} ({message})", failure.describe())]
    Storage { remote: String, url: String, action: String, failure: Failure, message: String },
    #[error("remote `{remote}` ({url}) has a damaged {what} `{key}`: {reason}")]
    Damaged { remote: String, url: String, what: &'static str, key: String, reason: String },
    #[error("cannot {action} `{path}`: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "remote `{remote}` ({url}) is busy: {other} started {age_seconds} s ago (marker `{marker}`); wait for it to finish and try again, or delete the marker if that process is gone"
    )]
    Busy { remote: String, url: String, other: String, marker: String, age_seconds: u64 },
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    /// A state a user cannot cause.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RemoteError {
    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            RemoteError::Io { source, .. } => Some(source),
            RemoteError::Store(store) => store.io_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

/// Target size of a pack: big enough that 100,000 small files are a few dozen requests,
/// small enough that a resumed push repeats little and downloads run in parallel.
pub const PACK_TARGET: usize = 16 << 20;

/// Default number of concurrent requests.
pub const DEFAULT_JOBS: usize = 8;

/// An open remote: a storage client, a runtime for its requests, and the local directory that
/// caches its pack indexes.
pub struct Remote {
    inner: std::sync::Arc<Inner>,
    runtime: tokio::runtime::Runtime,
}

/// What transfer tasks share (they run on the runtime's threads and need `'static` data).
pub(crate) struct Inner {
    spec: RemoteSpec,
    storage: storage::Storage,
    state_dir: PathBuf,
    jobs: usize,
}

impl Remote {
    /// Opens the remote described by `spec`. `state_dir` holds this clone's copy of the
    /// remote's indexes; it is created if needed. Nothing is requested from the remote yet.
    pub fn open(spec: &RemoteSpec, aws: &AwsEnvironment, state_dir: &std::path::Path) -> Result<Self> {
        let storage = storage::open(spec, aws)?;
        let jobs = storage::parse_count(spec, "jobs")?.unwrap_or(DEFAULT_JOBS).max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Internal(format!("cannot start the I/O runtime: {e}")))?;
        let idx_dir = state_dir.join("idx");
        std::fs::create_dir_all(&idx_dir).map_err(|e| RemoteError::Io {
            action: "create",
            path: idx_dir,
            source: e,
        })?;
        let inner = Inner { spec: spec.clone(), storage, state_dir: state_dir.to_path_buf(), jobs };
        Ok(Remote { inner: std::sync::Arc::new(inner), runtime })
    }

    pub fn name(&self) -> &str {
        &self.inner.spec.name
    }

    /// Overrides the number of concurrent requests (`--jobs`).
    pub fn set_jobs(&mut self, jobs: usize) {
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.jobs = jobs.max(1);
        }
    }
}

impl Inner {
    fn storage_error(&self, action: impl Into<String>, error: &object_store::Error) -> RemoteError {
        RemoteError::Storage {
            remote: self.spec.name.clone(),
            url: self.spec.url.clone(),
            action: action.into(),
            failure: storage::classify(error),
            message: storage::error_chain(error),
        }
    }

    fn damaged(&self, what: &'static str, key: impl Into<String>, reason: impl Into<String>) -> RemoteError {
        RemoteError::Damaged {
            remote: self.spec.name.clone(),
            url: self.spec.url.clone(),
            what,
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn key(&self, name: &str) -> object_store::path::Path {
        self.storage.prefix.clone().join("packs").join(name)
    }
}

pub(crate) fn pack_name(pack: &Digest) -> String {
    format!("{}.pack", pack.hex())
}

pub(crate) fn index_name(pack: &Digest) -> String {
    format!("{}.idx", pack.hex())
}
