//! The one place errors become exit codes and hints.
//!
//! | code | meaning                                                              |
//! |------|----------------------------------------------------------------------|
//! | 0    | success                                                              |
//! | 1    | the command failed: bad input, missing data, conflicts, I/O problems |
//! | 2    | usage error: unknown command or flag, missing argument               |
//! | 130  | `cairn run` was interrupted (Ctrl-C); finished stages are kept        |
//! | 255  | internal error: a bug in Cairn (please report it)                    |

use std::io::ErrorKind;

use cairn_repo::RepoError;

pub const EXIT_USER: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INTERNAL: u8 = 255;

/// A failed command: message, optional hint, exit code.
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: u8,
}

impl Failure {
    pub fn user(message: impl Into<String>, hint: Option<&str>) -> Self {
        Failure { message: message.into(), hint: hint.map(str::to_owned), code: EXIT_USER }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure { message: message.into(), hint: None, code: EXIT_USAGE }
    }
}

fn io_hint(error: &std::io::Error) -> Option<&'static str> {
    if error.raw_os_error() == Some(28) || error.kind() == ErrorKind::StorageFull {
        return Some(
            "free some disk space (or move the cache with `cairn config cache.dir PATH`), then run the command again; nothing tracked was lost",
        );
    }
    match error.kind() {
        ErrorKind::PermissionDenied => {
            Some("check the permissions and owner of that path, then run the command again")
        }
        ErrorKind::ReadOnlyFilesystem => {
            Some("the filesystem is read-only; remount it or move the repository")
        }
        _ => None,
    }
}

impl From<RepoError> for Failure {
    fn from(error: RepoError) -> Self {
        use cairn_store::StoreError;
        let hint: Option<&str> = match &error {
            RepoError::Git(cairn_repo::GitError::NotAWorkTree { .. }) => {
                Some("Cairn versions data next to code in Git: run `git init` first, then `cairn init`")
            }
            RepoError::Git(_) => None,
            RepoError::NotInitialized { .. } => Some("run `cairn init` to start using Cairn here"),
            RepoError::InvalidPointer { .. } => Some(
                "restore the file from Git (`git checkout -- FILE`) or fix it by hand; the schema is in ARCHITECTURE.md",
            ),
            RepoError::UnsafeLink { access: "read", .. } => Some(
                "a link leaving the repository would have its target stored and pushed; replace it with the data itself, or pass `--follow-external-symlinks` to `cairn add` (or set `cairn config --user core.follow-external-symlinks true`) if that is what you mean",
            ),
            RepoError::UnsafeLink { .. } => Some(
                "like Git, Cairn never writes through a symbolic link that leaves the repository; remove the link (or replace it with a real directory) and run the command again",
            ),
            RepoError::Store(StoreError::CorruptObject { .. }) => Some(
                "the cache object is damaged and nothing was written from it: run `cairn fsck`, remove the object it names, then `cairn fetch` or re-add the data from a good copy",
            ),
            RepoError::InvalidManifest { .. } | RepoError::Store(StoreError::Corrupt { .. }) => Some(
                "the cache is damaged: run `cairn fsck` to list every problem, then re-add the data from a good copy",
            ),
            RepoError::UnknownListings { .. } => Some(
                "push that data from a clone that has it (`cairn push --all-branches --all-tags`), or delete the branch or tag if that version is gone; then run `cairn gc --cloud` again",
            ),
            RepoError::MissingObjects { .. } | RepoError::Store(StoreError::MissingObject { .. }) => Some(
                "the data was never added in this cache or was garbage-collected; run `cairn fsck` to list what is missing and re-add it from a copy",
            ),
            RepoError::Store(StoreError::ChangedWhileReading { .. }) => {
                Some("wait until whatever is writing the file has finished, then run the command again")
            }
            RepoError::WouldOverwrite { .. } => {
                Some("record the changes with `cairn commit`, or discard them with `cairn checkout --force`")
            }
            RepoError::OutsideRepository { .. } => Some("name a path inside the repository"),
            RepoError::ReservedPath { .. } => Some("name your data, not Git's or Cairn's own files"),
            RepoError::NotTracked { .. } => Some("start tracking it with `cairn add PATH`"),
            RepoError::InsideTracked { .. } => {
                Some("record changes inside a tracked directory with `cairn commit DIRECTORY`")
            }
            RepoError::ContainsTracked { .. } => {
                Some("stop tracking the inner path first with `cairn rm PATH`, or add the paths separately")
            }
            RepoError::TrackedByGit { .. } => Some(
                "stop tracking it in Git first with `git rm -r --cached PATH` (the files stay where they are), then `cairn add PATH` and commit the pointer",
            ),
            RepoError::IsPointer { .. } => Some("run `cairn add` on the data path, without `.cairn`"),
            RepoError::SymlinkLoop { .. } | RepoError::BrokenSymlink { .. } => {
                Some("fix or remove the symbolic link, then run the command again")
            }
            RepoError::UnsupportedFileType { .. } => Some("move it out of the tracked path"),
            RepoError::NotATrackedFile { .. } => Some("list tracked files with `cairn ls`"),
            RepoError::IsADirectory { .. } => Some("list its files with `cairn ls PATH`"),
            RepoError::Locked { .. } => Some(
                "wait for the other command to finish, or raise the wait with `cairn config core.lock-timeout SECONDS`",
            ),
            RepoError::FsckFailed(_) => {
                Some("re-add damaged data from a good copy, then run `cairn gc` to drop corrupt objects")
            }
            RepoError::Config(_) => Some("fix the file by hand or with `cairn config`"),
            RepoError::NoRemote => Some("add one with `cairn remote add NAME URL --default`"),
            RepoError::NoDefaultRemote { .. } => {
                Some("name one with `-r NAME`, or set the default with `cairn remote default NAME`")
            }
            RepoError::UnknownRemote { .. } => Some("list remotes with `cairn remote list`"),
            RepoError::Remote(remote) => remote_hint(remote),
            RepoError::Internal(_) => {
                Some("this is a bug in Cairn; please report it with the command you ran")
            }
            RepoError::RootNotTrackable { .. } | RepoError::NotFound { .. } => None,
            RepoError::Io { .. } | RepoError::Store(_) => None,
        };
        let hint = hint.or_else(|| error.io_error().and_then(io_hint));
        let internal = matches!(
            error,
            RepoError::Internal(_) | RepoError::Remote(cairn_remote::RemoteError::Internal(_))
        );
        let code = if internal { EXIT_INTERNAL } else { EXIT_USER };
        Failure { message: error.to_string(), hint: hint.map(str::to_owned), code }
    }
}

fn remote_hint(error: &cairn_remote::RemoteError) -> Option<&'static str> {
    use cairn_remote::{Failure as Kind, RemoteError};
    match error {
        RemoteError::InvalidUrl { .. } => Some(
            "fix the URL with `cairn remote modify NAME url URL` (a directory path or s3://BUCKET/PREFIX)",
        ),
        RemoteError::DirectoryMissing { .. } => Some(
            "create the directory, mount the share, or point the remote elsewhere with `cairn remote modify NAME url PATH`",
        ),
        RemoteError::BadOption { .. } | RemoteError::UnknownOption { .. } => {
            Some("see `cairn remote modify --help` for the options and their values")
        }
        RemoteError::Credentials { .. } => Some(
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile with `cairn remote modify --user NAME profile PROFILE`, or set `access-key-id` and `secret-access-key` with `cairn remote modify --user`",
        ),
        RemoteError::Storage { failure, .. } => match failure {
            Kind::NoSuchBucket => Some(
                "create the bucket, or fix the remote URL with `cairn remote modify NAME url s3://BUCKET/PREFIX`",
            ),
            Kind::BadCredentials => Some(
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile, or the remote's access-key-id and secret-access-key",
            ),
            Kind::NoCredentials => Some(
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile with `cairn remote modify --user NAME profile PROFILE`, or set `access-key-id` and `secret-access-key` with `cairn remote modify --user`",
            ),
            Kind::AccessDenied => Some(
                "the credentials work but may not read or write here: check the bucket policy or directory permissions",
            ),
            Kind::Unreachable => Some(
                "check the endpoint (`cairn remote modify NAME endpoint URL`) and your network; transient errors were already retried",
            ),
            Kind::NotFound => Some("the remote changed while Cairn was reading it; run the command again"),
            Kind::Other => None,
        },
        RemoteError::Damaged { .. } => Some(
            "the remote holds a damaged file; run `cairn gc --cloud` from a clone that has the data, or push again from one",
        ),
        RemoteError::Busy { .. } => {
            Some("pushes and `gc --cloud` take turns on a remote; markers older than 6 hours are ignored")
        }
        RemoteError::Store(_) | RemoteError::Io { .. } => None,
        RemoteError::Internal(_) => Some("this is a bug in Cairn; please report it with the command you ran"),
    }
}

impl From<cairn_repo::config::ConfigError> for Failure {
    fn from(error: cairn_repo::config::ConfigError) -> Self {
        RepoError::from(error).into()
    }
}

impl From<cairn_pipeline::PipelineError> for Failure {
    fn from(error: cairn_pipeline::PipelineError) -> Self {
        use cairn_pipeline::PipelineError as E;
        let hint: Option<&str> = match &error {
            E::Repo(_) => {
                let E::Repo(inner) = error else { unreachable!() };
                return inner.into();
            }
            E::Syntax { .. } | E::Invalid { .. } => {
                Some("fix cairn.yaml; `cairn pipeline schema` prints its JSON Schema for editors")
            }
            E::Graph { .. } => Some("fix the stages named above in cairn.yaml, then run again; nothing ran"),
            E::Lock { .. } => Some(
                "restore cairn.lock from Git (`git checkout -- cairn.lock`), or delete it to rebuild it with `cairn run`",
            ),
            E::Stage { .. } => None,
            E::UnknownStage { .. } => Some("`cairn run --dry` lists every stage"),
            E::NoPipeline { .. } => {
                Some("define stages in cairn.yaml at the repository root (see README.md)")
            }
            E::Failed { .. } => Some(
                "fix the failure shown above and run `cairn run` again: stages that succeeded are cached and will not run again",
            ),
            E::Interrupted => Some("run `cairn run` again to resume; finished stages will not run again"),
            E::Io { source, .. } => io_hint(source),
            E::Git(_) => None,
            E::Internal(_) => Some("this is a bug in Cairn; please report it with the command you ran"),
        };
        let code = match error {
            E::Internal(_) => EXIT_INTERNAL,
            E::Interrupted => 130,
            _ => EXIT_USER,
        };
        Failure { message: error.to_string(), hint: hint.map(str::to_owned), code }
    }
}

impl From<cairn_meta::MetaError> for Failure {
    fn from(error: cairn_meta::MetaError) -> Self {
        let hint = error.hint();
        Failure::user(error.to_string(), hint)
    }
}

impl From<cairn_app::Error> for Failure {
    fn from(error: cairn_app::Error) -> Self {
        use cairn_app::Error as E;
        match error {
            E::Repo(e) => (*e).into(),
            E::Pipeline(e) => (*e).into(),
            E::Meta(e) => e.into(),
            E::OpenMeta(e) => {
                Failure::user(e.to_string(), Some("check `meta.url` (`cairn config meta.url`)"))
            }
            E::Io { ref source, .. } => {
                let hint = io_hint(source);
                Failure::user(error.to_string(), hint)
            }
            E::Usage(message) => Failure::usage(message),
            E::Refused { message, hint } => Failure { message, hint, code: EXIT_USER },
        }
    }
}
