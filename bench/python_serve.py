#!/usr/bin/env python3
"""Side-by-side benchmark of serving one scikit-learn model from Python: Cairn's Python
runtime (`cairn serve` on an MLflow model, workers in the model's environment), `mlflow models
serve` and MLServer (mlserver-sklearn), driven by the same load tool (`wrk`).

    python3 bench/python_serve.py [--duration 10] [--mlflow-python .venv-bench-mlflow/bin/python]
                                  [--mlserver-python .venv-bench-serve/bin/python]

The model: a 100-tree random forest (10 features, depth 10, fixed seed) saved with
`mlflow.sklearn.save_model` (Cairn and MLflow load that directory) and as a joblib file from
the same fit (MLServer). Cairn runs it with `--env-manager local --python` the MLflow
environment (the one `mlflow models serve --env-manager local` uses), its default worker
count (one per core) and adaptive batching (`--batch-max 64`), prediction log on (the
default). MLServer runs its defaults, and again with adaptive batching
(`max_batch_size` 64, `max_batch_time` 2 ms). MLflow runs its defaults. Loads: one-row
requests from 1 and 16 connections, and 1,000-row requests from 1 connection (KServe v2 JSON
for Cairn and MLServer, `{"inputs": [[...]]}` for MLflow). Reported: requests/s, p50 and p99
(wrk --latency), and the model's own `predict` time for one row and for 1,000 rows
(pyfunc, median of many calls in the MLflow environment), so the server's added latency is
p50 − predict.

Needs a release build (cargo build --release), `wrk`, and the two environments of
bench/serve.py (.venv-bench-serve with mlserver and mlserver-sklearn; .venv-bench-mlflow with
mlflow==3.6.0). Prints a Markdown table. Not a test: machines are noisy, so compare ratios
from the same run.
"""
import argparse, json, os, shutil, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve as common  # noqa: E402  (bench/serve.py: wrk, readiness, free ports)

ROOT = common.ROOT
CAIRN = common.CAIRN
WORK = os.path.join(ROOT, "bench", "work-python-serve")
common.WORK = WORK
ROW = common.ROW

TRAIN = r'''
import json, os, sys, time, statistics
import numpy as np, joblib
import mlflow.sklearn, mlflow.pyfunc
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
out = sys.argv[1]
X, y = make_classification(n_samples=5000, n_features=10, random_state=0)
model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(X, y)
mlflow.sklearn.save_model(model, os.path.join(out, "forest-mlflow"), input_example=X[:2])
joblib.dump(model, os.path.join(out, "forest.joblib"))
loaded = mlflow.pyfunc.load_model(os.path.join(out, "forest-mlflow"))
def timed(rows, n):
    times = []
    for _ in range(n):
        t = time.perf_counter(); loaded.predict(rows); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
one = np.array([[0.5, -1.2, 0.3, 2.1, -0.7, 0.0, 1.1, -0.4, 0.9, -2.0]])
print(json.dumps({"predict_1": timed(one, 500), "predict_1000": timed(X[:1000], 50)}))
'''


def kserve(name, rows):
    return json.dumps({"inputs": [{"name": name, "shape": [len(rows), 10], "datatype": "FP64",
                                   "data": [x for row in rows for x in row]}]})


def measure(name, start, url, one, many, duration):
    proc, ready = start()
    try:
        common.wait_ready(ready, timeout=300)
        common.check(url, one)
        out = {}
        for label, body, connections in (("1 row, 1 client", one, 1), ("1 row, 16 clients", one, 16),
                                          ("1,000 rows, 1 client", many, 1)):
            out[label] = common.wrk(url, body, connections, duration)
            print(f"  {name} {label}: {out[label]}", file=sys.stderr)
        out["rss"] = common.tree_rss_mib(proc.pid)
        return out
    finally:
        common.stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--mlflow-python", default=os.path.join(ROOT, ".venv-bench-mlflow/bin/python"))
    ap.add_argument("--mlserver-python", default=os.path.join(ROOT, ".venv-bench-serve/bin/python"))
    ap.add_argument("--only", default="cairn,mlserver,mlserver-batching,mlflow")
    args = ap.parse_args()
    only = args.only.split(",")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    train = os.path.join(WORK, "train.py")
    open(train, "w").write(TRAIN)
    predict = json.loads(subprocess.run([args.mlflow_python, train, WORK], check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
    rows = [ROW] * 1000
    results = {}

    if "cairn" in only:
        repo = os.path.join(WORK, "cairn")
        os.makedirs(repo)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([CAIRN, "init"], cwd=repo, check=True, capture_output=True)
        shutil.copytree(os.path.join(WORK, "forest-mlflow"), os.path.join(repo, "forest"))
        subprocess.run([CAIRN, "model", "register", "forest", "forest"], cwd=repo, check=True, capture_output=True)
        lib = subprocess.run([args.mlserver_python, "-c", "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
        port = common.free_port()
        def start_cairn():
            p = subprocess.Popen([CAIRN, "serve", "forest", "--port", str(port), "--grpc-port", "0", "--env-manager", "local",
                                  "--python", args.mlflow_python, "--batch-max", "64"], cwd=repo,
                                 env={**env, "CAIRN_ONNXRUNTIME": lib}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return p, f"http://127.0.0.1:{port}/v2/models/forest/ready"
        url = f"http://127.0.0.1:{port}/v2/models/forest/infer"
        results["cairn"] = measure("cairn", start_cairn, url, kserve("input", [ROW]), kserve("input", rows), args.duration)

    for variant in ("mlserver", "mlserver-batching"):
        if variant not in only:
            continue
        models_dir = os.path.join(WORK, variant)
        port, grpc, metrics = common.free_port(), common.free_port(), common.free_port()
        d = os.path.join(models_dir, "forest")
        os.makedirs(d)
        shutil.copy(os.path.join(WORK, "forest.joblib"), os.path.join(d, "model.joblib"))
        settings = {"name": "forest", "implementation": "mlserver_sklearn.SKLearnModel",
                    "parameters": {"uri": "./model.joblib", "version": "v1"}}
        if variant == "mlserver-batching":
            settings.update({"max_batch_size": 64, "max_batch_time": 0.002})
        json.dump(settings, open(os.path.join(d, "model-settings.json"), "w"))
        json.dump({"http_port": port, "grpc_port": grpc, "metrics_port": metrics}, open(os.path.join(models_dir, "settings.json"), "w"))
        mlserver = os.path.join(os.path.dirname(args.mlserver_python), "mlserver")
        def start_mlserver(models_dir=models_dir, port=port):
            p = subprocess.Popen([mlserver, "start", models_dir], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return p, f"http://127.0.0.1:{port}/v2/models/forest/ready"
        url = f"http://127.0.0.1:{port}/v2/models/forest/infer"
        results[variant] = measure(variant, start_mlserver, url, kserve("input-0", [ROW]), kserve("input-0", rows), args.duration)

    if "mlflow" in only:
        port = common.free_port()
        mlflow = os.path.join(os.path.dirname(args.mlflow_python), "mlflow")
        def start_mlflow():
            p = subprocess.Popen([mlflow, "models", "serve", "-m", os.path.join(WORK, "forest-mlflow"), "-p", str(port), "--env-manager", "local"],
                                 env={**env, "PATH": os.path.dirname(args.mlflow_python) + ":" + env["PATH"]},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return p, f"http://127.0.0.1:{port}/ping"
        url = f"http://127.0.0.1:{port}/invocations"
        results["mlflow"] = measure("mlflow", start_mlflow, url, json.dumps({"inputs": [ROW]}), json.dumps({"inputs": rows}), args.duration)

    print(f"\nThe forest's own predict (pyfunc, median): {predict['predict_1']:.2f} ms for 1 row, "
          f"{predict['predict_1000']:.2f} ms for 1,000 rows. wrk for {args.duration} s per load; latency in ms.\n")
    print("| load | server | requests/s | p50 | p99 |")
    print("|---|---|---:|---:|---:|")
    for load in ("1 row, 1 client", "1 row, 16 clients", "1,000 rows, 1 client"):
        for server, r in results.items():
            m = r[load]
            print(f"| {load} | {server} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
    print()
    for server, r in results.items():
        print(f"- {server}: RSS {r['rss']:.0f} MiB (all its processes)")
    if "cairn" in results:
        added = results["cairn"]["1 row, 1 client"]["p50"] - predict["predict_1"]
        print(f"- cairn's added latency at p50, 1 row, 1 client: {added:.2f} ms over predict (wrk's own time included)")
        for other in ("mlserver", "mlserver-batching", "mlflow"):
            if other in results:
                for load in ("1 row, 1 client", "1 row, 16 clients", "1,000 rows, 1 client"):
                    ratio = results["cairn"][load]["rps"] / results[other][load]["rps"]
                    print(f"- cairn / {other}, {load}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
