#!/usr/bin/env bash
# Stop the PostgreSQL cluster ci/postgres/start.sh started. Keeps the
# cluster's data, the role, the database and the password file, so the next
# start is quick; does nothing if the cluster is not running.
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

VERSION=15
CLUSTER=main

[[ $EUID -eq 0 ]] || {
    echo "[postgres-stop] ERROR: must run as root" >&2
    exit 1
}
command -v pg_lsclusters >/dev/null || exit 0
status="$(pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c { print $4 }')"
if [[ $status == online* ]]; then
    echo "[postgres-stop] stopping cluster $VERSION/$CLUSTER" >&2
    # Fast shutdown: open test sessions are disconnected, not waited for.
    pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" stop -m fast
fi
