#!/usr/bin/env bash
# Builds quanta in release mode and compares it with the LSST middleware on the
# reference workload (see README.md here). Arguments go to compare.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cargo build --release -q --manifest-path "$here/../../Cargo.toml" -p quanta-cli
exec python3 "$here/compare.py" "$@"
