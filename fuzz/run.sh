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
cargo build --release --locked --bins
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "fuzzing $target for ${seconds}s"
  "$CARGO_TARGET_DIR/release/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="artifacts/$target/" "corpus/$target" 2>&1 | tail -n 12
done
