"""A cluster left without workers ends the run's waiting: summed spells, and results lost before gathering."""

from __future__ import annotations

import re
import signal
import time

import pytest
from cluster_tasks import nap

from dls_microscopy.errors import ClusterError
from dls_microscopy.pipeline import _field_task
from dls_microscopy.pipeline._worker_watch import WorkerWatch
from dls_microscopy.pipeline.cluster import compute_context
from dls_microscopy.pipeline.config import ComputeConfig


class _Client:
    """``nthreads()`` as a test sets it."""

    def __init__(self) -> None:
        self.workers: dict[str, int] = {}

    def nthreads(self) -> dict[str, int]:
        return self.workers


def test_spells_without_workers_add_up_until_a_field_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    """Worker jobs that cannot start connect for a moment each: a timer reset by every moment never
    ran out, and the run replaced job after job for good (HPC QA)."""
    now = [0.0]
    client = _Client()
    watch = WorkerWatch(client, 30.0, "30 s", clock=lambda: now[0])
    for _ in range(3):  # gone 12 s, then a worker connects for a moment, and fails
        now[0] += 12.0
        assert not watch.expired(4, 4)
        client.workers = {"tcp://w": 1}
        assert not watch.expired(4, 4)
        client.workers = {}
        assert not watch.expired(4, 4)  # each spell starts the wait...
    now[0] += 12.0
    assert watch.expired(4, 4)  # ...but 48 s in all are more than 30
    assert sum("all Dask workers are gone" in r.getMessage() for r in caplog.records) == 4
    watch.progress()  # a field came back: the cluster works
    now[0] += 12.0
    assert not watch.expired(3, 4)
    now[0] += 19.0
    assert watch.expired(3, 4)


def test_a_result_lost_before_it_is_gathered_ends_when_no_worker_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker job that died after its field finished, before the driver gathered the result: the
    scheduler computes it again, and result() waited for good for workers that never came (HPC QA)."""
    real = _field_task._outcome

    def workers_die_first(fut: object, timeout: float | None = None) -> object:
        if ctx.client.nthreads():
            ctx.cluster.scale(0)  # the field's worker, and its result, are gone
            deadline = time.monotonic() + 30
            while ctx.client.nthreads() and time.monotonic() < deadline:
                time.sleep(0.1)
        return real(fut, timeout)

    monkeypatch.setattr(_field_task, "_outcome", workers_die_first)
    signal.alarm(120)  # a hang fails the test instead of the suite
    try:
        with compute_context(ComputeConfig(memory_budget="1GB"), workers=1, retries=0) as ctx:
            ctx.lost_workers_timeout = 2.0
            start = time.monotonic()
            outcomes = dict(ctx.submit_fields(nap, [0.1, 0.2]))
            assert time.monotonic() - start < 60
    finally:
        signal.alarm(0)
    assert sorted(outcomes) == [0.1, 0.2]
    for error in outcomes.values():
        assert isinstance(error, ClusterError)
        assert re.search(
            r"all Dask workers are gone and none came back within 2 s; 2 of 2 fields", str(error)
        )
