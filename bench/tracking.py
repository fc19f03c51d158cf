#!/usr/bin/env python3
"""Side-by-side benchmark of `cairn server`, FastTrackML (a Go rewrite of MLflow's tracking
server) and `mlflow server`, each on SQLite, driven by the same `mlflow` client code.

    python3 bench/tracking.py [--points 100000] [--calls 1000] [--runs 10000] [--repeat 3]
                              [--python .venv-bench-mlflow/bin/python]
                              [--fml .venv-bench-fml/bin/fml] [--only cairn,fasttrackml,mlflow]

1. log_batch throughput: --points metric points in batches of 1,000 (MLflow's limit) to one run,
   through the mlflow client; then the same batches as pre-serialized JSON bodies posted with
   `requests`, which leaves out the client's own protobuf/JSON work (about 19 ms per batch
   here, the same for both servers) and so measures the servers.
2. Single log_metric calls: --calls of them, one after another, to one run.
3. search_runs over --runs runs (each with one param and one metric), paging through every
   match of `metrics.acc > 0.5` with max_results 1000; median of --repeat. Then the same
   pages as raw requests with `requests`, which leaves out the client's parsing of the runs
   into its entities.
4. `cairn exp show` over the same --runs runs (text table of all of them); median of --repeat.

Needs a release build (cargo build --release), a Python with the mlflow server, and
FastTrackML's `fml`:
    python3 -m venv .venv-bench-mlflow
    .venv-bench-mlflow/bin/pip install mlflow==3.6.0 'sqlalchemy<2.1'
    python3 -m venv .venv-bench-fml && .venv-bench-fml/bin/pip install fasttrackml
(mlflow 3.6.0's server does not start with SQLAlchemy 2.1, which pip picks otherwise). Prints a Markdown table. Not a test: machines are noisy, so compare
medians and ratios from the same run.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "target", "release", "cairn")

# The client side, run in the mlflow venv; prints JSON timings.
CLIENT = r'''
import json, sys, time, concurrent.futures
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
mode, points, calls, runs, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
client = MlflowClient()
out = {}
if mode == "log":
    run = client.create_run("0")
    rid = run.info.run_id
    now = int(time.time() * 1000)
    batches = [[Metric("loss", 1.0 / (i + 1), now, i) for i in range(b, min(b + 1000, points))] for b in range(0, points, 1000)]
    start = time.perf_counter()
    for batch in batches:
        client.log_batch(rid, metrics=batch)
    out["batch_seconds"] = time.perf_counter() - start
    assert len(client.get_metric_history(rid, "loss")) == points
    # The same batches as pre-serialized request bodies: the server's share alone.
    import requests
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.proto_json_utils import message_to_json
    bodies = [message_to_json(LogBatch(run_id=rid, metrics=[m.to_proto() for m in b])).replace('"loss"', '"raw"') for b in batches]
    session = requests.Session()
    url = client.tracking_uri + "/api/2.0/mlflow/runs/log-batch"
    start = time.perf_counter()
    for body in bodies:
        session.post(url, data=body, headers={"Content-Type": "application/json"}).raise_for_status()
    out["raw_batch_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(calls):
        client.log_metric(rid, "single", float(i), step=i)
    out["single_seconds"] = time.perf_counter() - start
elif mode == "populate":
    def make(i):
        r = client.create_run("0")
        client.log_batch(r.info.run_id, metrics=[Metric("acc", (i % 100) / 100, int(time.time() * 1000), 0)], params=[Param("lr", str(i % 7))])
        client.set_terminated(r.info.run_id)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(runs)))
elif mode == "search":
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        found, token = 0, None
        while True:
            page = client.search_runs(["0"], "metrics.acc > 0.5", max_results=1000, page_token=token)
            found += len(page)
            token = page.token
            if not token:
                break
        times.append(time.perf_counter() - start)
    out["search_seconds"] = sorted(times)[len(times) // 2]
    out["found"] = found
    # The same pages as raw requests: the server's share, without the client's parsing.
    import requests
    session = requests.Session()
    url = client.tracking_uri + "/api/2.0/mlflow/runs/search"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        token = None
        while True:
            body = {"experiment_ids": ["0"], "filter": "metrics.acc > 0.5", "max_results": 1000}
            if token:
                body["page_token"] = token
            response = session.post(url, json=body)
            response.raise_for_status()
            token = json.loads(response.content).get("next_page_token")
            if not token:
                break
        times.append(time.perf_counter() - start)
    out["raw_search_seconds"] = sorted(times)[len(times) // 2]
print(json.dumps(out))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, timeout=120):
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/get?experiment_id=0", timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    sys.exit(f"server at {url} did not come up")


def client(python, url, *args):
    env = dict(os.environ, MLFLOW_TRACKING_URI=url)
    env.pop("RUST_BACKTRACE", None)
    proc = subprocess.run([python, "-c", CLIENT, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        sys.exit(f"client failed against {url}:\n{proc.stderr.decode()[-3000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def start_cairn(work):
    repo = os.path.join(work, "cairn")
    os.makedirs(repo)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([CAIRN, "init"], cwd=repo, check=True, stdout=subprocess.DEVNULL)
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    port = free_port()
    proc = subprocess.Popen([CAIRN, "server", "--port", str(port)], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}", repo


def start_mlflow(work, python):
    home = os.path.join(work, "mlflow")
    os.makedirs(home)
    port = free_port()
    mlflow = os.path.join(os.path.dirname(python), "mlflow")
    proc = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{home}/mlflow.db",
                             "--artifacts-destination", f"{home}/artifacts"],
                            cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def start_fml(work, fml):
    home = os.path.join(work, "fasttrackml")
    os.makedirs(home)
    port = free_port()
    proc = subprocess.Popen([fml, "server", "--listen-address", f"127.0.0.1:{port}",
                             "--database-uri", f"sqlite://{home}/fml.db", "--default-artifact-root", f"{home}/artifacts",
                             "--log-level", "warning"],
                            cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc):
    try:
        os.killpg(proc.pid, 15)
    except Exception:
        proc.terminate()
    proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python", default=os.path.join(ROOT, ".venv-bench-mlflow", "bin", "python"))
    parser.add_argument("--fml", default=os.path.join(ROOT, ".venv-bench-fml", "bin", "fml"))
    parser.add_argument("--only", default="cairn,fasttrackml,mlflow")
    args = parser.parse_args()
    only = args.only.split(",")
    work = tempfile.mkdtemp(prefix="cairn-tracking-bench-")
    results, procs, cairn_repo = {}, [], None
    try:
        servers = []
        if "cairn" in only:
            proc, url, cairn_repo = start_cairn(work)
            servers.append(("cairn", proc, url))
        if "fasttrackml" in only:
            proc, url = start_fml(work, args.fml)
            servers.append(("fasttrackml", proc, url))
        if "mlflow" in only:
            proc, url = start_mlflow(work, args.python)
            servers.append(("mlflow", proc, url))
        procs = [p for _, p, _ in servers]
        for name, _, url in servers:
            wait_for(url)
        for name, _, url in servers:
            r = client(args.python, url, "log", args.points, args.calls, args.runs, args.repeat)
            client(args.python, url, "populate", args.points, args.calls, args.runs, args.repeat)
            r.update(client(args.python, url, "search", args.points, args.calls, args.runs, args.repeat))
            results[name] = r
            print(f"{name}: {r}", file=sys.stderr)
        if cairn_repo:
            env = dict(os.environ)
            env.pop("RUST_BACKTRACE", None)
            shows = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                subprocess.run([CAIRN, "exp", "show", "-n", str(args.runs + 10)], cwd=cairn_repo, env=env,
                               stdout=subprocess.DEVNULL, check=True)
                shows.append(time.perf_counter() - start)
            results["cairn"]["exp_show_seconds"] = statistics.median(shows)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    names = list(results)
    rate = lambda n, s: n / s
    rows = [
        (f"log_batch, {args.points:,} points (client)", lambda r: f"{rate(args.points, r['batch_seconds']):,.0f} points/s",
         lambda r: 1 / r["batch_seconds"]),
        (f"log_batch, same {args.points:,} points as pre-serialized bodies (server only)",
         lambda r: f"{rate(args.points, r['raw_batch_seconds']):,.0f} points/s", lambda r: 1 / r["raw_batch_seconds"]),
        (f"log_metric, {args.calls:,} single calls", lambda r: f"{rate(args.calls, r['single_seconds']):,.0f} calls/s",
         lambda r: 1 / r["single_seconds"]),
        (f"search_runs over {args.runs:,} runs (matches paged by 1,000)", lambda r: f"{r['search_seconds']:.3f} s ({r['found']:,})",
         lambda r: 1 / r["search_seconds"]),
        ("the same search as raw requests (server only)", lambda r: f"{r['raw_search_seconds']:.3f} s",
         lambda r: 1 / r["raw_search_seconds"]),
    ]
    others = [n for n in names if n != "cairn"]
    print("| measurement | " + " | ".join(names) + "".join(f" | cairn / {o}" for o in others if "cairn" in names) + " |")
    print("|---" * (1 + len(names) + (len(others) if "cairn" in names else 0)) + "|")
    for label, show, speed in rows:
        cells = [show(results[n]) for n in names]
        ratios = [f"{speed(results['cairn']) / speed(results[o]):.1f}×" for o in others] if "cairn" in names else []
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
    if "cairn" in results:
        print(f"\n`cairn exp show` over the same {args.runs:,} runs: {results['cairn']['exp_show_seconds']:.2f} s")


if __name__ == "__main__":
    main()
