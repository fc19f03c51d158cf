#!/usr/bin/env bash
# Cairn quickstart: version a dataset next to code, change it, inspect, go back in time, share
# it through a remote, run a pipeline that never redoes work, then the whole model lifecycle:
# train a churn model in the pipeline, sweep a parameter, register, approve and serve it, call
# it over three protocols, send traffic that drifts, get an alert (in `cairn alerts` and on a
# webhook), export the production data with its true labels, retrain on it, canary the new
# version, promote it (or roll back), and trace a prediction back to its data and commit.
# Runs in a throwaway Git repository under a temporary directory; prints every step.
# CAIRN_BIN=path/to/cairn uses that binary instead of building a release one.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -n "${CAIRN_BIN:-}" ]; then
  cairn="$CAIRN_BIN"
else
  echo "### building cairn (release)"
  cargo build --release --quiet --manifest-path "$here/Cargo.toml"
  cairn="$here/target/release/cairn"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/repo"
cd "$work/repo"
export GIT_AUTHOR_NAME=quickstart GIT_AUTHOR_EMAIL=quickstart@example.com
export GIT_COMMITTER_NAME=quickstart GIT_COMMITTER_EMAIL=quickstart@example.com

step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a Git repository with Cairn in $work/repo"
run git init -q -b main
run "$cairn" init

step "generate a dataset: 200 CSV shards and a label file"
mkdir -p data/raw
for i in $(seq -w 1 200); do
  awk -v seed="$i" 'BEGIN { srand(seed); print "id,x,y"; for (r = 0; r < 50; r++) printf "%d,%.4f,%.4f\n", r, rand(), rand() }' > "data/raw/part-$i.csv"
done
printf 'id,label\n1,cat\n2,dog\n' > data/labels.csv

step "version it: the data goes to the cache, small pointers go to Git"
run "$cairn" add data/raw data/labels.csv
run cat data/raw.cairn
run git add data/raw.cairn data/labels.csv.cairn data/.gitignore .cairn/config .cairn/.gitignore
run git commit -q -m "dataset v1"
run git tag v1

step "change the data: edit one shard, add one, delete one"
echo "50,0.5,0.5" >> data/raw/part-001.csv
echo "id,x,y" > data/raw/part-201.csv
rm data/raw/part-002.csv
run "$cairn" status
run "$cairn" diff

step "record the new version"
run "$cairn" commit
run git commit -q -am "dataset v2"
run "$cairn" diff v1 HEAD

step "go back to v1: Git moves the pointers, Cairn restores the data"
run git checkout -q v1
run "$cairn" checkout
run "$cairn" status
test "$(wc -l < data/raw/part-001.csv)" -eq 51 && echo "part-001.csv is back to 51 lines"
test -f data/raw/part-002.csv && echo "part-002.csv is back"

step "read a file as of another revision without checking it out"
run "$cairn" cat data/raw/part-201.csv --rev main

step "check the cache"
run git checkout -q main
run "$cairn" checkout
run "$cairn" fsck
run "$cairn" gc --all-commits

step "share it: push to a remote (a directory here; s3://bucket/prefix works the same)"
mkdir -p "$work/remote"
run "$cairn" remote add origin "$work/remote" --default
run git commit -q -am "add the origin remote"
run "$cairn" push --all-branches --all-tags
run "$cairn" push

step "a teammate clones the Git repository and pulls the data"
run git clone -q "$work/repo" "$work/teammate"
cd "$work/teammate"
run "$cairn" pull
run "$cairn" status
cmp data/raw/part-001.csv "$work/repo/data/raw/part-001.csv" && echo "the teammate has the same data"

step "a pipeline: prepare -> train -> evaluate, declared in cairn.yaml"
cd "$work/repo"
cat > params.yaml <<'YAML'
prepare:
  min_x: 0.2
train:
  bins: 4
YAML
cat > prepare.sh <<'SH'
min=$(awk '/min_x/ {print $2}' params.yaml)
mkdir -p data/prepared
awk -F, -v min="$min" 'FNR > 1 && $2 >= min {print $2 "," $3}' data/raw/*.csv > data/prepared/rows.csv
SH
cat > train.sh <<'SH'
bins=$(awk '/bins/ {print $2}' params.yaml)
sleep 1   # pretend training takes a while
awk -F, -v b="$bins" '{k = int($1 * b); s[k] += $2; n[k]++} END {for (k in s) printf "%d %.4f\n", k, s[k] / n[k]}' \
  data/prepared/rows.csv | sort > model.txt
SH
cat > evaluate.sh <<'SH'
printf '{"buckets": %d, "rows": %d}\n' "$(wc -l < model.txt)" "$(wc -l < data/prepared/rows.csv)" > metrics.json
SH
cat > cairn.yaml <<'YAML'
stages:
  prepare:
    cmd: sh prepare.sh
    deps: [data/raw, prepare.sh]
    params: [prepare.min_x]
    outs: [data/prepared]
  train:
    cmd: sh train.sh
    deps: [data/prepared, train.sh]
    params: [train.bins]
    outs: [model.txt]
  evaluate:
    cmd: sh evaluate.sh
    deps: [model.txt, data/prepared, evaluate.sh]
    metrics: [metrics.json]
  shards:
    foreach: {glob: "data/raw/part-00*.csv"}      # one run per file: only changed files re-run
    cmd: wc -l < ${item} > ${out}/${item.stem}.count
    outs: [data/counts]
YAML
run "$cairn" run --dry
run "$cairn" run
run "$cairn" metrics show
run git add -A
run git commit -q -m "pipeline"

step "nothing changed: nothing runs"
run "$cairn" run

step "change a param: only what reads it runs; cairn explain says why"
sed -i 's/bins: 4/bins: 8/' params.yaml
run "$cairn" explain train
run "$cairn" run
run "$cairn" params diff
run "$cairn" metrics diff

step "back to the committed value: restored from the run cache, not recomputed"
sed -i 's/bins: 8/bins: 4/' params.yaml
run "$cairn" run
run "$cairn" lineage metrics.json

step "every run was recorded: commit, params, metrics, and each stage's time and memory"
run "$cairn" exp show -n 5

step "an experiment sweep: isolated workspaces, no commits; only training and evaluation run"
run "$cairn" exp run -S 'train.bins=range(2,8,2)' --queue
run "$cairn" exp run --run-all --jobs 2
run "$cairn" exp show -n 4 --columns train.bins,buckets --sort -buckets
git diff --quiet && echo "the work tree is untouched"
best=$("$cairn" exp show --json --filter "params.train.bins = '6'" | awk -F'"' '/"run_id"/ {print $4; exit}')
run "$cairn" exp branch "$best" bins-6
run git log --oneline -1 bins-6

step "share results: push carries outputs and run-cache entries; a teammate restores them"
run "$cairn" push
run "$cairn" exp push origin
cd "$work/teammate"
run git pull -q
run "$cairn" run
cmp model.txt "$work/repo/model.txt" && echo "the teammate got the same model without training"
run "$cairn" exp pull origin
run "$cairn" exp show -n 3 --columns train.bins,buckets
step "a model: train it in the pipeline (scikit-learn → ONNX), register, approve, serve"
# The example's own Python environment (scikit-learn, skl2onnx, and ONNX Runtime, whose
# library cairn serve loads), kept under target/ (or $CAIRN_QUICKSTART_VENV) so later runs
# reuse it.
venv="${CAIRN_QUICKSTART_VENV:-$here/target/quickstart-venv}"
spec="scikit-learn==1.9.1 skl2onnx==1.20.0 onnxruntime==1.32.0 pandas==3.1.1 pyyaml==6.0.3"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$spec" ]; then
  echo "installing $spec into $venv (once; a minute or two)"
  python3 -m venv "$venv"
  # One line per package as pip gets to it, so a slow download shows where it is.
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --disable-pip-version-check --progress-bar off $spec 2>&1 \
    | sed -n -E 's/^(Collecting|Installing collected packages|Successfully installed|ERROR)/  \1/p'
  printf '%s' "$spec" > "$venv/.installed"
fi
cd "$work/repo"
# One generator for training data and for production traffic: the population drifts (older
# customers, and a `student` plan the training data never had, whose customers churn a lot).
cat > churn_world.py <<'PY'
import random

def customer(rng, drifted=False):
    if drifted:
        age, tenure = rng.randint(55, 90), rng.randint(0, 72)
        plan = rng.choice(["student", "student", "basic", "pro", "enterprise"])
    else:
        age, tenure = rng.randint(18, 80), rng.randint(0, 72)
        plan = rng.choice(["basic", "pro", "enterprise"])
    return {"age": age, "tenure": tenure, "plan": plan}

def churned(rng, c):
    risk = 0.6 * (c["tenure"] < 12) + 0.3 * (c["plan"] == "basic") + 0.1 * (c["age"] < 25) + 0.7 * (c["plan"] == "student")
    return int(rng.random() < risk)
PY
cat > make_churn.py <<'PY'
import csv, random
from churn_world import customer, churned
rng = random.Random(7)
with open("data/churn.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["age", "tenure", "plan", "churned"])
    for _ in range(2000):
        c = customer(rng)
        w.writerow([c["age"], c["tenure"], c["plan"], churned(rng, c)])
PY
"$venv/bin/python" make_churn.py
run "$cairn" add data/churn.csv
cat > train_churn.py <<'PY'
import json, os
import numpy as np, pandas as pd, yaml
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

params = yaml.safe_load(open("params.yaml"))["churn"]
# Train on production data (inputs with their true labels) once there is enough of it.
source = params.get("data", "data/churn.csv")
frame = pd.read_csv(source)
if "label" in frame:
    frame = frame.rename(columns={"label": "churned"})
frame = frame[["age", "tenure", "plan", "churned"]].dropna()
X, y = frame[["age", "tenure", "plan"]], frame["churned"].astype(int)
X = X.astype({"age": np.float32, "tenure": np.float32})
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model = Pipeline([
    ("prep", ColumnTransformer([("num", StandardScaler(), ["age", "tenure"]),
                                ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])])),
    ("clf", LogisticRegression(C=params["C"])),
]).fit(X_train, y_train)
os.makedirs("models", exist_ok=True)
onnx = to_onnx(model, initial_types=[("age", FloatTensorType([None, 1])), ("tenure", FloatTensorType([None, 1])),
                                     ("plan", StringTensorType([None, 1]))], target_opset=15)
open("models/churn.onnx", "wb").write(onnx.SerializeToString())
frame.to_csv("models/churn_train.csv", index=False)   # the training data, profiled at registration
json.dump({"accuracy": round(float(model.score(X_test, y_test)), 4)}, open("churn_metrics.json", "w"))
PY
printf 'churn:\n  C: 1.0\n  data: data/churn.csv\n' >> params.yaml
cat >> cairn.yaml <<'YAML'
  churn:
    cmd: python train_churn.py
    deps: [data/churn.csv, train_churn.py, churn_world.py]
    params: [churn.C, churn.data]
    outs: [models/churn.onnx, models/churn_train.csv]
    metrics: [churn_metrics.json]
YAML
run git add -A
run git commit -q -m "churn model stage"
export PATH="$venv/bin:$PATH"
run "$cairn" run churn
run "$cairn" metrics show

step "sweep the regularization: experiments run in isolated workspaces, no commits"
run "$cairn" exp run -S churn.C=0.01,0.1 --queue
run "$cairn" exp run --run-all --jobs 2
run "$cairn" exp show -n 3 --columns churn.C,accuracy --sort -accuracy
best=$("$cairn" exp show --json --sort -accuracy --filter "metrics.accuracy > 0" | python -c 'import json, sys; print(json.load(sys.stdin)[0]["run_id"])')
run "$cairn" exp apply "$best"
run "$cairn" params diff
run git commit -q -am "churn: the sweep's best C"

step "register the model: an immutable version with its lineage and its training data's profile"
run "$cairn" model register churn models/churn.onnx --training-data models/churn_train.csv
run "$cairn" model show churn@1
run "$cairn" model policy churn production --approvals 1 --require 'accuracy >= 0.6'
run "$cairn" model approve churn@1 --comment "holdout accuracy checked"
run "$cairn" model alias churn@1 production --reason "first release"

step "monitoring rules (monitor.yaml, in Git) and a webhook that receives the alerts"
cat > hook.py <<'PY'
# A webhook receiver on a free port: prints what it gets (as a chat channel would show it).
import http.server, json, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print("webhook received:", body["text"], flush=True)
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
open(sys.argv[1], "w").write(str(server.server_port))
server.serve_forever()
PY
python hook.py "$work/hook.port" > "$work/hook.log" &
hook=$!
for _ in $(seq 50); do [ -s "$work/hook.port" ] && break; sleep 0.1; done
cat > monitor.yaml <<YAML
evaluate_every: 1s
webhooks:
  - url: http://127.0.0.1:$(cat "$work/hook.port")/alerts
models:
  churn:
    rules:
      - {name: inputs drifted, metric: drift_share, op: ">=", threshold: 0.5, window: 1m, min_rows: 100, cooldown: 5s}
      - {name: live accuracy, metric: accuracy, op: "<", threshold: 0.6, window: 10m, min_rows: 200}
      - {name: errors, metric: error_rate, op: ">", threshold: 0.05, window: 5m, min_rows: 20}
YAML
run cat monitor.yaml
run git add monitor.yaml hook.py
run git commit -q -m "monitoring rules"

step "serve it: one server, three protocols, every prediction traced and profiled"
VIRTUAL_ENV="$venv" "$cairn" serve churn@production --port 0 > "$work/serve.url" 2> "$work/serve.log" &
server=$!
stop_all() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; kill "$hook" 2>/dev/null || true; }
trap 'stop_all; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/serve.url" ] && break; sleep 0.1; done
url=$(head -n 1 "$work/serve.url")   # the HTTP URL; the gRPC address follows
echo "cairn serve churn@production → $url"
run curl -s "$url/models/churn/predict" -d '{"inputs": {"age": 23, "tenure": 2, "plan": "basic"}}'
echo
run curl -s "$url/v2/models/churn/infer" -d '{"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [61]}, {"name": "tenure", "shape": [1, 1], "datatype": "FP32", "data": [60]}, {"name": "plan", "shape": [1, 1], "datatype": "BYTES", "data": ["enterprise"]}]}'
echo
run curl -s "$url/invocations" -H 'Content-Type: application/json' -d '{"dataframe_split": {"columns": ["age", "tenure", "plan"], "data": [[35, 10, "pro"]]}}'
echo
run curl -s "$url/models/churn/predict" -d '{"inputs": {"age": "forty", "tenure": 2, "plan": "basic"}}'
echo
# Production traffic from the same world; the true labels arrive afterwards (POST /feedback).
cat > traffic.py <<'PY'
import json, random, sys, urllib.request
from churn_world import customer, churned
url, n, drifted, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "drifted", int(sys.argv[4])
rng = random.Random(seed)
def post(path, body):
    request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.headers["x-cairn-trace-id"], json.loads(response.read())
labels, versions, correct = [], {}, {}
for _ in range(n):
    c = customer(rng, drifted)
    trace, answer = post("/models/churn/predict", {"inputs": c})
    truth = churned(rng, c)
    labels.append({"trace_id": trace, "label": truth})
    v = answer["version"]
    versions[v] = versions.get(v, 0) + 1
    correct[v] = correct.get(v, 0) + (answer["outputs"]["output_label"] == truth)
post("/feedback", {"feedback": labels})
print(f"sent {n} {'drifted' if drifted else 'usual'} requests; answered by " +
      ", ".join(f"version {v}: {k} ({correct[v] / k:.0%} right)" for v, k in sorted(versions.items())) +
      f"; {len(labels)} true labels sent to /feedback")
PY
run python traffic.py "$url" 300 usual 1
sleep 2
run "$cairn" alerts

step "the world changes: older customers, and a plan the model never saw"
drift_start=$(date +%s)
run python traffic.py "$url" 1200 drifted 2
for _ in $(seq 60); do "$cairn" alerts --json | grep -q '"inputs drifted"' && break; sleep 0.5; done
run "$cairn" alerts
alert=$("$cairn" alerts --json | python -c 'import json, sys; print(next(a["id"] for a in json.load(sys.stdin) if a["rule"] == "inputs drifted"))')
run "$cairn" alerts show "$alert"
for _ in $(seq 20); do grep -q ALERT "$work/hook.log" && break; sleep 0.25; done
run cat "$work/hook.log"

step "drill down: which features drifted, how the model does on the labels, which requests"
run "$cairn" monitor churn --since 10m --html "$work/drift.html"
run "$cairn" monitor requests churn --alert "$alert" | tail -n 4

step "back into training: the drifted production data, with its true labels, as a versioned dataset"
since=$(( $(date +%s) - drift_start + 1 ))s
run "$cairn" monitor export churn --since "$since" --labelled-only --out data/production.csv
run head -n 3 data/production.csv
sed -i 's/  data: data\/churn.csv/  data: data\/production.csv/' params.yaml
sed -i 's/deps: \[data\/churn.csv, train_churn.py, churn_world.py\]/deps: [data\/churn.csv, data\/production.csv, train_churn.py, churn_world.py]/' cairn.yaml
run git add -A
run git commit -q -m "retrain on production data"

step "retrain: the pipeline sees the new data and params; only the model stage runs"
run "$cairn" status
run "$cairn" run churn
run "$cairn" metrics diff HEAD
run git commit -q -am "churn model trained on production data"
run "$cairn" model register churn models/churn.onnx --training-data models/churn_train.csv
run "$cairn" model approve churn@2 --comment "retrained on the drifted population"

step "canary: half the traffic to version 2, live, without a restart"
run "$cairn" model rollout churn@production --canary 2 --weight 50
sleep 1.5
canary_start=$(date +%s)
run python traffic.py "$url" 600 drifted 3
since=$(( $(date +%s) - canary_start + 1 ))s
"$cairn" monitor churn --since "$since" --json > "$work/canary.json"
decision=$(python - "$work/canary.json" <<'PY'
import json, sys
report = {v["version"]: v for v in json.load(open(sys.argv[1]))}
accuracy = {v: (r.get("quality") or {}).get("accuracy") or 0 for v, r in report.items()}
for v, a in sorted(accuracy.items()):
    drift = report[v].get("drift") or {}
    print(f"version {v}: live accuracy {a:.3f}, dataset drifted: {drift.get('drifted')}", file=sys.stderr)
print("promote" if accuracy.get(2, 0) >= accuracy.get(1, 0) else "rollback")
PY
)
if [ "$decision" = promote ]; then
  run "$cairn" model alias churn@2 production --reason "canary: better live accuracy than version 1"
else
  run "$cairn" model rollout churn@production --clear
  echo "version 2 did no better: rolled back (version 1 keeps production)"
fi
run "$cairn" model history churn production
sleep 1.5
trace=$(curl -s -D - -o /dev/null "$url/models/churn/predict" -d '{"inputs": {"age": 70, "tenure": 3, "plan": "student"}}' | awk -F': ' 'tolower($1) == "x-cairn-trace-id" {print $2}' | tr -d '\r')
run "$cairn" alerts --all
echo "(version 1 gets no more traffic: its alert resolves once its 1-minute window no longer holds the drifted requests)"
stop_all

step "trace a prediction: the version that answered, the run, its params, its data, the commit"
run "$cairn" trace "$trace"

echo
echo "quickstart finished"
