//! Stage fingerprints, scheme v1.
//!
//! A fingerprint names everything that determines what a stage produces. Two runs with the
//! same fingerprint are interchangeable, so the run cache can hand back the outputs of the
//! earlier one. It is `blake3:` followed by the BLAKE3 hash of this byte string:
//!
//! ```text
//! "cairn-fingerprint-v1\0"
//! str("cmd")    u64 n   n × str(command)                   in the order run
//! str("wdir")   str(working directory, repository-relative, "" for the root)
//! str("deps")   u64 n   n × str(path) str(digest)           sorted by path bytes
//! str("params") u64 n   n × str(file) str(key) str(value)   sorted by (file, key)
//! str("env")    u64 n   n × str(name) str(value)            sorted by name
//! str("outs")   u64 n   n × str(path) u8(flags)             sorted by path bytes
//! ```
//!
//! `u64` is 8 bytes little-endian; `str(s)` is `u64(len) || UTF-8 bytes`. A dep's digest
//! is its content digest as text (`blake3:<hex>`; a directory's is its manifest digest), or
//! the empty string if the path does not exist. A param value is canonical JSON: object
//! keys sorted by code point, no whitespace, strings escaped as JSON requires (non-ASCII
//! kept as UTF-8), numbers in their shortest round-trip form. Output flags: bit 0 = cached,
//! bit 1 = persist; an output's kind (out, metric, plot) is not part of it. Test vectors:
//! `tests/vectors/fingerprint-v1.json`, computed by `generate.py` beside them with the
//! Python `blake3` package.

use std::collections::BTreeMap;

use cairn_hash::{Digest, hash_bytes};
use serde_json::Value;

/// What goes into a fingerprint (any order; it is sorted here).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub cmd: Vec<String>,
    pub wdir: String,
    pub deps: Vec<(String, Option<Digest>)>,
    /// (file, key, value)
    pub params: Vec<(String, String, Value)>,
    pub env: BTreeMap<String, String>,
    /// (path, cached, persist)
    pub outs: Vec<(String, bool, bool)>,
}

const MAGIC: &[u8] = b"cairn-fingerprint-v1\0";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

/// The encoded bytes that are hashed (exposed for the test vectors).
pub fn encode(inputs: &Inputs) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put_str(&mut out, "cmd");
    put_count(&mut out, inputs.cmd.len());
    for c in &inputs.cmd {
        put_str(&mut out, c);
    }
    put_str(&mut out, "wdir");
    put_str(&mut out, &inputs.wdir);

    let mut deps: Vec<&(String, Option<Digest>)> = inputs.deps.iter().collect();
    deps.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    put_str(&mut out, "deps");
    put_count(&mut out, deps.len());
    for (path, digest) in deps {
        put_str(&mut out, path);
        put_str(&mut out, &digest.map(|d| d.to_string()).unwrap_or_default());
    }

    let mut params: Vec<&(String, String, Value)> = inputs.params.iter().collect();
    params.sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes())));
    put_str(&mut out, "params");
    put_count(&mut out, params.len());
    for (file, key, value) in params {
        put_str(&mut out, file);
        put_str(&mut out, key);
        put_str(&mut out, &canonical_json(value));
    }

    put_str(&mut out, "env");
    put_count(&mut out, inputs.env.len());
    for (k, v) in &inputs.env {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }

    let mut outs: Vec<&(String, bool, bool)> = inputs.outs.iter().collect();
    outs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    put_str(&mut out, "outs");
    put_count(&mut out, outs.len());
    for (path, cached, persist) in outs {
        put_str(&mut out, path);
        out.push(u8::from(*cached) | (u8::from(*persist) << 1));
    }
    out
}

/// The fingerprint of a stage run.
pub fn fingerprint(inputs: &Inputs) -> Digest {
    hash_bytes(&encode(inputs))
}

/// JSON with object keys sorted and no whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(list) => Value::Array(list.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}
