#!/usr/bin/env bash
# quanta alone at scale with its registry on PostgreSQL (issue 19): the
# reference workload at N_EXP x N_DET (default 500 x 1000: 1,000,500 quanta,
# 1,000,500 output datasets) through the real CLI, end to end:
#   repo create --registry URL --namespace NAME, dimensions insert,
#   ingest of N_EXP x N_DET raws (--transfer symlink: one shared file per
#   detector, as benches/preflight/run.sh), then timed:
#   preflight  (goal: 1,000,000 quanta in under 30 s)
#   run --jobs 2 (setup for the merge; execution does not touch the registry)
#   merge      (goal: >= 50,000 datasets/s)
#   a second, idempotent merge (0 new datasets)
# printing wall seconds, quanta/s or datasets/s and peak RSS of each, then the
# merge's registry writer alone (benches/examples/merge_writer.rs) on the same
# server. The schema is dropped at the end unless KEEP=1.
#
# Usage: benches/postgres/run.sh postgresql://user@host:port/db [WORKDIR]
#   env: CARGO_TARGET_DIR, N_EXP, N_DET, WRITER_QUANTA (default 500000: 1,000,000
#        output datasets; 0 skips), KEEP=1, SKIP_BUILD=1
# The password comes from libpq's ~/.pgpass.
# The body is one function, read whole before it runs: editing this file while
# it runs cannot change what the running shell executes next.
main() {
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
URL=${1:?usage: benches/postgres/run.sh postgresql://user@host:port/db [WORKDIR]}
case "$URL" in postgres://*|postgresql://*) ;; *) echo "not a postgresql:// URL: $URL" >&2; exit 2;; esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p quanta-cli --bin quanta
  cargo build --release -q -p quanta-benches --example merge_writer
fi
QUANTA=$CARGO_TARGET_DIR/release/quanta
WRITER=$CARGO_TARGET_DIR/release/examples/merge_writer
WORK=${2:-$(mktemp -d)}
N_EXP=${N_EXP:-500}; N_DET=${N_DET:-1000}
NS=bench_pg_$$_$(date +%s)
echo "work dir: $WORK; schema $NS on $URL; $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"

d=$WORK/${N_EXP}x${N_DET}; rm -rf "$d"; mkdir -p "$d/raw"
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    psql -X -q "$URL" -c "SET client_min_messages = warning; DROP SCHEMA IF EXISTS \"$NS\" CASCADE" || true
  fi
}
trap cleanup EXIT

python3 "$ROOT/benches/reference_data.py" "$d" "$N_EXP" "$N_DET"

# timed LABEL COUNT UNIT CMD...: wall, COUNT/s and peak RSS of one command.
timed() {
  local label=$1 count=$2 unit=$3; shift 3
  /usr/bin/time -f "%e %M" -o "$d/$label.time" "$@" > "$d/$label.out" 2> "$d/$label.err" || {
    echo "$label failed:" >&2; tail -20 "$d/$label.err" >&2; exit 1; }
  read -r wall rss_kb < <(tail -1 "$d/$label.time")
  awk -v l="$label" -v w="$wall" -v n="$count" -v u="$unit" -v r="$rss_kb" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN{printf "%-12s %10d %s in %7.2f s: %9.0f %s/s, peak RSS %5.0f MiB (load %s)\n", l, n, u, w, n/w, u, r/1024, load}'
}

R=$d/repo
n_raw=$((N_EXP * N_DET)); n_quanta=$((2 * N_EXP * N_DET + N_EXP)); n_out=$n_quanta
timed create 1 repo "$QUANTA" repo create "$R" --registry "$URL" --namespace "$NS"
"$QUANTA" dimensions insert "$R" "$d/records.json" >/dev/null
"$QUANTA" dataset-type register "$R" raw --dimensions instrument,exposure,detector --storage-class Json >/dev/null
"$QUANTA" collection create "$R" Cam/raw --type RUN >/dev/null
(cd "$d" && timed ingest "$n_raw" datasets "$QUANTA" ingest "$R" --run Cam/raw --dataset-type raw \
  --manifest "$d/manifest.csv" --transfer symlink)
timed preflight "$n_quanta" quanta "$QUANTA" preflight "$R" --pipeline "$ROOT/examples/pipelines/reference.yaml" \
  --input Cam/raw --output-run u/bench/run --output u/bench/out --bundle "$d/bundle.qb" --json
python3 - "$d/preflight.out" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
phases = ", ".join(f"{k} {v:.2f}s" for k, v in r["timings"])
print(f"  preflight phases: {phases}; bundle {r['bundle_bytes']} bytes")
PY
timed run "$n_quanta" quanta "$QUANTA" run "$d/bundle.qb" --jobs 2
timed merge "$n_out" datasets "$QUANTA" merge "$R" "$d/bundle.qb"
grep -E "datasets:|verification failures|in [0-9.]+ s" "$d/merge.out" | sed 's/^/  /' || true
timed merge-again "$n_out" datasets "$QUANTA" merge "$R" "$d/bundle.qb"
grep -E "datasets:" "$d/merge-again.out" | sed 's/^/  /' || true
n_reg=$("$QUANTA" sql "$R" "SELECT count(*) FROM dataset" 2>/dev/null | tail -1 || echo "?")
echo "  rows in dataset after both merges: $n_reg (expected $((n_raw + n_out)): $n_raw raws + $n_out outputs)"

if [ "${WRITER_QUANTA:-500000}" != 0 ]; then
  echo "merge writer alone (benches/examples/merge_writer.rs), ${WRITER_QUANTA:-500000} quanta:"
  "$WRITER" "${WRITER_QUANTA:-500000}" "$URL" | sed 's/^/  /'
fi
}
main "$@"
