#!/usr/bin/env bash
# Stop what scripts/slurm/slurm_up.sh started, for the same SLURM_DIR: cancel every job
# (worker jobs of a killed client would otherwise keep running), then stop slurmd,
# slurmctld and -- if slurm_up.sh started it and no other cluster of slurm_up.sh still runs --
# munged, by their pidfiles. Safe to run twice, or after a partial start. Packages stay installed.
set -uo pipefail

SLURM_DIR=${SLURM_DIR:-${TMPDIR:-/tmp}/dls-microscopy-slurm}
export SLURM_CONF="$SLURM_DIR/slurm.conf"

# shellcheck source=scripts/slurm/daemons.sh
. "$(dirname "${BASH_SOURCE[0]}")/daemons.sh"

if [ -s "$SLURM_DIR/slurmctld.pid" ] && command -v squeue >/dev/null \
        && scontrol ping 2>/dev/null | grep -q UP; then
    jobs=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel --full $jobs 2>/dev/null
        for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
    fi
fi
stop_pidfile "$SLURM_DIR/slurmd.pid" slurmd
stop_pidfile "$SLURM_DIR/slurmctld.pid" slurmctld
rm -f "/run/munge/dls-microscopy.user.$(printf %s "$SLURM_DIR" | md5sum | cut -c1-16)"
if [ -e /run/munge/dls-microscopy.started ] && ! compgen -G "/run/munge/dls-microscopy.user.*" >/dev/null; then
    stop_pidfile /run/munge/munged.pid munged     # started by slurm_up.sh, and no cluster uses it now
    rm -f /run/munge/dls-microscopy.started
fi
echo "slurm_down: stopped the Slurm daemons of $SLURM_DIR" >&2
exit 0
