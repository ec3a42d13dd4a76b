#!/usr/bin/env bash
# The campaign page's cost (issue 22: a 1,000,000-quantum run's page in
# under 5 s and under 5 MB). Prints, for N quanta (default 1,000,000):
#   1. the page made from quanta handed straight to the report builder
#      (aggregation, rendering, writing);
#   2. the page made as `quanta report REPO RUN --html` makes it, from a real
#      registry holding the N recorded quanta (reading them back included);
#   3. `quanta status --html` and `quanta report --html` (the binary, end to
#      end) on the reference demo of E x D (default 100 x 100 = 20,100 quanta);
#   4. the 1M page opened in headless Chromium (if installed): time to the
#      rendered DOM.
# Usage: benches/report/run.sh [N] [E D]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000000}
e=${2:-100}
d=${3:-100}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p quanta-benches --example report_page
cargo build --release -q -p quanta-cli
bench="$CARGO_TARGET_DIR/release/examples/report_page"
quanta="$CARGO_TARGET_DIR/release/quanta"

echo "== 1. in memory, $n quanta"
"$bench" --quanta "$n"
echo "== 2. from a registry, $n quanta"
out=$("$bench" --quanta "$n" --registry)
echo "$out"
page=$(echo "$out" | sed -n 's/^page: //p')

echo "== 3. the binary on the reference demo, $e x $d"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$quanta" demo --dir "$work/demo" --exposures "$e" --detectors "$d" --jobs 2 >/dev/null
for cmd in "status $work/demo/demo.qb" "report $work/demo/repo demo/run1"; do
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$quanta" $cmd --html "$work/page.html"
  end=$(date +%s.%N)
  echo "quanta ${cmd%% *} --html: $(echo "$end - $start" | bc) s"
done

if command -v chromium >/dev/null; then
  echo "== 4. the $n-quantum page in headless chromium"
  start=$(date +%s.%N)
  chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --user-data-dir="$work/profile" --dump-dom "file://$page" 2>/dev/null \
    | grep -o 'data-svg-rendered="[0-9]*" data-svg-total="[0-9]*"'
  end=$(date +%s.%N)
  echo "rendered DOM after $(echo "$end - $start" | bc) s"
fi
rm -f "$page"
