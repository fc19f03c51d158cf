#!/usr/bin/env python3
"""Side-by-side benchmark of `cairn serve`, MLServer (mlserver-sklearn) and `mlflow models
serve` on the same scikit-learn models, driven by the same load tool (`wrk`).

    python3 bench/serve.py [--duration 10] [--python .venv-bench-serve/bin/python]
                           [--mlflow-python .venv-bench-mlflow/bin/python]

Models: a logistic regression and a 100-tree random forest (scikit-learn, 10 features,
trained with fixed seeds in each tool's environment). Cairn serves them as ONNX (skl2onnx,
without ZipMap) with its prediction log on (the default); MLServer loads the joblib files;
MLflow the `mlflow.sklearn` models. Each server runs alone with its default settings. Each
model gets one-row requests from 1 and from 16 concurrent connections for --duration
seconds (KServe v2 JSON for Cairn and MLServer, `{"inputs": [[...]]}` for MLflow).
Reported: requests/s, p50 and p99 latency (wrk --latency), and the server's resident memory
(all its processes) with both models loaded, after the load.

    python3 bench/serve.py --monitoring 5 [--duration 6] [--python ...]

measures only Cairn, the 100-tree forest from 16 connections, with its prediction log and
per-minute profiles (the default), with `--no-profile` and with `--no-log`, one round of
each after another, the given number of rounds; reports medians and the cost of profiling.
(Any environment with scikit-learn, skl2onnx and onnxruntime will do for this mode, e.g. the
quickstart's target/quickstart-venv.)

Needs a release build (cargo build --release), `wrk` (apt-get install wrk), and:
    python3 -m venv .venv-bench-serve
    .venv-bench-serve/bin/pip install mlserver mlserver-sklearn 'uvloop<0.22' scikit-learn skl2onnx onnxruntime==1.32.0
(mlserver 1.7.1's inference workers fail to start with uvloop 0.22 or newer)
    python3 -m venv .venv-bench-mlflow
    .venv-bench-mlflow/bin/pip install mlflow==3.6.0 'sqlalchemy<2.1' 'fastapi==0.115.14'
(mlflow 3.6.0's scoring server does not start with newer FastAPI releases). Prints a Markdown table. Not a test: machines are noisy, so compare medians and ratios from
the same run.
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "target", "release", "cairn")
WORK = os.path.join(ROOT, "bench", "work-serve")
FEATURES = 10
ROW = [0.5, -1.2, 0.3, 2.1, -0.7, 0.0, 1.1, -0.4, 0.9, -2.0]

TRAIN = r'''
import sys, numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
out, kind = sys.argv[1], sys.argv[2]
X, y = make_classification(n_samples=5000, n_features=10, random_state=0)
X = X.astype(np.float32)
models = {
    "logreg": LogisticRegression(max_iter=1000).fit(X, y),
    "forest": RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0).fit(X, y),
}
import os
for name, model in models.items():
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    if kind == "serve":
        import joblib
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        joblib.dump(model, os.path.join(d, "model.joblib"))
        onnx = to_onnx(model, initial_types=[("features", FloatTensorType([None, 10]))],
                       options={id(model): {"zipmap": False}}, target_opset=15)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(onnx.SerializeToString())
    else:
        import mlflow.sklearn
        shutil_target = os.path.join(d, "mlflow")
        import shutil; shutil.rmtree(shutil_target, ignore_errors=True)
        mlflow.sklearn.save_model(model, shutil_target)
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.3)
    raise SystemExit(f"not ready: {url}")


def tree_rss_mib(pid):
    """Resident memory of a process and all its descendants, in MiB."""
    pids, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        try:
            children = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        for c in map(int, children):
            if c not in pids:
                pids.add(c)
                frontier.append(c)
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def wrk(url, body, connections, duration):
    script = os.path.join(WORK, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write("wrk.body = [==[" + body + "]==]\n")
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses\n{out}")
    return {"rps": rps, "p50": pct(50), "p99": pct(99)}


def check(url, body):
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def bench_server(name, start, urls, duration):
    proc, ready_url = start()
    try:
        wait_ready(ready_url)
        results = {}
        for model, (url, body) in urls.items():
            check(url, body)
            for c in (1, 16):
                results[(model, c)] = wrk(url, body, c, duration)
                print(f"  {name} {model} c={c}: {results[(model, c)]}", file=sys.stderr)
        results["rss"] = tree_rss_mib(proc.pid)
        return results
    finally:
        stop(proc)


def stop(proc):
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--python", default=os.path.join(ROOT, ".venv-bench-serve/bin/python"))
    ap.add_argument("--mlflow-python", default=os.path.join(ROOT, ".venv-bench-mlflow/bin/python"))
    ap.add_argument("--only", default="cairn,mlserver,mlflow")
    ap.add_argument("--monitoring", type=int, default=0, metavar="ROUNDS",
                    help="measure the cost of monitoring instead (see the module docs)")
    args = ap.parse_args()
    if args.monitoring:
        args.only = "cairn"
    only = args.only.split(",")
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    train = os.path.join(WORK, "train.py")
    open(train, "w").write(TRAIN)
    subprocess.run([args.python, train, WORK, "serve"], check=True)
    if "mlflow" in only:
        subprocess.run([args.mlflow_python, train, WORK, "mlflow"], check=True)
    kserve_body = lambda dtype: json.dumps(
        {"inputs": [{"name": "features" if dtype == "FP32" else "input-0", "shape": [1, FEATURES], "datatype": dtype, "data": ROW}]})
    results = {}

    if "cairn" in only:
        repo = os.path.join(WORK, "cairn")
        os.makedirs(repo)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run([CAIRN, "init"], cwd=repo, check=True, capture_output=True)
        for model in ("logreg", "forest"):
            shutil.copy(os.path.join(WORK, model, "model.onnx"), os.path.join(repo, f"{model}.onnx"))
            subprocess.run([CAIRN, "model", "register", model, f"{model}.onnx"], cwd=repo, check=True, capture_output=True)
        lib = subprocess.run([args.python, "-c", "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
        port = free_port()
        if args.monitoring:
            return monitoring(repo, lib, env, port, kserve_body("FP32"), args)
        def start_cairn():
            p = subprocess.Popen([CAIRN, "serve", "logreg", "forest", "--port", str(port), "--grpc-port", "0"], cwd=repo,
                                 env={**env, "CAIRN_ONNXRUNTIME": lib}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return p, f"http://127.0.0.1:{port}/v2/health/ready"
        urls = {m: (f"http://127.0.0.1:{port}/v2/models/{m}/infer", kserve_body("FP32")) for m in ("logreg", "forest")}
        results["cairn"] = bench_server("cairn", start_cairn, urls, args.duration)

    if "mlserver" in only:
        models_dir = os.path.join(WORK, "mlserver")
        port, grpc, metrics = free_port(), free_port(), free_port()
        for model in ("logreg", "forest"):
            d = os.path.join(models_dir, model)
            os.makedirs(d)
            shutil.copy(os.path.join(WORK, model, "model.joblib"), d)
            json.dump({"name": model, "implementation": "mlserver_sklearn.SKLearnModel",
                       "parameters": {"uri": "./model.joblib", "version": "v1"}}, open(os.path.join(d, "model-settings.json"), "w"))
        json.dump({"http_port": port, "grpc_port": grpc, "metrics_port": metrics}, open(os.path.join(models_dir, "settings.json"), "w"))
        mlserver = os.path.join(os.path.dirname(args.python), "mlserver")
        def start_mlserver():
            p = subprocess.Popen([mlserver, "start", models_dir], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return p, f"http://127.0.0.1:{port}/v2/health/ready"
        urls = {m: (f"http://127.0.0.1:{port}/v2/models/{m}/infer", kserve_body("FP64")) for m in ("logreg", "forest")}
        results["mlserver"] = bench_server("mlserver", start_mlserver, urls, args.duration)

    if "mlflow" in only:
        # `mlflow models serve` serves one model per server: two servers, measured one at a time.
        mlflow = os.path.join(os.path.dirname(args.mlflow_python), "mlflow")
        combined, rss = {}, 0.0
        for model in ("logreg", "forest"):
            port = free_port()
            def start_mlflow(model=model, port=port):
                p = subprocess.Popen([mlflow, "models", "serve", "-m", os.path.join(WORK, model, "mlflow"), "-p", str(port),
                                      "--env-manager", "local"],
                                     env={**env, "PATH": os.path.dirname(args.mlflow_python) + ":" + env["PATH"]}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return p, f"http://127.0.0.1:{port}/ping"
            urls = {model: (f"http://127.0.0.1:{port}/invocations", json.dumps({"inputs": [ROW]}))}
            r = bench_server("mlflow", start_mlflow, urls, args.duration)
            rss += r.pop("rss")
            combined.update(r)
        combined["rss"] = rss
        results["mlflow"] = combined

    print(f"\nOne-row requests for {args.duration} s each (wrk); latency in ms; RSS with both models loaded.\n")
    print("| model | clients | server | requests/s | p50 | p99 |")
    print("|---|---:|---|---:|---:|---:|")
    for model in ("logreg", "forest"):
        for c in (1, 16):
            for server, r in results.items():
                m = r[(model, c)]
                print(f"| {model} | {c} | {server} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
    print()
    for server, r in results.items():
        print(f"- {server}: RSS {r['rss']:.0f} MiB")
    if "cairn" in results:
        for other in ("mlserver", "mlflow"):
            if other in results:
                for model in ("logreg", "forest"):
                    for c in (1, 16):
                        ratio = results["cairn"][(model, c)]["rps"] / results[other][(model, c)]["rps"]
                        print(f"- cairn / {other}, {model}, {c} clients: {ratio:.1f}x")


def monitoring(repo, lib, env, port, body, args):
    import statistics
    configs = [("log and per-minute profiles (default)", []), ("log, no profiles (`--no-profile`)", ["--no-profile"]),
               ("neither (`--no-log`)", ["--no-log"])]
    url = f"http://127.0.0.1:{port}/v2/models/forest/infer"
    rps = {name: [] for name, _ in configs}
    for round_ in range(args.monitoring):
        for name, flags in configs:
            def start(flags=flags):
                p = subprocess.Popen([CAIRN, "serve", "logreg", "forest", "--port", str(port), "--grpc-port", "0", *flags], cwd=repo,
                                     env={**env, "CAIRN_ONNXRUNTIME": lib}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return p, f"http://127.0.0.1:{port}/v2/health/ready"
            proc, ready = start()
            try:
                wait_ready(ready)
                check(url, body)
                r = wrk(url, body, 16, args.duration)
                rps[name].append(r["rps"])
                print(f"  round {round_ + 1} {name}: {r['rps']:,.0f} requests/s", file=sys.stderr)
            finally:
                stop(proc)
    print(f"\nThe forest, one-row KServe requests, 16 connections, {args.duration} s per round, {args.monitoring} rounds.\n")
    print("| configuration | requests/s (median) | rounds |")
    print("|---|---:|---|")
    for name, _ in configs:
        print(f"| {name} | {statistics.median(rps[name]):,.0f} | {', '.join(f'{x:,.0f}' for x in rps[name])} |")
    on, off = statistics.median(rps[configs[0][0]]), statistics.median(rps[configs[1][0]])
    print(f"\nProfiles cost {100 * (1 - on / off):.1f}% of throughput (medians).")


if __name__ == "__main__":
    main()
