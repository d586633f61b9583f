"""A Dask worker SIGKILLed during ``run_pipeline --workers 2``: its fields are retried, the run completes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from dls_microscopy.pipeline.progress import NoProgress
from dls_microscopy.pipeline.run import run_pipeline
from dls_microscopy.sample_data.plate import write_synthetic_plate


class _KillAWorkerAfterTheFirstField(NoProgress):
    """Progress hook of run_pipeline that SIGKILLs one local worker process after the first field."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def field_done(self, key: str, status: str) -> None:
        if self.killed:
            return
        workers = [
            p
            for p in psutil.Process().children()
            if "spawn_main" in " ".join(p.cmdline()) and "resource_tracker" not in " ".join(p.cmdline())
        ]
        assert len(workers) == 2, workers
        os.kill(workers[0].pid, signal.SIGKILL)
        self.killed.append(workers[0].pid)


@pytest.mark.slow
def test_run_pipeline_survives_a_killed_worker(tmp_path: Path) -> None:
    """``run --workers 2`` with a worker SIGKILLed mid-run: all fields done, tables as a local run's.

    The budget is small (256 MB per worker, below what the interpreter alone takes): workers
    limited to their share restarted at once, and every field failed.
    """
    plate = write_synthetic_plate(
        tmp_path / "plate.ome.zarr", rows=("A",), columns=("01", "02"), fields=2, shape=(12, 32, 32)
    )

    def run(workers: int | None, progress: object) -> dict[str, bytes]:
        out = tmp_path / f"out-{workers}"
        config = tmp_path / f"pipeline-{workers}.yaml"
        config.write_text(
            f"input:\n  path: {plate}\noutput:\n  path: {out}\n"
            "steps:\n  segment:\n    channel: DAPI\n    params: {diameter_um: 7}\n"
            "  features:\n    channels: [DAPI, LaminB1]\n"
            "compute:\n  memory_budget: 512MB\n  device: cpu\n"
        )
        summary = run_pipeline(config, workers=workers, progress=progress)
        assert summary.ok and summary.count("done") == 4, summary.to_dict()
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}

    killer = _KillAWorkerAfterTheFirstField()
    with_kill = run(2, killer)
    assert len(killer.killed) == 1
    assert with_kill == run(None, False)
