//! The stat cache: `path -> (stat, digest)`, so an unchanged file is never hashed twice.
//!
//! # File format, version 1 (`.cairn/state/stat-cache-v1`)
//!
//! ```text
//! "cairn-stat-cache 1\n"
//! record*, each:
//!   u32 path length, path bytes (repository-relative, `/`-separated)
//!   u64 dev, u64 ino, u64 size, i128 mtime_ns, i128 ctime_ns, u32 mode   (little endian)
//!   32 bytes BLAKE3 digest
//! ```
//!
//! The file is a cache: it is rewritten atomically (temporary file + rename) and a missing,
//! truncated or unreadable one is treated as empty. An entry is trusted only if every field of
//! a fresh `stat` equals it. Entries for files modified within [`RACY_WINDOW_NS`] of being
//! hashed are not recorded, because a second write in the same timestamp tick could leave
//! mtime unchanged ("racy" entries, as Git calls them).

use std::path::{Path, PathBuf};

use cairn_hash::Digest;
use cairn_store::FileStat;
use rustc_hash::FxHashMap as HashMap;

const HEADER: &[u8] = b"cairn-stat-cache 1\n";
const RECORD_FIXED: usize = 8 * 3 + 16 * 2 + 4 + 32;
/// Files whose mtime or ctime is this close to the moment they were hashed are not recorded.
pub const RACY_WINDOW_NS: i128 = 50_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatEntry {
    pub stat: FileStat,
    pub digest: Digest,
}

#[derive(Debug, Default)]
pub struct StatCache {
    path: PathBuf,
    entries: HashMap<Vec<u8>, StatEntry>,
    dirty: bool,
}

impl StatCache {
    /// Loads the cache at `path`; an absent or damaged file yields an empty cache.
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read(path).ok().and_then(|bytes| decode(&bytes)).unwrap_or_default();
        StatCache { path: path.to_path_buf(), entries, dirty: false }
    }

    /// The digest recorded for `key` if its stat is unchanged.
    pub fn lookup(&self, key: &[u8], stat: &FileStat) -> Option<Digest> {
        self.entries.get(key).filter(|entry| entry.stat == *stat).map(|entry| entry.digest)
    }

    /// Records a file hashed at `hashed_at_ns` (nanoseconds since the epoch).
    pub fn record_hashed(&mut self, key: Vec<u8>, stat: FileStat, digest: Digest, hashed_at_ns: i128) {
        if stat.mtime_ns.max(stat.ctime_ns) + RACY_WINDOW_NS > hashed_at_ns {
            self.entries.remove(&key);
            self.dirty = true;
            return;
        }
        self.record(key, stat, digest);
    }

    /// Records a file Cairn wrote itself from a cache object.
    pub fn record(&mut self, key: Vec<u8>, stat: FileStat, digest: Digest) {
        let entry = StatEntry { stat, digest };
        if self.entries.get(&key) != Some(&entry) {
            self.entries.insert(key, entry);
            self.dirty = true;
        }
    }

    /// Drops every entry at `prefix` or below it.
    pub fn forget_under(&mut self, prefix: &[u8]) {
        let before = self.entries.len();
        self.entries.retain(|key, _| {
            !(key.as_slice() == prefix || (key.starts_with(prefix) && key.get(prefix.len()) == Some(&b'/')))
        });
        self.dirty |= self.entries.len() != before;
    }

    /// Writes the cache back if it changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = encode(&self.entries);
        // A cache: a damaged file reads as empty and is rebuilt, so it is not synced.
        cairn_fs::write_derived(&self.path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

fn encode(entries: &HashMap<Vec<u8>, StatEntry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER.len() + entries.len() * (RECORD_FIXED + 40));
    out.extend_from_slice(HEADER);
    for (key, entry) in entries {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        let s = &entry.stat;
        out.extend_from_slice(&s.dev.to_le_bytes());
        out.extend_from_slice(&s.ino.to_le_bytes());
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.mtime_ns.to_le_bytes());
        out.extend_from_slice(&s.ctime_ns.to_le_bytes());
        out.extend_from_slice(&s.mode.to_le_bytes());
        out.extend_from_slice(entry.digest.as_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<HashMap<Vec<u8>, StatEntry>> {
    let mut rest = bytes.strip_prefix(HEADER)?;
    let mut entries = HashMap::with_capacity_and_hasher(rest.len() / (RECORD_FIXED + 24), Default::default());
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    while !rest.is_empty() {
        let len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let key = take(&mut rest, len)?.to_vec();
        let fixed = take(&mut rest, RECORD_FIXED)?;
        let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().expect("8 bytes"));
        let i128_at = |at: usize| i128::from_le_bytes(fixed[at..at + 16].try_into().expect("16 bytes"));
        let stat = FileStat {
            dev: u64_at(0),
            ino: u64_at(8),
            size: u64_at(16),
            mtime_ns: i128_at(24),
            ctime_ns: i128_at(40),
            mode: u32::from_le_bytes(fixed[56..60].try_into().expect("4 bytes")),
        };
        let digest = Digest::blake3(fixed[60..92].try_into().expect("32 bytes"));
        entries.insert(key, StatEntry { stat, digest });
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat-cache-v1");
        let stat = FileStat { dev: 1, ino: 2, size: 3, mtime_ns: 4, ctime_ns: 5, mode: 0o644 };
        let digest = cairn_hash::hash_bytes(b"x");
        let mut cache = StatCache::load(&path);
        cache.record_hashed(b"a/b".to_vec(), stat, digest, 10_000_000_000);
        cache.record_hashed(b"racy".to_vec(), stat, digest, 10);
        cache.save().unwrap();
        let loaded = StatCache::load(&path);
        assert_eq!(loaded.lookup(b"a/b", &stat), Some(digest));
        assert_eq!(loaded.lookup(b"racy", &stat), None);
        assert_eq!(loaded.lookup(b"a/b", &FileStat { size: 9, ..stat }), None);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(StatCache::load(&path).lookup(b"a/b", &stat), None);
    }

    #[test]
    fn forget_under_respects_component_boundaries() {
        let mut cache = StatCache::default();
        let digest = cairn_hash::hash_bytes(b"");
        for key in ["data", "data/x", "data2/y"] {
            cache.record(key.as_bytes().to_vec(), FileStat::default(), digest);
        }
        cache.forget_under(b"data");
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.entries.contains_key(&b"data2/y"[..]));
    }
}
