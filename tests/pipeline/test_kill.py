"""A run killed with SIGKILL mid-way, then rerun, gives the tables of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from pipeline_inputs import write_config

from dls_microscopy.pipeline.provenance import read_manifest
from dls_microscopy.pipeline.run import run_pipeline
from dls_microscopy.pipeline.verify import verify_manifest

STEPS = """\
    segment:
      channel: DAPI
      params: {diameter_um: 7}
    mesh:
      smooth: 0
      descriptors: false
    features: {}
"""
TABLES = ("objects.parquet", "images.parquet", "wells.parquet", "plates.parquet")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_then_rerun_gives_identical_tables(small_plate, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference = write_config(tmp_path / "a", small_plate, steps=STEPS)
    killed = write_config(tmp_path / "b", small_plate, steps=STEPS)
    run_pipeline(reference, progress=False)

    fields = tmp_path / "b" / "out" / "fields"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dls_microscopy.cli", "run", str(killed), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 120
    try:
        # kill as soon as one field is committed: the next one is being written
        while time.monotonic() < deadline and proc.poll() is None:
            if fields.is_dir() and any(not p.name.startswith(".") for p in fields.iterdir()):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    committed = [p for p in fields.iterdir() if not p.name.startswith(".")]
    assert 1 <= len(committed) < 4
    assert not (tmp_path / "b" / "out" / "objects.parquet").exists()

    stale = tmp_path / "b" / "out" / ".objects.parquet.999999999.tmp"  # as a kill while writing leaves it
    stale.write_bytes(b"half a table")
    # a field half-written by a worker of the killed run on another cluster node: its process
    # number means nothing here, but the run's lock says that run is over
    (fields / ".synthetic-plate_A01_0.partial-1-abcd1234@another-node" / "labels").mkdir(parents=True)
    summary = run_pipeline(killed, progress=False)
    assert not stale.exists()
    assert summary.ok
    assert summary.count("skipped") == len(committed)
    assert summary.count("done") == 4 - len(committed)
    assert not [p for p in fields.iterdir() if p.name.startswith(".")], "partial folders are removed"
    for name in TABLES:
        a = (tmp_path / "a" / "out" / name).read_bytes()
        b = (tmp_path / "b" / "out" / name).read_bytes()
        assert a == b, f"{name} differs after kill + rerun"
    # the resumed run's manifest describes its tables, as the uninterrupted run's does its own
    assert verify_manifest(tmp_path / "b" / "out") == []
    a, b = (read_manifest(tmp_path / x / "out") for x in "ab")
    tables = [[o for o in m["outputs"] if o["path"].endswith(".parquet")] for m in (a, b)]
    assert tables[0] == tables[1] and len(tables[0]) == 4  # the resolved configs name their folders
    assert [f["key"] for f in a["fields"]] == [f["key"] for f in b["fields"]]
