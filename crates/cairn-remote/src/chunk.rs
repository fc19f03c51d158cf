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

/// Objects of at least this many bytes are chunked on the remote; smaller ones are stored whole.
pub const CHUNK_THRESHOLD: u64 = 8 << 20;
pub const MIN_CHUNK: u32 = 256 << 10;
pub const AVERAGE_CHUNK: u32 = 1 << 20;
pub const MAX_CHUNK: u32 = 4 << 20;

/// Cuts `reader` into content-defined chunks with the parameters above, handing them to `each` as runs of slices of
/// one large buffer (about 32 MiB per call), in order — no per-chunk copies, and each run can
/// be hashed in parallel.
pub fn for_each_run<R: Read>(reader: R, each: impl FnMut(&[&[u8]]) -> io::Result<()>) -> io::Result<()> {
    for_each_run_with(reader, 32 << 20, each)
}

fn for_each_run_with<R: Read>(
    mut reader: R,
    block: usize,
    mut each: impl FnMut(&[&[u8]]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buffer = vec![0u8; block + MAX_CHUNK as usize];
    let mut filled = 0;
    let mut eof = false;
    loop {
        while !eof && filled < block {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let data = &buffer[..filled];
        let cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(
            data,
            MIN_CHUNK as usize,
            AVERAGE_CHUNK as usize,
            MAX_CHUNK as usize,
        )
        .map(|c| (c.offset, c.length))
        .collect();
        // Before the end of the input, the last chunk may only end because the buffer does:
        // carry it over to be cut again with what follows.
        let keep = if eof { cuts.len() } else { cuts.len().saturating_sub(1).max(1) };
        let slices: Vec<&[u8]> =
            cuts[..keep].iter().map(|&(offset, length)| &data[offset..offset + length]).collect();
        each(&slices)?;
        let consumed = cuts.get(keep).map_or(filled, |&(offset, _)| offset);
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
        if eof && filled == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_hash::Digest;

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

    /// Every chunk of `data`, with its digest.
    fn cut(data: &[u8]) -> Vec<(Digest, usize)> {
        let mut out = Vec::new();
        for_each_run(data, |run| {
            out.extend(run.iter().map(|c| (cairn_hash::hash_bytes(c), c.len())));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn runs_over_a_buffer_cut_exactly_like_the_stream() {
        let data = pseudo_random(21 << 20, 13);
        let (min, average, max) = (MIN_CHUNK as usize, AVERAGE_CHUNK as usize, MAX_CHUNK as usize);
        let streamed: Vec<Vec<u8>> =
            fastcdc::v2020::StreamCDC::new(&data[..], min, average, max).map(|c| c.unwrap().data).collect();
        let mut blocked: Vec<Vec<u8>> = Vec::new();
        for_each_run_with(&data[..], 5 << 20, |run| {
            blocked.extend(run.iter().map(|s| s.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(blocked.len(), streamed.len());
        assert!(blocked == streamed, "same cut points whatever the buffer size");
        let mut empty = 0;
        for_each_run(&b""[..], |run| {
            empty += run.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(empty, 0);
    }

    #[test]
    fn a_change_in_the_middle_touches_few_chunks() {
        let original = pseudo_random(24 << 20, 7);
        let mut edited = original.clone();
        let middle = edited.len() / 2;
        edited[middle..middle + (1 << 20)].copy_from_slice(&pseudo_random(1 << 20, 99));
        let before = cut(&original);
        let after = cut(&edited);
        assert_eq!(before.iter().map(|c| c.1).sum::<usize>(), original.len());
        assert!(before.iter().all(|c| c.1 <= MAX_CHUNK as usize));
        let old: std::collections::HashSet<_> = before.iter().map(|c| c.0).collect();
        let new_bytes: usize = after.iter().filter(|c| !old.contains(&c.0)).map(|c| c.1).sum();
        assert!(new_bytes <= 8 << 20, "a 1 MiB edit produced {new_bytes} bytes of new chunks");
    }
}
