#!/usr/bin/env bash
# End-to-end preflight benchmark on the reference workload (TARGET.md).
#
#   benches/preflight/run.sh [N_EXP N_DET]...     default: 100 100
#   e.g. benches/preflight/run.sh 100 100 500 1000
#
# Builds the release binary, makes a repo per size (dimension records, N×M
# raws ingested with --transfer $TRANSFER, default symlink; `direct` for
# 10^7 raws: no file made per raw), times the ingest (datasets/s) and
# `quanta preflight` of examples/pipelines/reference.yaml and prints
# seconds, quanta, bundle bytes and bytes per quantum (peak RSS too when
# /usr/bin/time is available), then preflights a tenth of the exposures
# (`--where "exposure < N/10"`) and prints its query phase against the
# whole one's (issue 23: a 10% selection costs <= 20% of the query).
# LSST reference (pipetask qgraph, 100×100 = 20,100 quanta): 16.5 s, 5.18 MB.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
cargo build --release -p quanta-cli --manifest-path "$here/Cargo.toml" >&2
quanta="$CARGO_TARGET_DIR/release/quanta"
work="${BENCH_DIR:-$(mktemp -d)}"
echo "work dir: $work" >&2
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(100 100)

while [ ${#sizes[@]} -ge 2 ]; do
  ne=${sizes[0]}; nd=${sizes[1]}; sizes=("${sizes[@]:2}")
  d="$work/${ne}x${nd}"; rm -rf "$d"; mkdir -p "$d/raw"
  python3 "$here/benches/reference_data.py" "$d" "$ne" "$nd"
  repo="$d/repo"
  "$quanta" repo create "$repo" >/dev/null
  "$quanta" dimensions insert "$repo" "$d/records.json" >/dev/null
  "$quanta" dataset-type register "$repo" raw --dimensions instrument,exposure,detector --storage-class Json >/dev/null
  "$quanta" collection create "$repo" Cam/raw --type RUN >/dev/null
  t0=$(date +%s.%N)
  "$quanta" ingest "$repo" --run Cam/raw --dataset-type raw --manifest "$d/manifest.csv" --transfer "${TRANSFER:-symlink}" >/dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; s = float(sys.argv[2]) - float(sys.argv[1]); n = int(sys.argv[3]) * int(sys.argv[4]); print(f'{sys.argv[3]}x{sys.argv[4]}: ingest ({sys.argv[5]}) {s:.1f} s, {n / s:,.0f} datasets/s')" "$t0" "$t1" "$ne" "$nd" "${TRANSFER:-symlink}" >&2
  cmd=("$quanta" preflight "$repo" --pipeline "$here/examples/pipelines/reference.yaml"
       --input Cam/raw --output-run bench/run --bundle "$d/bundle.qb" --json)
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v -o "$d/time.txt" "${cmd[@]}" >"$d/report.json"
    rss_kb=$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$d/time.txt")
    wall=$(awk '/Elapsed \(wall/ {print $NF}' "$d/time.txt")
  else
    t0=$(date +%s.%N); "${cmd[@]}" >"$d/report.json"; t1=$(date +%s.%N)
    wall=$(echo "$t1 - $t0" | bc); rss_kb=""
  fi
  python3 - "$d/report.json" "$ne" "$nd" "$wall" "$rss_kb" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ne, nd, wall, rss = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
n, b = r["n_quanta"], r["bundle_bytes"]
phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["timings"])
print(f"{ne}x{nd}: {n} quanta, wall {wall}, bundle {b} bytes ({b/n:.1f} B/quantum)"
      + (f", peak RSS {int(rss)/1024:.0f} MiB" if rss else "") + f"\n  phases: {phases}")
if ne == "100" and nd == "100":
    def secs(w):
        parts = [float(x) for x in w.split(":")]
        s = 0.0
        for p in parts: s = s * 60 + p
        return s
    t = secs(wall)
    print(f"  vs LSST pipetask qgraph (16.5 s, 5.18 MB): {16.5/t:.0f}x faster, {5.18e6/b:.0f}x smaller")
PY
  tenth=$(( ne / 10 > 0 ? ne / 10 : 1 ))
  "$quanta" preflight "$repo" --pipeline "$here/examples/pipelines/reference.yaml" \
    --input Cam/raw --output-run bench/tenth --bundle "$d/tenth.qb" \
    --where "exposure < $tenth" --json >"$d/tenth.json"
  python3 - "$d/report.json" "$d/tenth.json" "$ne" "$nd" <<'PY'
import json, sys
whole, tenth = (dict(json.load(open(p))["timings"])["query"] for p in sys.argv[1:3])
print(f"{sys.argv[3]}x{sys.argv[4]}: query of a tenth of the exposures {tenth:.2f} s, "
      f"of all {whole:.2f} s: {100 * tenth / whole:.0f}% (goal <= 20%)")
PY
done
