#!/usr/bin/env python3
"""Side-by-side benchmark of `cairn` and `dvc` on the same data, in the same run.

    python3 bench/bench.py [--files 100000] [--big 2GiB] [--repeat 3] [--link reflink,copy] [--work DIR]

Needs a release build (`cargo build --release`) and `dvc` on PATH or in `.venv-bench/`
(`python3 -m venv .venv-bench && .venv-bench/bin/pip install dvc`). Data comes from
`../shared/bench/make-tree.py`. Prints a Markdown table of wall time (median of --repeat runs
for the cheap steps) and peak RSS (from /usr/bin/time -v), and the DVC/Cairn ratio.
Not a test: machines are noisy, so compare ratios, not absolute numbers.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_TREE = os.path.join(ROOT, "..", "shared", "bench", "make-tree.py")
CAIRN = os.path.join(ROOT, "target", "release", "cairn")


def find_dvc():
    local = os.path.join(ROOT, ".venv-bench", "bin", "dvc")
    if os.path.exists(local):
        return local
    return shutil.which("dvc")


def run(cmd, cwd, env):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS in MB)."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    full = ["/usr/bin/time", "-f", "%e %M", "-o", out.name] + cmd
    proc = subprocess.run(full, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr.decode(errors='replace')}")
    wall, rss_kb = open(out.name).read().split()[-2:]
    os.unlink(out.name)
    return float(wall), int(rss_kb) / 1024


def sh(cmd, cwd, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def settle():
    subprocess.run(["sync"], check=True)


def median_run(cmd, cwd, env, repeat):
    runs = [run(cmd, cwd, env) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=100000)
    p.add_argument("--big", default="2GiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", default=os.path.join(ROOT, "bench", "work"))
    p.add_argument("--link", default="reflink,copy",
                   help="link strategy for both tools (cairn cache.link, dvc cache.type)")
    a = p.parse_args()
    dvc = find_dvc()
    if not dvc:
        sys.exit("dvc not found: python3 -m venv .venv-bench && .venv-bench/bin/pip install dvc")
    if not os.path.exists(CAIRN):
        sys.exit("build first: cargo build --release")
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com",
               DVC_NO_ANALYTICS="1")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    base = os.path.join(a.work, "base")
    sh([sys.executable, MAKE_TREE, os.path.join(base, "small"), "--files", str(a.files)], a.work)
    sh([sys.executable, MAKE_TREE, os.path.join(base, "big"), "--files", "0", "--big-file", a.big], a.work)
    version = subprocess.run([dvc, "--version"], capture_output=True, text=True, env=env).stdout.strip()
    tools = {
        "cairn": {"init": [[CAIRN, "init", "-q"], [CAIRN, "config", "cache.link", a.link]], "add": [CAIRN, "add", "-q", "data"],
                  "status": [CAIRN, "status", "-q"], "checkout": [CAIRN, "checkout", "-q"]},
        "dvc": {"init": [[dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                         [dvc, "config", "cache.type", a.link]],
                "add": [dvc, "add", "-q", "data"], "status": [dvc, "status", "-q"],
                "checkout": [dvc, "checkout", "-q"]},
    }
    results = {}
    for name, t in tools.items():
        r = results[name] = {}
        repo = os.path.join(a.work, name)
        os.makedirs(repo)
        sh(["git", "init", "-q"], repo)
        for cmd in t["init"]:
            sh(cmd, repo, env)
        # (a) many small files
        sh(["cp", "-a", os.path.join(base, "small"), os.path.join(repo, "data")], repo)
        settle()
        r["add 100k files"] = run(t["add"], repo, env)
        settle()
        r["no-op status"] = median_run(t["status"], repo, env, a.repeat)
        shutil.rmtree(os.path.join(repo, "data"))
        settle()
        r["checkout 100k files"] = run(t["checkout"], repo, env)
        settle()
        r["no-op status after checkout"] = median_run(t["status"], repo, env, a.repeat)
        # Editing linked files in place would rewrite the shared cache objects (root ignores
        # their read-only mode), so the mutate step runs only with copying strategies.
        if a.link.split(",")[0] not in ("hardlink", "symlink"):
            sh([sys.executable, MAKE_TREE, os.path.join(repo, "data"), "--files", str(a.files), "--mutate", "100"], repo)
            settle()
            r["re-add after --mutate 100"] = run(t["add"], repo, env)
        shutil.rmtree(os.path.join(repo, "data"))
        for cache in [".cairn/cache", ".dvc/cache"]:
            shutil.rmtree(os.path.join(repo, cache), ignore_errors=True)
        for pointer in ["data.cairn", "data.dvc"]:
            if os.path.exists(os.path.join(repo, pointer)):
                os.unlink(os.path.join(repo, pointer))
        shutil.rmtree(os.path.join(repo, ".cairn/state"), ignore_errors=True)
        os.makedirs(os.path.join(repo, ".cairn/state"), exist_ok=True)
        # (b) one big file
        sh(["cp", "-a", os.path.join(base, "big"), os.path.join(repo, "data")], repo)
        settle()
        r[f"add {a.big} file"] = run(t["add"], repo, env)
        if name == "cairn":
            big = os.path.join(repo, "data", "big.bin")
            cat = [run(["sh", "-c", f"cat '{big}' > /dev/null"], repo, env)[0] for _ in range(a.repeat)]
            r["cat big.bin > /dev/null"] = (statistics.median(cat), 0)
            rehash = []
            for _ in range(a.repeat):
                os.utime(big)  # new mtime: status must hash the file again
                rehash.append(run(t["status"], repo, env))
            r[f"hash {a.big} (status after touch)"] = (statistics.median(x[0] for x in rehash), max(x[1] for x in rehash))
        shutil.rmtree(os.path.join(repo, "data"))

    size = os.path.getsize(os.path.join(base, "big", "big.bin"))
    print(f"\nfiles={a.files} big={a.big} repeat={a.repeat} link={a.link} dvc={version} cores={os.cpu_count()}\n")
    print("| step | cairn wall s | cairn peak RSS MB | dvc wall s | dvc peak RSS MB | dvc / cairn |")
    print("|---|---:|---:|---:|---:|---:|")
    for step, (cw, cm) in results["cairn"].items():
        if step in results["dvc"]:
            dw, dm = results["dvc"][step]
            print(f"| {step} | {cw:.2f} | {cm:.0f} | {dw:.2f} | {dm:.0f} | {dw / max(cw, 0.01):.1f}x |")
        else:
            print(f"| {step} | {cw:.2f} | {cm:.0f} | | | |")
    cat = results["cairn"]["cat big.bin > /dev/null"][0]
    hashing = results["cairn"][f"hash {a.big} (status after touch)"][0]
    print(f"\nhash throughput: {size / hashing / 2**30:.2f} GiB/s; cat: {size / cat / 2**30:.2f} GiB/s; "
          f"ratio {cat / hashing * 100:.0f}% of cat")


if __name__ == "__main__":
    main()
