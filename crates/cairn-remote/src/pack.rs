//! Pack files, pack indexes and chunk recipes: the remote's on-storage formats, version 1.
//!
//! Everything a remote holds lives in packs. Small objects are stored whole; large objects are
//! split into content-defined chunks (see [`crate::chunk`]) stored as blobs, plus a *recipe*
//! naming the chunks in order. A pack is immutable and named by the BLAKE3 digest of its bytes;
//! its index is written only after the pack is complete on the remote, so an index never
//! names bytes that are not there.
//!
//! All integers are little-endian. Digests are the 32 raw BLAKE3 bytes.
//!
//! # Pack: `packs/<hex of pack digest>.pack`
//!
//! ```text
//! magic    8 bytes   "CAIRNPK" 0x01
//! entry*   back to back, each:
//!   kind     1 byte    0 = blob, 1 = recipe
//!   digest  32 bytes   blob: BLAKE3 of its bytes; recipe: BLAKE3 of the object it rebuilds
//!   length   8 bytes   u64, number of bytes that follow
//!   bytes    `length` bytes
//! ```
//!
//! The pack digest is the BLAKE3 of the whole file. A pack alone is enough to rebuild its
//! index (the entry headers repeat what the index says).
//!
//! # Index: `packs/<hex of pack digest>.idx`
//!
//! ```text
//! magic    8 bytes   "CAIRNIX" 0x01
//! pack    32 bytes   digest of the pack file
//! count    4 bytes   u32, number of entries
//! entry*  49 bytes each, sorted by (digest, kind), no duplicates:
//!   kind     1 byte
//!   digest  32 bytes
//!   offset   8 bytes   u64, position of the entry's bytes in the pack (after its header)
//!   length   8 bytes   u64
//! check   32 bytes   BLAKE3 of everything before it
//! ```
//!
//! # Recipe (the bytes of a kind-1 entry)
//!
//! ```text
//! magic    8 bytes   "CAIRNRC" 0x01
//! size     8 bytes   u64, size of the rebuilt object
//! count    4 bytes   u32, number of chunks
//! chunk*  36 bytes each, in order: digest (32 bytes), length (u32)
//! ```
//!
//! The chunk lengths add up to `size`; the BLAKE3 of the concatenated chunks is the recipe's
//! digest. Test vectors, computed independently by `tests/vectors/generate.py` with the
//! Python `blake3` package, are in `tests/vectors/pack-v1.json`.

use cairn_hash::{Digest, hash_bytes};

pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPK\x01";
pub const INDEX_MAGIC: &[u8; 8] = b"CAIRNIX\x01";
pub const RECIPE_MAGIC: &[u8; 8] = b"CAIRNRC\x01";

const ENTRY_HEADER: usize = 1 + 32 + 8;
const INDEX_ENTRY: usize = 1 + 32 + 8 + 8;

/// What a pack entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntryKind {
    /// Bytes whose BLAKE3 is the entry's digest: a small object or a chunk.
    Blob = 0,
    /// A [`Recipe`] for the large object named by the entry's digest.
    Recipe = 1,
}

impl EntryKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(EntryKind::Blob),
            1 => Some(EntryKind::Recipe),
            _ => None,
        }
    }
}

/// One entry of a pack index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub kind: EntryKind,
    pub digest: Digest,
    pub offset: u64,
    pub length: u64,
}

/// A decoded pack index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackIndex {
    pub pack: Digest,
    pub entries: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("it does not start with the expected magic bytes (not a version 1 {0})")]
    Magic(&'static str),
    #[error("it is truncated")]
    Truncated,
    #[error("its checksum does not match its content")]
    Checksum,
    #[error("entries are not sorted or repeat a digest")]
    Unsorted,
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("entry {index} lies outside the pack")]
    OutOfBounds { index: usize },
    #[error("chunk lengths add up to {sum}, not the recorded size {size}")]
    SizeMismatch { sum: u64, size: u64 },
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn digest_at(bytes: &[u8], at: usize) -> Digest {
    Digest::blake3(bytes[at..at + 32].try_into().expect("32 bytes"))
}

/// Builds one pack in memory.
#[derive(Debug)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished pack: its digest, bytes and encoded index.
#[derive(Debug, Clone)]
pub struct BuiltPack {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub index: PackIndex,
}

impl PackBuilder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A builder whose buffer holds `bytes` of entries without growing.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buffer = Vec::with_capacity(PACK_MAGIC.len() + bytes);
        buffer.extend_from_slice(PACK_MAGIC);
        PackBuilder { bytes: buffer, entries: Vec::new() }
    }

    /// Appends an entry. The caller vouches that `digest` names `bytes` as `kind` says.
    pub fn push(&mut self, kind: EntryKind, digest: Digest, bytes: &[u8]) {
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(digest.as_bytes());
        self.bytes.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(bytes);
        self.entries.push(IndexEntry { kind, digest, offset, length: bytes.len() as u64 });
    }

    /// Number of entries so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes so far.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    pub fn finish(self) -> BuiltPack {
        let digest = hash_bytes(&self.bytes);
        let mut entries = self.entries;
        entries.sort_by(|a, b| a.digest.cmp(&b.digest).then(a.kind.cmp(&b.kind)));
        entries.dedup_by(|a, b| a.digest == b.digest && a.kind == b.kind);
        BuiltPack { digest, bytes: self.bytes, index: PackIndex { pack: digest, entries } }
    }
}

impl PackIndex {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 + 4 + self.entries.len() * INDEX_ENTRY + 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(self.pack.as_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.push(entry.kind as u8);
            out.extend_from_slice(entry.digest.as_bytes());
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.length.to_le_bytes());
        }
        let check = hash_bytes(&out);
        out.extend_from_slice(check.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < 8 || &bytes[..8] != INDEX_MAGIC {
            return Err(FormatError::Magic("pack index"));
        }
        if bytes.len() < 8 + 32 + 4 + 32 {
            return Err(FormatError::Truncated);
        }
        let count = u32_at(bytes, 40) as usize;
        let body = 44 + count * INDEX_ENTRY;
        if bytes.len() < body + 32 {
            return Err(FormatError::Truncated);
        }
        if bytes.len() > body + 32 {
            return Err(FormatError::Trailing(bytes.len() - body - 32));
        }
        if hash_bytes(&bytes[..body]) != digest_at(bytes, body) {
            return Err(FormatError::Checksum);
        }
        let pack = digest_at(bytes, 8);
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = 44 + i * INDEX_ENTRY;
            let kind = EntryKind::from_byte(bytes[at]).ok_or(FormatError::Kind(bytes[at]))?;
            let entry = IndexEntry {
                kind,
                digest: digest_at(bytes, at + 1),
                offset: u64_at(bytes, at + 33),
                length: u64_at(bytes, at + 41),
            };
            if let Some(previous) = entries.last() {
                let previous: &IndexEntry = previous;
                if (previous.digest, previous.kind) >= (entry.digest, entry.kind) {
                    return Err(FormatError::Unsorted);
                }
            }
            entries.push(entry);
        }
        Ok(PackIndex { pack, entries })
    }
}

/// Reads the entries of a whole pack (to rebuild a lost index, and in tests).
pub fn read_pack(bytes: &[u8]) -> Result<Vec<IndexEntry>, FormatError> {
    if bytes.len() < 8 || &bytes[..8] != PACK_MAGIC {
        return Err(FormatError::Magic("pack"));
    }
    let mut at = 8;
    let mut entries = Vec::new();
    while at < bytes.len() {
        if bytes.len() - at < ENTRY_HEADER {
            return Err(FormatError::Truncated);
        }
        let kind = EntryKind::from_byte(bytes[at]).ok_or(FormatError::Kind(bytes[at]))?;
        let digest = digest_at(bytes, at + 1);
        let length = u64_at(bytes, at + 33);
        let offset = (at + ENTRY_HEADER) as u64;
        if offset.checked_add(length).is_none_or(|end| end > bytes.len() as u64) {
            return Err(FormatError::OutOfBounds { index: entries.len() });
        }
        entries.push(IndexEntry { kind, digest, offset, length });
        at = (offset + length) as usize;
    }
    Ok(entries)
}

/// The chunks a large object is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub size: u64,
    pub chunks: Vec<(Digest, u32)>,
}

impl Recipe {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.chunks.len() * 36);
        out.extend_from_slice(RECIPE_MAGIC);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for (digest, length) in &self.chunks {
            out.extend_from_slice(digest.as_bytes());
            out.extend_from_slice(&length.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < 8 || &bytes[..8] != RECIPE_MAGIC {
            return Err(FormatError::Magic("recipe"));
        }
        if bytes.len() < 20 {
            return Err(FormatError::Truncated);
        }
        let size = u64_at(bytes, 8);
        let count = u32_at(bytes, 16) as usize;
        let end = 20 + count * 36;
        match bytes.len().cmp(&end) {
            std::cmp::Ordering::Less => return Err(FormatError::Truncated),
            std::cmp::Ordering::Greater => return Err(FormatError::Trailing(bytes.len() - end)),
            std::cmp::Ordering::Equal => {}
        }
        let chunks: Vec<(Digest, u32)> =
            (0..count).map(|i| (digest_at(bytes, 20 + i * 36), u32_at(bytes, 52 + i * 36))).collect();
        let sum: u64 = chunks.iter().map(|(_, length)| u64::from(*length)).sum();
        if sum != size {
            return Err(FormatError::SizeMismatch { sum, size });
        }
        Ok(Recipe { size, chunks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_index_round_trip() {
        let mut builder = PackBuilder::new();
        let a = b"alpha".as_slice();
        let b = b"".as_slice();
        builder.push(EntryKind::Blob, hash_bytes(a), a);
        builder.push(EntryKind::Blob, hash_bytes(b), b);
        let built = builder.finish();
        assert_eq!(hash_bytes(&built.bytes), built.digest);
        let from_pack = read_pack(&built.bytes).unwrap();
        assert_eq!(from_pack.len(), 2);
        for entry in &built.index.entries {
            let bytes = &built.bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
            assert_eq!(hash_bytes(bytes), entry.digest);
        }
        let encoded = built.index.encode();
        assert_eq!(PackIndex::decode(&encoded).unwrap(), built.index);
        let mut damaged = encoded.clone();
        damaged[50] ^= 1;
        assert_eq!(PackIndex::decode(&damaged), Err(FormatError::Checksum));
        assert_eq!(PackIndex::decode(&encoded[..encoded.len() - 1]), Err(FormatError::Truncated));
        assert!(matches!(PackIndex::decode(b"CAIRNPK\x01"), Err(FormatError::Magic(_))));
    }

    #[test]
    fn recipe_round_trip_and_validation() {
        let recipe = Recipe { size: 7, chunks: vec![(hash_bytes(b"abc"), 3), (hash_bytes(b"defg"), 4)] };
        let encoded = recipe.encode();
        assert_eq!(Recipe::decode(&encoded).unwrap(), recipe);
        let mut wrong = encoded.clone();
        wrong[8] = 9;
        assert_eq!(Recipe::decode(&wrong), Err(FormatError::SizeMismatch { sum: 7, size: 9 }));
        assert_eq!(Recipe::decode(&encoded[..30]), Err(FormatError::Truncated));
    }

    #[test]
    fn truncated_pack_is_rejected() {
        let mut builder = PackBuilder::new();
        builder.push(EntryKind::Blob, hash_bytes(b"xyz"), b"xyz");
        let built = builder.finish();
        assert!(matches!(
            read_pack(&built.bytes[..built.bytes.len() - 1]),
            Err(FormatError::OutOfBounds { .. })
        ));
    }
}
