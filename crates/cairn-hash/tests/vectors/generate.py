#!/usr/bin/env python3
"""Regenerates manifest-v1.json from the spec in src/manifest.rs, using the reference `blake3`
Python package (pip install blake3), independently of the Rust implementation."""
import json, os
from blake3 import blake3

def d(data: bytes) -> str:
    return "blake3:" + blake3(data).hexdigest()

cases = [
    ("empty directory", []),
    ("one file", [(b"hello.txt", b"hello\n", False)]),
    ("nested, executable, empty file, unsorted input",
     [(b"sub/dir/b.bin", bytes(range(256)), False), (b"run.sh", b"#!/bin/sh\necho hi\n", True),
      (b"empty", b"", False), (b"a", b"A", False)]),
    ("byte order: '!' sorts before '/' and uppercase before lowercase",
     [(b"a/x", b"1", False), (b"a!", b"2", False), (b"B", b"3", False), (b"b", b"4", False)]),
    ("non-UTF-8 and unicode names", [(b"caf\xc3\xa9", b"x", False), (b"raw\xff\xfe", b"y", False), (b"sp ace", b"z", False)]),
]
out = []
for name, files in cases:
    enc = b"cairn-manifest 1\n"
    for path, content, exe in sorted(files, key=lambda f: f[0]):
        enc += (b"100755 " if exe else b"100644 ") + d(content).encode() + b" " + str(len(content)).encode() + b" " + path + b"\0"
    out.append({
        "name": name,
        "files": [{"path_hex": p.hex(), "content_hex": c.hex(), "executable": x} for p, c, x in files],
        "encoding_hex": enc.hex(),
        "digest": d(enc),
    })
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "manifest-v1.json"), "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
