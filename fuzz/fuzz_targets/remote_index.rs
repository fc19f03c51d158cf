//! A remote's pack indexes and chunk recipes come from storage someone else may write.
//! Decoding never panics; what decodes re-encodes to the same bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(index) = cairn_remote::pack::PackIndex::decode(data) {
        assert_eq!(index.encode(), data);
    }
    if let Ok(recipe) = cairn_remote::pack::Recipe::decode(data) {
        assert_eq!(recipe.encode(), data);
    }
});
