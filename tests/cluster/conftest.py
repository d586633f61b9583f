"""Fixtures of the compute-backend tests: a real single-node Slurm started for the session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import cluster_tasks
import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM_SCRIPTS = REPO / "scripts" / "slurm"

# Worker jobs do not see the tests folder: send the test field functions by value.
cloudpickle.register_pickle_by_value(cluster_tasks)


def _slurm_installable() -> str | None:
    """Why Slurm can be neither used nor installed here, or None."""
    if all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged")):
        if os.geteuid() != 0:
            return "Slurm is installed but its daemons can only be started as root"
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed and cannot be installed: not root (uid {os.geteuid()})"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and cannot be installed: no apt-get on this system"
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on this machine right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running single-node Slurm (scripts/slurm/slurm_up.sh); yields its folder.

    ``SLURM_CONF`` is set for the session so that sbatch/squeue and dask-jobqueue find it.
    The daemons are stopped at the end of the session whatever happened.
    """
    reason = _slurm_installable()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    ctld_port, slurmd_port = _free_ports(2)  # test sessions running side by side must not collide
    env = {
        **os.environ,
        "SLURM_DIR": str(folder),
        "SLURM_CPUS": "4",
        "SLURM_MEM_MB": "8000",
        "SLURM_CTLD_PORT": str(ctld_port),
        "SLURMD_PORT": str(slurmd_port),
    }
    old_conf = os.environ.get("SLURM_CONF")
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_SCRIPTS / "slurm_up.sh")], env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode == 77:
            pytest.skip(f"Slurm unavailable: {proc.stderr.strip()}")
        if proc.returncode != 0:
            pytest.fail(f"slurm_up.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield folder
    finally:
        subprocess.run(
            ["bash", str(SLURM_SCRIPTS / "slurm_down.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
