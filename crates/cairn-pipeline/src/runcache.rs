//! The run cache: for each fingerprint that ever ran to completion, the outputs it produced.
//!
//! Entries live beside the objects, in `<cache>/runs-v1/<first 2 hex>/<remaining 62 hex>`
//! (the fingerprint's hex), one small JSON file each, written atomically and never changed:
//!
//! ```json
//! {"schema":1,"fingerprint":"blake3:…","stage":"train","outs":{"model.onnx":{"digest":"blake3:…","size":123}},
//!  "created":1795132800,"commit":"4f2a…"}
//! ```
//!
//! An entry is written only after its outputs' objects are durable in the cache, so an
//! entry never names data the cache never had. `cairn push` and `pull` carry entries to and
//! from remotes (`runs-v1/<hex>` there too), which makes the run cache shared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_hash::Digest;
use serde::{Deserialize, Serialize};

use crate::PipelineError;
use crate::lock::Content;

pub const RUNS_DIR: &str = "runs-v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub schema: u32,
    pub fingerprint: Digest,
    pub stage: String,
    pub outs: BTreeMap<String, Content>,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub commit: Option<String>,
}

pub struct RunCache {
    dir: PathBuf,
}

impl RunCache {
    /// The run cache of the object cache rooted at `cache_root`.
    pub fn new(cache_root: &Path) -> Self {
        RunCache { dir: cache_root.join(RUNS_DIR) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The relative key of an entry (the same locally and on remotes).
    pub fn key(fingerprint: &Digest) -> String {
        let hex = fingerprint.hex();
        format!("{}/{}", &hex[..2], &hex[2..])
    }

    /// The fingerprint an entry's key names (`ab/cdef…`), if it is one.
    pub fn fingerprint_of(key: &str) -> Option<Digest> {
        let (shard, rest) = key.split_once('/')?;
        Digest::parse_bytes(format!("blake3:{shard}{rest}").as_bytes())
    }

    fn path(&self, fingerprint: &Digest) -> PathBuf {
        self.dir.join(Self::key(fingerprint))
    }

    /// The entry for `fingerprint`; a damaged entry counts as absent.
    pub fn get(&self, fingerprint: &Digest) -> Option<Entry> {
        let bytes = std::fs::read(self.path(fingerprint)).ok()?;
        parse_entry(fingerprint, &bytes)
    }

    pub fn put(&self, entry: &Entry) -> Result<(), PipelineError> {
        let path = self.path(&entry.fingerprint);
        if path.exists() {
            return Ok(());
        }
        let parent = path.parent().expect("entries live in a shard directory");
        std::fs::create_dir_all(parent).map_err(|e| PipelineError::io("create directory", parent, e))?;
        let bytes = serde_json::to_vec(entry).expect("an entry serializes");
        // A damaged entry reads as absent (see `get`), so it is not synced: a fetch may store
        // thousands of them.
        cairn_fs::write_derived(&path, &bytes).map_err(|e| PipelineError::io("write", &path, e))
    }

    /// Stores an entry that arrived from a remote, after checking it names its fingerprint.
    pub fn put_raw(&self, fingerprint: &Digest, bytes: &[u8]) -> Result<bool, PipelineError> {
        match parse_entry(fingerprint, bytes) {
            Some(entry) => self.put(&entry).map(|()| true),
            None => Ok(false),
        }
    }

    /// Every entry's fingerprint.
    pub fn list(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.dir) else { return out };
        for shard in shards.flatten() {
            let prefix = shard.file_name().to_string_lossy().into_owned();
            let Ok(files) = std::fs::read_dir(shard.path()) else { continue };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if let Some(d) = Self::fingerprint_of(&format!("{prefix}/{name}")) {
                    out.push(d);
                }
            }
        }
        out.sort();
        out
    }

    pub fn read_raw(&self, fingerprint: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.path(fingerprint)).ok()
    }
}

fn parse_entry(fingerprint: &Digest, bytes: &[u8]) -> Option<Entry> {
    let entry: Entry = serde_json::from_slice(bytes).ok()?;
    (entry.schema == 1 && entry.fingerprint == *fingerprint).then_some(entry)
}
