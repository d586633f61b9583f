#!/usr/bin/env bash
# Start a real single-node Slurm cluster (munged + slurmctld + slurmd) on 127.0.0.1
# for the test suite and for trying `dls-microscopy run --cluster slurm` locally.
#
#   SLURM_DIR=/tmp/my-slurm bash scripts/slurm/slurm_up.sh
#   export SLURM_CONF=/tmp/my-slurm/slurm.conf     # printed by this script; sbatch/squeue need it
#   ...
#   SLURM_DIR=/tmp/my-slurm bash scripts/slurm/slurm_down.sh
#
# Needs root (daemons run as root; munged runs as user munge). Installs the Debian/Ubuntu
# packages slurmctld, slurmd, slurm-client and munge with apt-get when they are missing.
# The configuration, state, spool, logs and pidfiles all live in $SLURM_DIR; /etc/slurm is
# not touched (every Slurm command and daemon reads $SLURM_CONF).
#
# Environment:
#   SLURM_DIR     scratch folder (default: ${TMPDIR:-/tmp}/dls-microscopy-slurm)
#   SLURM_CPUS    CPUs the node advertises (default: nproc; may exceed the hardware)
#   SLURM_MEM_MB  memory the node advertises in MB (default 8000; may exceed the hardware)
#   SLURM_CTLD_PORT, SLURMD_PORT  daemon ports (default 6817, 6818)
#
# Exit status: 0 the node is idle and accepts jobs; 77 Slurm is missing and cannot be
# installed here (not root or no apt-get); anything else is a failure, with the daemon logs
# printed. On failure everything this script started is stopped again (trap).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SLURM_DIR=${SLURM_DIR:-${TMPDIR:-/tmp}/dls-microscopy-slurm}
CPUS=${SLURM_CPUS:-$(nproc)}
MEM_MB=${SLURM_MEM_MB:-8000}
CTLD_PORT=${SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
NODE=$(hostname -s)
export SLURM_CONF="$SLURM_DIR/slurm.conf"

say() { echo "slurm_up: $*" >&2; }
# shellcheck source=scripts/slurm/daemons.sh
. "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"

# 1. Packages --------------------------------------------------------------------------
have_slurm() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
               && command -v sbatch >/dev/null && command -v munged >/dev/null; }
if ! have_slurm; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        say "Slurm is not installed and cannot be installed here (needs root and apt-get)"
        exit 77
    fi
    say "installing slurmctld slurmd slurm-client munge with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
    say "the Slurm daemons must be started as root"
    exit 77
fi

cleanup_on_error() {
    local rc=$?
    say "failed (exit $rc); daemon logs:"
    tail -n 15 "$SLURM_DIR"/log/*.log >&2 2>/dev/null || true
    SLURM_DIR=$SLURM_DIR bash "$here/slurm_down.sh" >&2 || true
    exit "$rc"
}
trap cleanup_on_error ERR

mkdir -p "$SLURM_DIR"

# 2. The node name must resolve (slurmd finds its NodeName through `hostname -s`).
getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts

# 3. Munge authentication. munged refuses to run as root; /run/munge needs systemd or us.
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || head -c 1024 /dev/urandom > /etc/munge/munge.key
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
    runuser -u munge -- /usr/sbin/munged
    : > /run/munge/dls-microscopy.started  # the last slurm_down.sh stops a munged we started
    for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { say "munged does not answer"; false; }
fi
# Several clusters (test sessions) may share munged: each registers, the last one out stops it.
: > "/run/munge/dls-microscopy.user.$(printf %s "$SLURM_DIR" | md5sum | cut -c1-16)"

# 4. Stop daemons of an earlier run *before* wiping their state: a slurmctld that is killed
#    saves its node state (e.g. DRAIN) on the way out, and a fresh one would read it back.
stop_pidfile "$SLURM_DIR/slurmd.pid" slurmd
stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
rm -rf "$SLURM_DIR/state" "$SLURM_DIR/spool"
mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool" "$SLURM_DIR/log"

# 5. Configuration: one node, one partition, everything local and minimal.
#    - SlurmdParameters=config_overrides lets the node advertise more CPUs/memory than exist.
#    - MailProg=/bin/true: no mail package is installed, and slurmctld insists on a mailer.
#    - DefMemPerCPU: without it a job that does not ask for memory gets the whole node.
#    - proctrack/linuxproc + task/none: no cgroup directories left behind in /sys.
cat > "$SLURM_CONF" <<CONF
ClusterName=dlsci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
StateSaveLocation=${SLURM_DIR}/state
SlurmdSpoolDir=${SLURM_DIR}/spool
SlurmctldPidFile=${SLURM_DIR}/slurmctld.pid
SlurmdPidFile=${SLURM_DIR}/slurmd.pid
SlurmctldLogFile=${SLURM_DIR}/log/slurmctld.log
SlurmdLogFile=${SLURM_DIR}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=30
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# 6. Daemons (they daemonise and write their pidfiles). -c: start without saved state.
/usr/sbin/slurmctld -c
/usr/sbin/slurmd
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.2
done
if [ "$state" != idle ]; then
    say "node $NODE is '${state:-unknown}', not idle, after 30 s"
    false
fi
trap - ERR
say "node $NODE idle with $CPUS CPUs and $MEM_MB MB"
echo "export SLURM_CONF=$SLURM_CONF"
