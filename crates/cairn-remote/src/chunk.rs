//! Content-defined chunking of large objects, as they are stored on a remote.
//!
//! Objects of at least [`CHUNK_THRESHOLD`] bytes are cut with FastCDC (the 2020 algorithm of
//! Xia et al., `fastcdc::v2020`, normalization level 1, seed 0) with a minimum chunk of
//! 256 KiB, an average of 1 MiB and a maximum of 4 MiB. Cut points depend only on nearby
//! content, so changing 1 MiB in the middle of a 2 GiB file changes the chunks around the
//! edit (a few MiB) and leaves every other chunk — and its place on the remote — as it was.
//!
//! These parameters are part of the remote format: changing them would stop new pushes from
//! sharing chunks with old ones (nothing would break, but nothing would deduplicate).
//!
//! Only the remote layer chunks. The local cache keeps whole files, so checkout stays a
//! plain copy or link of one object.

use std::io::{self, Read};

use cairn_hash::{Digest, hash_bytes};

/// Objects of at least this many bytes are chunked on the remote; smaller ones are stored whole.
pub const CHUNK_THRESHOLD: u64 = 8 << 20;
pub const MIN_CHUNK: u32 = 256 << 10;
pub const AVERAGE_CHUNK: u32 = 1 << 20;
pub const MAX_CHUNK: u32 = 4 << 20;

/// One chunk: its digest and bytes.
pub struct Chunk {
    pub digest: Digest,
    pub data: Vec<u8>,
}

/// Cuts `reader` into content-defined chunks, hashing each.
pub fn chunks<R: Read>(reader: R) -> impl Iterator<Item = io::Result<Chunk>> {
    fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK as usize, AVERAGE_CHUNK as usize, MAX_CHUNK as usize)
        .map(|chunk| {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
            Ok(Chunk { digest: hash_bytes(&chunk.data), data: chunk.data })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_change_in_the_middle_touches_few_chunks() {
        let original = pseudo_random(24 << 20, 7);
        let mut edited = original.clone();
        let middle = edited.len() / 2;
        edited[middle..middle + (1 << 20)].copy_from_slice(&pseudo_random(1 << 20, 99));
        let cut = |data: &[u8]| -> Vec<(Digest, usize)> {
            chunks(data).map(|c| c.map(|c| (c.digest, c.data.len()))).collect::<io::Result<_>>().unwrap()
        };
        let before = cut(&original);
        let after = cut(&edited);
        assert_eq!(before.iter().map(|c| c.1).sum::<usize>(), original.len());
        assert!(before.iter().all(|c| c.1 <= MAX_CHUNK as usize));
        let old: std::collections::HashSet<_> = before.iter().map(|c| c.0).collect();
        let new_bytes: usize = after.iter().filter(|c| !old.contains(&c.0)).map(|c| c.1).sum();
        assert!(new_bytes <= 8 << 20, "a 1 MiB edit produced {new_bytes} bytes of new chunks");
    }
}
