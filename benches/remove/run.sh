#!/usr/bin/env bash
# Removal benchmark: `quanta remove-runs` of one RUN of N_EXP × N_DET raw
# datasets (each a symlink in the datastore, as benches/preflight/run.sh
# ingests them), then `repo check --fast` to show nothing is left behind.
#
#   benches/remove/run.sh [N_EXP N_DET]      default: 1000 1000 (1,000,000 datasets)
#
# Prints the ingest, remove-runs and check seconds (peak RSS of the removal
# too when /usr/bin/time is available). Goal (issue 18): < 30 s at 1M.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
cargo build --release -p quanta-cli --manifest-path "$here/Cargo.toml" >&2
quanta="$CARGO_TARGET_DIR/release/quanta"
ne="${1:-1000}"; nd="${2:-1000}"
work="${BENCH_DIR:-$(mktemp -d)}"
d="$work/${ne}x${nd}"; rm -rf "$d"; mkdir -p "$d/raw"
echo "work dir: $d" >&2
python3 "$here/benches/reference_data.py" "$d" "$ne" "$nd"
repo="$d/repo"
"$quanta" repo create "$repo" >/dev/null
"$quanta" dimensions insert "$repo" "$d/records.json" >/dev/null
"$quanta" dataset-type register "$repo" raw --dimensions instrument,exposure,detector --storage-class Json >/dev/null
"$quanta" collection create "$repo" Cam/raw --type RUN >/dev/null
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
t0=$(date +%s.%N)
"$quanta" ingest "$repo" --run Cam/raw --dataset-type raw --manifest "$d/manifest.csv" --transfer symlink >/dev/null
t1=$(date +%s.%N)
echo "${ne}x${nd}: ingest (symlink) $(secs "$t0" "$t1") s" >&2
sync
cmd=("$quanta" -v remove-runs "$repo" Cam/raw)
t0=$(date +%s.%N)
if [ -x /usr/bin/time ]; then
  /usr/bin/time -v -o "$d/time.txt" "${cmd[@]}"
else
  "${cmd[@]}"
fi
t1=$(date +%s.%N)
rss=""
[ -f "$d/time.txt" ] && rss=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); printf ", peak RSS %.0f MiB", $2/1024}' "$d/time.txt")
echo "${ne}x${nd}: remove-runs $(secs "$t0" "$t1") s${rss}"
t0=$(date +%s.%N)
"$quanta" repo check "$repo" --fast
t1=$(date +%s.%N)
echo "${ne}x${nd}: repo check --fast after the removal $(secs "$t0" "$t1") s"
left=$(find "$repo/datastore" -type f -o -type l | wc -l)
echo "${ne}x${nd}: files left in the datastore: $left"
