#!/usr/bin/env bash
# Cairn quickstart: version a dataset next to code, change it, inspect, go back in time, share
# it through a remote, run a pipeline that never redoes work, then train a model in it,
# register, approve and serve it, call it over three protocols and trace a prediction back.
# Runs in a throwaway Git repository under a temporary directory; prints every step.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
echo "### building cairn (release)"
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
cairn="$here/target/release/cairn"

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
# library cairn serve loads), kept under target/ so later runs reuse it.
venv="$here/target/quickstart-venv"
spec="scikit-learn==1.9.1 skl2onnx==1.20.0 onnxruntime==1.32.0 pandas==3.1.1 pyyaml==6.0.3"
if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$spec" ]; then
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check $spec
  printf '%s' "$spec" > "$venv/.installed"
fi
cd "$work/repo"
cat > make_churn.py <<'PY'
import csv, random
random.seed(7)
with open("data/churn.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["age", "tenure", "plan", "churned"])
    for _ in range(2000):
        age, tenure = random.randint(18, 80), random.randint(0, 72)
        plan = random.choice(["basic", "pro", "enterprise"])
        risk = 0.6 * (tenure < 12) + 0.3 * (plan == "basic") + 0.1 * (age < 25)
        w.writerow([age, tenure, plan, int(random.random() < risk)])
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
frame = pd.read_csv("data/churn.csv")
X, y = frame[["age", "tenure", "plan"]], frame["churned"]
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
json.dump({"accuracy": round(float(model.score(X_test, y_test)), 4)}, open("churn_metrics.json", "w"))
PY
printf 'churn:\n  C: 1.0\n' >> params.yaml
cat >> cairn.yaml <<'YAML'
  churn:
    cmd: python train_churn.py
    deps: [data/churn.csv, train_churn.py]
    params: [churn.C]
    outs: [models/churn.onnx]
    metrics: [churn_metrics.json]
YAML
run git add -A
run git commit -q -m "churn model stage"
PATH="$venv/bin:$PATH" run "$cairn" run churn
run "$cairn" model register churn models/churn.onnx --training-data data/churn.csv
run "$cairn" model policy churn production --approvals 1 --require 'accuracy >= 0.6'
run "$cairn" model approve churn@1 --comment "holdout accuracy checked"
run "$cairn" model alias churn@1 production --reason "first release"

step "serve it: one server, three protocols, every prediction traced"
VIRTUAL_ENV="$venv" "$cairn" serve churn@production --port 0 > "$work/serve.url" 2> "$work/serve.log" &
server=$!
for _ in $(seq 50); do [ -s "$work/serve.url" ] && break; sleep 0.1; done
url=$(cat "$work/serve.url")
echo "cairn serve churn@production → $url"
run curl -s "$url/models/churn/predict" -d '{"inputs": {"age": 23, "tenure": 2, "plan": "basic"}}'
echo
run curl -s "$url/v2/models/churn/infer" -d '{"inputs": [{"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [61]}, {"name": "tenure", "shape": [1, 1], "datatype": "FP32", "data": [60]}, {"name": "plan", "shape": [1, 1], "datatype": "BYTES", "data": ["enterprise"]}]}'
echo
run curl -s "$url/invocations" -H 'Content-Type: application/json' -d '{"dataframe_split": {"columns": ["age", "tenure", "plan"], "data": [[35, 10, "pro"]]}}'
echo
run curl -s "$url/models/churn/predict" -d '{"inputs": {"age": "forty", "tenure": 2, "plan": "basic"}}'
echo
trace=$(curl -s -D - -o /dev/null "$url/models/churn/predict" -d '{"inputs": {"age": 40, "tenure": 1, "plan": "basic"}}' | awk -F': ' 'tolower($1) == "x-cairn-trace-id" {print $2}' | tr -d '\r')
kill -TERM "$server"; wait "$server" || true
run "$cairn" trace "$trace"

echo
echo "quickstart finished"
