#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine for archscale's integration tests.
#
#   sudo bash tests/slurm/start.sh        # installs the Debian packages if they are missing
#   bash tests/slurm/stop.sh              # stops exactly the daemons this script started
#
# What it sets up (see docs in README, section "SLURM"):
#   - munged (reused if one already answers `munge -n`),
#   - /etc/slurm/slurm.conf + gres.conf (the SLURM job-step plugin strips SLURM_CONF before its
#     inner srun, so the config must live in the default location),
#   - one node "localhost" with every core of this machine, RealMemory a bit below `slurmd -C`,
#     and a FAKE a100 GPU (gres File=/dev/null): `--gpus=a100:1` is scheduled and the job sees
#     CUDA_VISIBLE_DEVICES=0, but there is no GPU, so code must still run on the CPU;
#   - no accounting (no slurmdbd): job status through `squeue`, kept for MinJobAge=3600 s (a loaded run of the tiny workflow outlasted 600 s and its first jobs left squeue).
# An existing /etc/slurm/slurm.conf that this script did not write is moved aside and restored
# by stop.sh. Needs root (Debian/Ubuntu, no systemd needed).
set -euo pipefail

STATE=/run/archscale-slurm            # pid files and the list of what we started
SPOOL=/var/spool/archscale-slurm      # controller state and slurmd spool
LOGS=/var/log/archscale-slurm
MARKER="# archscale test cluster (tests/slurm/start.sh)"
PARTITION=${ARCHSCALE_SLURM_PARTITION:-debug}

log() { echo "[slurm/start] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (the daemons and /etc/slurm need it): sudo bash $0"

# alive PIDFILE NAME: the pid file names a running process called NAME (not a reused pid).
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null && [[ $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$2" ]]; }

if alive "$STATE/slurmctld.pid" slurmctld && alive "$STATE/slurmd.pid" slurmd \
    && [[ $(timeout 5 sinfo -h -o %t 2>/dev/null | head -1) =~ ^(idle|mix|alloc) ]]; then
    log "already running: $(timeout 5 sinfo -h -o '%P %t %G' | head -1)"
    exit 0
fi

# ---- packages ------------------------------------------------------------------------
need=()
for bin in slurmctld slurmd sinfo sbatch munged; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if ((${#need[@]})); then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get: install SLURM (slurmctld slurmd slurm-client munge)"
    log "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

# A half-started cluster from an earlier attempt: stop what it started before starting anew.
if [[ -f $STATE/started ]]; then
    log "stopping the daemons of an earlier, incomplete start"
    bash "$(dirname "${BASH_SOURCE[0]}")/stop.sh"
fi
mkdir -p "$STATE" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" /etc/slurm
: >"$STATE/started"

# ---- munge ---------------------------------------------------------------------------
if munge -n >/dev/null 2>&1; then
    log "munged already running: reusing it (stop.sh will leave it alone)"
else
    [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing: reinstall the munge package"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n >/dev/null 2>&1 || die "munged did not start (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/munged.pid"
    echo munged >>"$STATE/started"
fi

# ---- configuration -------------------------------------------------------------------
if [[ -f /etc/slurm/slurm.conf ]] && ! grep -qF "$MARKER" /etc/slurm/slurm.conf; then
    log "moving the existing /etc/slurm/slurm.conf aside (stop.sh restores it)"
    mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.archscale-backup
    [[ -f /etc/slurm/gres.conf ]] && mv /etc/slurm/gres.conf /etc/slurm/gres.conf.archscale-backup
fi

hw=$(slurmd -C | head -1)
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket)
threads=$(field ThreadsPerCore); mem=$(field RealMemory)
mem=$((mem * 95 / 100))
host=$(hostname -s)

cat >/etc/slurm/slurm.conf <<EOF
$MARKER
ClusterName=archscale
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
# Finished jobs stay visible to squeue for an hour (the status source without accounting).
MinJobAge=3600
# SIGTERM -> SIGKILL grace at scancel/timeout/preemption: time for a final checkpoint.
KillWait=30
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:a100:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/gres.conf <<EOF
$MARKER
AutoDetect=off
NodeName=localhost Name=gpu Type=a100 File=/dev/null
EOF

# ---- daemons -------------------------------------------------------------------------
slurmctld -c
echo slurmctld >>"$STATE/started"
for _ in $(seq 50); do [[ -s $STATE/slurmctld.pid ]] && break; sleep 0.1; done
slurmd -N localhost
echo slurmd >>"$STATE/started"

# Poll for the node; check the controller on each loop (a dead controller makes sinfo hang).
state=""
for _ in $(seq 60); do
    alive "$STATE/slurmctld.pid" slurmctld || die "slurmctld died: $(tail -5 "$LOGS/slurmctld.log")"
    state=$(timeout 5 sinfo -h -o %t 2>/dev/null | head -1 || true)
    [[ $state == idle ]] && break
    sleep 0.5
done
[[ $state == idle ]] || die "node not idle after 30 s (state '$state'); see $LOGS/"
log "up: $(sinfo -h -o 'partition=%P nodes=%D cpus=%c mem=%mMB gres=%G state=%t')"
