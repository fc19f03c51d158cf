#!/usr/bin/env python3
"""The web UI against MLflow's (issue 23), on the same data, side by side in one run.

    python3 bench/ui.py [--runs 100000] [--steps 10000] [--stages 2000] [--repeat 7]
                        [--mlflow .venv-bench-mlflow/bin/mlflow]

1. Runs table: --runs runs (5 params, 5 metrics each) written straight into each tool's
   SQLite store; the first page (100 runs, newest first) from `cairn ui`'s `/api/v1/runs`
   and from `mlflow server`'s `ajax-api/2.0/mlflow/runs/search` (what MLflow's runs page
   asks), then the same page filtered (`metrics.acc > 0.9`) and sorted by a metric.
   Server-side medians of --repeat.
2. In Chromium (playwright-core): Cairn's runs page until its first rows show; a comparison
   of 10 runs x 5 metrics x --steps steps until the five charts are drawn; a pipeline of
   --stages stages until every node is drawn; and each page's script and style bytes.
3. MLflow's UI: the bytes of script and style its runs page loads.

Needs a release build (cargo build --release), the mlflow venv from bench/tracking.py,
Debian's chromium and playwright-core (`.ci/run` installs it under target/test-tools/browser).
Prints a Markdown table. Not a test: compare medians and ratios from the same run.
"""
import argparse, json, os, random, shutil, socket, sqlite3, statistics, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAIRN = os.path.join(ROOT, "target", "release", "cairn")
BROWSER_TOOLS = os.path.join(ROOT, "target", "test-tools", "browser")
PARAMS = ["lr", "depth", "batch", "optimizer", "seed"]
METRICS = ["acc", "loss", "f1", "auc", "val_loss"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_values(i):
    rnd = random.Random(i)
    params = [str(rnd.choice([0.1, 0.01, 0.001])), str(rnd.randint(2, 12)), str(rnd.choice([32, 64, 128])),
              rnd.choice(["adam", "sgd"]), str(i)]
    metrics = [rnd.random(), rnd.random() * 2, rnd.random(), rnd.random(), rnd.random() * 2]
    return params, metrics


def populate_cairn(db, runs, steps):
    """--runs runs in Cairn's schema; the 10 newest get --steps steps of every metric."""
    con = sqlite3.connect(db)
    now = int(time.time() * 1000)
    rows, params, latest, history = [], [], [], []
    for i in range(runs):
        run_id = "%032x" % (i + 1)
        t = now - (runs - i) * 1000
        rows.append((run_id, 0, f"run-{i}", None, "FINISHED", t, t + 500, "bench", None, 0, "bench", "", "active"))
        p, m = run_values(i)
        params += [(run_id, k, v) for k, v in zip(PARAMS, p)]
        latest += [(run_id, k, v, t, 0, 0) for k, v in zip(METRICS, m)]
        if i >= runs - 10:
            for k, v in zip(METRICS, m):
                history += [(run_id, k, v + (s % 97) / 1000.0, t + s, s, 0) for s in range(steps)]
    con.executemany("INSERT INTO runs (run_id, experiment_id, name, parent_run_id, status, start_time, end_time, user_id, "
                    "git_commit, git_dirty, source, artifact_uri, lifecycle_stage) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO params (run_id, key, value) VALUES (?,?,?)", params)
    con.executemany("INSERT INTO latest_metrics (run_id, key, value, timestamp, step, is_nan) VALUES (?,?,?,?,?,?)", latest)
    con.executemany("INSERT INTO metrics (run_id, key, value, timestamp, step, is_nan) VALUES (?,?,?,?,?,?)", history)
    con.commit()
    con.close()
    return ["%032x" % (i + 1) for i in range(runs - 10, runs)]


def populate_mlflow(db, runs):
    con = sqlite3.connect(db)
    now = int(time.time() * 1000)
    rows, params, latest = [], [], []
    for i in range(runs):
        run_id = "%032x" % (i + 1)
        t = now - (runs - i) * 1000
        rows.append((run_id, f"run-{i}", "LOCAL", "", "", "bench", "FINISHED", t, t + 500, "", "active", f"mlflow-artifacts:/0/{run_id}/artifacts", 0))
        p, m = run_values(i)
        params += [(k, v, run_id) for k, v in zip(PARAMS, p)]
        latest += [(k, v, t, 0, 0, run_id) for k, v in zip(METRICS, m)]
    con.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, "
                    "end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    con.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params)
    con.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest)
    con.executemany("INSERT INTO metrics (key, value, timestamp, step, is_nan, run_uuid) VALUES (?,?,?,?,?,?)", latest)
    con.commit()
    con.close()


def wait_http(url, limit=120):
    start = time.time()
    while time.time() - start < limit:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {limit} s")


TIMEOUT = 120


def timed(fn, repeat):
    """Median milliseconds of `repeat` calls; infinity if a call takes over TIMEOUT seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            fn()
        except (TimeoutError, OSError) as e:
            print(f"  (gave up after {time.perf_counter() - start:.0f} s: {e})", file=sys.stderr)
            return float("inf")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ms(value):
    return f"> {TIMEOUT} s (timed out)" if value == float("inf") else f"{value:.0f} ms"


def get(url):
    return urllib.request.urlopen(url, timeout=TIMEOUT).read()


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    return urllib.request.urlopen(req, timeout=TIMEOUT).read()


def start_cairn_ui(repo):
    proc = subprocess.Popen([CAIRN, "ui", "--port", "0", "-q"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    wait_http(url + "/api/v1/whoami")
    return proc, url


def init_repo(path):
    os.makedirs(path)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run([CAIRN, "init", "-q"], cwd=path, check=True)
    subprocess.run([CAIRN, "exp", "show", "-q"], cwd=path, check=True, stdout=subprocess.DEVNULL)


def partitioned_repo(path):
    """One stage partitioned by the hour since 2015: about 100,000 partitions."""
    init_repo(path)
    open(os.path.join(path, "cairn.yaml"), "w").write(
        "stages:\n  ingest:\n    partitions:\n      hour: {hourly: {start: 2015-01-01T00, end: 2026-06-01T00}}\n"
        "    cmd: mkdir -p ${out} && echo ${partition} > ${out}/${partition}.txt\n    outs: [data/hours]\n")


def pipeline_repo(path, stages):
    """`stages` stages in columns of 100, each reading one output of the column before."""
    init_repo(path)
    os.makedirs(os.path.join(path, "data"))
    open(os.path.join(path, "data", "in.txt"), "w").write("x\n")
    lines = ["stages:"]
    for i in range(stages):
        dep = "data/in.txt" if i < 100 else f"out/s{i - 100 + (i * 7) % 100 - (i - 100) % 100}.txt"
        lines += [f"  s{i}:", f"    cmd: cp {dep} out/s{i}.txt", f"    deps: [{dep}]", f"    outs: [out/s{i}.txt]"]
    open(os.path.join(path, "cairn.yaml"), "w").write("\n".join(lines) + "\n")


BROWSER = r'''
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs'; import { tmpdir } from 'node:os'; import { join } from 'node:path';
const [runsUrl, compareIds, graphUrl, stages, repeat, heatUrl] = process.argv.slice(2);
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'bench-ui-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1360, height: 860 } });
const page = ctx.pages()[0] || await ctx.newPage();
page.setDefaultTimeout(120000);
let bytes = 0;
page.on('response', async (r) => { const t = r.headers()['content-type'] || ''; if (/javascript|css|html/.test(t)) { try { bytes += (await r.body()).length; } catch (_) {} } });
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function time(url, ready, arg) {
  const xs = [];
  for (let i = 0; i < +repeat; i++) {
    await page.goto('about:blank');
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction(ready, arg);
    xs.push(Date.now() - t0);
  }
  return median(xs);
}
const out = {};
bytes = 0;
out.runs_ms = await time(runsUrl + '/#/runs', () => document.querySelectorAll('#runs tbody tr').length > 0);
out.page_bytes = bytes / +repeat;
out.compare_ms = await time(runsUrl + '/#/compare/' + compareIds, () => [...document.querySelectorAll('img.chart-img')].filter((i) => i.complete && i.naturalWidth > 0).length >= 5);
out.graph_ms = await time(graphUrl + '/#/pipeline', (n) => document.querySelectorAll('[data-stage]').length >= n, +stages);
const heat = [];
for (let i = 0; i < +repeat; i++) {
  await page.goto('about:blank');
  const t0 = Date.now();
  await page.goto(heatUrl + '/#/pipeline');
  await page.click('[data-stage="ingest"]');
  await page.waitForSelector('.heat span');
  heat.push(Date.now() - t0);
}
out.heat_ms = median(heat);
console.log(JSON.stringify(out));
await ctx.close();
'''

MLFLOW_BYTES = r'''
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs'; import { tmpdir } from 'node:os'; import { join } from 'node:path';
const [url] = process.argv.slice(2);
const ctx = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'bench-mlflow-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
const page = ctx.pages()[0] || await ctx.newPage();
let bytes = 0;
page.on('response', async (r) => { const t = r.headers()['content-type'] || ''; if (/javascript|css|html/.test(t)) { try { bytes += (await r.body()).length; } catch (_) {} } });
const t0 = Date.now();
await page.goto(url + '/#/experiments/0', { waitUntil: 'networkidle', timeout: 120000 });
console.log(JSON.stringify({ bytes, networkidle_ms: Date.now() - t0 }));
await ctx.close();
'''


def node(script, args, work):
    path = os.path.join(BROWSER_TOOLS, f"bench-{abs(hash(script))}.mjs")
    open(path, "w").write(script)
    out = subprocess.run(["node", path, *args], capture_output=True, text=True, cwd=work)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100000)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--stages", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--mlflow", default=os.path.join(ROOT, ".venv-bench-mlflow", "bin", "mlflow"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-ui-")
    procs = []
    try:
        repo = os.path.join(work, "runs")
        init_repo(repo)
        ids = populate_cairn(os.path.join(repo, ".cairn", "state", "meta-v1.sqlite"), args.runs, args.steps)
        proc, url = start_cairn_ui(repo)
        procs.append(proc)
        first = f"{url}/api/v1/runs?max_results=100"
        filtered = first + "&filter=metrics.acc%20%3E%200.9"
        by_metric = first + "&order_by=-metrics.acc"
        results = {"cairn": {
            "first page": timed(lambda: get(first), args.repeat),
            "filtered": timed(lambda: get(filtered), args.repeat),
            "sorted by a metric": timed(lambda: get(by_metric), args.repeat),
        }}
        graph = os.path.join(work, "graph")
        pipeline_repo(graph, args.stages)
        gproc, gurl = start_cairn_ui(graph)
        procs.append(gproc)
        results["cairn"]["pipeline API"] = timed(lambda: get(gurl + "/api/v1/pipeline"), 3)
        heat = os.path.join(work, "heat")
        partitioned_repo(heat)
        hproc, hurl = start_cairn_ui(heat)
        procs.append(hproc)
        partitions = json.loads(get(hurl + "/api/v1/pipeline"))["stages"][0]["parts"]
        results["cairn"]["partitions API"] = timed(lambda: get(hurl + "/api/v1/pipeline"), 3)
        browser = node(BROWSER, [url, ",".join(ids), gurl, str(args.stages), "3", hurl], work)
        print("cairn:", json.dumps(results["cairn"]), json.dumps(browser), file=sys.stderr, flush=True)

        mlflow_db = os.path.join(work, "mlflow.db")
        # The server creates its schema and the Default experiment on first start.
        def mlflow_server():
            port = free_port()
            proc = subprocess.Popen([args.mlflow, "server", "--backend-store-uri", f"sqlite:///{mlflow_db}", "--host",
                                     "127.0.0.1", "--port", str(port), "--workers", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/health")
            return proc, f"http://127.0.0.1:{port}"
        first_start, _ = mlflow_server()
        first_start.terminate()
        first_start.wait(30)
        con = sqlite3.connect(mlflow_db)
        if not con.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone():
            con.execute("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage) VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active')")
            con.commit()
        con.close()
        populate_mlflow(mlflow_db, args.runs)
        _, murl = mlflow_server()
        search = murl + "/ajax-api/2.0/mlflow/runs/search"
        body = {"experiment_ids": ["0"], "max_results": 100, "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"}
        results["mlflow"] = {
            "first page": timed(lambda: post(search, body), args.repeat),
            "filtered": timed(lambda: post(search, {**body, "filter": "metrics.acc > 0.9"}), args.repeat),
            "sorted by a metric": timed(lambda: post(search, {**body, "order_by": ["metrics.acc DESC"]}), args.repeat),
        }
        mlflow_page = node(MLFLOW_BYTES, [murl], work)

        print(f"Runs: {args.runs:,} (5 params, 5 metrics each); medians of {args.repeat}.\n")
        print("| server: first page of 100 runs | Cairn `/api/v1/runs` | MLflow `runs/search` | MLflow / Cairn |")
        print("|---|---|---|---|")
        for k in ["first page", "filtered", "sorted by a metric"]:
            c, m = results["cairn"][k], results["mlflow"][k]
            ratio = "—" if m == float("inf") else f"{m / c:.1f}x"
            print(f"| {k} | {ms(c)} | {ms(m)} | {ratio} |")
        print(f"\n| browser (Cairn) | median |\n|---|---|")
        print(f"| runs page: navigation to first rows | {browser['runs_ms']} ms |")
        print(f"| compare 10 runs x 5 metrics x {args.steps:,} steps: to five charts | {browser['compare_ms']} ms |")
        print(f"| {args.stages:,}-stage graph: API | {results['cairn']['pipeline API']:.0f} ms |")
        print(f"| {args.stages:,}-stage graph: navigation to every node drawn | {browser['graph_ms']} ms |")
        print(f"| {partitions['total']:,}-partition heat map: API ({len(partitions['ranges'])} ranges sent) | {results['cairn']['partitions API']:.0f} ms |")
        print(f"| {partitions['total']:,}-partition heat map: navigation to the map drawn | {browser['heat_ms']} ms |")
        print(f"| HTML, script and style of the runs page | {browser['page_bytes'] / 1024:.0f} KiB |")
        print(f"| MLflow's runs page: HTML, script and style | {mlflow_page['bytes'] / 1024:.0f} KiB (network idle after {mlflow_page['networkidle_ms']} ms) |")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
