#!/usr/bin/env python3
"""Regenerates pack-v1.json from the spec in src/pack.rs, using the reference `blake3` Python
package (pip install blake3), independently of the Rust implementation."""
import json, os, struct
from blake3 import blake3

def h(data: bytes) -> bytes:
    return blake3(data).digest()

def pack(entries):
    """entries: list of (kind, digest bytes, payload bytes) in write order."""
    out = b"CAIRNPK\x01"
    index = []
    for kind, digest, payload in entries:
        out += bytes([kind]) + digest + struct.pack("<Q", len(payload))
        index.append((kind, digest, len(out), len(payload)))
        out += payload
    digest = h(out)
    idx = b"CAIRNIX\x01" + digest + struct.pack("<I", len(index))
    for kind, d, offset, length in sorted(index, key=lambda e: (e[1], e[0])):
        idx += bytes([kind]) + d + struct.pack("<QQ", offset, length)
    idx += h(idx)
    return out, digest, idx

def recipe(chunks):
    size = sum(len(c) for c in chunks)
    out = b"CAIRNRC\x01" + struct.pack("<QI", size, len(chunks))
    for c in chunks:
        out += h(c) + struct.pack("<I", len(c))
    return out

big_chunks = [b"first chunk " * 10, b"second", b"first chunk " * 10]
whole = b"".join(big_chunks)
cases = [
    ("empty pack", []),
    ("three blobs, written out of digest order", [(0, b"hello\n"), (0, b""), (0, bytes(range(256)))]),
    ("chunks and the recipe of the object they make", [(0, big_chunks[0]), (0, big_chunks[1]), (1, recipe(big_chunks))]),
]
packs = []
for name, items in cases:
    entries = []
    for kind, payload in items:
        digest = h(payload) if kind == 0 else h(whole)
        entries.append((kind, digest, payload))
    data, digest, idx = pack(entries)
    packs.append({
        "name": name,
        "entries": [{"kind": k, "digest": "blake3:" + d.hex(), "payload_hex": p.hex()} for k, d, p in entries],
        "pack_hex": data.hex(),
        "pack_digest": "blake3:" + digest.hex(),
        "index_hex": idx.hex(),
    })
recipes = [{
    "size": len(whole),
    "chunks": [{"digest": "blake3:" + h(c).hex(), "length": len(c)} for c in big_chunks],
    "object_digest": "blake3:" + h(whole).hex(),
    "encoding_hex": recipe(big_chunks).hex(),
}]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pack-v1.json"), "w") as f:
    json.dump({"packs": packs, "recipes": recipes}, f, indent=1)
    f.write("\n")
