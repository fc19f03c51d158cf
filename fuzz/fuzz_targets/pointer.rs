//! Pointer files (`PATH.cairn`) come from Git: any bytes. Parsing never panics, and what
//! parses prints back to something that parses to the same pointer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(pointer) = cairn_repo::pointer::Pointer::parse(text) {
        let again = cairn_repo::pointer::Pointer::parse(&pointer.render()).expect("a written pointer parses");
        assert_eq!(again, pointer);
    }
});
