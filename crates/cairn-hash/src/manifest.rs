//! Directory manifests: the canonical listing that names a directory.
//!
//! A tracked directory is identified by the digest of its manifest, and the manifest itself is
//! stored in the cache as an ordinary object. Two directories with the same files (same
//! relative paths, contents and executable bits) have byte-identical manifests and therefore
//! the same digest, whatever order the filesystem listed them in.
//!
//! # Encoding, version 1
//!
//! ```text
//! manifest := header entry*
//! header   := "cairn-manifest 1\n"
//! entry    := mode " " digest " " size " " path "\0"
//! mode     := "100644" | "100755"            (100755 = executable by its owner)
//! digest   := "blake3:" 64 lowercase hex digits   (the file's content digest)
//! size     := the file's length in bytes, decimal, no leading zeros ("0" when empty)
//! path     := the file's path relative to the directory, components joined by "/"
//! ```
//!
//! * `path` holds the raw bytes of the name (not necessarily UTF-8). It has no NUL byte, no
//!   leading or trailing `/`, and no empty, `.` or `..` component.
//! * Entries are sorted by `path` as byte strings (`memcmp` order) and are unique.
//! * No path is a directory prefix of another (`a` and `a/b` cannot both appear).
//! * Only regular files are listed. Empty directories are not tracked (as in Git); symbolic
//!   links inside a tracked directory are listed as the file they point to.
//! * The directory's digest is `blake3:` + BLAKE3 of the whole encoding.
//!
//! Test vectors live in `crates/cairn-hash/tests/vectors/manifest-v1.json`; their expected
//! digests were computed with the reference `blake3` Python package, independently of this
//! crate.

use std::fmt;

use crate::{Digest, hash_bytes};

/// The first line of every version-1 manifest.
pub const HEADER: &[u8] = b"cairn-manifest 1\n";

/// One file of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Relative path, `/`-separated raw bytes.
    pub path: Vec<u8>,
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

/// A validated, sorted directory listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
}

/// Why a list of entries or an encoded manifest is not a valid manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest does not start with `cairn-manifest 1`; it is corrupt or from a newer Cairn")]
    BadHeader,
    #[error("manifest entry {index} is malformed: {reason}")]
    BadEntry { index: usize, reason: String },
    #[error("manifest path `{}` is not allowed: {reason}", String::from_utf8_lossy(path))]
    BadPath { path: Vec<u8>, reason: &'static str },
    #[error("manifest lists `{}` twice", String::from_utf8_lossy(.0))]
    Duplicate(Vec<u8>),
    #[error("manifest lists `{}` both as a file and as a directory", String::from_utf8_lossy(.0))]
    FileIsDirectory(Vec<u8>),
    #[error("manifest entries are not in byte order at `{}`", String::from_utf8_lossy(.0))]
    Unsorted(Vec<u8>),
}

impl Manifest {
    /// Builds a manifest from entries in any order, rejecting invalid or conflicting paths.
    pub fn new(mut entries: Vec<ManifestEntry>) -> Result<Self, ManifestError> {
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        for entry in &entries {
            validate_path(&entry.path)?;
        }
        check_order(&entries, false)?;
        Ok(Manifest { entries })
    }

    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<ManifestEntry> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.entries.iter().map(|entry| entry.size).sum()
    }

    /// The entry for `path`, if the directory has that file.
    pub fn get(&self, path: &[u8]) -> Option<&ManifestEntry> {
        self.entries
            .binary_search_by(|entry| entry.path.as_slice().cmp(path))
            .ok()
            .map(|index| &self.entries[index])
    }

    /// The canonical version-1 encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER.len() + self.entries.len() * 100);
        out.extend_from_slice(HEADER);
        for entry in &self.entries {
            out.extend_from_slice(if entry.executable { b"100755 " } else { b"100644 " });
            out.extend_from_slice(entry.digest.to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(entry.size.to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(&entry.path);
            out.push(0);
        }
        out
    }

    /// The digest that names the directory: BLAKE3 of [`Manifest::encode`].
    pub fn digest(&self) -> Digest {
        hash_bytes(&self.encode())
    }

    /// Parses and validates an encoded manifest. Accepts exactly what [`Manifest::encode`]
    /// produces, so `decode(bytes)?.encode() == bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let body = bytes.strip_prefix(HEADER).ok_or(ManifestError::BadHeader)?;
        let mut entries = Vec::with_capacity(body.len() / 96);
        let mut rest = body;
        while !rest.is_empty() {
            let index = entries.len();
            let bad = |reason: &str| ManifestError::BadEntry { index, reason: reason.to_owned() };
            let end = rest.iter().position(|&b| b == 0).ok_or_else(|| bad("missing NUL terminator"))?;
            let record = &rest[..end];
            rest = &rest[end + 1..];
            let mut fields = record.splitn(4, |&b| b == b' ');
            let mode = fields.next().ok_or_else(|| bad("missing mode"))?;
            let digest = fields.next().ok_or_else(|| bad("missing digest"))?;
            let size = fields.next().ok_or_else(|| bad("missing size"))?;
            let path = fields.next().ok_or_else(|| bad("missing path"))?;
            let executable = match mode {
                b"100644" => false,
                b"100755" => true,
                _ => return Err(bad("mode is neither 100644 nor 100755")),
            };
            let digest = Digest::parse_bytes(digest).ok_or_else(|| bad("invalid digest"))?;
            let size = parse_size(size).ok_or_else(|| bad("invalid size"))?;
            validate_path(path)?;
            entries.push(ManifestEntry { path: path.to_vec(), digest, size, executable });
        }
        check_order(&entries, true)?;
        Ok(Manifest { entries })
    }
}

fn parse_size(text: &[u8]) -> Option<u64> {
    if text.is_empty() || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    if !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn validate_path(path: &[u8]) -> Result<(), ManifestError> {
    let bad = |reason| Err(ManifestError::BadPath { path: path.to_vec(), reason });
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.contains(&0) {
        return bad("it contains a NUL byte");
    }
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" => return bad("it has an empty component or a leading or trailing `/`"),
            b"." | b".." => return bad("it has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// Rejects duplicates, entries out of byte order (when `require_sorted`; `Manifest::new` sorts
/// first), and a file that is also the parent directory of another entry.
fn check_order(entries: &[ManifestEntry], require_sorted: bool) -> Result<(), ManifestError> {
    for pair in entries.windows(2) {
        let (a, b) = (&pair[0].path, &pair[1].path);
        match a.cmp(b) {
            std::cmp::Ordering::Equal => return Err(ManifestError::Duplicate(b.clone())),
            std::cmp::Ordering::Greater if require_sorted => {
                return Err(ManifestError::Unsorted(b.clone()));
            }
            _ => {}
        }
    }
    // A file `x` conflicts with any entry under `x/`: test each entry's ancestors.
    let files: std::collections::HashSet<&[u8]> = entries.iter().map(|entry| entry.path.as_slice()).collect();
    for entry in entries {
        let path = entry.path.as_slice();
        for (index, &byte) in path.iter().enumerate() {
            if byte == b'/' && files.contains(&path[..index]) {
                return Err(ManifestError::FileIsDirectory(path[..index].to_vec()));
            }
        }
    }
    Ok(())
}

impl fmt::Display for ManifestEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.digest, self.size, String::from_utf8_lossy(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &[u8], content: &[u8], executable: bool) -> ManifestEntry {
        ManifestEntry {
            path: path.to_vec(),
            digest: hash_bytes(content),
            size: content.len() as u64,
            executable,
        }
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let a = Manifest::new(vec![entry(b"b", b"2", false), entry(b"a/c", b"1", true)]).unwrap();
        let b = Manifest::new(vec![entry(b"a/c", b"1", true), entry(b"b", b"2", false)]).unwrap();
        assert_eq!(a.encode(), b.encode());
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn rejects_conflicts_and_bad_paths() {
        let conflict = Manifest::new(vec![entry(b"a", b"", false), entry(b"a/b", b"", false)]);
        assert_eq!(conflict.unwrap_err(), ManifestError::FileIsDirectory(b"a".to_vec()));
        let duplicate = Manifest::new(vec![entry(b"a", b"", false), entry(b"a", b"x", false)]);
        assert_eq!(duplicate.unwrap_err(), ManifestError::Duplicate(b"a".to_vec()));
        for path in [&b""[..], b"/a", b"a/", b"a//b", b"a/../b", b"./a", b"a\0b"] {
            assert!(
                matches!(Manifest::new(vec![entry(path, b"", false)]), Err(ManifestError::BadPath { .. })),
                "{path:?} accepted"
            );
        }
    }

    #[test]
    fn decode_rejects_non_canonical_bytes() {
        let good = Manifest::new(vec![entry(b"a", b"x", false), entry(b"b", b"y", false)]).unwrap().encode();
        assert!(Manifest::decode(&good).is_ok());
        assert_eq!(Manifest::decode(b"nope\n"), Err(ManifestError::BadHeader));
        let text = String::from_utf8(good.clone()).unwrap();
        // Swap the two entries: unsorted.
        let mut parts: Vec<&str> = text[HEADER.len()..].split_terminator('\0').collect();
        parts.reverse();
        let swapped = format!("cairn-manifest 1\n{}\0{}\0", parts[0], parts[1]);
        assert!(matches!(Manifest::decode(swapped.as_bytes()), Err(ManifestError::Unsorted(_))));
        let leading_zero = text.replacen(" 1 a", " 01 a", 1);
        assert!(matches!(Manifest::decode(leading_zero.as_bytes()), Err(ManifestError::BadEntry { .. })));
        let truncated = &good[..good.len() - 1];
        assert!(matches!(Manifest::decode(truncated), Err(ManifestError::BadEntry { .. })));
    }

    fn path_strategy() -> impl Strategy<Value = Vec<u8>> {
        let component = prop::collection::vec(
            any::<u8>().prop_filter("no NUL or slash", |b| *b != 0 && *b != b'/'),
            1..6,
        )
        .prop_filter("no dot components", |c| c != b"." && c != b"..");
        prop::collection::vec(component, 1..4).prop_map(|parts| parts.join(&b'/'))
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            files in prop::collection::btree_map(path_strategy(), (any::<Vec<u8>>(), any::<bool>()), 0..20)
        ) {
            let entries: Vec<_> = files.iter().map(|(p, (c, x))| entry(p, c, *x)).collect();
            // Random paths may conflict (`a` and `a/b`); those must be rejected, others round-trip.
            if let Ok(manifest) = Manifest::new(entries) {
                let bytes = manifest.encode();
                let decoded = Manifest::decode(&bytes).unwrap();
                prop_assert_eq!(&decoded, &manifest);
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
