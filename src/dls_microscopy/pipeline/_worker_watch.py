"""How long a Dask cluster has had no worker since a field last came back.

:class:`WorkerWatch` serves :meth:`~dls_microscopy.pipeline.cluster.ComputeContext.submit_fields`,
which gives up on the fields left once the cluster has been without workers for its
``lost_workers_timeout``.

The time is *summed* over the spells without workers since the last field came back,
not measured from the start of the last spell.  Worker jobs that cannot start (their
Python lacks the package: every worker fails in its setup) each connect for a moment
before they stop; a timer reset by every such moment never ran out, and the run
replaced job after job for good (QA, 2026-11-29).  A field coming back is progress and
starts the sum again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerWatch"]

log = logging.getLogger(__name__)


class WorkerWatch:
    """Sum the seconds a cluster spends without workers, between two fields that come back.

    Parameters
    ----------
    client : distributed.Client
        Asked for its workers (``client.nthreads()``).
    timeout : float
        Seconds without workers after which :meth:`expired` is true.
    wait_text : str
        ``timeout`` in words, for the log (``"600 s (compute.cluster.start_timeout)"``).
    clock : callable
        Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        client: Any,
        timeout: float,
        wait_text: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = float(timeout)
        self._wait_text = wait_text
        self._clock = clock
        self._gone = 0.0  # seconds without workers in the spells that ended
        self._since: float | None = None  # start of the present spell without workers

    def progress(self) -> None:
        """A field came back: the cluster works, the sum starts again."""
        self._gone = 0.0
        if self._since is not None:
            self._since = self._clock()

    def expired(self, remaining: int, total: int) -> bool:
        """Whether the cluster has been without workers for ``timeout`` seconds in all.

        Logs a warning when a spell without workers begins.  ``remaining`` of ``total``
        fields are not finished (for that warning).
        """
        now = self._clock()
        if self._client.nthreads():
            if self._since is not None:  # the spell ended: keep its length
                self._gone += now - self._since
                self._since = None
            return False
        if self._since is None:
            self._since = now
            log.warning(
                "all Dask workers are gone (worker jobs ended, cancelled or at their wall time, "
                "or cannot start: see the job logs); %d of %d fields not finished; waiting up to "
                "%s for workers",
                remaining,
                total,
                self._wait_text,
            )
        return self._gone + (now - self._since) > self._timeout
