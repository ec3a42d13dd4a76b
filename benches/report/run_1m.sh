#!/usr/bin/env bash
# Issue 22's last target, end to end with the release binary: the page of a
# 1,000,000-quantum run is written in under 5 s and is under 5 MB, both by
# `quanta report REPO RUN --html` (after merge, from the registry) and by
# `quanta status BUNDLE --html` (from the bundle and its journals).
#
# Nothing is synthesized: `quanta demo` builds a real repo of E x D raws and
# runs the reference pipeline on it for real (preflight, `run --jobs 2`,
# merge): 2*E*D + E quanta (default 500 x 1000 = 1,000,500). A second run
# of the same pipeline with `characterize` configured to fail on one
# detector (`fail_on: {detector: 7}`: E failures, E summaries blocked) is
# then executed and merged into the same repo, so the failure section is
# exercised. Each page is written twice; /usr/bin/time gives wall and peak
# RSS. About 12 minutes on 2 cores, ~2 GB of disk.
#
# Usage: benches/report/run_1m.sh [WORKDIR] [E D]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p quanta-cli
quanta="$CARGO_TARGET_DIR/release/quanta"
work=${1:-$(mktemp -d)}
e=${2:-500}
d=${3:-1000}
mkdir -p "$work"
cd "$work"

if [ ! -d demo/repo ]; then
  echo "== the real campaign: quanta demo --exposures $e --detectors $d --jobs 2"
  "$quanta" demo --dir "$work/demo" --exposures "$e" --detectors "$d" --jobs 2 >demo.out
fi
if [ ! -f failing.merged ]; then
  echo "== the failing run: characterize fails on detector 7"
  sed 's/^    class: examples.Characterize$/&\n    config: {fail_on: {detector: 7}}/' \
    demo/pipeline.yaml >failing.yaml
  grep -q fail_on failing.yaml
  rm -rf failing.qb failing.qb.journals
  "$quanta" preflight demo/repo --pipeline failing.yaml --input Cam/raw \
    --output-run demo/failing --bundle failing.qb >/dev/null
  # Failed quanta make run and merge exit 1.
  "$quanta" run failing.qb --jobs 2 >/dev/null || true
  "$quanta" merge demo/repo failing.qb >/dev/null || true
  touch failing.merged
fi

measure() { # label, page, command...
  local label=$1 page=$2
  shift 2
  for _ in 1 2; do
    /usr/bin/time -f "%e %U %S %M" -o time.txt "$@" --html "$page" >/dev/null
    read -r wall user sys rss <time.txt
    size=$(stat -c %s "$page")
    printf '%-34s wall %5.2f s  cpu %5.2f s  peak RSS %4d MB  page %.2f MB\n' \
      "$label" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024)) \
      "$(echo "scale=2; $size / 1000000" | bc)"
  done
}

echo "== the pages (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
measure "report, clean run" clean-report.html "$quanta" report demo/repo demo/run1
measure "status, clean run" clean-status.html "$quanta" status demo/demo.qb
measure "report, failing run" failing-report.html "$quanta" report demo/repo demo/failing
measure "status, failing run" failing-status.html "$quanta" status failing.qb
grep -o 'class="failure-row"' failing-report.html | wc -l | sed 's/^/failure rows on the failing page: /'
