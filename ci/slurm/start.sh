#!/usr/bin/env bash
# Start a real single-node Slurm cluster (munged + slurmctld + slurmd) for
# quanta's tests, as root, on a Debian machine WITHOUT systemd.
#
# Owns: the Debian packages slurmctld/slurmd/slurm-client/munge, the files
# /etc/slurm/slurm.conf and /etc/slurm/cgroup.conf, /etc/munge/munge.key (only
# if missing), and the dirs /run/slurm /run/munge /var/log/slurm
# /var/spool/slurmctld /var/spool/slurmd. Stop it with ci/slurm/stop.sh.
#
# Idempotent: if the node already answers as usable and slurm.conf is what this
# script would write, it exits 0 at once. Daemons that are already running are
# left alone unless slurm.conf had to change.
#
# Environment:
#   SLURM_START_SKIP_SMOKE=1   skip the smoke test (srun + arrays + dependencies)
#   SLURM_START_TIMEOUT=60     seconds to wait for the node to become idle
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

NODE="$(hostname -s)"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
RUN_DIR=/run/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
MUNGE_LOG=/var/log/munge/munged.log
TIMEOUT="${SLURM_START_TIMEOUT:-60}"
SLURMD_STARTED_AT=""
SECONDS=0

log() { echo "[slurm-start +${SECONDS}s] $*" >&2; }
die() {
    echo "[slurm-start +${SECONDS}s] ERROR: $*" >&2
    exit 1
}

dump_logs() {
    local f
    for f in "$CTLD_LOG" "$SLURMD_LOG" "$MUNGE_LOG"; do
        if [[ -f $f ]]; then
            echo "----- last 50 lines of $f -----" >&2
            tail -n 50 "$f" >&2 || true
        fi
    done
}

fail() {
    echo "[slurm-start +${SECONDS}s] ERROR: $*" >&2
    dump_logs
    exit 1
}

[[ $EUID -eq 0 ]] || die "must run as root (this script installs packages and starts daemons)"

# Node state as sinfo prints it (e.g. "idle", "mixed", "down*"), or "" if the
# controller does not answer.
node_state() {
    command -v sinfo >/dev/null 2>&1 || return 0
    timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true
}

# "Usable" includes busy states: another engineer's jobs may be running, and
# restarting the daemons under them would be wrong.
state_is_usable() {
    [[ $1 =~ ^(idle|mixed|allocated|completing)$ ]]
}

# True if the pidfile names a live process whose command is the file's basename
# (slurmd.pid -> slurmd). `kill -0` alone is not enough: pids get reused, and a
# killed daemon stays a zombie until the init process here reaps it.
pid_alive() { # pidfile
    local pid stat name
    name="$(basename "$1" .pid)"
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    # /proc/PID/stat is "PID (COMM) STATE ...".
    [[ $stat =~ ^[0-9]+\ \((.*)\)\ ([A-Za-z]) ]] || return 1
    [[ ${BASH_REMATCH[1]} == "$name" && ${BASH_REMATCH[2]} != [ZX] ]]
}

# ---------------------------------------------------------------- packages ---
install_packages() {
    local pkgs=(slurmctld slurmd slurm-client munge)
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sinfo >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the package lists when they cannot serve the install: an
    # empty list has no candidate, a stale one 404s on download.
    # (Captured first: with pipefail, `grep -q` closing the pipe early would
    # make the pipeline fail and trigger a needless update.)
    local policy
    policy="$(apt-cache policy slurmctld 2>/dev/null || true)"
    if ! grep -q 'Candidate: [0-9]' <<<"$policy"; then
        apt-get update -q
    fi
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        log "install failed; refreshing package lists and retrying"
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${pkgs[@]}"
    fi
}

# ------------------------------------------------------------------- munge ---
start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating $MUNGE_KEY"
        install -d -o munge -g munge -m 0700 /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    # munged refuses a key readable by others or owned by another user.
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge

    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if pid_alive "$MUNGE_PID"; then
        die "munged (pid $(cat "$MUNGE_PID")) is running but 'munge -n | unmunge' fails; see $MUNGE_LOG"
    fi
    log "starting munged"
    # munged daemonizes itself; --force lets it take over a stale socket left
    # by a munged that was killed.
    runuser -u munge -- /usr/sbin/munged --force ||
        { dump_logs; die "munged failed to start"; }
    local i
    for i in $(seq 1 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    fail "munged started but 'munge -n | unmunge' still fails"
}

# --------------------------------------------------------------- slurm.conf ---
# Print the slurm.conf this machine should have.
render_conf() {
    local hw real_mem cpus_line
    # First line of `slurmd -C` is the node's hardware as slurmd will report it
    # when registering; configuring more than that would drain the node.
    hw="$(slurmd -C 2>/dev/null | grep -m1 '^NodeName=')" ||
        die "'slurmd -C' did not print a NodeName line"
    real_mem="$(sed -n 's/.*RealMemory=\([0-9]\+\).*/\1/p' <<<"$hw")"
    [[ -n $real_mem ]] || die "no RealMemory in 'slurmd -C' output: $hw"
    # A little headroom: free memory fluctuates and a node whose configured
    # RealMemory exceeds what slurmd measures is drained as "Low RealMemory".
    real_mem=$((real_mem * 95 / 100))
    cpus_line="$(sed -e 's/^NodeName=[^ ]*//' -e 's/ RealMemory=[0-9]*//' <<<"$hw")"

    cat <<EOF
# Written by quanta ci/slurm/start.sh; regenerated on every start.
# Single-node test cluster, daemons run as root, no systemd, no cgroups.
ClusterName=quanta
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true

StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmctldDebug=info
SlurmdDebug=info

# No cgroup plugin anywhere: cgroups are not delegated to us here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# jobacct_gather/linux crashed slurmstepd on these machines.
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.log

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a per-CPU default one job would claim all the node's memory.
DefMemPerCPU=512
# The default 3 s batch_sched_delay makes job arrays crawl.
SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_min_interval=0
DependencyParameters=kill_invalid_depend
MaxArraySize=100001
MaxJobCount=200000
# Keep finished jobs visible to 'scontrol show job' for 5 minutes.
MinJobAge=300
ReturnToService=2

NodeName=${NODE} NodeAddr=127.0.0.1${cpus_line} RealMemory=${real_mem} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
}

# ---------------------------------------------------------------- daemons ---
stop_slurm_daemons() {
    local f pid i
    for f in "$SLURMD_PID" "$CTLD_PID"; do
        pid_alive "$f" || continue
        pid="$(cat "$f")"
        log "stopping $(basename "$f" .pid) (pid $pid) to apply the new slurm.conf"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            pid_alive "$f" || break
            sleep 0.1
        done
        if pid_alive "$f"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
}

start_slurm_daemons() {
    install -d -m 0755 "$RUN_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    if ! pid_alive "$CTLD_PID"; then
        log "starting slurmctld"
        slurmctld || fail "slurmctld exited with status $?"
    fi
    if ! pid_alive "$SLURMD_PID"; then
        log "starting slurmd"
        SLURMD_STARTED_AT="$(date +%s)"
        slurmd || fail "slurmd exited with status $?"
    fi
}

# True once the running slurmd has registered with slurmctld. Until then a
# restarted slurmctld reports the node state it saved, e.g. "idle".
slurmd_registered() {
    local started
    [[ -n $SLURMD_STARTED_AT ]] || return 0
    started="$(timeout 10 scontrol show node "$NODE" 2>/dev/null |
        grep -o 'SlurmdStartTime=[0-9T:-]*' | cut -d= -f2)" || return 1
    [[ -n $started ]] && (($(date -d "$started" +%s 2>/dev/null || echo 0) >= SLURMD_STARTED_AT))
}

wait_for_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state resumed=0
    while ((SECONDS < deadline)); do
        state="$(node_state)"
        if state_is_usable "$state" && slurmd_registered; then
            log "node $NODE is $state"
            return 0
        fi
        pid_alive "$CTLD_PID" || fail "slurmctld is not running"
        pid_alive "$SLURMD_PID" || fail "slurmd is not running"
        # A node left down/drained by an earlier run (e.g. killed slurmd) stays
        # so until told otherwise; ReturnToService=2 covers most but not drain.
        if [[ $state =~ ^(down|drain|drained|draining|fail) ]] && ((resumed < 3)); then
            log "node $NODE is $state; resuming it"
            scontrol update nodename="$NODE" state=resume 2>&1 | sed 's/^/  scontrol: /' >&2 || true
            resumed=$((resumed + 1))
        fi
        sleep 0.5
    done
    timeout 10 scontrol show node "$NODE" >&2 || true
    fail "node $NODE not idle after ${TIMEOUT}s (last state: '${state:-no answer}')"
}

# -------------------------------------------------------------- smoke test ---
# Wait until none of the given job ids is in the queue any more.
wait_gone() { # timeout_s jobid...
    local limit=$1 deadline=$((SECONDS + $1))
    shift
    while [[ -n "$(squeue -h -j "$(
        IFS=,
        echo "$*"
    )" -o %i 2>/dev/null)" ]]; do
        ((SECONDS < deadline)) || fail "jobs $* still queued after $limit s"
        sleep 0.1
    done
}

# Tally of a job's states over all its array tasks, e.g. " 4 JobState=COMPLETED;".
job_states() {
    scontrol -o show job "$1" | grep -o 'JobState=[A-Z_]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';'
}

# The --wrap scripts are single-quoted on purpose: Slurm expands them per task.
# shellcheck disable=SC2016
smoke_test() {
    local dir t0 ms a b i ms_a
    dir="$(mktemp -d /tmp/quanta-slurm-smoke.XXXXXX)"
    trap 'rm -rf "$dir"' RETURN

    log "smoke: srun -N1 -n1 true"
    timeout 60 srun -N1 -n1 true || fail "srun -N1 -n1 true failed"

    log "smoke: 4-element array"
    t0=$(date +%s%N)
    a="$(sbatch --parsable --chdir="$dir" --output='a_%a.out' --array=0-3 \
        --wrap 'echo $SLURM_ARRAY_TASK_ID')" || fail "sbatch of array failed"
    a="${a%%;*}"
    wait_gone 60 "$a"
    ms_a=$((($(date +%s%N) - t0) / 1000000))
    [[ "$(job_states "$a")" == " 4 JobState=COMPLETED;" ]] ||
        fail "array $a did not complete: $(job_states "$a")"
    for i in 0 1 2 3; do
        [[ "$(cat "$dir/a_$i.out" 2>/dev/null)" == "$i" ]] ||
            fail "array $a task $i wrote '$(cat "$dir/a_$i.out" 2>/dev/null)', want '$i'"
    done
    log "smoke: 4-element array ran in ${ms_a} ms (submit to last task gone)"

    log "smoke: array -> aftercorr array"
    t0=$(date +%s%N)
    a="$(sbatch --parsable --chdir="$dir" --output='c_%a.out' --array=0-3 \
        --wrap 'sleep 1; echo $SLURM_ARRAY_TASK_ID')" || fail "sbatch of array failed"
    a="${a%%;*}"
    # Task i of b reads what task i of a wrote: empty output means b ran early.
    b="$(sbatch --parsable --chdir="$dir" --output='d_%a.out' --array=0-3 \
        --dependency="aftercorr:$a" --kill-on-invalid-dep=yes \
        --wrap 'cat c_${SLURM_ARRAY_TASK_ID}.out')" || fail "sbatch of dependent array failed"
    b="${b%%;*}"
    wait_gone 90 "$a" "$b"
    ms=$((($(date +%s%N) - t0) / 1000000))
    [[ "$(job_states "$b")" == " 4 JobState=COMPLETED;" ]] ||
        fail "dependent array $b did not complete: $(job_states "$b")"
    for i in 0 1 2 3; do
        [[ "$(cat "$dir/d_$i.out" 2>/dev/null)" == "$i" ]] ||
            fail "dependent task ${b}_$i saw '$(cat "$dir/d_$i.out" 2>/dev/null)', want '$i'"
    done
    log "smoke: array + aftercorr array ran in ${ms} ms"

    log "smoke: afterok on a failing job is cancelled (kill_invalid_depend)"
    a="$(sbatch --parsable --chdir="$dir" --output=/dev/null --wrap 'exit 3')" ||
        fail "sbatch failed"
    b="$(sbatch --parsable --chdir="$dir" --output=/dev/null \
        --dependency="afterok:$a" --kill-on-invalid-dep=yes --wrap true)" ||
        fail "sbatch of dependent job failed"
    wait_gone 60 "$a" "$b"
    [[ "$(job_states "$b")" == " 1 JobState=CANCELLED;" ]] ||
        fail "job $b depending on failed $a: $(job_states "$b"), want CANCELLED"

    squeue --json >/dev/null 2>&1 ||
        log "WARNING: 'squeue --json' does not work on this Slurm"
    log "smoke test passed"
}

# -------------------------------------------------------------------- main ---
# The PID checks come first: with no slurmctld, sinfo retries for ~10 s.
if command -v slurmd >/dev/null 2>&1 && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" &&
    state_is_usable "$(node_state)" &&
    [[ -f $CONF ]] && cmp -s "$CONF" <(render_conf); then
    log "already running: node $NODE is $(node_state)"
    exit 0
fi

install_packages
start_munge

install -d -m 0755 "$CONF_DIR"
new_conf="$(render_conf)"
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    log "writing $CONF"
    printf '%s\n' "$new_conf" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    # Running daemons hold the old node/partition layout: restart them.
    stop_slurm_daemons
fi

start_slurm_daemons
wait_for_idle

if [[ ${SLURM_START_SKIP_SMOKE:-0} != 1 ]]; then
    smoke_test
fi
log "Slurm $(sinfo -V | awk '{print $2}') ready on node $NODE"
