//! `cairn.lock` comes from Git. Parsing never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = cairn_pipeline::lock::LockFile::parse(std::path::Path::new("cairn.lock"), text);
});
