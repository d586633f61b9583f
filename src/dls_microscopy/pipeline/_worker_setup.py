"""What every Dask worker of a run sets up before its first field (:class:`RunWorkerSetup`).

Imported only where a Dask cluster is started (``distributed`` is then installed).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["RunWorkerSetup", "is_cancellation_notice", "quiet_nanny_kills"]

#: The logger of distributed's worker state machine, which reports each cancelled task.
STATE_MACHINE_LOGGER = "distributed.worker.state_machine"


def is_cancellation_notice(record: logging.LogRecord) -> bool:
    """A record that only says a task was cancelled (``... ended with CancelledError``)."""
    return record.getMessage().rstrip().endswith("ended with CancelledError")


class _DropCancellationNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_cancellation_notice(record)


class _DropKillNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "still alive after" not in record.getMessage()


def quiet_nanny_kills() -> Callable[[], None]:
    """Drop the local nannies' "Worker process still alive after 4.0 seconds, killing".

    A local cluster's nannies live in the run's process.  Closing the cluster of a
    run that stops with fields in flight (Ctrl-C) kills the workers busy with them,
    which is what the run wants; each nanny warned of it.  Returns what removes the
    filter again.
    """
    logger, drop = logging.getLogger("distributed.nanny"), _DropKillNotices()
    logger.addFilter(drop)
    return lambda: logger.removeFilter(drop)


class RunWorkerSetup(WorkerPlugin):
    """A worker of a run leaves stopping to the run: quiet when its fields are cancelled.

    - Ctrl-C in a terminal interrupts every process of the foreground group, the local
      cluster's worker processes too: each printed a ``KeyboardInterrupt`` traceback
      from asyncio, and the nanny killed those still closing after 4 s (then Python
      warned of leaked semaphores).  The run's own process catches Ctrl-C, says
      "run interrupted" and closes the cluster, which ends its workers; so a worker
      ignores SIGINT.  (Batch jobs get SIGTERM from the scheduler, which stays.)
    - A run that stops cancels the fields in flight, and each worker printed one
      "Async instruction ... ended with CancelledError" warning per field, with a
      coroutine's repr.  The cancellation is what the run asked for: those are
      dropped, the state machine's other records are kept.
    """

    name = "dls-microscopy-run-worker"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger(STATE_MACHINE_LOGGER)
        if not any(isinstance(f, _DropCancellationNotices) for f in logger.filters):
            logger.addFilter(_DropCancellationNotices())
        if threading.current_thread() is threading.main_thread():  # signal's rule
            signal.signal(signal.SIGINT, signal.SIG_IGN)
