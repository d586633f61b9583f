"""Field functions the cluster tests run on workers (pickled by value: see conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from dls_microscopy.errors import CorruptDataError


def square(item: int) -> int:
    """Trivial field function."""
    return item * item


def nap(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(seconds)
    return seconds


def where_am_i(item: int) -> dict[str, Any]:
    """What a worker job sees: its pid, Slurm job id and which dls_microscopy it imports."""
    import dls_microscopy

    return {
        "item": item,
        "square": item * item,
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "package": dls_microscopy.__file__,
    }


def where_am_i_slowly(item: int) -> dict[str, Any]:
    """:func:`where_am_i` after 3 s of work."""
    time.sleep(3)
    return where_am_i(item)


def logged_field(args: tuple[int, str, float]) -> tuple[int, int]:
    """Record each attempt as ``start-<item>-<pid>`` in a folder, work ``seconds``, return (item², pid).

    Item 3 is a "corrupt input": it raises :class:`CorruptDataError` (never retried).
    Item 5 fails with :class:`RuntimeError` on its first attempt only (retried).
    """
    item, folder, seconds = args
    log = Path(folder)
    attempts = len(list(log.glob(f"start-{item}-*")))
    (log / f"start-{item}-{os.getpid()}-{attempts}").touch()
    if item == 3:
        raise CorruptDataError("truncated chunk 0/0/0", path=f"/plate/field{item}.zarr")
    if item == 5 and attempts == 0:
        raise RuntimeError("transient failure on the first attempt")
    time.sleep(seconds)
    return item * item, os.getpid()


def chatty_field(item: int) -> int:
    """Log as a field does: INFO in the task and in one of its Dask tasks, a WARNING, a Python warning.

    Item 2 then raises :class:`RuntimeError`, item 3 :class:`CorruptDataError`.
    """
    import logging
    import warnings

    import dask

    log = logging.getLogger("dls_microscopy.tests.chatty")
    log.debug("field %d: debug, below the run's level", item)
    log.info("field %d: starting", item)
    # a record of a blockwise task: emitted in a thread of Dask's threaded scheduler
    dask.delayed(lambda: log.info("field %d: inside a dask task", item))().compute()
    log.warning("field %d: something odd", item)
    warnings.warn(f"field {item}: a Python warning", UserWarning, stacklevel=1)
    if item == 2:
        raise RuntimeError("field 2 broke")
    if item == 3:
        raise CorruptDataError("truncated chunk", path=f"/plate/field{item}.zarr")
    log.info("field %d: done", item)
    return item * item


def overlap_probe(args: tuple[int, str, float]) -> int:
    """Mark ``<pid>-<item>`` as running in ``folder`` for ``seconds``.

    Returns the most fields seen running at once in this process.
    """
    item, folder, seconds = args
    pid = os.getpid()
    mark = Path(folder) / f"{pid}-{item}"
    mark.touch()
    most = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        most = max(most, len(list(Path(folder).glob(f"{pid}-*"))))
        time.sleep(0.02)
    mark.unlink()
    return most
