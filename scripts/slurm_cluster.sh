#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (root only), to test profiles against a real scheduler.
#
#   bash scripts/slurm_cluster.sh start    install Debian's SLURM + munge if missing, configure, start, wait for idle
#   bash scripts/slurm_cluster.sh status   sinfo / squeue, or "not running"
#   bash scripts/slurm_cluster.sh stop     cancel jobs, stop the daemons started by `start` (by their recorded PIDs),
#                                          remove the slurm.conf / gres.conf it wrote
#
# The node is localhost with the machine's CPUs and memory and one fake GPU (gres on /dev/null), in two
# partitions, `gpu` and `cpu`, like the ones profiles/slurm expects. No slurmdbd: `sacct` does not
# work here, so clients must poll with squeue (MinJobAge keeps finished jobs visible to it).
# State, spool, logs and PID files live under $WSSS_SLURM_DIR (default /tmp/wsss-slurm). The config
# has to be /etc/slurm/slurm.conf: the executor plugin's job step drops SLURM_CONF, so srun inside a
# job only finds the default path. A slurm.conf that this script did not write is never overwritten.
set -euo pipefail

STATE=${WSSS_SLURM_DIR:-/tmp/wsss-slurm}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by wsss-pipeline scripts/slurm_cluster.sh"
MUNGE_SOCKET_DIR=/run/munge
DAEMONS=(slurmd slurmctld munged)   # stop order: the node, the controller, then authentication

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }
# exit status 3: SLURM cannot be installed here (callers such as the tests skip rather than fail)
cannot_install() { echo "slurm_cluster.sh: $*" >&2; exit 3; }
log() { echo "slurm_cluster.sh: $*" >&2; }

pid_of() {   # the recorded PID of a daemon, if that process is still alive
    local file="$STATE/run/$1.pid" pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

log_tails() {
    local f
    for f in "$STATE"/log/slurm*.log "$STATE"/munge/munged.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 25 lines)" >&2
        tail -n 25 "$f" >&2
    done
}

install_packages() {
    local missing=() pkg
    for pkg in slurmctld slurmd slurm-client munge; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || cannot_install "missing packages ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    # no init system here to start them: the packages' own service starts may fail harmlessly
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/log/apt.log" 2>&1 \
        && apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/log/apt.log" 2>&1 \
        || { tail -n 20 "$STATE/log/apt.log" >&2; cannot_install "apt-get install ${missing[*]} failed (log: $STATE/log/apt.log)"; }
}

write_config() {
    if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
    fi
    local cpus mem
    cpus=$(nproc)
    # slurmd drains a node that claims more memory than it has; MemTotal is what slurmd measures too
    mem=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    mkdir -p /etc/slurm
    cat >"$CONF" <<EOF
$MARKER
ClusterName=wsss-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MpiDefault=none
MailProg=/bin/true
# no cgroups: a container has no delegated cgroup tree to give slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# without slurmdbd a finished job is visible only while slurmctld keeps its record: an hour, for a
# squeue-polling client to see it end and for tests to read its record with scontrol afterwards
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=gpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=localhost MaxTime=INFINITE State=UP
EOF
    cat >"$GRES_CONF" <<EOF
$MARKER
# a fake GPU: SLURM schedules and accounts it like a real one, /dev/null stands in for the device
NodeName=localhost Name=gpu File=/dev/null
EOF
}

start_munge() {
    if pid_of munged >/dev/null; then return 0; fi
    if [ ! -s /etc/munge/munge.key ]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 "$MUNGE_SOCKET_DIR"
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    # munged runs as the munge user (as its package intends) and writes its PID file and log there
    install -d -o munge -g munge -m 0755 "$STATE/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" \
        || { log_tails; die "munged did not start (log: $STATE/munge/munged.log)"; }
    ln -sf ../munge/munged.pid "$STATE/run/munged.pid"
}

start() {
    [ "$(id -u)" -eq 0 ] || cannot_install "must run as root (it installs packages and writes /etc/slurm)"
    # a failed start leaves no daemon behind
    trap 'stop >/dev/null 2>&1 || true' EXIT
    mkdir -p "$STATE/ctld" "$STATE/spool" "$STATE/run" "$STATE/log"
    install_packages
    write_config
    start_munge
    # already running: apply the config just written
    if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; then scontrol reconfigure; fi
    # slurmd and slurmctld daemonize and write the PID files named in slurm.conf
    pid_of slurmctld >/dev/null || /usr/sbin/slurmctld || { log_tails; die "slurmctld did not start"; }
    pid_of slurmd >/dev/null || /usr/sbin/slurmd || { log_tails; die "slurmd did not start"; }
    local state="" i name
    for i in $(seq 1 60); do
        state=$(sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1 || true)
        [ "$state" = idle ] && break
        for name in "${DAEMONS[@]}"; do
            pid_of "$name" >/dev/null || { log_tails; die "$name exited during start; logs under $STATE/log"; }
        done
        sleep 1
    done
    if [ "$state" != idle ]; then
        log_tails
        die "node localhost not idle after 60 s (state: '${state:-no answer}'); logs under $STATE/log"
    fi
    trap - EXIT
    log "cluster up (conf $CONF, state $STATE)"
    sinfo
}

remove_config() {
    # With a slurm.conf whose controller is gone, every `snakemake` on this machine waits ~9 s: the SLURM
    # executor plugin runs `scontrol show config` when it is loaded, and scontrol retries the controller.
    local file
    for file in "$CONF" "$GRES_CONF"; do
        if [ -f "$file" ] && grep -qF "$MARKER" "$file"; then rm -f "$file"; fi
    done
}

stop() {
    stop_daemons
    remove_config
}

stop_daemons() {
    local name pid pids=() i
    # running jobs' slurmstepd processes would outlive slurmd
    if pid_of slurmctld >/dev/null; then
        squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
        for i in $(seq 1 20); do
            [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    for name in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$name"); then
            kill "$pid" && pids+=("$pid")
        fi
    done
    for i in $(seq 1 30); do
        local alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        [ ${#alive[@]} -eq 0 ] && { log "stopped"; return 0; }
        pids=("${alive[@]}")
        sleep 1
    done
    log "still running after 30 s, killing: ${pids[*]}"
    kill -9 "${pids[@]}" 2>/dev/null || true
}

status() {
    if pid_of slurmctld >/dev/null; then
        sinfo && squeue
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
