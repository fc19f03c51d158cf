//! Directory manifests come from the cache or a remote. Decoding never panics; a decoded
//! manifest re-encodes to the same bytes (the encoding is canonical) and every path in it is
//! relative and free of `.` and `..`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = cairn_hash::Manifest::decode(data) {
        assert_eq!(manifest.encode(), data, "decode accepted a non-canonical encoding");
        for entry in manifest.entries() {
            assert!(!entry.path.starts_with(b"/"));
            assert!(
                entry
                    .path
                    .split(|&b| b == b'/')
                    .all(|part| !part.is_empty() && part != b"." && part != b"..")
            );
        }
    }
});
