"""SLURM backend against a real single-node Slurm started by the test session (see conftest.py)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster_tasks import chatty_field, nap, where_am_i, where_am_i_slowly
from field_log_checks import assert_chatty_fields_relayed, assert_run_log_has_fields

import dls_microscopy
from dls_microscopy.errors import ClusterError, CorruptDataError
from dls_microscopy.pipeline.cluster import compute_context
from dls_microscopy.pipeline.config import ClusterConfig, ComputeConfig

pytestmark = pytest.mark.slurm


def _compute(**cluster: object) -> ComputeConfig:
    base = {
        "kind": "slurm",
        "cores": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "interface": "lo",
        # the workers must import dls_microscopy: use this interpreter (the project's .venv)
        "python": sys.executable,
    }
    return ComputeConfig(cluster=ClusterConfig(**{**base, **cluster}))


def test_fields_run_in_slurm_worker_jobs(slurm: Path, tmp_path: Path) -> None:
    logs = tmp_path / "job-logs"
    with compute_context(_compute(jobs=2), min_workers=2, timeout=120, log_directory=logs) as ctx:
        assert ctx.kind == "slurm" and ctx.n_workers == 2
        assert ctx.memory_per_worker == 500_000_000  # half the job's 1 GB: the rest for the interpreter
        queue = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
        assert queue.count("dls-microscopy RUNNING") == 2, queue
        script = ctx.cluster.job_script()
        assert "#SBATCH --mem=" in script and "#SBATCH -t 00:10:00" in script
        assert "export DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE=False" in script
        paused = ctx.client.run(lambda: __import__("dask").config.get("distributed.worker.memory.pause"))
        assert set(paused.values()) == {False}, paused  # read by the workers in their jobs
        assert sys.executable in script
        results = dict(ctx.submit_fields(where_am_i, range(8)))
    assert sorted(results) == list(range(8))
    for i, res in results.items():
        assert res["square"] == i * i
        assert res["package"] == dls_microscopy.__file__
    jobs = {res["slurm_job_id"] for res in results.values()}
    assert None not in jobs and len(jobs) <= 2
    # the worker jobs are cancelled when the context closes
    left = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout
    assert "RUNNING" not in left, left
    assert any(logs.iterdir())  # the jobs wrote their logs where asked


def test_pending_job_times_out_with_its_state(slurm: Path, tmp_path: Path) -> None:
    cfg = _compute(job_extra_directives=["--begin=now+1hour"])
    with pytest.raises(ClusterError, match=r"only 0 of 1 Dask worker.*PENDING \(BeginTime\)"):
        with compute_context(cfg, timeout=3, log_directory=tmp_path):
            pass
    left = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert left.strip() == ""  # the pending job was cancelled


def test_start_timeout_ends_a_run_whose_job_cannot_start(
    slurm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compute.cluster.start_timeout: 3`` and a job Slurm holds (``--begin``): exit 1 after seconds,
    naming the job's state and the key; the pending job is cancelled."""
    import numpy as np
    import tifffile

    from dls_microscopy.cli import main

    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "input:\n  path: img.tif\noutput:\n  path: out\nsteps:\n  segment: {params: {diameter_um: 4}}\n"
        "compute:\n  cluster: {kind: slurm, cores: 1, memory: 1GB, interface: lo, start_timeout: 3, "
        f"job_extra_directives: ['--begin=now+1hour'], python: {sys.executable}}}\n"
    )
    capsys.readouterr()
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--no-progress"]) == 1
    assert time.monotonic() - t0 < 60
    error = " ".join(capsys.readouterr().err.split())
    assert re.search(
        r"error: only 0 of 1 Dask worker\(s\) connected within 3 s \(compute\.cluster\.start_timeout\); "
        r"jobs: \d+ PENDING \(BeginTime\)",
        error,
    ), error
    left = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    assert left.strip() == ""  # the pending job was cancelled


def test_refused_job_is_a_clear_error(slurm: Path, tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"slurm refuses the worker job.*[Ii]nvalid partition"):
        with compute_context(_compute(queue="no-such-partition"), timeout=30, log_directory=tmp_path):
            pass


def _job_ids() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()


def test_a_worker_job_that_ends_is_replaced_and_its_fields_finish(slurm: Path, tmp_path: Path) -> None:
    """A worker job cancelled mid-run (preempted, at its wall time) is replaced; no field is lost."""
    with compute_context(_compute(jobs=1), timeout=120, log_directory=tmp_path) as ctx:
        results = ctx.submit_fields(where_am_i_slowly, range(4))
        _, first = next(results)  # one worker with one thread: the fields run one after the other
        (job,) = _job_ids()
        assert first["slurm_job_id"] == job
        subprocess.run(["scancel", job], check=True)
        rest = dict(results)
    assert sorted(rest) == [i for i in range(4) if i != first["item"]]
    assert all(isinstance(r, dict) for r in rest.values()), rest  # none failed
    assert {r["slurm_job_id"] for r in rest.values()} - {job}  # a new job ran what was left


def test_lost_worker_jobs_end_the_run_with_a_clear_error(slurm: Path, tmp_path: Path) -> None:
    """Worker jobs cancelled mid-run and none can start again: each field left fails with a ClusterError."""
    with compute_context(_compute(jobs=1), timeout=60, log_directory=tmp_path) as ctx:
        ctx.lost_workers_timeout = 2.0
        results = ctx.submit_fields(nap, [60.0, 60.0])
        jobs = _job_ids()
        assert len(jobs) == 1
        # the partition closes, so that the job submitted to replace the cancelled one waits
        subprocess.run(["scontrol", "update", "PartitionName=debug", "State=DOWN"], check=True)
        try:
            subprocess.run(["scancel", *jobs], check=True)
            outcomes = list(results)
        finally:
            subprocess.run(["scontrol", "update", "PartitionName=debug", "State=UP"], check=True)
        assert sorted(item for item, _ in outcomes) == [60.0, 60.0]
        for _, error in outcomes:
            assert isinstance(error, ClusterError)
            assert re.search(r"all Dask workers are gone.*2 of 2 fields did not finish", str(error))


def test_records_of_fields_in_worker_jobs_reach_the_driver(
    slurm: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a field logs in a Slurm job, and its warnings, are logged by the driver (also when it fails)."""
    caplog.set_level(logging.INFO, logger="dls_microscopy")
    with compute_context(_compute(jobs=1), timeout=120, log_directory=tmp_path, retries=0) as ctx:
        results = dict(ctx.submit_fields(chatty_field, range(5)))
    assert results[0] == 0 and results[4] == 16
    assert isinstance(results[2], RuntimeError) and isinstance(results[3], CorruptDataError)
    lines = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]
    assert_chatty_fields_relayed(lines, range(5))


def test_run_pipeline_on_slurm_equals_local_run(slurm: Path, tmp_path: Path) -> None:
    """``dls-microscopy run --cluster slurm`` writes tables byte-identical to a local run."""
    from dls_microscopy.cli import main
    from dls_microscopy.pipeline.run import run_pipeline
    from dls_microscopy.sample_data.plate import write_synthetic_plate

    plate = write_synthetic_plate(
        tmp_path / "plate.ome.zarr", rows=("A",), columns=("01", "02"), fields=1, shape=(12, 32, 32)
    )
    config = tmp_path / "pipeline.yaml"

    def run(kind: str) -> dict[str, bytes]:
        out = tmp_path / f"out-{kind}"
        config.write_text(
            f"input:\n  path: {plate}\noutput:\n  path: {out}\n"
            "steps:\n  segment:\n    channel: DAPI\n    params: {diameter_um: 7}\n"
            "  features:\n    channels: [DAPI, LaminB1]\n"
            "compute:\n  memory_budget: 256MB\n  device: cpu\n"
            "  cluster: {cores: 1, memory: 1GB, walltime: '00:10:00', jobs: 2, interface: lo, "
            f"python: {sys.executable}}}\n"
        )
        if kind == "local":
            summary = run_pipeline(config, progress=False)
            assert summary.ok and summary.count("done") == 2, summary
        else:  # through the CLI: dls-microscopy run pipeline.yaml --cluster slurm
            assert main(["run", str(config), "--cluster", kind, "--no-progress"]) == 0
        done = json.loads((out / "run_summary.json").read_text())
        assert done["backend"] == kind and done["done"] == 2, done
        if kind == "slurm":  # the fields' own lines, logged in the worker jobs (run.log had none)
            keys = [f["key"] for f in done["fields"]]
            assert_run_log_has_fields((out / "run.log").read_text(), keys, mesh=False)
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}

    local, on_slurm = run("local"), run("slurm")
    assert set(local) >= {"objects.parquet", "images.parquet", "wells.parquet"}
    assert on_slurm == local
    # a job Slurm refuses is a configuration error: exit 2, and no output folder left behind
    refused = config.read_text().replace("out-slurm", "out-refused")
    config.write_text(refused.replace("jobs: 2", "queue: nope"))
    assert main(["run", str(config), "--cluster", "slurm", "--no-progress"]) == 2
    assert not (tmp_path / "out-refused").exists()


def test_worker_jobs_that_die_at_once_end_the_wait_early_and_say_why(slurm: Path, tmp_path: Path) -> None:
    """A worker python that does not exist: the job ended within a second, the run waited all of
    start_timeout and then asked whether the jobs were still queued (HPC QA)."""
    logs = tmp_path / "job-logs"
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as info:
        with compute_context(_compute(python="/nonexistent/python"), timeout=300, log_directory=logs):
            pass
    assert time.monotonic() - t0 < 120  # two looks 10 s apart, not 300 s
    message = str(info.value)
    assert "(every worker job ended)" in message, message
    assert re.search(r"the newest ends: \S+\.err: .*/nonexistent/python.*No such file", message), message
    assert not _job_ids()
