#!/usr/bin/env bash
# Cairn quickstart: version a dataset next to code, change it, inspect, go back in time, and
# share it through a remote.
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
echo
echo "quickstart finished"
