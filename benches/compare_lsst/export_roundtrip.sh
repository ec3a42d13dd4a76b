#!/usr/bin/env bash
# Round trip of the reference raws between quanta and the LSST middleware
# through the LSST export format (issue 18):
#   LSST repo (make_repo.py) --butler export--> quanta import, quanta get
#   == LSST get; quanta export --butler import--> a fresh LSST repo,
#   butler query-datasets counts equal.
# Usage: QUANTA_LSST_ROUNDTRIP=1 benches/compare_lsst/export_roundtrip.sh [N_EXP N_DET]
# Needs a venv with lsst-daf-butler (LSST_VENV, default /tmp/lsstvenv;
# `python3 -m venv $LSST_VENV && $LSST_VENV/bin/pip install lsst-daf-butler`).
set -euo pipefail
[[ "${QUANTA_LSST_ROUNDTRIP:-}" == 1 ]] || { echo "set QUANTA_LSST_ROUNDTRIP=1 to run"; exit 0; }
N_EXP=${1:-4}; N_DET=${2:-3}
VENV=${LSST_VENV:-/tmp/lsstvenv}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
REF=${QUANTA_LSST_REFERENCE:-$ROOT/../shared/reference/lsst}
[[ -d $REF ]] || REF=/work/shared/reference/lsst
Q=${QUANTA:-$ROOT/target/release/quanta}
[[ -x $Q ]] || Q=$ROOT/target/debug/quanta
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
start=$SECONDS
"$VENV/bin/python" "$REF/make_repo.py" "$W/lsst" "$N_EXP" "$N_DET" >/dev/null
mkdir "$W/lx"
"$VENV/bin/python" - "$W" <<'PY'
import sys
from lsst.daf.butler import Butler
w = sys.argv[1]
b = Butler.from_config(f"{w}/lsst")
with b.export(directory=f"{w}/lx", format="yaml", transfer="copy") as e:
    e.saveDatasets(b.registry.queryDatasets("raw", collections="Cam/raw"))
PY
"$Q" repo create "$W/q" >/dev/null
"$Q" import "$W/q" "$W/lx"
# quanta get == LSST get (as JSON values; LSST's files are YAML).
"$VENV/bin/python" - "$W" "$Q" "$N_EXP" "$N_DET" <<'PY'
import json, subprocess, sys
from lsst.daf.butler import Butler
w, q, n_exp, n_det = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
b = Butler.from_config(f"{w}/lsst")
for e in range(n_exp):
    for d in range(n_det):
        ours = json.loads(subprocess.check_output([q, "get", f"{w}/q", "raw", "--collections", "Cam/raw",
                                                   "--data-id", f"instrument=Cam,exposure={e},detector={d}"]))
        theirs = b.get("raw", instrument="Cam", exposure=e, detector=d, collections="Cam/raw")
        assert ours == theirs, (e, d, ours, theirs)
print(f"quanta get == butler get for {n_exp * n_det} raws")
PY
"$Q" export "$W/q" "$W/qx" --collections Cam/raw
"$VENV/bin/butler" create "$W/lsst2" >/dev/null
"$VENV/bin/butler" import "$W/lsst2" "$W/qx" --transfer copy
n1=$("$VENV/bin/butler" query-datasets "$W/lsst" --collections Cam/raw raw | grep -c ' raw ')
n2=$("$VENV/bin/butler" query-datasets "$W/lsst2" --collections Cam/raw raw | grep -c ' raw ')
nq=$("$Q" query-datasets "$W/q" --collections Cam/raw --json | "$VENV/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "datasets: LSST source $n1, quanta $nq, LSST after quanta export $n2"
[[ $n1 -eq $nq && $n1 -eq $n2 ]] || { echo "counts differ"; exit 1; }
echo "round trip ok in $((SECONDS - start)) s"
