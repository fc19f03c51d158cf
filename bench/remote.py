#!/usr/bin/env python3
"""Side-by-side benchmark of `cairn` and `dvc` remotes on the same data, in the same run.

    python3 bench/remote.py [--files 100000] [--big 2GiB] [--backends dir,s3] [--tools cairn,dvc] [--work DIR]

For each tool: version 100,000 small files (../shared/bench/make-tree.py) and push them to a
local-directory remote; pull into a fresh `git clone` with an empty cache; change 100 files and
push again; then push a large file, change 1 MiB in its middle, and push again, counting the
bytes that reach the remote. With --backends s3 the same steps run against an S3 server on
127.0.0.1: s3s-fs by default (`cargo install s3s-fs --version 0.14.1 --features binary
--locked`), or moto (--s3-server moto, from target/test-tools/venv). DVC needs `dvc-s3`.

Needs a release build and dvc in .venv-bench (python3 -m venv .venv-bench &&
.venv-bench/bin/pip install dvc dvc-s3). Prints a Markdown table: wall seconds, peak RSS,
DVC/Cairn ratio. Not a test: machines are noisy, so compare ratios.
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKE_TREE = os.path.join(ROOT, "..", "shared", "bench", "make-tree.py")
CAIRN = os.path.join(ROOT, "target", "release", "cairn")
MOTO = os.path.join(ROOT, "target", "test-tools", "venv", "bin", "moto_server")


def run(cmd, cwd, env):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS MB, stdout)."""
    out = tempfile.NamedTemporaryFile(delete=False)
    out.close()
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", out.name] + cmd, cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise Failed(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr.decode(errors='replace')[-2000:]}")
    wall, rss_kb = open(out.name).read().split()[-2:]
    os.unlink(out.name)
    return float(wall), int(rss_kb) / 1024, proc.stdout.decode()


class Failed(Exception):
    pass


def sh(cmd, cwd, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def tree_size(path):
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(base, f))
    return total


def change_middle(path, size=1 << 20):
    length = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(length // 2)
        f.write(os.urandom(size))


class Moto:
    def __init__(self, bucket_names):
        self.proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", "0"], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True)
        for line in self.proc.stderr:
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            if m:
                self.endpoint = m.group(0)
                break
        import urllib.request
        for name in bucket_names:
            urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")).read()

    def stop(self):
        self.proc.kill()


class S3sFs:
    """s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked): an S3 server
    in Rust over a directory. moto's development server stalls under several concurrent
    16 MiB uploads, so the benchmark prefers this one."""

    def __init__(self, bucket_names, root):
        import socket, time, urllib.request
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.makedirs(root)
        for name in bucket_names:
            os.makedirs(os.path.join(root, name))
        exe = shutil.which("s3s-fs") or os.path.expanduser("~/.cargo/bin/s3s-fs")
        self.proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--access-key", "testing",
                                      "--secret-key", "testing", root], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("s3s-fs did not start")

    def stop(self):
        self.proc.kill()


def bench_tool(name, exe, a, base, env, remote, r):
    """remote: ("dir", path) or ("s3", url, endpoint). Fills r = {step: (wall, rss)}; returns
    the bytes sent for the large file before and after the change."""
    work = os.path.join(a.work, f"{name}-{remote[0]}")
    origin = os.path.join(work, "origin")
    os.makedirs(origin)
    sh(["git", "init", "-q"], origin)
    if name == "cairn":
        sh([exe, "init"], origin, env)
        if remote[0] == "dir":
            sh([exe, "remote", "add", "origin", remote[1], "--default"], origin, env)
        else:
            sh([exe, "remote", "add", "origin", remote[1], "--default", "-o", f"endpoint={remote[2]}"], origin, env)
        add, push, pull = [exe, "add", "-q", "data"], [exe, "push", "-q", "--json"], [exe, "pull", "-q"]
    else:
        sh([exe, "init", "-q"], origin, env)
        sh([exe, "config", "core.analytics", "false"], origin, env)
        sh([exe, "remote", "add", "-d", "origin", remote[1]], origin, env)
        if remote[0] == "s3":
            sh([exe, "remote", "modify", "origin", "endpointurl", remote[2]], origin, env)
        add, push, pull = [exe, "add", "-q", "data"], [exe, "push", "-q"], [exe, "pull", "-q"]
    sh(["cp", "-a", os.path.join(base, "small"), os.path.join(origin, "data")], origin)
    sh(add, origin, env)
    sh(["git", "add", "-A"], origin)
    sh(["git", "commit", "-qm", "v1"], origin, env)
    sh(["sync"], origin)
    r[f"push {a.files} files"] = run(push, origin, env)[:2]
    clone = os.path.join(work, "clone")
    sh(["git", "clone", "-q", origin, clone], work)
    sh(["sync"], origin)
    r[f"pull {a.files} files into a fresh clone"] = run(pull, clone, env)[:2]
    sh([sys.executable, MAKE_TREE, os.path.join(origin, "data"), "--files", str(a.files), "--mutate", "100"], origin)
    sh(add, origin, env)
    r["push after --mutate 100"] = run(push, origin, env)[:2]
    # The large file.
    shutil.rmtree(os.path.join(origin, "data"))
    sh(["cp", "-a", os.path.join(base, "big"), os.path.join(origin, "data")], origin)
    sh(add, origin, env)
    before = tree_size(remote[1]) if remote[0] == "dir" else None
    wall, rss, out = run(push, origin, env)
    r[f"push {a.big} file"] = (wall, rss)
    sent_first = tree_size(remote[1]) - before if before is not None else parse_sent(out)
    change_middle(os.path.join(origin, "data", "big.bin"))
    sh(add, origin, env)
    before = tree_size(remote[1]) if remote[0] == "dir" else None
    wall, rss, out = run(push, origin, env)
    r[f"push after changing 1 MiB of {a.big}"] = (wall, rss)
    sent_second = tree_size(remote[1]) - before if before is not None else parse_sent(out)
    return sent_first, sent_second


def parse_sent(stdout):
    import json
    try:
        return json.loads(stdout)["bytes_sent"]
    except (ValueError, KeyError):
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=100000)
    p.add_argument("--big", default="2GiB")
    p.add_argument("--work", default=None, help="scratch directory (default bench/work-remote-BACKENDS)")
    p.add_argument("--tools", default="cairn,dvc")
    p.add_argument("--s3-server", default="s3s-fs", choices=["s3s-fs", "moto"])
    p.add_argument("--backends", default="dir", help="dir, s3 (a moto server on 127.0.0.1), or dir,s3")
    a = p.parse_args()
    a.work = a.work or os.path.join(ROOT, "bench", "work-remote-" + a.backends.replace(",", "-"))
    dvc = os.path.join(ROOT, ".venv-bench", "bin", "dvc")
    tools = {"cairn": CAIRN, "dvc": dvc}
    tools = {k: v for k, v in tools.items() if k in a.tools.split(",")}
    for name, exe in tools.items():
        if not os.path.exists(exe):
            sys.exit(f"{name} not found at {exe} (see the docstring)")
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.com", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="b@example.com", DVC_NO_ANALYTICS="1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    base = os.path.join(a.work, "base")
    sh([sys.executable, MAKE_TREE, os.path.join(base, "small"), "--files", str(a.files)], a.work)
    sh([sys.executable, MAKE_TREE, os.path.join(base, "big"), "--files", "0", "--big-file", a.big], a.work)
    backends = [(b,) for b in a.backends.split(",")]
    moto = None
    if ("s3",) in backends:
        buckets = [f"bench-{t}" for t in tools]
        moto = Moto(buckets) if a.s3_server == "moto" else S3sFs(buckets, os.path.join(a.work, "s3-root"))
    try:
        for backend in backends:
            results, sent = {}, {}
            for name, exe in tools.items():
                if backend[0] == "dir":
                    remote_dir = os.path.join(a.work, f"{name}-remote")
                    os.makedirs(remote_dir)
                    remote = ("dir", remote_dir)
                else:
                    remote = ("s3", f"s3://bench-{name}/data", moto.endpoint)
                partial = {}
                try:
                    sent[name] = bench_tool(name, exe, a, base, env, remote, partial)
                except Failed as failure:
                    print(f"\n{name} ({backend[0]}): {failure}", flush=True)
                    sent[name] = (None, None)
                results[name] = partial
                print(f"\n{name} ({backend[0]}): {partial} sent={sent[name]}", flush=True)
            report(a, backend[0], results, sent)
    finally:
        if moto:
            moto.stop()


def report(a, backend, results, sent):
    names = list(results)
    print(f"\nremote={backend} files={a.files} big={a.big} cores={os.cpu_count()}\n")
    header = "| step | " + " | ".join(f"{n} wall s | {n} peak RSS MB" for n in names)
    if len(names) == 2:
        header += " | dvc / cairn"
    print(header + " |")
    print("|---" * (1 + 2 * len(names) + (1 if len(names) == 2 else 0)) + "|")
    steps = list(dict.fromkeys(step for n in names for step in results[n]))
    cell = lambda n, step: f"{results[n][step][0]:.2f} | {results[n][step][1]:.0f}" if step in results[n] else "failed | "
    for step in steps:
        row = f"| {step} | " + " | ".join(cell(n, step) for n in names)
        if len(names) == 2:
            both = all(step in results[n] for n in names)
            row += f" | {results['dvc'][step][0] / max(results['cairn'][step][0], 0.01):.1f}x" if both else " | "
        print(row + " |")
    for n in names:
        first, second = sent[n]
        fmt = lambda b: "?" if b is None else f"{b / 2**20:.1f} MiB"
        print(f"\n{n}: bytes to the remote for the {a.big} file: {fmt(first)}; after changing 1 MiB: {fmt(second)}")


if __name__ == "__main__":
    main()
