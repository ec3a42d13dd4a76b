#!/usr/bin/env bash
# Execution benchmarks of quanta (issue 4). Prints ms/quantum for:
#  1. in-process execution of the 100x100 reference workload (20,100 quanta)
#     with `quanta run --jobs 1` and `--jobs 2`;
#  2. `quanta worker --quanta i` started once per quantum, as a batch system
#     would (process start, open bundle, read journals, run one quantum,
#     journal), over 500 quanta;
#  3. opening a ~1,000,000-quanta bundle and running its first quantum with a
#     fresh `quanta worker` process.
# Bundles are written by the `make_reference_bundle` example (no Registry),
# so this measures execution only. LSST reference on the same graph:
# `pipetask run-qbb -j 1` ~38 ms/quantum; spawned processes ~1.7 CPU-s/quantum.
#
# Usage: benches/exec/run.sh [WORKDIR]   (env: CARGO_TARGET_DIR, N_EXP, N_DET, N_WORKER)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p quanta-cli -p quanta-examples --examples --bins
BIN=$CARGO_TARGET_DIR/release
QUANTA=$BIN/quanta
MAKE=$BIN/examples/make_reference_bundle
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
N_EXP=${N_EXP:-100}; N_DET=${N_DET:-100}; N_WORKER=${N_WORKER:-500}

now() { date +%s.%N; }
cpu() { awk '{print $14+$15+$16+$17}' /proc/$$/stat; }  # ticks incl. waited-for children
tck=$(getconf CLK_TCK)

for jobs in 1 2; do
  d=$WORK/inproc-j$jobs; rm -rf "$d"
  "$MAKE" "$d" "$N_EXP" "$N_DET" 2>/dev/null
  nq=$((2 * N_EXP * N_DET + N_EXP))
  t0=$(now)
  "$QUANTA" run "$d/reference.qb" --jobs "$jobs" 2>"$d/run.log"
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v n="$nq" -v j="$jobs" 'BEGIN{w=b-a; printf "run --jobs %d: %d quanta in %.2f s: %.0f quanta/s, %.3f ms/quantum (incl. process start)\n", j, n, w, n/w, w*1000/n}'
done

# Worker once per quantum: a bundle of about N_WORKER quanta.
d=$WORK/worker; rm -rf "$d"
det=12; exp=$(( N_WORKER / (2 * det + 1) ))
"$MAKE" "$d" "$exp" "$det" 2>/dev/null
nq=$((2 * exp * det + exp))
c0=$(cpu); t0=$(now)
for ((i = 0; i < nq; i++)); do
  "$QUANTA" worker "$d/reference.qb" --quanta "$i" 2>/dev/null
done
t1=$(now); c1=$(cpu)
awk -v a="$t0" -v b="$t1" -v n="$nq" -v c=$((c1 - c0)) -v t="$tck" 'BEGIN{w=b-a; printf "worker per quantum: %d processes in %.2f s: %.2f ms/quantum wall, %.2f ms/quantum CPU\n", n, w, w*1000/n, c/t*1000/n}'
ls "$d/reference.qb.journals" | wc -l | awk '{print "  journals written: " $1}'

# A ~1,000,000-quanta bundle: open it and run its first quantum.
d=$WORK/million
if [ ! -f "$d/reference.qb" ]; then
  "$MAKE" "$d" 1000 500 --raw-limit 1
fi
ls -l "$d/reference.qb" | awk '{printf "  1M bundle: %.1f MB\n", $5/1e6}'
for k in 1 2 3; do
  # Fresh state each time: no journals, no outputs of quantum 0.
  rm -rf "$d/reference.qb.journals" "$d/datastore/u"
  c0=$(cpu); t0=$(now)
  "$QUANTA" worker "$d/reference.qb" --quanta 0 2>/dev/null
  t1=$(now); c1=$(cpu)
  awk -v a="$t0" -v b="$t1" -v c=$((c1 - c0)) -v t="$tck" 'BEGIN{printf "1M-quanta bundle: process start + open + first quantum run + journal: %.1f ms wall, %.0f ms CPU\n", (b-a)*1000, c/t*1000}'
done
t0=$(now); "$QUANTA" worker "$d/reference.qb" --quanta 1000999 2>/dev/null || true; t1=$(now)
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "1M-quanta bundle: last quantum (blocked, upstream not done): %.1f ms\n", (b-a)*1000}'
