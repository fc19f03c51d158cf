//! The pack, index and recipe encodings against vectors computed independently (see
//! `vectors/generate.py`).

#![allow(clippy::unwrap_used)]

use cairn_hash::Digest;
use cairn_remote::pack::{EntryKind, PackBuilder, PackIndex, Recipe, read_pack};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    packs: Vec<PackCase>,
    recipes: Vec<RecipeCase>,
}

#[derive(Deserialize)]
struct PackCase {
    name: String,
    entries: Vec<EntryCase>,
    pack_hex: String,
    pack_digest: String,
    index_hex: String,
}

#[derive(Deserialize)]
struct EntryCase {
    kind: u8,
    digest: String,
    payload_hex: String,
}

#[derive(Deserialize)]
struct RecipeCase {
    size: u64,
    chunks: Vec<ChunkCase>,
    encoding_hex: String,
}

#[derive(Deserialize)]
struct ChunkCase {
    digest: String,
    length: u32,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/pack-v1.json")).unwrap()
}

#[test]
fn packs_and_indexes_match_the_vectors() {
    for case in vectors().packs {
        let mut builder = PackBuilder::new();
        for entry in &case.entries {
            let kind = if entry.kind == 0 { EntryKind::Blob } else { EntryKind::Recipe };
            builder.push(kind, entry.digest.parse::<Digest>().unwrap(), &unhex(&entry.payload_hex));
        }
        let built = builder.finish();
        assert_eq!(hex(&built.bytes), case.pack_hex, "{}", case.name);
        assert_eq!(built.digest.to_string(), case.pack_digest, "{}", case.name);
        assert_eq!(hex(&built.index.encode()), case.index_hex, "{}", case.name);
        assert_eq!(PackIndex::decode(&unhex(&case.index_hex)).unwrap(), built.index, "{}", case.name);
        assert_eq!(read_pack(&unhex(&case.pack_hex)).unwrap().len(), case.entries.len());
    }
}

#[test]
fn recipes_match_the_vectors() {
    for case in vectors().recipes {
        let recipe = Recipe {
            size: case.size,
            chunks: case.chunks.iter().map(|c| (c.digest.parse().unwrap(), c.length)).collect(),
        };
        assert_eq!(hex(&recipe.encode()), case.encoding_hex);
        assert_eq!(Recipe::decode(&unhex(&case.encoding_hex)).unwrap(), recipe);
    }
}
