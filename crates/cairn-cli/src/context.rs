//! What every command starts from: the directory it runs in (`-C`), the repository found
//! there with the user's config, and the application layer's workspace over it.

use std::path::{Path, PathBuf};

use cairn_repo::config::ConfigFile;
use cairn_repo::{OpenOptions, Repo};

use crate::env;
use crate::failure::Failure;

fn user_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("cairn/config.toml"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config/cairn/config.toml"))
}

pub struct Context {
    pub cwd: PathBuf,
}

/// The user config's path, after making sure no one else can read it: it may hold a
/// remote's credentials. A file others could read is tightened to mode 600, with a warning.
fn private_user_config() -> Option<PathBuf> {
    let path = user_config_path()?;
    match cairn_repo::config::make_private(&path) {
        Ok(Some(mode)) => eprintln!(
            "warning: `{}` was readable by others (mode {mode:o}); it may hold credentials, so it is now mode 600",
            path.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("warning: could not make `{}` private: {e}", path.display()),
    }
    Some(path)
}

impl Context {
    pub fn open(&self) -> Result<Repo, Failure> {
        Ok(Repo::open(&self.cwd, &OpenOptions { user_config: private_user_config() })?)
    }

    /// The repository with what the library needs from this process's surroundings.
    pub fn workspace(&self) -> Result<cairn_app::Workspace, Failure> {
        Ok(cairn_app::Workspace::new(self.open()?, Box::new(env::Cli)))
    }

    /// The user's config file (`--user`) or the project's.
    pub fn config_file(&self, user: bool) -> Result<ConfigFile, Failure> {
        let path = if user {
            private_user_config().ok_or_else(|| {
                Failure::user("cannot locate the user config: neither XDG_CONFIG_HOME nor HOME is set", None)
            })?
        } else {
            self.open()?.project_config_path()
        };
        Ok(ConfigFile::load(&path)?)
    }

    pub fn rel(&self, repo: &Repo, path: &Path) -> Result<Vec<u8>, Failure> {
        Ok(repo.rel_path(&self.cwd.join(path))?)
    }
}
