#!/usr/bin/env bash
# A one-node Slurm cluster on loopback, for trying pilot with Slurm on a laptop and
# for the Slurm tests in CI.
#
#   scripts/local-slurm.sh start    install slurm-wlm + munge if missing, start the daemons
#   scripts/local-slurm.sh status   say whether the daemons answer; show the node
#   scripts/local-slurm.sh stop     cancel every job and stop the daemons
#
# Needs root and Debian/Ubuntu (apt-get). Works without systemd: the daemons are
# started directly. Idempotent: `start` on a running cluster only checks it.
# The node declares more CPUs than the machine may have (SlurmdParameters=
# config_overrides), so several pilots fit at once; nothing here is for production.
set -euo pipefail

SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
MARKER="# written by pilot scripts/local-slurm.sh"
PARTITION=${LOCAL_SLURM_PARTITION:-debug}
NODE_CPUS=${LOCAL_SLURM_CPUS:-8}
NODE_MEMORY_MB=${LOCAL_SLURM_MEMORY_MB:-8000}
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
NODE=$(hostname -s)

log() { echo "local-slurm: $*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "run as root (it installs packages and starts system daemons)"
        exit 2
    fi
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    # The packages may start their services where systemd runs; this script runs its own.
    if [ -d /run/systemd/system ]; then
        systemctl stop slurmctld slurmd munge 2>/dev/null || true
    fi
}

write_config() {
    if [ -f "$SLURM_CONF" ] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
        log "$SLURM_CONF exists and was not written by this script; not touching it"
        log "(set SLURM_CONF=/another/path to use a separate configuration)"
        exit 2
    fi
    mkdir -p "$(dirname "$SLURM_CONF")" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
    cat >"$SLURM_CONF" <<EOF
$MARKER
ClusterName=pilot-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
# No cgroups here: track processes through /proc and bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, every job is given the whole node's memory and jobs run one at a time.
DefMemPerCPU=1000
# The node may declare more CPUs than the machine has.
SlurmdParameters=config_overrides
ReturnToService=2
# A walltime kill follows its SIGTERM quickly; finished jobs leave squeue soon.
KillWait=5
MinJobAge=30
InactiveLimit=0
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$NODE_MEMORY_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        rm -f /run/munge/munged.pid
        runuser -u munge -- /usr/sbin/munged
    fi
    wait_until "munge answers" 10 sh -c 'munge -n | unmunge >/dev/null 2>&1'
}

alive() {  # pidfile
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_slurm() {
    if ! alive /run/slurmctld.pid; then
        slurmctld -f "$SLURM_CONF"
    fi
    if ! alive /run/slurmd.pid; then
        slurmd -f "$SLURM_CONF"
    fi
    export SLURM_CONF
    wait_until "slurmctld answers" 30 scontrol ping
    # A node that was down when the daemons last stopped comes back here.
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    wait_until "node $NODE is idle or in use" 30 \
        sh -c "sinfo -h -n '$NODE' -o %t | grep -Eq '^(idle|mix|alloc)'"
}

wait_until() {  # what seconds command...
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out after ${seconds}s waiting until $what (logs in $LOG_DIR)"
            exit 1
        fi
        sleep 0.2
    done
}

status() {
    export SLURM_CONF
    local ok=0
    for daemon in slurmctld slurmd; do
        if alive "/run/$daemon.pid"; then
            echo "$daemon: running (pid $(cat "/run/$daemon.pid"))"
        else
            echo "$daemon: stopped"
            ok=1
        fi
    done
    if [ "$ok" -eq 0 ]; then
        sinfo
    fi
    return "$ok"
}

stop() {
    export SLURM_CONF
    if alive /run/slurmctld.pid; then
        scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
    fi
    for daemon in slurmd slurmctld; do
        if alive "/run/$daemon.pid"; then
            local pid
            pid=$(cat "/run/$daemon.pid")
            kill "$pid"
            wait_until "$daemon exits" 20 sh -c "! kill -0 $pid"
        fi
        rm -f "/run/$daemon.pid"
    done
    echo "stopped"
}

case "${1:-}" in
    start)
        need_root
        install_packages
        write_config
        start_munge
        start_slurm
        echo "local Slurm is up: partition '$PARTITION' on node $NODE ($NODE_CPUS CPUs)"
        ;;
    status) status ;;
    stop) need_root; stop ;;
    *)
        echo "usage: $0 start|status|stop" >&2
        exit 2
        ;;
esac
