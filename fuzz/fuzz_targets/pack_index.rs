//! The local pack index (`packs-v1/*.idx`) is read from disk. Decoding never panics, and
//! every entry it accepts is sorted, unique and lies where a pack can hold it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = cairn_store::decode_pack_index(data) {
        for pair in entries.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
        for (_, offset, length) in entries {
            assert!(offset.checked_add(length).is_some());
        }
    }
});
