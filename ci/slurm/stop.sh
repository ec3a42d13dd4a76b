#!/usr/bin/env bash
# Stop the single-node test cluster started by ci/slurm/start.sh: slurmd,
# slurmctld, then munged. Idempotent: a daemon that is not running is skipped.
#
# Each daemon is found by its PID file; only when that is missing or stale is it
# looked up by exact process name (pgrep -x), e.g. after a start with another
# configuration. Jobs still running keep their slurmstepd; slurmctld saves its
# state in /var/spool/slurmctld, so start.sh picks them up again.
set -uo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

log() { echo "[slurm-stop] $*" >&2; }

[[ $EUID -eq 0 ]] || {
    log "ERROR: must run as root"
    exit 1
}

# True while pid runs and is not a zombie (the init process here may be slow
# to reap daemons, and `kill -0` succeeds on zombies).
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
    # The pid must still be this daemon: PID files outlive reboots and pids get reused.
    if [[ $pid =~ ^[0-9]+$ ]] && running "$pid" &&
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        reap "$pid" "$name"
    fi
    rm -f "$pidfile"
    # Fallback by exact name (pgrep -x), skipping zombies: pid 1 here is slow
    # to reap, so dead daemons linger in the process table.
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

stop_daemon slurmd /run/slurm/slurmd.pid
stop_daemon slurmctld /run/slurm/slurmctld.pid
stop_daemon munged /run/munge/munged.pid
log "stopped"
exit 0
