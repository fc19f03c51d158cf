#!/usr/bin/env python3
"""Keeps CI's cache directory from growing without bound: in a cargo target directory's
`debug/deps`, only the newest build of each workspace crate (`cairn*`) and of each test
binary is kept; older ones (left by earlier commits) are deleted. Third-party crates are left
alone: their builds stay valid across commits.

    python3 .ci/prune.py TARGET_DIR
"""
import collections
import os
import re
import sys


def prune(deps):
    groups = collections.defaultdict(list)
    for name in os.listdir(deps):
        m = re.match(r"^(lib)?([A-Za-z0-9_]+)-([0-9a-f]{16})(\..*)?$", name)
        if not m:
            continue
        crate, ext = m.group(2), m.group(4) or ""
        # Executables (no extension) are test binaries; rlibs and rmetas of our own crates.
        if ext == "" or (ext in (".rlib", ".rmeta") and crate.startswith("cairn")):
            groups[(crate, ext)].append(os.path.join(deps, name))
    freed = 0
    for files in groups.values():
        files.sort(key=lambda f: os.stat(f).st_mtime, reverse=True)
        for old in files[1:]:
            freed += os.stat(old).st_size
            os.remove(old)
    return freed


if __name__ == "__main__":
    target = sys.argv[1]
    freed = 0
    for profile in ("debug", "release"):
        deps = os.path.join(target, profile, "deps")
        if os.path.isdir(deps):
            freed += prune(deps)
    print(f"[ci] pruned {freed / 1e9:.1f} GB of stale builds from {target}", file=sys.stderr)
