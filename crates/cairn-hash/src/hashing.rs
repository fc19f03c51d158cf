use std::io::{self, Read, Write};
use std::sync::mpsc;

use crate::Digest;

/// Inputs at least this large are hashed with a reader thread feeding a multi-threaded BLAKE3;
/// smaller ones are read and hashed on the calling thread (callers hash many small files in
/// parallel instead).
pub const LARGE_FILE_THRESHOLD: u64 = 4 << 20;

/// Size of each buffer handed from the reader thread to the hasher for large inputs.
const LARGE_CHUNK: usize = 8 << 20;
/// Buffer size for small inputs.
const SMALL_CHUNK: usize = 64 << 10;

/// Where the bytes go after they are hashed (for example a temporary file in the cache).
/// Hashing the exact bytes that are written is what makes a stored object match its name even
/// when the source changes while it is read.
pub type HashSink<'a> = Option<&'a mut dyn Write>;

/// A reader that reports how many bytes pass through it, for progress bars.
pub struct CountingReader<R, F> {
    inner: R,
    on_bytes: F,
}

impl<R: Read, F: FnMut(u64)> CountingReader<R, F> {
    pub fn new(inner: R, on_bytes: F) -> Self {
        CountingReader { inner, on_bytes }
    }
}

impl<R: Read, F: FnMut(u64)> Read for CountingReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// Hashes `bytes` in memory.
pub fn hash_bytes(bytes: &[u8]) -> Digest {
    Digest::blake3(*blake3::hash(bytes).as_bytes())
}

/// Hashes everything `reader` yields, copying each byte to `sink` if one is given.
///
/// `size_hint` (usually the file's length from `stat`) picks the strategy: from
/// [`LARGE_FILE_THRESHOLD`] up, a reader thread fills 8 MiB buffers while the calling thread
/// hashes the previous one with BLAKE3's Rayon-parallel tree hashing, so reading and hashing
/// overlap and every core hashes. Returns the digest and the number of bytes read.
pub fn hash_reader<R: Read + Send>(
    reader: R,
    size_hint: u64,
    sink: HashSink<'_>,
) -> io::Result<(Digest, u64)> {
    if size_hint >= LARGE_FILE_THRESHOLD { hash_pipelined(reader, sink) } else { hash_serial(reader, sink) }
}

fn hash_serial<R: Read>(mut reader: R, mut sink: HashSink<'_>) -> io::Result<(Digest, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; SMALL_CHUNK];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        if let Some(sink) = sink.as_deref_mut() {
            sink.write_all(&buffer[..read])?;
        }
        total += read as u64;
    }
    Ok((Digest::blake3(*hasher.finalize().as_bytes()), total))
}

fn hash_pipelined<R: Read + Send>(mut reader: R, mut sink: HashSink<'_>) -> io::Result<(Digest, u64)> {
    // Two buffers circulate: one being filled by the reader, one being hashed.
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        empty_tx.send(vec![0u8; LARGE_CHUNK]).expect("the receiver is alive in this scope");
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Ok(mut buffer) = empty_rx.recv() {
                buffer.resize(LARGE_CHUNK, 0);
                match fill(&mut reader, &mut buffer) {
                    Ok(0) => break,
                    Ok(n) => {
                        buffer.truncate(n);
                        if full_tx.send(Ok(buffer)).is_err() {
                            break;
                        }
                    }
                    Err(error) => {
                        let _ = full_tx.send(Err(error));
                        break;
                    }
                }
            }
        });
        let mut hasher = blake3::Hasher::new();
        let mut total = 0u64;
        // The reader thread stops when `empty_tx` is dropped (on error) or at end of input.
        for message in full_rx.iter() {
            let buffer = message?;
            hasher.update_rayon(&buffer);
            if let Some(sink) = sink.as_deref_mut() {
                sink.write_all(&buffer)?;
            }
            total += buffer.len() as u64;
            if empty_tx.send(buffer).is_err() {
                break;
            }
        }
        Ok((Digest::blake3(*hasher.finalize().as_bytes()), total))
    })
}

/// Reads until `buffer` is full or the input ends; returns how many bytes were read.
fn fill<R: Read>(reader: &mut R, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pipelined_and_serial_agree_and_copy_every_byte() {
        let data = pattern(LARGE_CHUNK * 2 + 12345);
        let mut copy = Vec::new();
        let (large, n) = hash_reader(&data[..], data.len() as u64, Some(&mut copy)).unwrap();
        let (small, m) = hash_reader(&data[..], 0, None).unwrap();
        assert_eq!(large, small);
        assert_eq!(large, hash_bytes(&data));
        assert_eq!((n, m), (data.len() as u64, data.len() as u64));
        assert_eq!(copy, data);
    }

    #[test]
    fn reader_errors_are_reported() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        for hint in [0, LARGE_FILE_THRESHOLD] {
            let error = hash_reader(Failing, hint, None).unwrap_err();
            assert_eq!(error.to_string(), "disk on fire");
        }
    }
}
