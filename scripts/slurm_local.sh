#!/usr/bin/env bash
# A one-node SLURM (munge + slurmctld + slurmd) on this machine, for trying `exaonepath-lab launch`
# and for the scheduler tests (tests/test_slurm_*.py). Needs root (slurmd runs jobs as their user).
#
#   scripts/slurm_local.sh up       install the Debian packages if missing, configure, start; idempotent
#   scripts/slurm_local.sh status   what runs, and `sinfo`
#   scripts/slurm_local.sh down     stop what `up` started (its pid files only) and undo its /etc link
# `up` on a running cluster rewrites the configuration but restarts nothing: `down` then `up` applies a change.
#
# Everything it writes lives in $EXAONEPATH_SLURM_DIR (default /var/tmp/exaonepath-lab-slurm): slurm.conf,
# gres.conf, its own munge key/socket, state, spool, logs, pid files. The only file outside it is the link
# /etc/slurm/slurm.conf -> $EXAONEPATH_SLURM_DIR/etc/slurm.conf, so that `sinfo`, `sbatch` and the jobs find
# the cluster without SLURM_CONF; it is made only where no slurm.conf exists, and `down` removes only that
# link. A machine that already has a SLURM configuration is left alone (`up` refuses).
#
# The node: this machine's CPUs and memory (from `slurmd -C`), `gpu` GRES so that jobs asking for GPUs
# schedule. slurmd drops GPUs without device files, so gres.conf names files that exist: the NVIDIA
# devices where there are some, else placeholder files in the state folder (SLURM warns they are not
# devices, and schedules them; CUDA_VISIBLE_DEVICES is set, torch finds no CUDA and trains on CPU).
set -euo pipefail

DIR=${EXAONEPATH_SLURM_DIR:-/var/tmp/exaonepath-lab-slurm}
ETC_CONF=/etc/slurm/slurm.conf
CLUSTER=exaonepath-local
FAKE_GPUS=${EXAONEPATH_SLURM_GPUS:-2}   # placeholder GPUs where the machine has none
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

alive() {  # alive DIR/run/NAME.pid: the process recorded there is running and is NAME (munged, slurmctld, slurmd)
    local pid name comm
    [ -s "$1" ] || return 1
    pid=$(cat "$1"); name=$(basename "$1" .pid)
    kill -0 "$pid" 2>/dev/null || return 1
    # A pid file left by a reboot or a crash may name a pid that another program has now: not ours.
    if [ -r "/proc/$pid/comm" ]; then comm=$(cat "/proc/$pid/comm"); else comm=$(ps -o comm= -p "$pid" 2>/dev/null || true); fi
    [ "$(basename "$comm")" = "$name" ]
}

install_packages() {
    local missing=()
    for cmd in slurmctld slurmd sinfo munged; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install ${PACKAGES[*]} with your package manager"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

write_config() {
    local node cpus sockets cores threads mem gres_files n
    node=$(hostname -s)
    # slurmd -C: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24151"
    local hw; hw=$(slurmd -C | head -n 1)
    field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
    cpus=$(field CPUs); sockets=$(field SocketsPerBoard); cores=$(field CoresPerSocket)
    threads=$(field ThreadsPerCore); mem=$(field RealMemory)
    mem=$(( mem * 95 / 100 ))  # slurmd drains a node that reports less memory than configured
    mkdir -p "$DIR"/{etc,state,spool,log,run,munge,gpu}
    chmod 755 "$DIR" "$DIR/munge"
    gres_files=()
    if compgen -G "/dev/nvidia[0-9]*" >/dev/null; then
        gres_files=(/dev/nvidia[0-9]*)
    else
        for ((i = 0; i < FAKE_GPUS; i++)); do : >"$DIR/gpu/gpu$i"; gres_files+=("$DIR/gpu/gpu$i"); done
    fi
    n=${#gres_files[@]}
    cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh (exaonepath-lab): a one-node SLURM for trying the launch path.
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
GresTypes=gpu
MinJobAge=600
KillWait=10
InactiveLimit=0
# Look at pending jobs every 2 s (default 60/30 s): a requeued job restarts within ~10 s.
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem Gres=gpu:$n State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    {
        echo "# Written by scripts/slurm_local.sh: GPU files SLURM hands out (placeholders where there are no GPUs)."
        for f in "${gres_files[@]}"; do echo "NodeName=$node Name=gpu File=$f"; done
    } >"$DIR/etc/gres.conf"
    # slurmd reads gres.conf next to slurm.conf: keep one in /etc/slurm only through the link below.
}

link_etc() {
    mkdir -p /etc/slurm
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$DIR/etc/slurm.conf" ]; then return 0; fi
    if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
        die "$ETC_CONF exists and is not ours: this machine has a SLURM configuration already; use that cluster"
    fi
    ln -s "$DIR/etc/slurm.conf" "$ETC_CONF"
    : >"$DIR/run/etc-link"  # `down` removes only a link it made
    if [ ! -e /etc/slurm/gres.conf ]; then
        ln -s "$DIR/etc/gres.conf" /etc/slurm/gres.conf
        : >"$DIR/run/etc-gres-link"
    fi
}

start_munge() {
    alive "$DIR/run/munged.pid" && return 0
    if [ ! -s "$DIR/munge/munge.key" ]; then
        # A key of our own: this cluster is one machine, nothing else needs to share it.
        (umask 077; head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
    fi
    chmod 400 "$DIR/munge/munge.key"
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    for _ in $(seq 50); do [ -S "$DIR/munge/munge.socket" ] && return 0; sleep 0.1; done
    die "munged did not start; see $DIR/log/munged.log"
}

start_slurm() {
    if ! alive "$DIR/run/slurmctld.pid"; then
        slurmctld -f "$DIR/etc/slurm.conf" -c  # -c: a fresh start, no jobs left from an earlier `up`
    fi
    if ! alive "$DIR/run/slurmd.pid"; then
        slurmd -f "$DIR/etc/slurm.conf" -N "$(hostname -s)"
    fi
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -n 1 || true)
        case "$state" in idle|mixed|allocated) say "up: node $(hostname -s) $state; state and logs in $DIR"; return 0 ;; esac
        sleep 0.5
    done
    die "the node did not become idle (state: ${state:-no answer}); see $DIR/log/slurmctld.log and slurmd.log"
}

stop_pidfile() {  # stop_pidfile NAME: TERM the process in its pid file, wait for it
    local f="$DIR/run/$1.pid" pid
    alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "$1 ($pid) did not stop on TERM; killing it"; kill -9 "$pid"; }
    rm -f "$f"
}

cmd_up() {
    [ "$(id -u)" = 0 ] || die "run as root (sudo $0 up): slurmd starts jobs as their user"
    install_packages
    write_config
    link_etc
    start_munge
    start_slurm
}

cmd_down() {
    [ -d "$DIR" ] || { say "nothing to stop ($DIR does not exist)"; return 0; }
    # Jobs still running are killed with slurmd; stop the daemons in reverse order.
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile munged
    if [ -e "$DIR/run/etc-link" ] && [ "$(readlink "$ETC_CONF" || true)" = "$DIR/etc/slurm.conf" ]; then
        rm -f "$ETC_CONF" "$DIR/run/etc-link"
    fi
    if [ -e "$DIR/run/etc-gres-link" ] && [ "$(readlink /etc/slurm/gres.conf || true)" = "$DIR/etc/gres.conf" ]; then
        rm -f /etc/slurm/gres.conf "$DIR/run/etc-gres-link"
    fi
    say "down (state and logs kept in $DIR)"
}

cmd_status() {
    local rc=0
    for d in munged slurmctld slurmd; do
        if alive "$DIR/run/$d.pid"; then echo "$d: running (pid $(cat "$DIR/run/$d.pid"))"; else echo "$d: not running"; rc=1; fi
    done
    sinfo 2>&1 || rc=1
    return $rc
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status   (state in $DIR)" >&2; exit 2 ;;
esac
