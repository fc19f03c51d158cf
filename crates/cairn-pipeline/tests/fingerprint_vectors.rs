//! The fingerprint scheme against vectors computed independently (tests/vectors/generate.py).

#![allow(clippy::unwrap_used)]

use cairn_hash::Digest;
use cairn_pipeline::fingerprint::{Inputs, encode, fingerprint};
use serde_json::Value;

#[test]
fn fingerprints_match_the_python_reference() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/fingerprint-v1.json"))
            .expect("vectors");
    let cases: Vec<Value> = serde_json::from_str(&text).expect("vector JSON");
    assert!(cases.len() >= 2);
    for case in cases {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().expect("list").iter().map(|s| s.as_str().expect("string").to_owned()).collect()
        };
        let inputs = Inputs {
            cmd: strings(&case["cmd"]),
            wdir: case["wdir"].as_str().expect("wdir").to_owned(),
            deps: case["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .map(|d| {
                    let digest = d[1].as_str().map(|t| Digest::parse_bytes(t.as_bytes()).expect("digest"));
                    (d[0].as_str().expect("path").to_owned(), digest)
                })
                .collect(),
            params: case["params"]
                .as_array()
                .expect("params")
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().expect("file").to_owned(),
                        p[1].as_str().expect("key").to_owned(),
                        p[2].clone(),
                    )
                })
                .collect(),
            env: case["env"]
                .as_object()
                .expect("env")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("value").to_owned()))
                .collect(),
            outs: case["outs"]
                .as_array()
                .expect("outs")
                .iter()
                .map(|o| (o[0].as_str().expect("path").to_owned(), o[1] == true, o[2] == true))
                .collect(),
        };
        let name = case["name"].as_str().expect("name");
        assert_eq!(hex(&encode(&inputs)), case["encoded_hex"].as_str().expect("hex"), "{name}: encoding");
        assert_eq!(fingerprint(&inputs).to_string(), case["fingerprint"].as_str().expect("fp"), "{name}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
