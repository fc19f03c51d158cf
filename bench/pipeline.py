#!/usr/bin/env python3
"""Side-by-side benchmark of `cairn run` and `dvc repro` on the same generated pipelines.

    python3 bench/pipeline.py [--stages 1000] [--datums 10000] [--parallel 20] [--partitions 100000]
                              [--tools cairn,dvc] [--repeat 5] [--work DIR]

1. No-op run of a generated pipeline of --stages stages (chains of ten, each stage copying
   its predecessor's output and reading a shared input), after a cold run: median of
   --repeat runs.
2. A --datums datum stage (`foreach: {glob}` over small files); change one input; the re-run
   must run exactly one datum. Overhead = wall time minus the datum's own command time.
   DVC has no datums: its closest form is one stage over the whole directory, so the table
   shows what it costs DVC to redo the whole stage after one file changed.
3. --parallel independent stages of `sleep 1` each: cairn runs them on all cores; dvc repro
   one at a time.
4. `cairn partitions list` of a stage with --partitions partitions (DVC has no partitions).

Needs a release build (cargo build --release) and dvc in .venv-bench. Prints a Markdown
table of wall seconds and ratios. Not a test: machines are noisy, so compare medians and
ratios from the same run.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "target", "release", "cairn")
DVC = os.path.join(ROOT, ".venv-bench", "bin", "dvc")


def sh(cmd, cwd, check=True, capture=False):
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    env["PATH"] = os.path.dirname(DVC) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return proc.stdout.decode()


def timed(cmd, cwd):
    start = time.perf_counter()
    out = sh(cmd, cwd)
    return time.perf_counter() - start, out


def new_repo(work, name, tool):
    path = os.path.join(work, f"{name}-{tool}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    sh(["git", "init", "-q"], path)
    sh(["git", "config", "user.email", "bench@example.com"], path)
    sh(["git", "config", "user.name", "bench"], path)
    if tool == "cairn":
        sh([CAIRN, "init"], path)
    else:
        sh([DVC, "init", "-q"], path)
        sh([DVC, "config", "core.autostage", "false"], path)
        sh([DVC, "config", "core.analytics", "false"], path)
    return path


def write_yaml_stages(path, tool, stages):
    """stages: list of (name, cmd, deps, outs)."""
    lines = ["stages:"]
    for name, cmd, deps, outs in stages:
        lines.append(f"  {name}:")
        lines.append(f"    cmd: {cmd}")
        if deps:
            lines.append("    deps: [" + ", ".join(deps) + "]")
        if outs:
            lines.append("    outs: [" + ", ".join(outs) + "]")
    name = "cairn.yaml" if tool == "cairn" else "dvc.yaml"
    with open(os.path.join(path, name), "w") as f:
        f.write("\n".join(lines) + "\n")


def run_cmd(tool, extra=()):
    return [CAIRN, "run", "-q", *extra] if tool == "cairn" else [DVC, "repro", "-q", *extra]


def bench_noop(work, tool, n, repeat):
    path = new_repo(work, "noop", tool)
    with open(os.path.join(path, "shared.txt"), "w") as f:
        f.write("shared input\n")
    stages = []
    for i in range(n):
        deps = ["shared.txt"] + ([f"out/s{i-1}.txt"] if i % 10 else [])
        src = f"out/s{i-1}.txt" if i % 10 else "shared.txt"
        stages.append((f"s{i}", f"mkdir -p out && cat {src} > out/s{i}.txt", deps, [f"out/s{i}.txt"]))
    write_yaml_stages(path, tool, stages)
    cold, _ = timed(run_cmd(tool), path)
    times = [timed(run_cmd(tool), path)[0] for _ in range(repeat)]
    return cold, statistics.median(times)


def bench_datums(work, tool, n):
    path = new_repo(work, "datums", tool)
    src = os.path.join(path, "data", "in")
    os.makedirs(src)
    for i in range(n):
        with open(os.path.join(src, f"f{i:05}.txt"), "w") as f:
            f.write(f"item {i}\n")
    if tool == "cairn":
        with open(os.path.join(path, "cairn.yaml"), "w") as f:
            f.write('stages:\n  upper:\n    foreach: {glob: "data/in/*.txt"}\n'
                    '    cmd: tr a-z A-Z < ${item} > ${out}/${item.name}\n    outs: [data/out]\n')
    else:
        write_yaml_stages(path, tool, [(
            "upper", "mkdir -p data/out && for f in data/in/*.txt; do tr a-z A-Z < $f > data/out/$(basename $f); done",
            ["data/in"], ["data/out"])])
    cold, _ = timed(run_cmd(tool), path)
    with open(os.path.join(src, "f00042.txt"), "w") as f:
        f.write("item forty-two, changed\n")
    if tool == "cairn":
        warm, out = timed([CAIRN, "run", "--json"], path)
        parts = json.loads(out)["stages"][0]["parts"]
        assert parts["ran"] == 1 and parts["fresh"] == n - 1, parts
    else:
        warm, _ = timed(run_cmd(tool), path)
    # The datum's own command, for the overhead figure.
    one, _ = timed(["sh", "-c", "tr a-z A-Z < data/in/f00042.txt > /dev/null"], path)
    return cold, warm, warm - one


def bench_parallel(work, tool, n):
    path = new_repo(work, "parallel", tool)
    stages = [(f"p{i}", f"sleep 1 && echo {i} > p{i}.txt", [], [f"p{i}.txt"]) for i in range(n)]
    write_yaml_stages(path, tool, stages)
    wall, _ = timed(run_cmd(tool), path)
    return wall


def bench_partitions(work, n):
    path = new_repo(work, "partitions", "cairn")
    days = 1000
    regions = max(1, n // days)
    with open(os.path.join(path, "cairn.yaml"), "w") as f:
        f.write("stages:\n  ingest:\n    partitions:\n"
                "      date: {daily: {start: 2020-01-01, end: 2022-09-26}}\n"
                "      region: {static: [" + ", ".join(f"r{i}" for i in range(regions)) + "]}\n"
                "    cmd: echo '${partition}' > ${out}/${partition.date}-${partition.region}.txt\n"
                "    outs: [data/ingested]\n")
    # Materialize a slice, so status compares fingerprints as well as listing keys.
    sh([CAIRN, "run", "-q", "--partitions", "date=2020-01-01..2020-01-10"], path)
    times = []
    for _ in range(3):
        t, out = timed([CAIRN, "partitions", "list", "ingest", "--json"], path)
        times.append(t)
    summary = json.loads(out)["summary"]
    return statistics.median(times), summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--datums", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=100000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tools", default="cairn,dvc")
    parser.add_argument("--only", default="noop,datums,parallel,partitions")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    tools = args.tools.split(",")
    only = args.only.split(",")
    work = args.work or tempfile.mkdtemp(prefix="cairn-pipeline-bench-")
    os.makedirs(work, exist_ok=True)
    rows = []
    if "noop" in only:
        res = {t: bench_noop(work, t, args.stages, args.repeat) for t in tools}
        for i, label in enumerate(["cold run", "no-op run (median)"]):
            rows.append((f"{args.stages} stages: {label}", {t: res[t][i] for t in tools}))
    if "datums" in only:
        res = {t: bench_datums(work, t, args.datums) for t in tools}
        rows.append((f"{args.datums} datums: cold", {t: res[t][0] for t in tools}))
        rows.append((f"{args.datums} datums: 1 input changed", {t: res[t][1] for t in tools}))
        rows.append((f"{args.datums} datums: overhead beyond the one datum", {t: res[t][2] for t in tools}))
    if "parallel" in only:
        res = {t: bench_parallel(work, t, args.parallel) for t in tools}
        rows.append((f"{args.parallel} independent 1-second stages", res))
    if "partitions" in only and "cairn" in tools:
        t, summary = bench_partitions(work, args.partitions)
        rows.append((f"partitions list, {sum(summary.values())} partitions ({summary})", {"cairn": t}))
    print(f"\nwork dir: {work}; cpus: {os.cpu_count()}\n")
    print("| step | " + " | ".join(tools) + " | ratio |")
    print("|---|" + "---|" * len(tools) + "---|")
    for label, values in rows:
        cells = [f"{values[t]:.2f} s" if t in values else "-" for t in tools]
        ratio = "-"
        if "cairn" in values and "dvc" in values and values["cairn"] > 0:
            ratio = f"{values['dvc'] / values['cairn']:.1f}×"
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
