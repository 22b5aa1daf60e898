#!/usr/bin/env bash
# A one-node Slurm cluster on this host, for tests and trials: munged, slurmctld and slurmd
# with a generated slurm.conf (this host as the only node, its cores and memory), all state
# under DIR. Needs root and Debian's slurm-wlm and munge (.ci/install-deps installs them).
#   scripts/slurm-local.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm-local.sh stop DIR
set -euo pipefail
cmd=${1:?start or stop}; dir=$(realpath -m "${2:?state folder}")
case "$cmd" in
start)
    mkdir -p "$dir"/{spool,state,log,munge,run}
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    cat > "$dir/slurm.conf" <<CONF
ClusterName=tessera-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    # A munge key of our own and a daemon on a socket of our own: no system state touched.
    [ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 700 "$dir/munge"; chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 100); do
        if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "export SLURM_CONF=$SLURM_CONF"; exit 0
        fi
        sleep 0.2
    done
    echo "the node never became idle; see $dir/log" >&2; sinfo >&2 || true; exit 1
    ;;
stop)
    for d in slurmd slurmctld munged; do
        [ -f "$dir/run/$d.pid" ] && kill "$(cat "$dir/run/$d.pid")" 2>/dev/null || true
    done
    ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
