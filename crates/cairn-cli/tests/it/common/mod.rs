//! Hermetic test environment: a temporary Git work tree, a cleared environment with a fake
//! HOME, and helpers to run the real `cairn` binary.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod s3;
pub mod tools;

pub struct TestRepo {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
}

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

impl TestRepo {
    /// An empty directory that is not a Git repository.
    pub fn bare() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("work");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        TestRepo { _dir: dir, root: root.canonicalize().unwrap(), home }
    }

    /// A Git work tree with `cairn init` done.
    pub fn new() -> Self {
        let repo = Self::bare();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.ok(&["init"]);
        repo
    }

    /// A `git clone` of `origin` with `cairn init` state from the clone (config is in Git).
    pub fn clone_of(origin: &TestRepo) -> Self {
        let repo = Self::bare();
        repo.git(&["clone", "-q", origin.root.to_str().expect("UTF-8 temp path"), "."]);
        repo
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn env(&self, command: &mut Command) {
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .current_dir(&self.root);
    }

    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut command = Command::new(cairn_bin());
        command.args(args);
        self.env(&mut command);
        command
    }

    /// Runs cairn through a wrapper command (`unshare …`, `setpriv …`), which receives the
    /// cairn binary and `args` after its own arguments, with the same hermetic environment.
    pub fn command_via<S: AsRef<OsStr>>(&self, wrapper: &[&OsStr], args: &[S]) -> Command {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(cairn_bin()).args(args);
        self.env(&mut command);
        command
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.command(args).output().expect("cairn runs")
    }

    /// Runs cairn, asserts success, returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "cairn {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>(),
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs cairn, asserts it failed with `code`, returns stderr.
    pub fn fail<S: AsRef<OsStr>>(&self, code: i32, args: &[S]) -> String {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("valid JSON on stdout")
    }

    pub fn git(&self, args: &[&str]) -> String {
        let mut command = Command::new("git");
        command.args(args);
        self.env(&mut command);
        let output = command.output().expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    pub fn write(&self, rel: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if path.exists() {
            make_writable(&path);
        }
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap()
    }

    pub fn exists(&self, rel: &str) -> bool {
        std::fs::symlink_metadata(self.root.join(rel)).is_ok()
    }

    /// Paths of every object in the default cache.
    pub fn objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let objects = self.root.join(".cairn/cache/objects-v1");
        for shard in std::fs::read_dir(objects).unwrap() {
            for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                out.push(entry.unwrap().path());
            }
        }
        out.sort();
        out
    }

    /// The hex digests of every object in the cache, loose or in a local pack (read from the
    /// pack indexes as `cairn-store`'s `pack` module documents them).
    pub fn cached_digests(&self) -> std::collections::BTreeSet<String> {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut out = std::collections::BTreeSet::new();
        let cache = self.root.join(".cairn/cache");
        if let Ok(shards) = std::fs::read_dir(cache.join("objects-v1")) {
            for shard in shards {
                let shard = shard.unwrap().path();
                let prefix = shard.file_name().unwrap().to_string_lossy().into_owned();
                for entry in std::fs::read_dir(&shard).unwrap() {
                    out.insert(format!("{prefix}{}", entry.unwrap().file_name().to_string_lossy()));
                }
            }
        }
        if let Ok(packs) = std::fs::read_dir(cache.join("packs-v1")) {
            for entry in packs {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "idx") {
                    let index = std::fs::read(&path).unwrap();
                    let count = u32::from_le_bytes(index[8..12].try_into().unwrap()) as usize;
                    for i in 0..count {
                        out.insert(hex(&index[12 + i * 48..12 + i * 48 + 32]));
                    }
                }
            }
        }
        out
    }
}

pub fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_symlink()
    {
        let mode = meta.permissions().mode() | 0o200;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Every regular file under `dir` with its bytes, keyed by raw relative path.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().as_os_str().as_bytes().to_vec();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes `count` files of deterministic content under `rel`.
pub fn make_tree(repo: &TestRepo, rel: &str, count: usize, seed: u8) {
    for i in 0..count {
        let content: Vec<u8> =
            (0..(100 + i % 300)).map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8)).collect();
        repo.write(format!("{rel}/d{:02}/f{i:05}.bin", i % 7), content);
    }
}
