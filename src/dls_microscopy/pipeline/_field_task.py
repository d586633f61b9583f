"""What a Dask worker runs for one field, and what the driver makes of it.

:class:`_FieldTask` wraps the per-field function of
:meth:`~dls_microscopy.pipeline.cluster.ComputeContext.submit_fields`: it runs the
field with the worker's own threads, returns input errors as values (they are not
retried), and collects the field's log records
(:mod:`dls_microscopy.pipeline._field_log`) to send them back with the result.
:func:`_outcome` turns a finished Dask future back into ``(result or exception, records)``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dls_microscopy.errors import ClusterError, InputError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class _InputFailure:
    """A field function's :class:`InputError`, returned instead of raised so it is not retried."""

    error: InputError
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _FieldResult:
    """A field function's return value and the log records of its run on the worker."""

    value: Any
    records: list[dict[str, Any]]


#: Dask worker resource a field task takes, of which every worker has one: a worker runs one
#: field at a time, whatever its threads.  A field's blocks are sized to the worker's whole memory
#: share, and its own Dask computations use all the worker's threads; a 4-thread worker ran 4
#: fields at once, each with the whole share.
FIELD_RESOURCE = "dls_field"
#: ``--resources`` argument of a worker started by dask-jobqueue.
FIELD_RESOURCE_ARGS = ("--resources", f"{FIELD_RESOURCE}=1")

#: Attribute of an exception raised by a field task that carries the field's log records.
_RECORDS_ATTRIBUTE = "dls_field_log"


class _FieldTask(Generic[T, R]):
    """Picklable wrapper run on a Dask worker: ``fn(item)``, with input errors returned as values.

    ``fn`` travels as cloudpickle bytes, so that closures and functions of modules
    the workers cannot import (registered with ``cloudpickle.register_pickle_by_value``)
    work too; functions of installed modules are still sent by reference.

    Dask computations inside the field run on the worker's own threads: a
    ``.compute()`` in a task would otherwise go to the cluster's scheduler and
    wait for worker threads that the field tasks themselves occupy.

    The field's log records of ``log_level`` and above, and its Python warnings, are
    collected (:func:`~dls_microscopy.pipeline._field_log.capture_field_log`) and travel
    back with its result, its input error, or (as an attribute) the exception it raised.
    """

    def __init__(self, fn: Callable[[T], R], threads: int, log_level: int = logging.WARNING) -> None:
        import cloudpickle

        self.payload = cloudpickle.dumps(fn)
        self.threads = threads
        self.log_level = log_level
        self._fn: Callable[[T], R] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"payload": self.payload, "threads": self.threads, "log_level": self.log_level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.payload = state["payload"]
        self.threads = state["threads"]
        self.log_level = state.get("log_level", logging.WARNING)
        self._fn = None

    def __call__(self, item: T) -> _FieldResult | _InputFailure:
        import pickle

        import dask

        from dls_microscopy.pipeline._field_log import capture_field_log

        if self._fn is None:
            self._fn = pickle.loads(self.payload)
        with capture_field_log(self.log_level) as field_log:
            try:
                with dask.config.set(scheduler="threads", num_workers=self.threads):
                    value = self._fn(item)
            except InputError as exc:  # deterministic: running it again gives the same error
                return _InputFailure(exc, field_log.records())
            except Exception as exc:  # retried by Dask, or reported: its records go with it
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, _RECORDS_ATTRIBUTE, field_log.records())
                raise
            return _FieldResult(value, field_log.records())


def _unwrap(result: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The value (or input error) of a field task's result, and the field's log records."""
    if isinstance(result, _InputFailure):
        return result.error, result.records
    if isinstance(result, _FieldResult):
        return result.value, result.records
    return result, []


def _label(item: Any) -> str:
    """How a field's relayed log records are tagged: its ``key`` (a FieldSpec's), else its repr."""
    key = getattr(item, "key", None)
    text = key if isinstance(key, str) else repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


class NotReady(Exception):
    """:func:`_outcome` waited ``timeout`` seconds and the field has no result (yet, again)."""


def _outcome(fut: Any, timeout: float | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """Result of a done Dask future, or the exception it ended with, and the field's log records.

    Waits if the field is running again (its result was lost with its worker): for good,
    or up to ``timeout`` seconds, then raises :class:`NotReady`.  A field whose worker
    died has no records.
    """
    import time
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    if timeout is not None:  # the wait's own: a field's TimeoutError must not be taken for it
        deadline = time.monotonic() + timeout
        while not fut.done():
            if time.monotonic() >= deadline:
                raise NotReady(fut.key)
            time.sleep(0.05)
    try:
        result = fut.result(timeout=timeout)
    except KilledWorker as exc:
        return ClusterError(
            f"field task {fut.key} was running on a worker that died {exc.allowed_failures + 1} times "
            f"(killed, or above its memory limit?); last worker {exc.last_worker.address}"
        ), []
    except CancelledError:
        return ClusterError(f"field task {fut.key} was cancelled (the cluster shut down?)"), []
    except Exception as exc:
        if isinstance(exc, TimeoutError) and timeout is not None and not fut.done():
            raise NotReady(fut.key) from None  # lost again since it was done: computed again
        records = getattr(exc, _RECORDS_ATTRIBUTE, None) or []
        with contextlib.suppress(AttributeError):
            delattr(exc, _RECORDS_ATTRIBUTE)
        return exc, records
    return _unwrap(result)
