//! The application layer's errors: the lower crates' errors as they are (so a front end can
//! classify them), and the refusals this layer makes itself, each with a hint as data.

use std::path::PathBuf;

use cairn_meta::MetaError;
use cairn_pipeline::PipelineError;
use cairn_repo::RepoError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(Box<RepoError>),
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    /// The metadata store failed or refused an operation.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The metadata store could not be opened (`meta.url` is wrong, unreachable, too new).
    #[error(transparent)]
    OpenMeta(MetaError),
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request itself is malformed (a front end's usage error).
    #[error("{0}")]
    Usage(String),
    /// Refused, or impossible here, for a reason the user can fix; `hint` says how.
    #[error("{message}")]
    Refused { message: String, hint: Option<String> },
}

impl Error {
    pub fn refused(message: impl Into<String>, hint: Option<&str>) -> Self {
        Error::Refused { message: message.into(), hint: hint.map(str::to_owned) }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    /// The I/O error underneath, if any (a full disk, a permission), for hints.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Repo(e) => e.io_error(),
            _ => None,
        }
    }
}

impl From<RepoError> for Error {
    fn from(error: RepoError) -> Self {
        Error::Repo(Box::new(error))
    }
}

impl From<PipelineError> for Error {
    fn from(error: PipelineError) -> Self {
        Error::Pipeline(Box::new(error))
    }
}

impl From<cairn_remote::RemoteError> for Error {
    fn from(error: cairn_remote::RemoteError) -> Self {
        Error::from(RepoError::from(error))
    }
}

impl From<cairn_repo::config::ConfigError> for Error {
    fn from(error: cairn_repo::config::ConfigError) -> Self {
        Error::from(RepoError::from(error))
    }
}

impl From<cairn_git::GitError> for Error {
    fn from(error: cairn_git::GitError) -> Self {
        Error::from(RepoError::from(error))
    }
}

impl From<cairn_store::StoreError> for Error {
    fn from(error: cairn_store::StoreError) -> Self {
        Error::from(RepoError::from(error))
    }
}
