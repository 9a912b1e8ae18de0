#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by tests/slurm/start.sh: only the daemons that
# start.sh started (by their pid files, never by name), then restore a slurm.conf it moved aside.
set -uo pipefail

STATE=/run/archscale-slurm
MARKER="# archscale test cluster (tests/slurm/start.sh)"
log() { echo "[slurm/stop] $*" >&2; }

stop_pid() { # name pidfile
    local name=$1 pidfile=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    # A stale pid file (daemon gone, pid reused) must not kill another program: check the name.
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM for 5 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        log "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

if [[ ! -f $STATE/started ]]; then
    log "nothing to stop (no $STATE/started)"
    exit 0
fi

# Cancel jobs left in the queue so their job steps do not outlive the daemons.
if grep -qx slurmctld "$STATE/started" && command -v scancel >/dev/null; then
    timeout 10 scancel --state=PENDING,RUNNING,SUSPENDED --full --quiet --user="$(id -un)" 2>/dev/null || true
fi
# slurmd first (it owns the job steps), then the controller, then munge if we started it.
grep -qx slurmd "$STATE/started" && stop_pid slurmd "$STATE/slurmd.pid"
grep -qx slurmctld "$STATE/started" && stop_pid slurmctld "$STATE/slurmctld.pid"
grep -qx munged "$STATE/started" && stop_pid munged "$STATE/munged.pid"
rm -f "$STATE/started"

if [[ -f /etc/slurm/slurm.conf.archscale-backup ]] && grep -qF "$MARKER" /etc/slurm/slurm.conf 2>/dev/null; then
    mv /etc/slurm/slurm.conf.archscale-backup /etc/slurm/slurm.conf
    [[ -f /etc/slurm/gres.conf.archscale-backup ]] && mv /etc/slurm/gres.conf.archscale-backup /etc/slurm/gres.conf
    log "restored the previous /etc/slurm/slurm.conf"
fi
exit 0
