//! `cairn.lock`: what each stage last ran with and produced. It lives in Git beside
//! `cairn.yaml`, so a checkout of any commit knows which data belongs to it.
//!
//! ```yaml
//! schema: 1
//! stages:
//!   prepare:
//!     fingerprint: blake3:…        # scheme in fingerprint.rs
//!     cmd: [python prepare.py]
//!     wdir: src                    # omitted for the root
//!     deps:
//!       data/raw: {digest: blake3:…, size: 1048576, files: 12}   # files: directories only
//!     params:
//!       params.yaml: {prepare.split: 0.2}
//!     env: {OMP_NUM_THREADS: "1"}
//!     outs:
//!       data/prepared: {digest: blake3:…, size: 52311, files: 2}
//!     parts: blake3:…              # datum and partitioned stages: a cache object listing
//!                                  # every part (`PartsFile`): fingerprint, input, outputs
//! ```
//!
//! A file's digest is its content digest; a directory's is the digest of its manifest (see
//! cairn-hash), which is stored in the cache.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_hash::Digest;
use cairn_repo::pointer::{Pointer, PointerKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PipelineError;

pub const LOCK_FILE: &str = "cairn.lock";
const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub schema: u32,
    #[serde(default)]
    pub stages: BTreeMap<String, LockedStage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockedStage {
    pub fingerprint: Digest,
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wdir: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, Content>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outs: BTreeMap<String, Content>,
    /// Datum and partitioned stages: the digest of the JSON object in the cache that lists
    /// every part (see [`PartsFile`]); kept out of this file so it stays small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Digest>,
}

/// The parts of a datum or partitioned stage, stored as a cache object (JSON):
/// `{"schema":1,"parts":{"data/images/a.png":{"fingerprint":…,"input":…,"outs":{…}}}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartsFile {
    pub schema: u32,
    pub parts: BTreeMap<String, LockedDatum>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedDatum {
    pub fingerprint: Digest,
    /// Content digest of a datum's input path (none for a partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Digest>,
    /// The files this datum wrote, as a directory.
    pub outs: Content,
}

/// A content record: a file's or directory's digest, size, and for directories the number
/// of files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

impl Content {
    pub fn from_pointer(p: &Pointer) -> Self {
        match p.kind {
            PointerKind::File { executable } => {
                Content { digest: p.digest, size: p.size, files: None, executable }
            }
            PointerKind::Directory { files } => {
                Content { digest: p.digest, size: p.size, files: Some(files), executable: false }
            }
        }
    }

    /// The record as a pointer.
    pub fn to_pointer(&self) -> Pointer {
        let kind = match self.files {
            Some(files) => PointerKind::Directory { files },
            None => PointerKind::File { executable: self.executable },
        };
        Pointer { kind, digest: self.digest, size: self.size }
    }
}

impl LockFile {
    /// Reads `cairn.lock` from text (`name` for errors).
    pub fn parse(name: &Path, text: &str) -> Result<Self, PipelineError> {
        if text.trim().is_empty() {
            return Ok(LockFile { schema: SCHEMA, stages: BTreeMap::new() });
        }
        let lock: LockFile = serde_saphyr::from_str(text)
            .map_err(|e| PipelineError::Lock { path: name.to_path_buf(), message: e.to_string() })?;
        if lock.schema != SCHEMA {
            return Err(PipelineError::Lock {
                path: name.to_path_buf(),
                message: format!(
                    "schema {} is not supported (this cairn reads schema {SCHEMA}); upgrade cairn",
                    lock.schema
                ),
            });
        }
        Ok(lock)
    }

    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default_schema()),
            Err(e) => Err(PipelineError::io("read", path, e)),
        }
    }

    pub fn default_schema() -> Self {
        LockFile { schema: SCHEMA, stages: BTreeMap::new() }
    }

    pub fn render(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("a lock file serializes");
        format!("# Written by `cairn run`: what each stage last ran with and produced. Commit it.\n{body}")
    }

    /// Writes the file atomically, only if its content changed.
    pub fn save(&self, path: &Path) -> Result<bool, PipelineError> {
        let text = self.render();
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        crate::write_atomically(path, text.as_bytes())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut lock = LockFile::default_schema();
        let content = Content {
            digest: format!("blake3:{}", "ab".repeat(32)).parse().unwrap(),
            size: 3,
            files: Some(1),
            executable: false,
        };
        let mut stage = LockedStage {
            fingerprint: content.digest,
            cmd: vec!["echo hi".into()],
            wdir: String::new(),
            deps: BTreeMap::new(),
            params: BTreeMap::new(),
            env: BTreeMap::new(),
            outs: BTreeMap::new(),
            parts: None,
        };
        stage.deps.insert("data/raw".into(), content.clone());
        stage.params.entry("params.yaml".into()).or_default().insert("train.lr".into(), Value::from(0.01));
        stage.outs.insert("out".into(), Content { files: None, executable: true, ..content.clone() });
        lock.stages.insert("prepare".into(), stage.clone());
        let text = lock.render();
        let back = LockFile::parse(Path::new("cairn.lock"), &text).unwrap();
        assert_eq!(back.stages["prepare"], stage, "{text}");
        let err = LockFile::parse(Path::new("cairn.lock"), "schema: 9\n").unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn a_malformed_digest_is_an_error_that_names_it() {
        let text = "schema: 1\nstages:\n  s:\n    fingerprint: blake3:zz\n    cmd: [x]\n";
        let err = LockFile::parse(Path::new("cairn.lock"), text).unwrap_err().to_string();
        assert!(err.contains("cairn.lock") && err.contains("`blake3:zz` is not a digest"), "{err}");
    }
}
