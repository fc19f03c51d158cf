//! Configuration files (TOML) and the settings they resolve to.
//!
//! Two levels, later ones winning: the user's file (the CLI passes its path, normally
//! `$XDG_CONFIG_HOME/cairn/config.toml`) and the project's `.cairn/config` (committed to Git).
//!
//! | key                 | meaning                                                   | default        |
//! |---------------------|-----------------------------------------------------------|----------------|
//! | `cache.link`        | link strategies to try, in order                          | `reflink,copy` |
//! | `cache.dir`         | cache directory (relative paths are from the repo root)   | `.cairn/cache` |
//! | `core.jobs`         | threads for hashing and linking                           | number of CPUs |
//! | `core.lock-timeout` | seconds to wait for another Cairn process in this repo    | `60`           |
//! | `core.remote`       | the remote push, fetch and pull use without `-r`          | none           |
//! | `meta.url`          | metadata store: an SQLite path or a `postgres://` URL     | `.cairn/state/meta-v1.sqlite` |
//! | `core.follow-external-symlinks` | read (add, status) through symbolic links that leave the repository; user config only | `false` |
//!
//! Keys that loosen a safety rule are honoured only in the user's file: a cloned repository's
//! `.cairn/config` naming one is an error, not a silent change of what Cairn will read.
//!
//! Remotes are tables `[remote.NAME]` with a `url` and options (`endpoint`, `region`,
//! `path-style`, `profile`, credentials, `retries`, `jobs`; see `cairn_remote::OPTIONS`).
//! A remote may be defined in both files: options are merged, the project's winning, so a
//! team commits the URL and each person keeps credentials in the user file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_store::LinkStrategy;

/// A known configuration key.
struct Key {
    name: &'static str,
    kind: ValueKind,
    help: &'static str,
    default: &'static str,
}

/// Every configuration key: name, meaning and default, for help texts.
pub fn keys() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    KEYS.iter().map(|key| (key.name, key.help, key.default))
}

#[derive(Clone, Copy)]
enum ValueKind {
    Link,
    Path,
    PositiveInteger,
    Name,
    Bool,
}

const KEYS: &[Key] = &[
    Key {
        name: "cache.link",
        kind: ValueKind::Link,
        help: "link strategies to try, in order: reflink, hardlink, symlink, copy (comma-separated)",
        default: "reflink,copy",
    },
    Key {
        name: "cache.dir",
        kind: ValueKind::Path,
        help: "cache directory (relative paths are from the repository root)",
        default: ".cairn/cache",
    },
    Key {
        name: "core.jobs",
        kind: ValueKind::PositiveInteger,
        help: "worker threads",
        default: "number of CPUs",
    },
    Key {
        name: "core.lock-timeout",
        kind: ValueKind::PositiveInteger,
        help: "seconds to wait for another Cairn process in this repository",
        default: "60",
    },
    Key { name: "core.remote", kind: ValueKind::Name, help: "the default remote", default: "none" },
    Key {
        name: "meta.url",
        kind: ValueKind::Path,
        help: "metadata store: an SQLite path or a postgres:// URL",
        default: ".cairn/state/meta-v1.sqlite",
    },
    Key {
        name: FOLLOW_EXTERNAL_SYMLINKS,
        kind: ValueKind::Bool,
        help: "true: add and status read through symbolic links that leave the repository (user config only)",
        default: "false",
    },
];

/// The key that lets reads follow links out of the repository.
pub const FOLLOW_EXTERNAL_SYMLINKS: &str = "core.follow-external-symlinks";

/// Keys only the user's own config may set.
const USER_ONLY: &[&str] = &[FOLLOW_EXTERNAL_SYMLINKS];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file `{path}` is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("cannot write config file `{path}`: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("unknown config key `{key}`; known keys: {known}")]
    UnknownKey { key: String, known: String },
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    BadValue { key: String, value: String, reason: String },
    #[error(
        "`{key}` in `{path}` is ignored from a project's config (a cloned repository must not loosen what Cairn reads); set it with `cairn config --user {key} true` instead, and remove it here"
    )]
    UserOnly { key: String, path: PathBuf },
    #[error("no remote named `{name}` in `{path}`")]
    NoSuchRemote { name: String, path: PathBuf },
    #[error("remote `{name}` already exists in `{path}`")]
    RemoteExists { name: String, path: PathBuf },
    #[error("remote `{name}` in `{path}` is malformed: {reason}")]
    BadRemote { name: String, path: PathBuf, reason: String },
}

/// Remote names: letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
pub fn check_remote_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid { Ok(()) } else { Err("a remote name uses letters, digits, `-`, `_` and `.`".to_owned()) }
}

/// Resolved settings handed to repository operations.
#[derive(Clone, Debug)]
pub struct Settings {
    pub link: LinkStrategy,
    pub cache_dir: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub lock_timeout: std::time::Duration,
    /// `core.remote`.
    pub default_remote: Option<String>,
    /// Every configured remote by name, options of both files merged.
    pub remotes: std::collections::BTreeMap<String, cairn_remote::RemoteSpec>,
    /// `meta.url`: a `postgres://` URL, or an SQLite path (resolved from the root).
    pub meta_url: Option<String>,
    /// `core.follow-external-symlinks` (user config only).
    pub follow_external_symlinks: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            link: LinkStrategy::default(),
            cache_dir: None,
            jobs: None,
            lock_timeout: std::time::Duration::from_secs(60),
            default_remote: None,
            remotes: Default::default(),
            meta_url: None,
            follow_external_symlinks: false,
        }
    }
}

/// One TOML config file, edited as a table.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

fn find_key(name: &str) -> Result<&'static Key, ConfigError> {
    KEYS.iter().find(|key| key.name == name).ok_or_else(|| ConfigError::UnknownKey {
        key: name.to_owned(),
        known: KEYS.iter().map(|k| format!("{} ({})", k.name, k.help)).collect::<Vec<_>>().join(", "),
    })
}

fn parse_value(key: &Key, value: &str) -> Result<toml::Value, ConfigError> {
    let bad =
        |reason: String| ConfigError::BadValue { key: key.name.to_owned(), value: value.to_owned(), reason };
    match key.kind {
        ValueKind::Link => {
            let strategy: LinkStrategy =
                value.parse().map_err(|e: cairn_store::ParseLinkError| bad(e.to_string()))?;
            Ok(toml::Value::String(strategy.to_string()))
        }
        ValueKind::Path if value.is_empty() => Err(bad("the path is empty".into())),
        ValueKind::Path => Ok(toml::Value::String(value.to_owned())),
        ValueKind::Name => {
            check_remote_name(value).map_err(bad)?;
            Ok(toml::Value::String(value.to_owned()))
        }
        ValueKind::Bool => match value {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(bad("expected `true` or `false`".into())),
        },
        ValueKind::PositiveInteger => match value.parse::<i64>() {
            Ok(n) if n > 0 => Ok(toml::Value::Integer(n)),
            _ => Err(bad("expected a whole number greater than 0".into())),
        },
    }
}

impl ConfigFile {
    /// Loads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path: path.to_path_buf(), source }),
        };
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(ConfigFile { path: path.to_path_buf(), table })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw(&self, name: &str) -> Option<&toml::Value> {
        let (section, field) = name.split_once('.')?;
        self.table.get(section)?.as_table()?.get(field)
    }

    /// The value of `key` as text, if set here.
    pub fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        find_key(key)?;
        Ok(self.raw(key).map(|value| match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }

    /// Every known key set in this file, with its value.
    pub fn list(&self) -> Vec<(String, String)> {
        KEYS.iter().filter_map(|key| Some((key.name.to_owned(), self.get(key.name).ok()??))).collect()
    }

    /// Sets `key` after validating `value`, and writes the file.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let spec = find_key(key)?;
        let value = parse_value(spec, value)?;
        let (section, field) = key.split_once('.').expect("known keys have a section");
        let entry = self.table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        entry.as_table_mut().expect("made a table above").insert(field.to_owned(), value);
        self.save()
    }

    /// Removes `key`; returns whether it was set.
    pub fn unset(&mut self, key: &str) -> Result<bool, ConfigError> {
        find_key(key)?;
        let (section, field) = key.split_once('.').expect("known keys have a section");
        let removed = self
            .table
            .get_mut(section)
            .and_then(|s| s.as_table_mut())
            .and_then(|s| s.remove(field))
            .is_some();
        if removed {
            self.save()?;
        }
        Ok(removed)
    }

    /// The `[remote.NAME]` tables of this file: name -> key -> value (values as text).
    pub fn remotes(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>, ConfigError>
    {
        let mut out = std::collections::BTreeMap::new();
        let Some(section) = self.table.get("remote") else { return Ok(out) };
        let bad = |name: &str, reason: &str| ConfigError::BadRemote {
            name: name.to_owned(),
            path: self.path.clone(),
            reason: reason.to_owned(),
        };
        let section = section.as_table().ok_or_else(|| bad("*", "`remote` must be a table of remotes"))?;
        for (name, table) in section {
            let table = table.as_table().ok_or_else(|| bad(name, "expected a table of options"))?;
            let mut options = std::collections::BTreeMap::new();
            for (key, value) in table {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(_) | toml::Value::Boolean(_) => value.to_string(),
                    _ => return Err(bad(name, &format!("`{key}` must be a string, number or boolean"))),
                };
                options.insert(key.clone(), text);
            }
            out.insert(name.clone(), options);
        }
        Ok(out)
    }

    fn remote_table(&mut self, name: &str, create: bool) -> Result<Option<&mut toml::Table>, ConfigError> {
        let path = self.path.clone();
        if !self.table.contains_key("remote") {
            if !create {
                return Ok(None);
            }
            self.table.insert("remote".into(), toml::Value::Table(toml::Table::new()));
        }
        let section = self.table.get_mut("remote").and_then(toml::Value::as_table_mut).ok_or_else(|| {
            ConfigError::BadRemote {
                name: name.to_owned(),
                path: path.clone(),
                reason: "`remote` is not a table".into(),
            }
        })?;
        if !section.contains_key(name) {
            if !create {
                return Ok(None);
            }
            section.insert(name.to_owned(), toml::Value::Table(toml::Table::new()));
        }
        let table = section.get_mut(name).and_then(toml::Value::as_table_mut).ok_or_else(|| {
            ConfigError::BadRemote {
                name: name.to_owned(),
                path,
                reason: "expected a table of options".into(),
            }
        })?;
        Ok(Some(table))
    }

    /// Adds remote `name` with `url`; fails if it exists here.
    pub fn add_remote(&mut self, name: &str, url: &str) -> Result<(), ConfigError> {
        check_remote_name(name).map_err(|reason| ConfigError::BadValue {
            key: "remote name".into(),
            value: name.to_owned(),
            reason,
        })?;
        if self.remotes()?.contains_key(name) {
            return Err(ConfigError::RemoteExists { name: name.to_owned(), path: self.path.clone() });
        }
        let table = self.remote_table(name, true)?.expect("created above");
        table.insert("url".into(), toml::Value::String(url.to_owned()));
        self.save()
    }

    /// Sets (`Some`) or removes (`None`) one option of remote `name`, creating its table when
    /// `create` (the user file may add credentials to a remote the project defines).
    pub fn set_remote_option(
        &mut self,
        name: &str,
        key: &str,
        value: Option<&str>,
        create: bool,
    ) -> Result<bool, ConfigError> {
        let path = self.path.clone();
        let Some(table) = self.remote_table(name, create && value.is_some())? else {
            return Err(ConfigError::NoSuchRemote { name: name.to_owned(), path });
        };
        let changed = match value {
            Some(value) => {
                table.insert(key.to_owned(), toml::Value::String(value.to_owned()));
                true
            }
            None => table.remove(key).is_some(),
        };
        if changed {
            self.save()?;
        }
        Ok(changed)
    }

    /// Removes remote `name`; returns whether it was here.
    pub fn remove_remote(&mut self, name: &str) -> Result<bool, ConfigError> {
        let removed = self
            .table
            .get_mut("remote")
            .and_then(toml::Value::as_table_mut)
            .is_some_and(|section| section.remove(name).is_some());
        if removed {
            if self.get("core.remote")?.as_deref() == Some(name) {
                self.unset("core.remote")?;
            }
            self.save()?;
        }
        Ok(removed)
    }

    fn save(&self) -> Result<(), ConfigError> {
        let write = |source| ConfigError::Write { path: self.path.clone(), source };
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(write)?;
        }
        let text = toml::to_string(&self.table).expect("a TOML table always serializes");
        // The file keeps the mode it had; a new file is private to its owner, since a
        // remote's credentials may be written to it.
        let mode = std::fs::metadata(&self.path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
        let options = cairn_fs::Options { mode: Some(mode), ..Default::default() };
        cairn_fs::write_with(&self.path, options, |file| {
            use std::io::Write;
            file.write_all(text.as_bytes())
        })
        .map_err(write)
    }
}

/// Makes a config file that others can read private to its owner (mode 600), since it may
/// hold credentials. Returns the mode it had when it was changed; `None` when it was already
/// private or does not exist.
pub fn make_private(path: &Path) -> Result<Option<u32>, ConfigError> {
    let write = |source| ConfigError::Write { path: path.to_path_buf(), source };
    let mode = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(write(e)),
    };
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)).map_err(write)?;
    Ok(Some(mode))
}

/// Resolves settings from config files, lowest priority first, the project's `.cairn/config`
/// last (keys that only the user may set are refused there). `root` anchors relative
/// `cache.dir` values.
pub fn resolve(files: &[&ConfigFile], root: &Path) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    for (index, file) in files.iter().enumerate() {
        for (key, value) in file.list() {
            let spec = find_key(&key)?;
            if index + 1 == files.len() && USER_ONLY.contains(&key.as_str()) {
                return Err(ConfigError::UserOnly { key, path: file.path.clone() });
            }
            // Re-validate: the file may have been edited by hand.
            let bad = |reason: &str| ConfigError::BadValue {
                key: format!("{key} (in {})", file.path.display()),
                value: value.clone(),
                reason: reason.to_owned(),
            };
            let parsed = parse_value(spec, &value).map_err(|e| match e {
                ConfigError::BadValue { reason, .. } => bad(&reason),
                other => other,
            })?;
            match key.as_str() {
                "cache.link" => {
                    settings.link = value.parse().map_err(|_| bad("invalid link strategy"))?;
                }
                "cache.dir" => settings.cache_dir = Some(root.join(&value)),
                "core.jobs" => settings.jobs = parsed.as_integer().map(|n| n as usize),
                "core.lock-timeout" => {
                    settings.lock_timeout =
                        std::time::Duration::from_secs(parsed.as_integer().map(|n| n as u64).unwrap_or(60));
                }
                "core.remote" => settings.default_remote = Some(value.clone()),
                "meta.url" if value.contains("://") => settings.meta_url = Some(value.clone()),
                "meta.url" => settings.meta_url = Some(root.join(&value).display().to_string()),
                FOLLOW_EXTERNAL_SYMLINKS => {
                    settings.follow_external_symlinks = parsed.as_bool() == Some(true)
                }
                _ => unreachable!("every key in KEYS is handled"),
            }
        }
    }
    for file in files {
        for (name, options) in file.remotes()? {
            let spec = settings
                .remotes
                .entry(name.clone())
                .or_insert_with(|| cairn_remote::RemoteSpec { name: name.clone(), ..Default::default() });
            for (key, value) in options {
                if key == "url" {
                    spec.url = value;
                } else {
                    spec.options.insert(key, value);
                }
            }
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_are_private_and_loosening_keys_are_user_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user.toml");
        let mut user = ConfigFile::load(&path).unwrap();
        user.set(FOLLOW_EXTERNAL_SYMLINKS, "true").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(make_private(&path).unwrap(), Some(0o644));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(make_private(&path).unwrap(), None);
        let project_path = dir.path().join("project");
        let mut project = ConfigFile::load(&project_path).unwrap();
        assert!(resolve(&[&user, &project], dir.path()).unwrap().follow_external_symlinks);
        project.set(FOLLOW_EXTERNAL_SYMLINKS, "true").unwrap();
        let error = resolve(&[&user, &project], dir.path()).unwrap_err();
        assert!(matches!(error, ConfigError::UserOnly { .. }), "{error}");
        assert!(user.set(FOLLOW_EXTERNAL_SYMLINKS, "yes").is_err());
    }

    #[test]
    fn set_get_and_resolve_with_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let mut user = ConfigFile::load(&dir.path().join("user.toml")).unwrap();
        let mut project = ConfigFile::load(&dir.path().join("project")).unwrap();
        user.set("cache.link", "hardlink,copy").unwrap();
        user.set("core.jobs", "3").unwrap();
        project.set("cache.link", "copy").unwrap();
        assert_eq!(project.get("cache.link").unwrap().as_deref(), Some("copy"));
        let settings = resolve(&[&user, &project], dir.path()).unwrap();
        assert_eq!(settings.link.to_string(), "copy");
        assert_eq!(settings.jobs, Some(3));
        let reloaded = ConfigFile::load(&dir.path().join("user.toml")).unwrap();
        assert_eq!(reloaded.get("core.jobs").unwrap().as_deref(), Some("3"));
        assert!(project.unset("cache.link").unwrap());
        assert!(!project.unset("cache.link").unwrap());
    }

    #[test]
    fn remotes_merge_across_files_and_removal_clears_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut project = ConfigFile::load(&dir.path().join("project")).unwrap();
        let mut user = ConfigFile::load(&dir.path().join("user.toml")).unwrap();
        project.add_remote("origin", "s3://bucket/prefix").unwrap();
        project.set_remote_option("origin", "region", Some("eu-west-1"), false).unwrap();
        project.set("core.remote", "origin").unwrap();
        assert!(matches!(project.add_remote("origin", "/x"), Err(ConfigError::RemoteExists { .. })));
        assert!(matches!(
            project.set_remote_option("nope", "region", Some("x"), false),
            Err(ConfigError::NoSuchRemote { .. })
        ));
        assert!(matches!(project.add_remote("bad name", "/x"), Err(ConfigError::BadValue { .. })));
        // The user file adds credentials to the project's remote.
        user.set_remote_option("origin", "access-key-id", Some("AKIA"), true).unwrap();
        let settings = resolve(&[&user, &project], dir.path()).unwrap();
        let origin = &settings.remotes["origin"];
        assert_eq!(origin.url, "s3://bucket/prefix");
        assert_eq!(origin.options["region"], "eu-west-1");
        assert_eq!(origin.options["access-key-id"], "AKIA");
        assert_eq!(settings.default_remote.as_deref(), Some("origin"));

        let reloaded = ConfigFile::load(&dir.path().join("project")).unwrap();
        assert_eq!(reloaded.remotes().unwrap()["origin"]["url"], "s3://bucket/prefix");
        assert!(project.remove_remote("origin").unwrap());
        assert!(!project.remove_remote("origin").unwrap());
        assert_eq!(project.get("core.remote").unwrap(), None);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = ConfigFile::load(&dir.path().join("c")).unwrap();
        assert!(matches!(file.set("cache.lnk", "copy"), Err(ConfigError::UnknownKey { .. })));
        assert!(matches!(file.set("cache.link", "teleport"), Err(ConfigError::BadValue { .. })));
        assert!(matches!(file.set("core.jobs", "0"), Err(ConfigError::BadValue { .. })));
        std::fs::write(dir.path().join("bad"), "[cache\nlink=").unwrap();
        assert!(matches!(ConfigFile::load(&dir.path().join("bad")), Err(ConfigError::Syntax { .. })));
    }
}
