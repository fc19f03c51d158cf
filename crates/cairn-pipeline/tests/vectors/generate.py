#!/usr/bin/env python3
"""Regenerates fingerprint-v1.json from the spec in src/fingerprint.rs, using the reference
`blake3` Python package (pip install blake3), independently of the Rust implementation."""
import json, os, struct
from blake3 import blake3

def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b

def n(count):
    return struct.pack("<Q", count)

def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

def encode(case):
    out = b"cairn-fingerprint-v1\0"
    out += s("cmd") + n(len(case["cmd"])) + b"".join(s(c) for c in case["cmd"])
    out += s("wdir") + s(case["wdir"])
    deps = sorted(case["deps"], key=lambda d: d[0].encode())
    out += s("deps") + n(len(deps)) + b"".join(s(p) + s(d or "") for p, d in deps)
    params = sorted(case["params"], key=lambda p: (p[0].encode(), p[1].encode()))
    out += s("params") + n(len(params)) + b"".join(s(f) + s(k) + s(canonical(v)) for f, k, v in params)
    env = sorted(case["env"].items())
    out += s("env") + n(len(env)) + b"".join(s(k) + s(v) for k, v in env)
    outs = sorted(case["outs"], key=lambda o: o[0].encode())
    out += s("outs") + n(len(outs)) + b"".join(s(p) + bytes([int(c) | (int(per) << 1)]) for p, c, per in outs)
    return out

D1 = "blake3:" + blake3(b"raw data\n").hexdigest()
D2 = "blake3:" + blake3(b"prepare.py\n").hexdigest()
cases = [
    {"name": "the smallest stage: one command, nothing else", "cmd": ["true"], "wdir": "", "deps": [], "params": [], "env": {}, "outs": []},
    {"name": "deps, params, env and outs, written out of order", "cmd": ["python prepare.py", "echo done"], "wdir": "src",
     "deps": [["src/prepare.py", D2], ["data/raw", D1], ["data/missing", None]],
     "params": [["params.yaml", "train.lr", 0.01], ["params.yaml", "prepare", {"split": 0.2, "seed": 7, "cols": ["a", "b"]}], ["config.toml", "name", "héllo \"x\""]],
     "env": {"OMP_NUM_THREADS": "1", "A": ""},
     "outs": [["data/prepared", True, False], ["metrics.json", False, False], ["logs", True, True]]},
]
for case in cases:
    enc = encode(case)
    case["encoded_hex"] = enc.hex()
    case["fingerprint"] = "blake3:" + blake3(enc).hexdigest()
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fingerprint-v1.json")
with open(path, "w") as f:
    json.dump(cases, f, indent=1, ensure_ascii=False)
    f.write("\n")
