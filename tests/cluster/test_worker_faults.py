"""Fault tolerance of field tasks on a local Dask cluster of 2 worker processes.

One cluster serves the whole module (starting one costs seconds); the test that
kills a worker runs last.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from cluster_tasks import logged_field, nap

from dls_microscopy.errors import CorruptDataError
from dls_microscopy.pipeline.cluster import PROCESS_BASELINE, ComputeContext, compute_context
from dls_microscopy.pipeline.config import ComputeConfig


@pytest.fixture(scope="module")
def two_workers() -> Iterator[ComputeContext]:
    with compute_context(ComputeConfig(memory_budget="2GB"), workers=2) as ctx:
        yield ctx


def _attempts(folder: Path) -> dict[int, list[int]]:
    """item -> pids of its attempts, from the ``start-<item>-<pid>-<n>`` markers."""
    out: dict[int, list[int]] = {}
    for p in folder.glob("start-*"):
        _, item, pid, _ = p.name.split("-")
        out.setdefault(int(item), []).append(int(pid))
    return out


def test_local_cluster_context(two_workers: ComputeContext) -> None:
    ctx = two_workers
    assert ctx.kind == "local" and ctx.client is not None and ctx.n_workers == 2
    assert len(ctx.client.nthreads()) == 2
    assert ctx.memory_per_worker == 1_000_000_000
    limits = {w["memory_limit"] for w in ctx.client.scheduler_info()["workers"].values()}
    assert limits == {1_000_000_000 + PROCESS_BASELINE}  # the process: its share and the interpreter
    # the field's blocks are its memory: no spilling, no pausing (a paused busy worker stalled runs)
    memory_config = ctx.client.run(lambda: dict(dask.config.get("distributed.worker.memory")))
    for conf in memory_config.values():
        assert (conf["target"], conf["spill"], conf["pause"]) == (False, False, False)
        assert conf["terminate"] == 0.95
    assert "2 workers" in ctx.describe()


def test_local_cluster_serves_its_dashboard(two_workers: ComputeContext) -> None:
    """The address shown in the progress output answers (bokeh is in the cluster extra)."""
    import urllib.request

    link = two_workers.dashboard_link
    assert link is not None and link.startswith("http://")
    assert f"dashboard {link}" in two_workers.describe()
    with urllib.request.urlopen(link, timeout=30) as page:  # the status page, served locally
        assert page.status == 200
        assert b"Dask" in page.read()


def test_results_come_in_completion_order(two_workers: ComputeContext) -> None:
    out = [item for item, _ in two_workers.submit_fields(nap, [1.0, 0.0])]
    assert out == [0.0, 1.0]


def test_corrupt_input_is_reported_and_transient_error_retried(
    two_workers: ComputeContext, tmp_path: Path
) -> None:
    items = [(i, str(tmp_path), 0.05) for i in range(8)]
    results = dict(two_workers.submit_fields(logged_field, items))
    by_item = {args[0]: res for args, res in results.items()}
    assert set(by_item) == set(range(8))
    err = by_item.pop(3)
    assert isinstance(err, CorruptDataError)
    assert "field3.zarr" in str(err) and "truncated chunk" in str(err)
    for i, res in by_item.items():
        assert not isinstance(res, BaseException), res
        assert res[0] == i * i
    attempts = _attempts(tmp_path)
    assert len(attempts[3]) == 1  # input errors are deterministic: not retried
    assert len(attempts[5]) == 2  # the transient RuntimeError was retried once
    assert all(len(attempts[i]) == 1 for i in (0, 1, 2, 4, 6, 7))


def test_killed_worker_tasks_are_retried(two_workers: ComputeContext, tmp_path: Path) -> None:
    """SIGKILL one worker process while it runs a field: the run still completes, all results right."""
    client = two_workers.client
    assert client is not None
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2
    victim = max(pids)
    killed: list[int] = []

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(tmp_path.glob(f"start-*-{victim}-*")):
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    items = [(i, str(tmp_path), 0.6) for i in range(8) if i not in (3, 5)]
    results = {args[0]: res for args, res in two_workers.submit_fields(logged_field, items)}
    killer.join(timeout=30)

    assert killed == [victim]
    assert set(results) == {0, 1, 2, 4, 6, 7}
    for i, res in results.items():
        assert not isinstance(res, BaseException), res
        assert res[0] == i * i
        assert res[1] != victim  # nothing was delivered by the killed process
    attempts = _attempts(tmp_path)
    rerun = [i for i, p in attempts.items() if victim in p]
    assert rerun, "the victim ran no field before it was killed"
    assert all(len(attempts[i]) == 2 for i in rerun)  # started on the victim, finished elsewhere
