//! Local packs: many small objects in one file, so that a fetch of 100,000 small objects
//! creates a few hundred cache files instead of 100,000 (on ext4 the file creations, not
//! the bytes, are what a fresh pull spends its time on).
//!
//! # Layout (version 1)
//!
//! ```text
//! <cache>/packs-v1/<name>.pack    object bytes
//! <cache>/packs-v1/<name>.idx     where each object lies in the pack
//! ```
//!
//! All integers are little-endian; digests are the 32 raw BLAKE3 bytes.
//!
//! ```text
//! pack:   magic  8 bytes  "CAIRNLP" 0x01
//!         the objects' bytes, back to back, in any order
//!
//! index:  magic  8 bytes  "CAIRNLI" 0x01
//!         count  4 bytes  u32, number of entries
//!         entry* 48 bytes each, sorted by digest, no duplicates:
//!           digest 32 bytes
//!           offset  8 bytes  u64, position of the object's first byte in the pack
//!           length  8 bytes  u64
//!         check 32 bytes  BLAKE3 of everything before it
//! ```
//!
//! `<name>` is the lowercase hex of the index's `check`. Since every object is named by the
//! digest of its bytes, the index determines the pack's content: two packs with the same
//! name hold the same bytes.
//!
//! A pack is written completely and renamed into place before its index, and readers find
//! packs only through their indexes, so a killed writer leaves at worst a `.pack` with no
//! `.idx` (removed by `cairn gc` once it is an hour old). Objects are verified against their
//! digest every time they are read out of a pack. Packs are never modified: removing some of
//! a pack's objects writes a new pack of the others, then deletes the old index and pack.
//! An object may be in several packs, or in a pack and loose; any copy will do.
//!
//! Test vector (`tests::index_vector`): objects `b"a"` and `b"hello\n"`, written in that
//! order, give a 15-byte pack (`CAIRNLP\x01` `a` `hello\n`) and a 140-byte index whose
//! check, and so the pack's name, is `07f91a91…` (the full value is in the test, computed with
//! the reference `blake3` Python package).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use cairn_hash::{Digest, hash_bytes};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::{Result, StoreError, TMP_PREFIX, unique_tmp_name};

pub const PACK_MAGIC: &[u8; 8] = b"CAIRNLP\x01";
pub const INDEX_MAGIC: &[u8; 8] = b"CAIRNLI\x01";
const ENTRY: usize = 32 + 8 + 8;

/// One pack file. It is opened for each read rather than held open, so that a cache with
/// thousands of packs never runs out of file descriptors (an `open` costs microseconds).
#[derive(Debug)]
pub(crate) struct PackFile {
    pub name: String,
    pub path: PathBuf,
    /// The pack's entries, as its index lists them.
    entries: Vec<(Digest, u64, u64)>,
}

impl PackFile {
    /// Reads the object at `offset`, `length` and checks it hashes to `digest`.
    pub fn read(&self, digest: &Digest, offset: u64, length: u64) -> Result<Vec<u8>> {
        let file = File::open(&self.path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                let why =
                    "the pack was removed meanwhile (by a concurrent `cairn gc`?); run the command again";
                StoreError::io("open", &self.path, io::Error::new(io::ErrorKind::NotFound, why))
            } else {
                StoreError::io("open", &self.path, e)
            }
        })?;
        let mut bytes = vec![0; length as usize];
        file.read_exact_at(&mut bytes, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::io(
                    "read",
                    &self.path,
                    io::Error::other("the pack is shorter than its index says"),
                )
            } else {
                StoreError::io("read", &self.path, e)
            }
        })?;
        let actual = hash_bytes(&bytes);
        if actual != *digest {
            return Err(StoreError::Corrupt { expected: *digest, actual });
        }
        Ok(bytes)
    }
}

/// Where a packed object lies.
#[derive(Clone, Copy, Debug)]
struct Location {
    pack: u32,
    offset: u64,
    length: u64,
}

#[derive(Debug, Default)]
struct Loaded {
    /// The directory's mtime at the last scan (`None`: it did not exist).
    stamp: Option<SystemTime>,
    scanned: bool,
    packs: Vec<Arc<PackFile>>,
    objects: FxHashMap<Digest, Location>,
    /// Indexes that could not be used, with why (their objects count as absent).
    damaged: Vec<(PathBuf, String)>,
}

/// How hard a lookup tries to see packs other processes wrote since the last scan.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Only what is loaded.
    Never,
    /// Rescan if the directory's mtime changed (one `stat`).
    IfChanged,
    /// Rescan the directory (a few hundred names at most).
    Always,
}

/// The packs of one cache, loaded lazily and shared by clones of the store.
#[derive(Debug)]
pub(crate) struct Packs {
    dir: PathBuf,
    state: RwLock<Loaded>,
}

impl Packs {
    pub fn new(dir: PathBuf) -> Self {
        Packs { dir, state: RwLock::new(Loaded::default()) }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Loaded> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pack holding `digest`, and where in it.
    pub fn locate(&self, digest: &Digest, refresh: Refresh) -> Result<Option<(Arc<PackFile>, u64, u64)>> {
        {
            let state = self.read_state();
            if let Some(found) = Self::found(&state, digest) {
                return Ok(Some(found));
            }
            match refresh {
                Refresh::Never => return Ok(None),
                Refresh::IfChanged if state.scanned && self.stamp()? == state.stamp => return Ok(None),
                _ => {}
            }
        }
        Ok(Self::found(&*self.rescanned()?, digest))
    }

    /// Rescans the directory and returns the state, locked for writing.
    fn rescanned(&self) -> Result<std::sync::RwLockWriteGuard<'_, Loaded>> {
        let mut state = self.write_state();
        let stamp = self.stamp()?;
        self.scan(&mut state, stamp)?;
        Ok(state)
    }

    fn found(state: &Loaded, digest: &Digest) -> Option<(Arc<PackFile>, u64, u64)> {
        let at = state.objects.get(digest)?;
        Some((state.packs[at.pack as usize].clone(), at.offset, at.length))
    }

    fn stamp(&self) -> Result<Option<SystemTime>> {
        match fs::metadata(&self.dir) {
            Ok(meta) => Ok(meta.modified().ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("look up", &self.dir, e)),
        }
    }

    /// Loads the indexes not loaded yet and forgets packs that are gone.
    fn scan(&self, state: &mut Loaded, stamp: Option<SystemTime>) -> Result<()> {
        let mut names = Vec::new();
        match fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| StoreError::io("list", &self.dir, e))?;
                    let file_name = entry.file_name();
                    if let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".idx"))
                        && is_pack_name(name)
                    {
                        names.push(name.to_owned());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("list", &self.dir, e)),
        }
        names.sort();
        let mut damaged = Vec::new();
        let mut load = |name: &str| match self.load(name) {
            Err(StoreError::DamagedPack { path, reason }) => {
                damaged.push((path, reason));
                Ok(None)
            }
            other => other,
        };
        let names_set: FxHashSet<&str> = names.iter().map(String::as_str).collect();
        if state.packs.iter().all(|p| names_set.contains(p.name.as_str())) {
            // Nothing was removed (the usual case): add only the new packs' entries.
            let known: FxHashSet<String> = state.packs.iter().map(|p| p.name.clone()).collect();
            for name in names.iter().filter(|n| !known.contains(*n)) {
                if let Some(pack) = load(name)? {
                    Self::add(state, Arc::new(pack));
                }
            }
        } else {
            let mut known: HashMap<String, Arc<PackFile>> =
                state.packs.drain(..).map(|p| (p.name.clone(), p)).collect();
            state.objects.clear();
            for name in &names {
                let pack = match known.remove(name) {
                    Some(pack) => pack,
                    None => match load(name)? {
                        Some(pack) => Arc::new(pack),
                        None => continue,
                    },
                };
                Self::add(state, pack);
            }
        }
        state.stamp = stamp;
        state.scanned = true;
        state.damaged = damaged;
        Ok(())
    }

    fn add(state: &mut Loaded, pack: Arc<PackFile>) {
        let at = state.packs.len() as u32;
        state.objects.reserve(pack.entries.len());
        for &(digest, offset, length) in &pack.entries {
            state.objects.entry(digest).or_insert(Location { pack: at, offset, length });
        }
        state.packs.push(pack);
    }

    /// Opens one pack and decodes its index; `None` if it vanished meanwhile (removed by a
    /// concurrent `gc`).
    fn load(&self, name: &str) -> Result<Option<PackFile>> {
        let index_path = self.dir.join(format!("{name}.idx"));
        let path = self.dir.join(format!("{name}.pack"));
        let bytes = match fs::read(&index_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &index_path, e)),
        };
        let entries = decode_index(&bytes).map_err(|reason| StoreError::DamagedPack {
            path: index_path.clone(),
            reason: reason.to_owned(),
        })?;
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::DamagedPack {
                    path,
                    reason: "its index exists but the pack does not".into(),
                });
            }
            Err(e) => return Err(StoreError::io("look up", &path, e)),
        }
        Ok(Some(PackFile { name: name.to_owned(), path, entries }))
    }

    /// Every packed object with its size (each once, whatever the number of copies).
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let state = self.rescanned()?;
        Ok(state.objects.iter().map(|(digest, at)| (*digest, at.length)).collect())
    }

    /// Indexes that could not be used at the last scan, with why.
    pub fn damaged(&self) -> Vec<(PathBuf, String)> {
        self.read_state().damaged.clone()
    }

    /// Every loaded pack (after a rescan).
    pub fn all(&self) -> Result<Vec<Arc<PackFile>>> {
        Ok(self.rescanned()?.packs.clone())
    }

    /// Writes `objects` (already verified) as one pack and its index, through `tmp`. Returns
    /// the pack's name.
    pub fn write(&self, tmp: &Path, objects: &[(Digest, &[u8])]) -> Result<String> {
        let mut entries = Vec::with_capacity(objects.len());
        let mut offset = PACK_MAGIC.len() as u64;
        for (digest, bytes) in objects {
            entries.push((*digest, offset, bytes.len() as u64));
            offset += bytes.len() as u64;
        }
        entries.sort_unstable_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        let index = encode_index(&entries);
        let name = Digest::blake3(index[index.len() - 32..].try_into().expect("32 bytes")).hex();
        fs::create_dir_all(&self.dir).map_err(|e| StoreError::io("create directory", &self.dir, e))?;
        let pack_path = self.dir.join(format!("{name}.pack"));
        let index_path = self.dir.join(format!("{name}.idx"));
        write_via_tmp(tmp, &pack_path, |out| {
            out.write_all(PACK_MAGIC)?;
            for (_, bytes) in objects {
                out.write_all(bytes)?;
            }
            Ok(())
        })?;
        write_via_tmp(tmp, &index_path, |out| out.write_all(&index))?;
        // Other processes pick it up at their next scan; this one knows it now.
        let pack = Arc::new(PackFile { name: name.clone(), path: pack_path, entries });
        let mut state = self.write_state();
        if !state.packs.iter().any(|p| p.name == name) {
            Self::add(&mut state, pack);
        }
        if state.scanned {
            // So that the next miss does not rescan for this process's own pack.
            state.stamp = self.stamp()?;
        }
        Ok(name)
    }

    /// Removes the objects of `doomed` from every pack holding them: a pack left with no
    /// objects is deleted, one left with some is rewritten without the others. Returns the
    /// bytes freed.
    pub fn remove(&self, tmp: &Path, doomed: &FxHashSet<Digest>) -> Result<u64> {
        let mut freed = 0;
        for pack in self.all()? {
            let (gone, kept): (Vec<_>, Vec<_>) = pack.entries.iter().partition(|e| doomed.contains(&e.0));
            if gone.is_empty() {
                continue;
            }
            if !kept.is_empty() {
                let mut objects = Vec::with_capacity(kept.len());
                for &(digest, offset, length) in &kept {
                    // A damaged object is dropped with the pack rather than copied along.
                    match pack.read(&digest, offset, length) {
                        Ok(bytes) => objects.push((digest, bytes)),
                        Err(StoreError::Corrupt { .. }) => {}
                        Err(other) => return Err(other),
                    }
                }
                let borrowed: Vec<(Digest, &[u8])> =
                    objects.iter().map(|(d, b)| (*d, b.as_slice())).collect();
                if self.write(tmp, &borrowed)? == pack.name {
                    continue;
                }
            }
            freed += gone.iter().map(|e| e.2).sum::<u64>();
            for path in [self.dir.join(format!("{}.idx", pack.name)), pack.path.clone()] {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("delete", path, e)),
                }
            }
        }
        drop(self.rescanned()?);
        Ok(freed)
    }

    /// Deletes packs without an index (left by a killed writer) older than `min_age`.
    pub fn clean_orphans(&self, min_age: std::time::Duration) -> Result<u64> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(StoreError::io("list", &self.dir, e)),
        };
        let now = SystemTime::now();
        let mut freed = 0;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".pack")) else { continue };
            if self.dir.join(format!("{name}.idx")).exists() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let old =
                meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|a| a >= min_age);
            if old && fs::remove_file(entry.path()).is_ok() {
                freed += meta.len();
            }
        }
        Ok(freed)
    }
}

fn is_pack_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `path` through a named temporary in `tmp` (same filesystem), renamed into place
/// when complete.
fn write_via_tmp(
    tmp: &Path,
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = tmp.join(unique_tmp_name(TMP_PREFIX));
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&temporary)
        .and_then(|file| {
            let mut out = BufWriter::with_capacity(1 << 20, file);
            fill(&mut out)?;
            out.into_inner().map_err(|e| e.into_error()).map(drop)
        })
        .and_then(|()| fs::rename(&temporary, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        StoreError::io("write", path, e)
    })
}

/// Encodes an index of `entries` (sorted by digest, no duplicates).
fn encode_index(entries: &[(Digest, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + entries.len() * ENTRY + 32);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (digest, offset, length) in entries {
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
    }
    let check = hash_bytes(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// Decodes a local pack index (format above): `(digest, offset, length)` per object, or why
/// the bytes are not a valid index.
pub fn decode_index(bytes: &[u8]) -> std::result::Result<Vec<(Digest, u64, u64)>, &'static str> {
    if bytes.len() < 8 + 4 + 32 || &bytes[..8] != INDEX_MAGIC {
        return Err("it is not a version 1 pack index");
    }
    let (body, check) = bytes.split_at(bytes.len() - 32);
    if hash_bytes(body).as_bytes() != check {
        return Err("its checksum does not match its content");
    }
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    if body.len() != 12 + count * ENTRY {
        return Err("its length does not match its entry count");
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let mut entries: Vec<(Digest, u64, u64)> = Vec::with_capacity(count);
    for i in 0..count {
        let at = 12 + i * ENTRY;
        let digest = Digest::blake3(body[at..at + 32].try_into().expect("32 bytes"));
        if entries.last().is_some_and(|last| last.0 >= digest) {
            return Err("its entries are not sorted or repeat a digest");
        }
        let (offset, length) = (u64_at(at + 32), u64_at(at + 40));
        if offset < PACK_MAGIC.len() as u64 || offset.checked_add(length).is_none() {
            return Err("an entry lies outside the pack");
        }
        entries.push((digest, offset, length));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_vector() {
        let a = hash_bytes(b"a");
        let hello = hash_bytes(b"hello\n");
        let mut entries = vec![(a, 8, 1), (hello, 9, 6)];
        entries.sort_unstable_by_key(|e| e.0);
        let index = encode_index(&entries);
        assert_eq!(index.len(), 8 + 4 + 2 * 48 + 32);
        assert_eq!(&index[..12], b"CAIRNLI\x01\x02\x00\x00\x00");
        // `a` hashes to 17762fdd…, `hello\n` to 8e4c7c1b…: `a` sorts first.
        assert_eq!(&index[12..44], a.as_bytes());
        assert_eq!(&index[44..60], &[8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&index[60..92], hello.as_bytes());
        assert_eq!(&index[92..108], &[9, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
        let check = Digest::blake3(index[108..].try_into().unwrap());
        assert_eq!(check, hash_bytes(&index[..108]));
        assert_eq!(check.hex(), VECTOR_NAME);
        assert_eq!(decode_index(&index).unwrap(), entries);
    }

    /// Computed with the reference `blake3` Python package from the format above.
    const VECTOR_NAME: &str = "07f91a913df1749f370cddb04aec00180412b7b33f5338fcf7d6b391c52ea1d1";

    #[test]
    fn damaged_indexes_are_rejected() {
        let entries = vec![(hash_bytes(b"x"), 8, 1)];
        let good = encode_index(&entries);
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert_eq!(decode_index(&flipped), Err("its checksum does not match its content"));
        assert!(decode_index(&good[..good.len() - 1]).is_err());
        assert_eq!(decode_index(b"CAIRNIX\x01"), Err("it is not a version 1 pack index"));
    }
}
