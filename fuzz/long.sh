#!/usr/bin/env bash
# The long runs behind the results table in README.md: each target in turn
# (one at a time, niced), for at most MAX_RUNS executions or MAX_SECONDS,
# whichever comes first, with a persistent corpus in fuzz/corpus/<target>.
# Usage: fuzz/long.sh [target...]   (default: every target)
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR
max_runs=${MAX_RUNS:-10000000}
max_seconds=${MAX_SECONDS:-3600}
logs=${LOG_DIR:-logs}
mkdir -p "$logs"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  extra=()
  [ -f "dict/$target.dict" ] && extra+=("-dict=dict/$target.dict")
  echo "== $target: $(date -u +%H:%M:%S)"
  nice -n 10 cargo fuzz run --fuzz-dir . -O -a "$target" "corpus/$target" "seeds/$target" -- \
    -runs="$max_runs" -max_total_time="$max_seconds" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -artifact_prefix="artifacts/$target/" \
    -print_final_stats=1 "${extra[@]}" > "$logs/$target.log" 2>&1 || echo "!! $target failed, see $logs/$target.log"
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done' "$logs/$target.log" || true
done
