#!/usr/bin/env python3
"""What verifying every object on checkout costs: two `cairn` binaries side by side, the
same 100k-file checkout, runs interleaved.

    python3 bench/verify.py --before OLD-CAIRN --after NEW-CAIRN [--files 100000] [--repeat 5]
                            [--link reflink,copy]

OLD-CAIRN is a release build from before objects were verified on checkout, NEW-CAIRN one
with it (the cache format is the same, so both check out from one cache). Each round deletes
the data and times `cairn checkout` with each binary in turn; prints the median of each and
the ratio. Not a test: read the ratio, not the seconds.
"""
import argparse, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_TREE = os.path.join(ROOT, "..", "shared", "bench", "make-tree.py")


def sh(cmd, cwd, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def timed(cmd, cwd, env):
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--before", required=True)
    p.add_argument("--after", required=True)
    p.add_argument("--files", type=int, default=100000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--link", default="reflink,copy")
    p.add_argument("--work", default=os.path.join(ROOT, "bench", "work-verify"))
    a = p.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    shutil.rmtree(a.work, ignore_errors=True)
    repo = os.path.join(a.work, "repo")
    os.makedirs(repo)
    sh(["git", "init", "-q"], repo)
    sh([a.after, "init"], repo, env)
    sh([a.after, "config", "cache.link", a.link], repo, env)
    sh([sys.executable, MAKE_TREE, os.path.join(repo, "data"), "--files", str(a.files)], repo)
    sh([a.after, "add", "data"], repo, env)
    times = {"before": [], "after": []}
    for _ in range(a.repeat):
        for name in ("before", "after"):
            shutil.rmtree(os.path.join(repo, "data"))
            subprocess.run(["sync"], check=True)
            times[name].append(timed([getattr(a, name), "checkout"], repo, env))
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"| link | files | unverified s (median of {a.repeat}) | verified s | verified / unverified |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {a.link} | {a.files} | {before:.2f} | {after:.2f} | {after / before:.2f}x |")
    print("runs:", {k: [round(t, 2) for t in v] for k, v in times.items()}, file=sys.stderr)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
