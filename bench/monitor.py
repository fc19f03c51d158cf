#!/usr/bin/env python3
"""Side-by-side benchmark of Cairn's profiling and drift against whylogs and Evidently, on
the same generated data in the same run.

    python3 bench/monitor.py [--rows 1000000] [--drift-rows 5000]

1. Profiling: 1,000,000 rows x 20 features (10 numeric, 10 categorical with 20 levels),
   written once as CSV and read into memory by each tool before the clock starts. Cairn
   profiles on one thread (`cairn-monitor`'s streaming profiles: moments, DDSketch,
   HyperLogLog++, reservoir sample, category counts); whylogs 1.6 with `why.log(pandas=df)`.
   Reported: feature values per second (rows x features / seconds), median of 3.
2. Drift over 100 numeric features, --drift-rows rows of reference and of current data (a
   third of the features shifted): Cairn's `dataset_drift` against a registration profile
   (median of 5), Evidently's DataDriftPreset report (one run; both use normed Wasserstein
   above 1,000 reference rows).

Needs `cargo build --release -p cairn-monitor --example bench` (the script runs it) and:
    python3 -m venv .venv-bench-whylogs && .venv-bench-whylogs/bin/pip install whylogs 'numpy<2' pandas
    python3 -m venv .venv-bench-evidently && .venv-bench-evidently/bin/pip install evidently 'pandas<3'   # evidently 0.7 breaks on pandas 3
Prints a Markdown table. Not a test: machines are noisy, so compare ratios from one run.
"""
import argparse, json, os, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work-monitor")
BENCH = os.path.join(ROOT, "target", "release", "examples", "bench")

GENERATE = r'''
import sys, numpy as np, pandas as pd
out, rows, drift_rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
data = {f"num{i}": rng.normal(i, 1 + i / 10, rows).round(4) for i in range(10)}
levels = np.array([f"level{j}" for j in range(20)])
for i in range(10):
    data[f"cat{i}"] = levels[rng.integers(0, 20, rows)]
pd.DataFrame(data).to_csv(f"{out}/profile.csv", index=False)
ref = pd.DataFrame({f"f{i}": rng.normal(0, 1, drift_rows).round(5) for i in range(100)})
cur = pd.DataFrame({f"f{i}": (rng.normal(0.5 if i % 3 == 0 else 0, 1, drift_rows)).round(5) for i in range(100)})
ref.to_csv(f"{out}/reference.csv", index=False)
cur.to_csv(f"{out}/current.csv", index=False)
'''

WHYLOGS = r'''
import json, sys, time, statistics
import pandas as pd, whylogs as why
df = pd.read_csv(sys.argv[1])
times = []
for _ in range(3):
    start = time.perf_counter()
    why.log(pandas=df)
    times.append(time.perf_counter() - start)
print(json.dumps({"values": df.size, "seconds": statistics.median(times)}))
'''

EVIDENTLY = r'''
import json, sys, time
import pandas as pd
ref, cur = pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2])
try:
    from evidently import Report
    from evidently.presets import DataDriftPreset
    report = Report([DataDriftPreset()])
    start = time.perf_counter()
    report.run(cur, ref)
except ImportError:
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    report = Report(metrics=[DataDriftPreset()])
    start = time.perf_counter()
    report.run(reference_data=ref, current_data=cur)
print(json.dumps({"seconds": time.perf_counter() - start}))
'''


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--drift-rows", type=int, default=5000)
    ap.add_argument("--whylogs-python", default=os.path.join(ROOT, ".venv-bench-whylogs/bin/python"))
    ap.add_argument("--evidently-python", default=os.path.join(ROOT, ".venv-bench-evidently/bin/python"))
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "cairn-monitor", "--example", "bench"], cwd=ROOT, check=True)
    script = lambda name, text: (open(os.path.join(WORK, name), "w").write(text), os.path.join(WORK, name))[1]
    subprocess.run([args.whylogs_python, script("generate.py", GENERATE), WORK, str(args.rows), str(args.drift_rows)], check=True)
    profile_csv = os.path.join(WORK, "profile.csv")
    cairn = run_json([BENCH, "profile", profile_csv])
    whylogs = run_json([args.whylogs_python, script("whylogs_bench.py", WHYLOGS), profile_csv])
    ref, cur = os.path.join(WORK, "reference.csv"), os.path.join(WORK, "current.csv")
    cairn_drift = run_json([BENCH, "drift", ref, cur])
    evidently = run_json([args.evidently_python, script("evidently_bench.py", EVIDENTLY), ref, cur])

    cps = cairn["values_per_second"]
    wps = whylogs["values"] / whylogs["seconds"]
    print(f"\n| measurement | cairn | other | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| profile {args.rows:,} rows x 20 features, values/s (one thread for Cairn) | {cps / 1e6:.1f} M | {wps / 1e6:.2f} M (whylogs) | {cps / wps:.0f}x |")
    print(f"| drift over 100 features, {args.drift_rows:,} rows each | {cairn_drift['seconds'] * 1000:.1f} ms | {evidently['seconds'] * 1000:.0f} ms (Evidently) | {evidently['seconds'] / cairn_drift['seconds']:.0f}x |")
    print(f"\nCairn found {cairn_drift['drifted']} of 100 features drifted (34 were shifted).")


if __name__ == "__main__":
    main()
