#!/usr/bin/env bash
# Stop the single-node Grid Engine cluster started by ci/gridengine/start.sh:
# sge_execd, then sge_qmaster. Idempotent: a daemon that is not running is
# skipped. Jobs still queued are kept in the qmaster's spool; start.sh picks
# them up again. Leaves Slurm alone.
#
# Each daemon is found by its PID file; only when that is missing or stale is
# it looked up by exact process name (pgrep -x).
set -uo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

log() { echo "[gridengine-stop] $*" >&2; }

[[ $EUID -eq 0 ]] || {
    log "ERROR: must run as root"
    exit 1
}

# True while pid runs and is not a zombie (pid 1 here may be slow to reap).
running() { # pid
    local state
    state="$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n $state && $state != [ZX] ]]
}

# Wait up to 10 s for a pid to exit, then SIGKILL it.
reap() { # pid name
    local _
    for _ in $(seq 1 100); do
        running "$1" || return 0
        sleep 0.1
    done
    log "$2 (pid $1) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$1" 2>/dev/null || true
}

stop_daemon() { # name pidfile
    local name=$1 pidfile=$2 pid pids
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    if [[ $pid =~ ^[0-9]+$ ]] && running "$pid" &&
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        reap "$pid" "$name"
    fi
    pids=()
    for pid in $(pgrep -x "$name" || true); do
        if running "$pid"; then pids+=("$pid"); fi
    done
    if ((${#pids[@]} > 0)); then
        log "stopping $name without PID file (pids ${pids[*]})"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for pid in "${pids[@]}"; do
            reap "$pid" "$name"
        done
    fi
}

stop_daemon sge_execd /run/gridengine/execd.pid
stop_daemon sge_qmaster /var/spool/gridengine/qmaster/qmaster.pid
log "stopped"
exit 0
