#!/usr/bin/env bash
# Smoke fuzzing for CI: builds every fuzz target, then runs each for
# FUZZ_SMOKE_SECONDS (default 20) from its committed seed corpus. Fails on
# any crash, panic, timeout, or allocation past the limits below.
# Self-contained: installs cargo-fuzz if missing; the stable toolchain
# builds with RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
# The fuzz workspace has its own target dir; an inherited one (the main
# workspace's) would mix sanitizer builds with normal ones.
unset CARGO_TARGET_DIR
seconds=${FUZZ_SMOKE_SECONDS:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# -O: optimised; -a: debug assertions on (integer overflow panics).
build_flags=(--fuzz-dir . -O -a)
echo "== building fuzz targets"
cargo fuzz build "${build_flags[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for target in $(cargo fuzz list --fuzz-dir .); do
  echo "== fuzz $target for ${seconds}s"
  mkdir -p "$work/$target" artifacts/"$target"
  extra=()
  [ -f "dict/$target.dict" ] && extra+=("-dict=dict/$target.dict")
  if ! cargo fuzz run "${build_flags[@]}" "$target" "$work/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -artifact_prefix=artifacts/"$target"/ -print_final_stats=1 "${extra[@]}" \
      2> "$work/$target.log"; then
    tail -n 40 "$work/$target.log"
    failed+=("$target")
  fi
  grep -E '^(stat::number_of_executed_units|Done [0-9]+ runs)' "$work/$target.log" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz smoke passed"
