#!/usr/bin/env bash
# Transfer benchmark: a RUN of N_EXP × N_DET raw datasets (each a hard
# link in the source datastore: a regular file, as a copied raw or a task's
# output is, without N_EXP × N_DET files' worth of disk; SOURCE=symlink
# ingests them as symlinks, as benches/remove/run.sh does), then
# `quanta export --transfer link`, `quanta import --transfer link` into a
# fresh repo, and `quanta transfer --transfer link` into another, each
# timed, then a second transfer (nothing to do) and `repo check --fast`.
#
#   [SOURCE=link|symlink] benches/transfer/run.sh [N_EXP N_DET]
#       default: 1000 1000 (1,000,000 datasets), SOURCE=link
#
# Goal (issue 18): >= 50,000 datasets/s for each of export, import and
# transfer with linked files.
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
rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / max(float(sys.argv[2]), 1e-9):,.0f}')" "$1" "$2"; }
n=$((ne * nd))
t0=$(date +%s.%N)
source_mode="${SOURCE:-link}"
"$quanta" ingest "$repo" --run Cam/raw --dataset-type raw --manifest "$d/manifest.csv" --transfer "$source_mode" >/dev/null
t1=$(date +%s.%N)
echo "${ne}x${nd}: ingest ($source_mode) $(secs "$t0" "$t1") s" >&2
step() {
  local name="$1"; shift
  local t0 t1 s
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  s=$(secs "$t0" "$t1")
  echo "${ne}x${nd}: $name $s s ($(rate "$n" "$s") datasets/s)"
}
step "export (link)" "$quanta" export "$repo" "$d/export" --collections Cam/raw --transfer link
"$quanta" repo create "$d/imported" >/dev/null
step "import (link)" "$quanta" import "$d/imported" "$d/export" --transfer link
"$quanta" repo create "$d/dest" >/dev/null
step "transfer (link)" "$quanta" transfer "$repo" "$d/dest" --collections Cam/raw --transfer link
step "transfer again (nothing to do)" "$quanta" transfer "$repo" "$d/dest" --collections Cam/raw --transfer link
"$quanta" repo check "$d/dest" --fast >/dev/null
echo "${ne}x${nd}: repo check --fast of the destination: clean" >&2
