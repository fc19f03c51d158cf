//! Content identity for Cairn: tagged digests, fast hashing, and directory manifests.
//!
//! Every piece of data Cairn versions is named by a [`Digest`] that carries its algorithm,
//! written `blake3:<64 lowercase hex>`. Files are hashed by [`hash_reader`] (streaming, with a
//! reader thread feeding a multi-threaded BLAKE3 for large inputs) and directories by their
//! [`manifest`], a canonical listing of their files whose own digest names the directory.
//!
//! ```
//! use cairn_hash::{Digest, hash_bytes};
//!
//! let digest = hash_bytes(b"hello\n");
//! let text = digest.to_string();
//! assert!(text.starts_with("blake3:"));
//! assert_eq!(text.parse::<Digest>().unwrap(), digest);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod digest;
mod hashing;
pub mod manifest;

pub use digest::{Algorithm, Digest, ParseDigestError};
pub use hashing::{CountingReader, HashSink, LARGE_FILE_THRESHOLD, hash_bytes, hash_reader};
pub use manifest::{Manifest, ManifestEntry};
