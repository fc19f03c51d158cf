//! Checks the manifest encoding against vectors computed independently (see
//! `tests/vectors/generate.py`).

#![allow(clippy::unwrap_used)]

use cairn_hash::{Manifest, ManifestEntry, hash_bytes};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    files: Vec<File>,
    encoding_hex: String,
    digest: String,
}

#[derive(Deserialize)]
struct File {
    path_hex: String,
    content_hex: String,
    executable: bool,
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("vector hex is valid"))
        .collect()
}

#[test]
fn manifest_v1_vectors() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("vectors/manifest-v1.json")).expect("valid vectors");
    assert!(cases.len() >= 5);
    for case in cases {
        let entries = case
            .files
            .iter()
            .map(|file| {
                let content = unhex(&file.content_hex);
                ManifestEntry {
                    path: unhex(&file.path_hex),
                    digest: hash_bytes(&content),
                    size: content.len() as u64,
                    executable: file.executable,
                }
            })
            .collect();
        let manifest = Manifest::new(entries).expect(&case.name);
        let encoding = unhex(&case.encoding_hex);
        assert_eq!(manifest.encode(), encoding, "encoding of `{}`", case.name);
        assert_eq!(manifest.digest().to_string(), case.digest, "digest of `{}`", case.name);
        assert_eq!(Manifest::decode(&encoding).expect(&case.name), manifest);
    }
}
