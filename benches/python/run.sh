#!/usr/bin/env bash
# Builds quanta and its Python wheel in release mode, installs the wheel into a
# scratch directory and runs bench.py (see README.md here). Arguments go to
# bench.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root="$here/../.."
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q --manifest-path "$root/Cargo.toml" -p quanta-cli
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
python3 -m maturin build --quiet --release --manifest-path "$root/python/Cargo.toml" --out "$site/wheels" --interpreter python3
python3 -m pip install --quiet --no-deps --no-index --disable-pip-version-check --target "$site/site" "$site"/wheels/*.whl
exec python3 "$here/bench.py" --quanta "$target/release/quanta" --site "$site/site" "$@"
