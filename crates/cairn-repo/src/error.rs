use std::path::PathBuf;

use cairn_hash::Digest;

use crate::pointer::PointerError;

/// Everything that can go wrong in a repository operation. Variants carry the path, digest or
/// revision concerned; front ends add hints ("run `cairn init`") from the variant.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Git(#[from] cairn_git::GitError),
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Remote(#[from] cairn_remote::RemoteError),
    #[error("no remote is configured")]
    NoRemote,
    #[error("several remotes are configured ({}) and none is the default", names.join(", "))]
    NoDefaultRemote { names: Vec<String> },
    #[error("no remote named `{name}`{}", if known.is_empty() { String::new() } else { format!(" (configured: {})", known.join(", ")) })]
    UnknownRemote { name: String, known: Vec<String> },
    #[error("`{root}` is a Git work tree but not a Cairn repository")]
    NotInitialized { root: PathBuf },
    #[error("cannot {action} `{path}`: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("pointer file `{path}` is invalid: {source}")]
    InvalidPointer { path: PathBuf, source: PointerError },
    #[error("pointer file `{path}` names directory {digest}, whose manifest is invalid: {source}")]
    InvalidManifest { path: PathBuf, digest: Digest, source: cairn_hash::manifest::ManifestError },
    #[error("`{path}` is outside the repository at `{root}`")]
    OutsideRepository { path: PathBuf, root: PathBuf },
    #[error("`{path}` is inside `{inside}`, which Cairn manages itself")]
    ReservedPath { path: PathBuf, inside: &'static str },
    #[error("`{path}` does not exist")]
    NotFound { path: PathBuf },
    #[error("`{path}` is not tracked by Cairn (there is no `{path}.cairn`)")]
    NotTracked { path: PathBuf },
    #[error("`{path}` is already tracked as part of `{tracked}`")]
    InsideTracked { path: PathBuf, tracked: PathBuf },
    #[error("`{path}` contains data tracked separately by `{pointer}`")]
    ContainsTracked { path: PathBuf, pointer: PathBuf },
    #[error(
        "`{path}` is tracked by Git (`{entry}` is in Git's index), so its data would live in Git as well as in Cairn's cache"
    )]
    TrackedByGit { path: PathBuf, entry: String },
    #[error("`{path}` is the repository root; track a file or directory inside it")]
    RootNotTrackable { path: PathBuf },
    #[error("`{path}` is a pointer file; name the data it tracks instead")]
    IsPointer { path: PathBuf },
    #[error(
        "`{path}` is neither a regular file nor a directory (sockets, FIFOs and devices cannot be tracked)"
    )]
    UnsupportedFileType { path: PathBuf },
    #[error("refusing to {access} `{path}`: `{link}` is a symbolic link to `{target}`, {reason}")]
    UnsafeLink { access: &'static str, path: PathBuf, link: PathBuf, target: PathBuf, reason: &'static str },
    #[error("symbolic link loop at `{path}`")]
    SymlinkLoop { path: PathBuf },
    #[error("`{path}` is a broken symbolic link")]
    BrokenSymlink { path: PathBuf },
    #[error("the data of `{pointer}` is not in the cache ({} object(s) missing, first {first})", .count)]
    MissingObjects { pointer: PathBuf, first: Digest, count: usize },
    #[error(
        "cannot tell which objects on `{remote}` {} need{}: the directory listing is neither in this cache nor on the remote",
        .versions.join(", "),
        if .versions.len() == 1 { "s" } else { "" }
    )]
    UnknownListings { remote: String, versions: Vec<String> },
    #[error("checkout would overwrite changes that are not in the cache:\n{}", list_paths(.paths))]
    WouldOverwrite { paths: Vec<PathBuf> },
    #[error("`{path}` is not a tracked file at {rev}")]
    NotATrackedFile { path: PathBuf, rev: String },
    #[error("`{path}` is a tracked directory, not a file")]
    IsADirectory { path: PathBuf },
    #[error("another Cairn process holds the repository lock `{path}`{}", holder.as_ref().map(|h| format!(" (pid {h})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<String> },
    #[error("{0} problem(s) found")]
    FsckFailed(usize),
    /// A state a user cannot cause: a bug in Cairn.
    #[error("internal error: {0}")]
    Internal(String),
}

fn list_paths(paths: &[PathBuf]) -> String {
    let mut lines: Vec<String> = paths.iter().take(20).map(|p| format!("  {}", p.display())).collect();
    if paths.len() > 20 {
        lines.push(format!("  … and {} more", paths.len() - 20));
    }
    lines.join("\n")
}

impl RepoError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io { action, path: path.into(), source }
    }

    /// The underlying I/O error, if any (to classify "no space left", "permission denied").
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            RepoError::Io { source, .. } => Some(source),
            RepoError::Store(store) => store.io_error(),
            RepoError::Remote(remote) => remote.io_error(),
            _ => None,
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
