#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain
# (the flags cargo-fuzz passes, without its nightly-only sanitizer flags) and runs each one
# for a bounded time over its corpus in fuzz/corpus/TARGET. New inputs that reach new code are
# added to the corpus; a crash leaves its input in fuzz/artifacts/TARGET and fails the run.
#
#   fuzz/run.sh [SECONDS-PER-TARGET] [TARGET...]      (default 60 s, every target)
#
# CAIRN_FUZZ_TARGET_DIR moves the build (CI keeps it outside the clone, between runs).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(pointer manifest lock pipeline monitor pack_index remote_index inference)
fi
export CARGO_TARGET_DIR="${CAIRN_FUZZ_TARGET_DIR:-$PWD/target}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
unset RUST_BACKTRACE
# An explicit --target keeps the flags off build scripts and proc macros (they run on the host
# without libFuzzer's runtime).
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$triple"
bin="$CARGO_TARGET_DIR/$triple/release"
# Targets run side by side, one per core (CAIRN_FUZZ_JOBS), each for the same bounded time;
# each one's report is printed when it ends.
jobs="${CAIRN_FUZZ_JOBS:-$(nproc)}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
fuzz_one() { # TARGET
  local target="$1"
  # New inputs go to a working corpus beside the build (kept between runs); the repository's
  # corpus is read as seeds. CAIRN_FUZZ_MERGE=1 adds to it the working inputs that reach new
  # code (libFuzzer's -set_cover_merge=1 keeps it small), for committing.
  local work="$CARGO_TARGET_DIR/corpus/$target"
  mkdir -p "corpus/$target" "artifacts/$target" "$work"
  echo "fuzzing $target for ${seconds}s"
  "$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" "$work" "corpus/$target" 2>&1 | tail -n 6
  if [ "${CAIRN_FUZZ_MERGE:-0}" = 1 ]; then
    "$bin/$target" -set_cover_merge=1 "corpus/$target" "$work" 2>&1 | tail -n 1
  fi
}
status=0
running=()
finish() { # waits for the running targets, prints their reports, remembers a failure
  for target in "${running[@]}"; do
    if ! wait "${pids[$target]}"; then
      status=1
      echo "fuzzing $target FAILED (its input is in fuzz/artifacts/$target/)"
    fi
    cat "$logs/$target"
  done
  running=()
}
declare -A pids
for target in "${targets[@]}"; do
  fuzz_one "$target" > "$logs/$target" 2>&1 &
  pids[$target]=$!
  running+=("$target")
  if [ ${#running[@]} -ge "$jobs" ]; then
    finish
  fi
done
finish
exit "$status"
