#!/usr/bin/env python3
"""Side-by-side benchmark of inference protocols: Cairn's HTTP JSON (Open Inference Protocol),
HTTP with the binary tensor data extension, and gRPC, against MLServer's REST and gRPC, on the
same 100-tree random forest, all driven by the same load generator (bench/loadgen).

    python3 bench/protocols.py [--rounds 3] [--duration 5] [--python .venv-bench-serve/bin/python]

Needs a release build (cargo build --release), the load generator
(cargo build --release --manifest-path bench/loadgen/Cargo.toml), and an environment with
MLServer (see bench/serve.py's docs: .venv-bench-serve).

The forest (scikit-learn, 10 features, 100 trees of depth 10, fixed seeds) is served by Cairn
as ONNX (skl2onnx, no ZipMap; prediction log on, the default) and by MLServer from joblib
(mlserver-sklearn; FP64 inputs, which it requires). Workloads: one-row requests from 1 and
16 connections, and 10,000-row requests from 1 connection. Each server runs alone; every
workload runs --rounds times, interleaved, and the table shows medians of requests/s and of
p50/p99 latency. Not a test: machines are noisy, so compare medians and ratios from one run.
"""
import argparse, json, os, shutil, statistics, struct, subprocess, sys

from serve import free_port, wait_ready  # bench/serve.py, beside this script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "target", "release", "cairn")
LOADGEN = os.path.join(ROOT, "bench", "loadgen", "target", "release", "cairn-loadgen")
WORK = os.path.join(ROOT, "bench", "work-protocols")
FEATURES = 10

TRAIN = r'''
import os, sys, joblib, numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
out = sys.argv[1]
X, y = make_classification(n_samples=5000, n_features=10, random_state=0)
model = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(X.astype(np.float32), y)
joblib.dump(model, os.path.join(out, "model.joblib"))
onnx = to_onnx(model, initial_types=[("features", FloatTensorType([None, 10]))],
               options={id(model): {"zipmap": False}}, target_opset=15)
open(os.path.join(out, "forest.onnx"), "wb").write(onnx.SerializeToString())
'''


def values(rows):
    """The loadgen's deterministic values: x_k = sin(k)."""
    import math
    return [math.sin(k) for k in range(rows * FEATURES)]


def json_body(rows, datatype):
    data = values(rows)
    if datatype == "FP32":
        data = [struct.unpack("<f", struct.pack("<f", x))[0] for x in data]
    return json.dumps({"inputs": [{"name": "features" if datatype == "FP32" else "input-0", "shape": [rows, FEATURES],
                                   "datatype": datatype, "data": data}]}).encode()


def binary_body(rows):
    raw = struct.pack(f"<{rows * FEATURES}f", *values(rows))
    header = json.dumps({"inputs": [{"name": "features", "shape": [rows, FEATURES], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, len(header)


def loadgen(args, connections, duration):
    out = subprocess.run([LOADGEN, *args, "-c", str(connections), "-d", str(duration)],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["errors"] or not result["requests"]:
        raise SystemExit(f"{args}: {result}")
    return result


def workloads(name, http_port, grpc_port, model, datatype, binary):
    """(label, rows, connections, loadgen args) for one server."""
    out = []
    infer = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
    for rows in (1, 10000):
        body = os.path.join(WORK, f"{name}-{rows}.json")
        open(body, "wb").write(json_body(rows, datatype))
        modes = [("HTTP JSON", ["http", infer, body, "--header", "Content-Type: application/json"])]
        if binary:
            data, header = binary_body(rows)
            path = os.path.join(WORK, f"{name}-{rows}.bin")
            open(path, "wb").write(data)
            modes.append(("HTTP binary", ["http", infer, path, "--header", f"Inference-Header-Content-Length: {header}"]))
        modes.append(("gRPC", ["grpc", f"127.0.0.1:{grpc_port}", model, str(rows), str(FEATURES), datatype]))
        for label, args in modes:
            for connections in ((1, 16) if rows == 1 else (1,)):
                out.append((label, rows, connections, args))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv-bench-serve/bin/python"))
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    open(os.path.join(WORK, "train.py"), "w").write(TRAIN)
    subprocess.run([args.python, os.path.join(WORK, "train.py"), WORK], check=True)

    # Cairn.
    repo = os.path.join(WORK, "cairn")
    os.makedirs(repo)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([CAIRN, "init"], cwd=repo, check=True, capture_output=True)
    shutil.copy(os.path.join(WORK, "forest.onnx"), repo)
    subprocess.run([CAIRN, "model", "register", "forest", "forest.onnx"], cwd=repo, check=True, capture_output=True)
    lib = subprocess.run([args.python, "-c", "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    cairn_http, cairn_grpc = free_port(), free_port()

    def start_cairn():
        p = subprocess.Popen([CAIRN, "serve", "forest", "--port", str(cairn_http), "--grpc-port", str(cairn_grpc)],
                             cwd=repo, env={**env, "CAIRN_ONNXRUNTIME": lib}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{cairn_http}/v2/health/ready")
        return p

    # MLServer.
    models = os.path.join(WORK, "mlserver")
    os.makedirs(os.path.join(models, "forest"))
    shutil.copy(os.path.join(WORK, "model.joblib"), os.path.join(models, "forest"))
    json.dump({"name": "forest", "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib", "version": "v1"}},
              open(os.path.join(models, "forest", "model-settings.json"), "w"))
    ml_http, ml_grpc, ml_metrics = free_port(), free_port(), free_port()
    json.dump({"http_port": ml_http, "grpc_port": ml_grpc, "metrics_port": ml_metrics},
              open(os.path.join(models, "settings.json"), "w"))
    mlserver = os.path.join(os.path.dirname(args.python), "mlserver")

    def start_mlserver():
        p = subprocess.Popen([mlserver, "start", models], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(f"http://127.0.0.1:{ml_http}/v2/health/ready")
        return p

    servers = [
        ("cairn", start_cairn, workloads("cairn", cairn_http, cairn_grpc, "forest", "FP32", True)),
        ("mlserver", start_mlserver, workloads("mlserver", ml_http, ml_grpc, "forest", "FP64", False)),
    ]
    results = {}
    for round_ in range(args.rounds):
        for name, start, loads in servers:
            proc = start()
            try:
                for label, rows, connections, load in loads:
                    duration = args.duration if rows == 1 else max(args.duration, 5)
                    r = loadgen(load, connections, duration)
                    results.setdefault((name, label, rows, connections), []).append(r)
                    print(f"  round {round_ + 1} {name} {label} rows={rows} c={connections}: {r}", file=sys.stderr)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print("| server | protocol | rows | clients | requests/s | p50 ms | p99 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (name, label, rows, connections), rs in results.items():
        print(f"| {name} | {label} | {rows} | {connections} | {med(rs, 'rps'):,.0f} | {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} |")
    rps = lambda *key: med(results[key], "rps")
    print()
    for c in (1, 16):
        print(f"- 1 row, {c} client(s): Cairn gRPC / Cairn HTTP JSON = {rps('cairn', 'gRPC', 1, c) / rps('cairn', 'HTTP JSON', 1, c):.2f}x; "
              f"HTTP binary / HTTP JSON = {rps('cairn', 'HTTP binary', 1, c) / rps('cairn', 'HTTP JSON', 1, c):.2f}x; "
              f"vs MLServer: REST {rps('cairn', 'HTTP JSON', 1, c) / rps('mlserver', 'HTTP JSON', 1, c):.1f}x, "
              f"gRPC {rps('cairn', 'gRPC', 1, c) / rps('mlserver', 'gRPC', 1, c):.1f}x")
    print(f"- 10,000 rows: Cairn HTTP binary / HTTP JSON = {rps('cairn', 'HTTP binary', 10000, 1) / rps('cairn', 'HTTP JSON', 10000, 1):.2f}x, "
          f"gRPC / HTTP JSON = {rps('cairn', 'gRPC', 10000, 1) / rps('cairn', 'HTTP JSON', 10000, 1):.2f}x; "
          f"vs MLServer: REST {rps('cairn', 'HTTP JSON', 10000, 1) / rps('mlserver', 'HTTP JSON', 10000, 1):.1f}x, "
          f"gRPC {rps('cairn', 'gRPC', 10000, 1) / rps('mlserver', 'gRPC', 10000, 1):.1f}x")


if __name__ == "__main__":
    main()
