#!/usr/bin/env bash
# Start a real single-node Grid Engine cluster (Debian's gridengine 8.1.9:
# sge_qmaster + sge_execd) for quanta's tests, as root, on a Debian machine
# WITHOUT systemd.
#
# Owns: the Debian packages gridengine-master/-exec/-client, the cell
# /var/lib/gridengine/default (its host_aliases and act_qmaster), the spool
# /var/spool/gridengine, /run/gridengine, and in the cluster's configuration:
# the queue all.q on this host (slots = nproc), the parallel environment smp,
# min_uid/min_gid 0 (the tests run as root), arrays of up to 200000 tasks, a
# 1 s scheduling interval, no load thresholds (the machine's load must not
# stop the queue). Stop it with ci/gridengine/stop.sh. Leaves Slurm alone.
#
# Idempotent: when both daemons run and the queue on this host is ready, it
# checks the configuration, changes only what differs, and exits without the
# smoke test.
#
# Environment:
#   GRIDENGINE_START_SKIP_SMOKE=1  skip the smoke test (array + element-wise hold)
#   GRIDENGINE_START_TIMEOUT=60    seconds to wait for each daemon
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"
export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
COMMON="$SGE_ROOT/$SGE_CELL/common"
SPOOL=/var/spool/gridengine
QMASTER_PID="$SPOOL/qmaster/qmaster.pid"
QMASTER_LOG="$SPOOL/qmaster/messages"
RUN_DIR=/run/gridengine
EXECD_PID="$RUN_DIR/execd.pid"
UTIL=/usr/lib/gridengine
QUEUE=all.q
PE=smp
TIMEOUT="${GRIDENGINE_START_TIMEOUT:-60}"
SLOTS="$(nproc)"
SECONDS=0

log() { echo "[gridengine-start +${SECONDS}s] $*" >&2; }
die() {
    echo "[gridengine-start +${SECONDS}s] ERROR: $*" >&2
    exit 1
}

dump_logs() {
    local f
    for f in "$QMASTER_LOG" "$SPOOL"/execd/*/messages; do
        if [[ -f $f ]]; then
            echo "----- last 30 lines of $f -----" >&2
            tail -n 30 "$f" >&2 || true
        fi
    done
    if command -v qstat >/dev/null 2>&1; then
        echo "----- qstat -f -----" >&2
        timeout 10 qstat -f >&2 2>&1 || true
    fi
}

fail() {
    echo "[gridengine-start +${SECONDS}s] ERROR: $*" >&2
    dump_logs
    exit 1
}

[[ $EUID -eq 0 ]] || die "must run as root (this script installs packages and starts daemons)"

# True if the pidfile names a live process whose command is `name`: pids get
# reused, and a killed daemon stays a zombie until the init process reaps it.
pid_alive() { # pidfile name
    local pid stat
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # /proc/PID/stat is "PID (COMM) STATE ...".
    [[ $stat =~ ^[0-9]+\ \((.*)\)\ ([A-Za-z]) ]] || return 1
    [[ ${BASH_REMATCH[1]} == "$2" && ${BASH_REMATCH[2]} != [ZX] ]]
}

# ---------------------------------------------------------------- packages ---
installed() {
    [[ -x /usr/sbin/sge_qmaster && -x /usr/sbin/sge_execd ]] &&
        command -v qsub >/dev/null && command -v qconf >/dev/null
}

# Service starts during the install are denied: the maintainer scripts would
# start the qmaster before host_aliases exists, and fail. A policy-rc.d that
# was there before is put back as it was.
POLICY=/usr/sbin/policy-rc.d
restore_policy() {
    if [[ -e $POLICY.quanta-saved ]]; then
        mv -f "$POLICY.quanta-saved" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}

install_packages() {
    local pkgs=(gridengine-master gridengine-exec gridengine-client) policy host
    installed && return 0
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    host="$(hostname)"
    # The questions gridengine-common and -master ask: configure a cell
    # "default" with this host as its master.
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $host
gridengine-master shared/gridengineconfig boolean true
gridengine-master shared/gridenginecell string default
gridengine-master shared/gridenginemaster string $host
EOF
    policy="$(apt-cache policy gridengine-master 2>/dev/null || true)"
    if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
        apt-get update -q
    fi
    [[ -e $POLICY ]] && mv -f "$POLICY" "$POLICY.quanta-saved"
    printf '#!/bin/sh\n# Written by quanta ci/gridengine/start.sh during an install.\nexit 101\n' >"$POLICY"
    chmod 0755 "$POLICY"
    trap restore_policy EXIT
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    fi
    restore_policy
    trap - EXIT
    installed || die "the packages installed but sge_qmaster, sge_execd, qsub or qconf is missing"
}

# The cell is made by gridengine-master's postinst; made here if that was
# skipped (debconf said not to configure).
init_cell() {
    if [[ -s $COMMON/bootstrap && -n "$(ls -A "$SPOOL/spooldb" 2>/dev/null)" ]]; then
        return 0
    fi
    log "initializing cell $SGE_CELL"
    install -d -o sgeadmin -g sgeadmin -m 0755 "$SPOOL/qmaster" "$SPOOL/qmaster/job_scripts" "$SPOOL/spooldb" "$COMMON"
    [[ -s $COMMON/bootstrap ]] ||
        install -m 0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
    runuser -u sgeadmin -- /usr/share/gridengine/scripts/init_cluster "$SGE_ROOT" "$SGE_CELL" "$SPOOL/spooldb" sgeadmin ||
        die "init_cluster failed"
}

# ------------------------------------------------------------- host names ---
# Grid Engine compares the name a client gives for itself with the name the
# qmaster finds for the client's address. Here the host name resolves to
# 127.0.0.1, which resolves back to "localhost": host_aliases makes them one
# host (its first name is the one Grid Engine uses). Sets HOST.
HOST=""
ALIASES_CHANGED=0
resolve_host() {
    local name addr byaddr line
    name="$(hostname)"
    addr="$(getent ahostsv4 "$name" 2>/dev/null | awk 'NR == 1 { print $1 }')"
    [[ -n $addr ]] || die "the host name $name does not resolve (check /etc/hosts)"
    byaddr="$(SGE_ROOT=$SGE_ROOT "$UTIL/gethostbyaddr" -name "$addr" 2>/dev/null || true)"
    [[ -n $byaddr ]] || die "no name for $addr (the address of $name)"
    HOST="$byaddr"
    if [[ $byaddr == "$name" ]]; then
        return 0
    fi
    line="$byaddr $name"
    if [[ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$line" ]]; then
        log "host_aliases: $name is $byaddr (its address $addr resolves to $byaddr)"
        printf '%s\n' "$line" >"$COMMON/host_aliases"
        chmod 0644 "$COMMON/host_aliases"
        ALIASES_CHANGED=1
    fi
    if [[ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" != "$HOST" ]]; then
        printf '%s\n' "$HOST" >"$COMMON/act_qmaster"
        chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
        chmod 0644 "$COMMON/act_qmaster"
    fi
}

# ---------------------------------------------------------------- daemons ---
stop_daemon() { # pidfile name
    local pid i
    pid_alive "$1" "$2" || return 0
    pid="$(cat "$1")"
    log "stopping $2 (pid $pid) to apply new host aliases"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        pid_alive "$1" "$2" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

wait_for() { # what command...
    local what=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what: not after ${TIMEOUT}s"
        sleep 0.2
    done
}

start_qmaster() {
    install -d -o sgeadmin -g sgeadmin -m 0755 "$RUN_DIR"
    pid_alive "$QMASTER_PID" sge_qmaster && return 0
    log "starting sge_qmaster"
    /usr/sbin/sge_qmaster || fail "sge_qmaster exited with status $?"
    wait_for "sge_qmaster running (pid file $QMASTER_PID)" pid_alive "$QMASTER_PID" sge_qmaster
    wait_for "sge_qmaster answering (qconf -sh)" qconf -sh
}

start_execd() {
    install -d -o sgeadmin -g sgeadmin -m 0755 "$SPOOL/execd"
    pid_alive "$EXECD_PID" sge_execd && return 0
    log "starting sge_execd"
    SGE_EXECD_PIDFILE="$EXECD_PID" /usr/sbin/sge_execd || fail "sge_execd exited with status $?"
    # It daemonizes first and writes its pid file after.
    wait_for "sge_execd running (pid file $EXECD_PID)" pid_alive "$EXECD_PID" sge_execd
}

# ---------------------------------------------------------- configuration ---
CONF_DIR=""
CHANGED=()

# Sets `key value` in a configuration that qconf shows with `show` and
# takes back from a file with `modify` (file named `file`), if it differs.
set_conf() { # what show modify file key=value...
    local what=$1 show=$2 modify=$3 file=$4 kv key value current
    shift 4
    "$show" >"$CONF_DIR/$file.old"
    cp "$CONF_DIR/$file.old" "$CONF_DIR/$file"
    for kv in "$@"; do
        key="${kv%%=*}" value="${kv#*=}"
        current="$(awk -v k="$key" '$1 == k { $1 = ""; sub(/^ +/, ""); print }' "$CONF_DIR/$file")"
        [[ $current == "$value" ]] && continue
        sed -i "s|^$key .*|$key $value|" "$CONF_DIR/$file"
        CHANGED+=("$what $key=$value")
    done
    cmp -s "$CONF_DIR/$file.old" "$CONF_DIR/$file" && return 0
    local out
    out="$("$modify" "$CONF_DIR/$file" 2>&1)" || fail "qconf could not change the $what configuration: $out"
}

show_global() { qconf -sconf global; }
modify_global() { qconf -Mconf "$1"; }
show_sched() { qconf -ssconf; }
modify_sched() { qconf -Msconf "$1"; }

configure() {
    local out
    CONF_DIR="$(mktemp -d /tmp/quanta-gridengine-conf.XXXXXX)"
    trap 'rm -rf "$CONF_DIR"' RETURN
    # The tests (and CI) submit as root; root must be a manager to configure.
    qconf -sm | grep -qx root || qconf -am root >/dev/null 2>&1
    qconf -so 2>/dev/null | grep -qx root || qconf -ao root >/dev/null 2>&1
    qconf -sh | grep -qx "$HOST" || qconf -ah "$HOST" >/dev/null 2>&1
    qconf -ss 2>/dev/null | grep -qx "$HOST" || qconf -as "$HOST" >/dev/null 2>&1
    # The global file must be named for what it configures.
    # One array per level and resource request: a large campaign's
    # arrays exceed the default 75000 tasks (Slurm's MaxArraySize is set
    # alike in ci/slurm/start.sh).
    set_conf global show_global modify_global global min_uid=0 min_gid=0 max_aj_tasks=200000
    set_conf scheduler show_sched modify_sched sconf \
        schedule_interval=0:0:1 flush_submit_sec=1 flush_finish_sec=1 \
        job_load_adjustments=NONE load_adjustment_decay_time=0:0:0

    if ! qconf -sp "$PE" >/dev/null 2>&1; then
        cat >"$CONF_DIR/pe" <<EOF
pe_name            $PE
slots              99999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
        out="$(qconf -Ap "$CONF_DIR/pe" 2>&1)" || fail "qconf could not add the parallel environment $PE: $out"
        CHANGED+=("parallel environment $PE")
    fi

    if ! qconf -sq "$QUEUE" >/dev/null 2>&1; then
        # qconf -Aq wants every attribute: Grid Engine's defaults but for
        # the host, slots, no load threshold and the parallel environment.
        cat >"$CONF_DIR/queue" <<EOF
qname                 $QUEUE
hostlist              $HOST
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               $PE
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
        out="$(qconf -Aq "$CONF_DIR/queue" 2>&1)" || fail "qconf could not add the queue $QUEUE: $out"
        CHANGED+=("queue $QUEUE")
    fi
    local kv key value
    for kv in "hostlist=$HOST" "slots=$SLOTS" load_thresholds=NONE "pe_list=$PE" shell=/bin/sh; do
        key="${kv%%=*}" value="${kv#*=}"
        [[ "$(qconf -sq "$QUEUE" | awk -v k="$key" '$1 == k { print $2 }')" == "$value" ]] && continue
        out="$(qconf -mattr queue "$key" "$value" "$QUEUE" 2>&1)" ||
            fail "qconf could not set $key=$value on $QUEUE: $out"
        CHANGED+=("$QUEUE $key=$value")
    done
    if ((${#CHANGED[@]} > 0)); then
        log "configured: ${CHANGED[*]}"
    fi
}

# The states of this host's queue instance ("" when healthy; "au" when its
# execd has not reported; "E" after an error; "d" disabled), or "?" when
# qstat does not list it.
queue_states() {
    timeout 10 qstat -f -q "$QUEUE@$HOST" 2>/dev/null |
        awk -v q="$QUEUE@$HOST" '$1 == q { print ($6 == "" ? "ok" : $6); found = 1 }
            END { if (!found) print "?" }'
}

wait_for_queue() {
    local deadline=$((SECONDS + TIMEOUT)) states cleared=0
    while ((SECONDS < deadline)); do
        states="$(queue_states)"
        if [[ $states == ok ]]; then
            log "queue $QUEUE@$HOST is ready ($SLOTS slots)"
            return 0
        fi
        pid_alive "$QMASTER_PID" sge_qmaster || fail "sge_qmaster is not running"
        pid_alive "$EXECD_PID" sge_execd || fail "sge_execd is not running"
        # An error or disabled state left by an earlier run stays until
        # cleared.
        if [[ $states =~ [Ed] ]] && ((cleared == 0)); then
            log "queue $QUEUE@$HOST is in state $states; clearing and enabling it"
            qmod -c "$QUEUE@$HOST" >/dev/null 2>&1 || true
            qmod -e "$QUEUE@$HOST" >/dev/null 2>&1 || true
            cleared=1
        fi
        sleep 0.5
    done
    fail "queue $QUEUE@$HOST not ready after ${TIMEOUT}s (states: '${states}')"
}

# -------------------------------------------------------------- smoke test ---
# The job scripts are single-quoted on purpose: the job's shell expands them.
# shellcheck disable=SC2016
smoke_test() {
    local dir a t0 ms i
    dir="$(mktemp -d /tmp/quanta-gridengine-smoke.XXXXXX)"
    trap 'rm -rf "$dir"' RETURN
    log "smoke: 3-task array, then a 3-task array holding on it task by task"
    t0=$(date +%s%N)
    a="$(qsub -terse -N smoke-a -t 1-3 -o /dev/null -j y -S /bin/sh -b y \
        "sleep 1; echo \$SGE_TASK_ID > $dir/a.\$SGE_TASK_ID")" || fail "qsub of an array failed"
    a="${a%%.*}"
    # -sync y waits for every task; each reads what its task of a wrote.
    timeout 90 qsub -sync y -N smoke-b -t 1-3 -hold_jid_ad "$a" -o /dev/null -j y -S /bin/sh -b y \
        "cp $dir/a.\$SGE_TASK_ID $dir/b.\$SGE_TASK_ID" >/dev/null ||
        fail "the held array did not finish well"
    ms=$((($(date +%s%N) - t0) / 1000000))
    for i in 1 2 3; do
        [[ "$(cat "$dir/b.$i" 2>/dev/null)" == "$i" ]] ||
            fail "task $i of the held array saw '$(cat "$dir/b.$i" 2>/dev/null)', want '$i'"
    done
    log "smoke test passed (${ms} ms)"
}

# -------------------------------------------------------------------- main ---
if installed && pid_alive "$QMASTER_PID" sge_qmaster && pid_alive "$EXECD_PID" sge_execd; then
    resolve_host
    if ((ALIASES_CHANGED == 0)) && [[ "$(queue_states)" == ok ]]; then
        configure
        log "already running: queue $QUEUE@$HOST is ready"
        exit 0
    fi
fi

install_packages
init_cell
resolve_host
if ((ALIASES_CHANGED)); then
    # Running daemons hold the old host names.
    stop_daemon "$EXECD_PID" sge_execd
    stop_daemon "$QMASTER_PID" sge_qmaster
fi
start_qmaster
configure
start_execd
wait_for_queue
if [[ ${GRIDENGINE_START_SKIP_SMOKE:-0} != 1 ]]; then
    smoke_test
fi
log "Grid Engine $(qstat -help 2>/dev/null | head -n 1 | awk '{ print $2 }') ready: queue $QUEUE@$HOST"
