#!/usr/bin/env bash
# Start a real PostgreSQL 15 server for quanta's tests, as root, on a Debian
# machine WITHOUT systemd, and print the URL the tests connect with.
#
# Owns: the Debian package postgresql (and what it pulls in), the cluster
# 15/main (created if missing, started with pg_ctlcluster), the login role
# `quanta` (its password is regenerated when none is on file), the database
# `quanta_test` owned by it with the extension btree_gist (the registry's
# calibration exclusion constraint needs it, and only a superuser may create
# it), two more login roles `quanta_alice` and `quanta_bob` (the users of a
# shared registry in the access tests: no privileges of their own), and one
# line per role for that database in the password file ($PGPASSFILE, else
# ~/.pgpass). Stop the server with ci/postgres/stop.sh.
#
# Idempotent: every step checks first, so a second run only confirms that
# the server answers and prints the URL.
#
# Output: the connection URL on stdout, as its only line
# (postgresql://quanta@localhost:5432/quanta_test); progress on stderr. The
# password is never printed: libpq and quanta's tests read it from the
# password file.
#
# Environment:
#   PG_START_TIMEOUT=30   seconds to wait for the server to accept connections
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

VERSION=15
CLUSTER=main
ROLE=quanta
USERS=(quanta_alice quanta_bob)
DB=quanta_test
BIN="/usr/lib/postgresql/$VERSION/bin"
PASSFILE="${PGPASSFILE:-${HOME:-/root}/.pgpass}"
LOG="/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
TIMEOUT="${PG_START_TIMEOUT:-30}"
SECONDS=0

log() { echo "[postgres-start +${SECONDS}s] $*" >&2; }
fail() {
    echo "[postgres-start +${SECONDS}s] ERROR: $*" >&2
    if [[ -f $LOG ]]; then
        echo "----- last 30 lines of $LOG -----" >&2
        tail -n 30 "$LOG" >&2 || true
    fi
    exit 1
}

[[ $EUID -eq 0 ]] || fail "must run as root (this script installs packages and starts the server)"

# ---------------------------------------------------------------- packages ---
install_packages() {
    if [[ -x $BIN/postgres ]] && command -v pg_ctlcluster >/dev/null &&
        [[ -f /usr/share/postgresql/$VERSION/extension/btree_gist.control ]]; then
        return 0
    fi
    log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they cannot serve the install (as
    # ci/slurm/start.sh does): an empty list has no candidate, a stale one
    # 404s on download.
    local policy
    policy="$(apt-cache policy postgresql 2>/dev/null || true)"
    if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
        apt-get update -q >&2
    fi
    if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -q >&2
        apt-get install -y -q --no-install-recommends postgresql >&2
    fi
    [[ -x $BIN/postgres ]] || fail "postgresql is installed but $BIN/postgres is missing (not version $VERSION?)"
}

# ----------------------------------------------------------------- cluster ---
# The cluster's status column of pg_lsclusters ("online", "down", ...), or ""
# when the cluster does not exist.
cluster_status() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c { print $4 }'
}

cluster_port() {
    pg_lsclusters -h 2>/dev/null | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c { print $3 }'
}

start_cluster() {
    if [[ -z "$(cluster_status)" ]]; then
        # The package creates 15/main itself unless told not to
        # (create_main_cluster in /etc/postgresql-common/createcluster.conf).
        log "creating cluster $VERSION/$CLUSTER"
        pg_createcluster "$VERSION" "$CLUSTER" >&2 || fail "pg_createcluster failed"
    fi
    local attempt
    for attempt in 1 2 3 4 5; do
        [[ "$(cluster_status)" != online* ]] || break
        log "starting cluster $VERSION/$CLUSTER"
        # Without systemd: pg_ctlcluster would otherwise hand over to
        # systemctl. A stale postmaster.pid is removed by pg_ctlcluster, but
        # a killed server's socket lock names its pid until that process is
        # reaped (a zombie counts as alive), and its orphaned backends hold
        # the shared memory until they notice: both clear within seconds.
        pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$CLUSTER" start >&2 && break
        ((attempt < 5)) || fail "pg_ctlcluster start failed $attempt times"
        log "start failed (a killed server's leftovers?); retrying in 2 s"
        sleep 2
    done
    local port deadline=$((SECONDS + TIMEOUT))
    port="$(cluster_port)"
    until pg_isready -q -h localhost -p "$port" -t 1; do
        ((SECONDS < deadline)) || fail "server not accepting connections on localhost:$port after ${TIMEOUT}s"
        sleep 0.2
    done
}

# ---------------------------------------------------- role, database, auth ---
# Runs SQL from stdin as the superuser `postgres` in database $1; psql
# variables given as further `-v name=value` arguments are quoted by psql
# itself (:'name'), never pasted into the text.
as_superuser() { # database [psql args...]
    local db=$1
    shift
    # Warnings and errors only: "extension already exists" is not news.
    PGOPTIONS="-c client_min_messages=warning" \
        runuser -u postgres -- "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -p "$(cluster_port)" -d "$db" "$@" >&2
}

# The password on file for a role and the database, or "" (fields are
# host:port:database:user:password; ours contain no ':' or '\').
password_on_file() { # port role
    [[ -f $PASSFILE ]] || return 0
    awk -F: -v p="$1" -v d="$DB" -v u="$2" \
        '$1 == "localhost" && $2 == p && $3 == d && $4 == u { print $5; exit }' "$PASSFILE"
}

# A login role whose password is the one on file (a new one when none is):
# set every time, so the two never disagree (a password file restored or
# copied from elsewhere).
setup_role() { # port role
    local port=$1 role=$2 password
    password="$(password_on_file "$port" "$role")"
    if [[ -z $password ]]; then
        password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        log "new password for role $role, kept in $PASSFILE"
    fi
    as_superuser postgres -v role="$role" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', :'password') \gexec
SQL
    # The password file: libpq's convention, mode 0600 or it is ignored.
    local line="localhost:$port:$DB:$role:$password" tmp
    tmp="$(mktemp "$PASSFILE.XXXXXX")"
    if [[ -f $PASSFILE ]]; then
        grep -v -F "localhost:$port:$DB:$role:" "$PASSFILE" >"$tmp" || true
    fi
    echo "$line" >>"$tmp"
    chmod 0600 "$tmp"
    mv "$tmp" "$PASSFILE"
}

setup_database() {
    local port user
    port="$(cluster_port)"
    setup_role "$port" "$ROLE"
    for user in "${USERS[@]}"; do
        setup_role "$port" "$user"
    done
    as_superuser postgres -v role="$ROLE" -v db="$DB" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    as_superuser "$DB" <<'SQL'
CREATE EXTENSION IF NOT EXISTS btree_gist;
SQL
}

# The role logs in over TCP with the password from the file, as the tests do.
check_login() { # url
    PGPASSFILE="$PASSFILE" "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$1" \
        -c "SELECT extversion FROM pg_extension WHERE extname = 'btree_gist'" >/dev/null ||
        fail "cannot log in as $ROLE with the password in $PASSFILE at $1"
}

# -------------------------------------------------------------------- main ---
install_packages
start_cluster
setup_database
url="postgresql://$ROLE@localhost:$(cluster_port)/$DB"
check_login "$url"
log "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') ready: $url"
echo "$url"
