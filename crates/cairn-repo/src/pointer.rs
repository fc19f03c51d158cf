//! Pointer files: the small YAML file committed to Git in place of the data.
//!
//! Tracking `data/raw` writes `data/raw.cairn` beside it. The tracked path is always the
//! pointer's own path without the `.cairn` suffix, so a pointer cannot disagree with its
//! location and works for names that are not UTF-8.
//!
//! # Schema, format 1
//!
//! ```yaml
//! # Cairn pointer file: commit it to Git; the data lives in the Cairn cache.
//! format: 1                  # required; readers reject formats they do not know
//! kind: directory            # `file` or `directory`
//! digest: blake3:<64 hex>    # a file's content digest, or a directory's manifest digest
//! size: 123456               # bytes: the file's length, or the sum over the directory's files
//! files: 42                  # directories only: number of files in the manifest
//! executable: true           # files only, optional (default false)
//! ```
//!
//! Lines starting with `#` are comments. Unknown keys are rejected, so a typo cannot silently
//! change meaning. A directory's manifest (see `cairn_hash::manifest`) is stored in the cache
//! under `digest` and lists the directory's files.

use cairn_hash::Digest;
use serde::Deserialize;

/// The suffix of pointer files.
pub const POINTER_SUFFIX: &str = ".cairn";
/// The pointer format this version writes and the newest it reads.
pub const POINTER_FORMAT: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointerKind {
    File { executable: bool },
    Directory { files: u64 },
}

/// A parsed pointer file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    pub kind: PointerKind,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPointer {
    format: Option<u32>,
    kind: Option<String>,
    digest: Option<String>,
    size: Option<u64>,
    files: Option<u64>,
    executable: Option<bool>,
}

/// Why a pointer file could not be read. The caller adds the file's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    #[error("it is not valid pointer YAML: {0}")]
    Syntax(String),
    #[error("it lacks the `{0}` key")]
    Missing(&'static str),
    #[error("it has format {0}, but this Cairn reads only format {POINTER_FORMAT}; upgrade Cairn")]
    TooNew(u32),
    #[error("`kind: {0}` is not `file` or `directory`")]
    BadKind(String),
    #[error("`digest: {0}` is invalid: {1}")]
    BadDigest(String, cairn_hash::ParseDigestError),
    #[error("`{0}` does not apply to a {1}")]
    Misplaced(&'static str, &'static str),
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        let raw: RawPointer =
            serde_saphyr::from_str(text).map_err(|e| PointerError::Syntax(e.to_string()))?;
        let format = raw.format.ok_or(PointerError::Missing("format"))?;
        if format != POINTER_FORMAT {
            return Err(PointerError::TooNew(format));
        }
        let digest_text = raw.digest.ok_or(PointerError::Missing("digest"))?;
        let digest = digest_text.parse().map_err(|e| PointerError::BadDigest(digest_text.clone(), e))?;
        let size = raw.size.ok_or(PointerError::Missing("size"))?;
        let kind = match raw.kind.as_deref().ok_or(PointerError::Missing("kind"))? {
            "file" => {
                if raw.files.is_some() {
                    return Err(PointerError::Misplaced("files", "file"));
                }
                PointerKind::File { executable: raw.executable.unwrap_or(false) }
            }
            "directory" => {
                if raw.executable.is_some() {
                    return Err(PointerError::Misplaced("executable", "directory"));
                }
                PointerKind::Directory { files: raw.files.ok_or(PointerError::Missing("files"))? }
            }
            other => return Err(PointerError::BadKind(other.to_owned())),
        };
        Ok(Pointer { kind, digest, size })
    }

    /// The canonical text written to disk.
    pub fn render(&self) -> String {
        let mut out =
            String::from("# Cairn pointer file: commit it to Git; the data lives in the Cairn cache.\n");
        out.push_str(&format!("format: {POINTER_FORMAT}\n"));
        match self.kind {
            PointerKind::File { executable } => {
                out.push_str(&format!("kind: file\ndigest: {}\nsize: {}\n", self.digest, self.size));
                if executable {
                    out.push_str("executable: true\n");
                }
            }
            PointerKind::Directory { files } => {
                out.push_str(&format!(
                    "kind: directory\ndigest: {}\nsize: {}\nfiles: {files}\n",
                    self.digest, self.size
                ));
            }
        }
        out
    }

    pub fn is_directory(&self) -> bool {
        matches!(self.kind, PointerKind::Directory { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Cairn pointer file: commit it to Git; the data lives in the Cairn cache.
format: 1
kind: file
digest: blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262
size: 0
executable: true
";

    #[test]
    fn parses_and_renders_canonically() {
        let pointer = Pointer::parse(FILE).unwrap();
        assert_eq!(pointer.kind, PointerKind::File { executable: true });
        assert_eq!(pointer.size, 0);
        assert_eq!(pointer.render(), FILE);
        let dir = Pointer { kind: PointerKind::Directory { files: 3 }, ..pointer };
        assert_eq!(Pointer::parse(&dir.render()).unwrap(), dir);
    }

    #[test]
    fn rejects_bad_pointers_with_reasons() {
        let cases = [
            ("format: 1\nkind: [unclosed", "valid pointer YAML"),
            ("kind: file\n", "lacks the `format` key"),
            (&FILE.replace("format: 1", "format: 7"), "format 7"),
            (&FILE.replace("blake3:af13", "blake3:zz13"), "`digest: blake3:zz13"),
            (&FILE.replace("kind: file", "kind: folder"), "`kind: folder`"),
            (&format!("{FILE}colour: red\n"), "colour"),
            (&FILE.replace("kind: file", "kind: directory"), "`executable` does not apply"),
        ];
        for (text, expected) in cases {
            let message = Pointer::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }
}
