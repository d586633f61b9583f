"""The log records of a field run on a Dask worker, carried back to the process that runs the fields.

A run's ``run.log`` is a handler of the driver process.  A field processed on a Dask
worker (a local worker process, a SLURM or PBS job) logs in that worker's process,
where no such handler exists: its records (segmentation, meshes, features,
warnings) were lost.  :class:`~dls_microscopy.pipeline.cluster.ComputeContext`
therefore runs every field task inside :func:`capture_field_log`, which collects
the field's records, and hands them back *with the field's result* (also when the
field fails); :func:`relay_field_log` then emits them in the driver, where
``run.log`` and the console see them as one block per field, each message tagged
``[KEY]``, in the order the worker emitted them.

Why records travel with the result rather than in a per-field log file: the
result already travels from worker to driver over Dask's connection, so nothing
needs a file system that both see (a node-local ``local_directory`` works), a
field whose commit never happens (it failed, or its folder is removed on a rerun)
still has its records, and the driver holds one field's records at a time, each
field capped at :data:`MAX_RECORDS` records of at most :data:`MAX_MESSAGE`
characters.  What cannot come back are the records of a worker that died
mid-field (killed, out of memory): the field is retried elsewhere, or fails with
a :class:`~dls_microscopy.errors.ClusterError` saying the worker died.

Records are attributed to a field through a context variable, which Dask's
threaded scheduler copies into its worker threads, so the records of a field's
blockwise tasks are the field's even when several fields run in one worker
process.  A record from a thread that did not inherit the context (a library's
own thread pool) goes to the field running in the process, if only one is.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["MAX_MESSAGE", "MAX_RECORDS", "FieldLog", "capture_field_log", "relay_field_log"]

#: Records kept per field: the first half and the last half of this many; the count of the
#: others is reported.  A field of the sample plate logs about ten.
MAX_RECORDS = 1000
#: Characters kept of a record's message, and of its traceback.
MAX_MESSAGE = 4000

#: Loggers whose records a field task collects.
ROOT_LOGGER = "dls_microscopy"
#: Logger that emits, in the driver, the records of other loggers (Python warnings).
_RELAY_LOGGER = "dls_microscopy.pipeline.cluster"
#: What a record keeps on its way to the driver (everything a formatter asks for but the arguments).
_FIELDS = (
    "name",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "process",
    "processName",
)


class FieldLog:
    """The records of one field, kept as plain dictionaries (they are pickled to the driver).

    Parameters
    ----------
    limit : int
        Records kept: the first ``limit // 2`` and the last ``limit - limit // 2``.
    """

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        self._head: list[dict[str, Any]] = []
        self._head_size = limit // 2
        self._tail: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit - self._head_size)
        self._lock = threading.Lock()
        self.dropped = 0

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record`` (a dictionary of :class:`logging.LogRecord` attributes)."""
        with self._lock:
            if len(self._head) < self._head_size:
                self._head.append(record)
                return
            if self._tail.maxlen and len(self._tail) == self._tail.maxlen:
                self.dropped += 1
            self._tail.append(record)

    def records(self) -> list[dict[str, Any]]:
        """The records kept, in the order they were emitted; a note where some were dropped."""
        with self._lock:
            out = list(self._head)
            if self.dropped:
                note = dict(self._tail[0])  # dropped: the tail is full
                note.update(
                    name=_RELAY_LOGGER,
                    levelno=logging.WARNING,
                    levelname="WARNING",
                    msg=f"{self.dropped} log records of this field left out (at most {MAX_RECORDS} are kept)",
                    exc_text=None,
                )
                out.append(note)
            out.extend(self._tail)
            return out


_current: contextvars.ContextVar[FieldLog | None] = contextvars.ContextVar("dls_field_log", default=None)


def _clip(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return text[:MAX_MESSAGE] + f" … ({len(text) - MAX_MESSAGE} more characters)"


class _Collector(logging.Handler):
    """Handler on the ``dls_microscopy`` logger of a worker process while field tasks run there."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[FieldLog] = []

    def target(self) -> FieldLog | None:
        flog = _current.get()
        if flog is None and len(self.active) == 1:
            flog = self.active[0]  # a thread that did not inherit the context: the only field running
        return flog

    def emit(self, record: logging.LogRecord) -> None:
        flog = self.target()
        if flog is None:
            return
        try:
            entry = {k: getattr(record, k, None) for k in _FIELDS}
            entry["msg"] = _clip(record.getMessage())
            exc_text = record.exc_text
            if record.exc_info and not exc_text:
                exc_text = logging.Formatter().formatException(record.exc_info)
            entry["exc_text"] = _clip(exc_text) if exc_text else None
            entry["stack_info"] = None
            flog.add(entry)
        except Exception:  # a broken record must not fail the field
            self.handleError(record)

    def show_warning(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        """``warnings.showwarning`` while fields run: a field's warning becomes one of its records."""
        flog = self.target()
        if flog is None or self.level > logging.WARNING:
            _state.show_warning(message, category, filename, lineno, file, line)
            return
        now = time.time()
        flog.add(
            {
                **{k: None for k in _FIELDS},
                "name": "py.warnings",
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "pathname": filename,
                "lineno": lineno,
                "created": now,
                "msecs": (now - int(now)) * 1000,
                "msg": _clip(f"{filename}:{lineno}: {category.__name__}: {message}"),
                "exc_text": None,
                "stack_info": None,
            }
        )


class _State:
    """What :func:`capture_field_log` changed in the process, restored when the last field ends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.collector: _Collector | None = None
        self.level = logging.NOTSET
        self.show_warning: Any = None


_state = _State()


@contextlib.contextmanager
def capture_field_log(level: int) -> Iterator[FieldLog]:
    """Collect the records of ``dls_microscopy`` loggers, and Python warnings, of the field run inside.

    Parameters
    ----------
    level : int
        Least level collected (the driver's level, e.g. ``logging.INFO`` during a run); the
        ``dls_microscopy`` logger of this process is lowered to it while fields run.

    Yields
    ------
    FieldLog
        Filled while the block runs; :meth:`FieldLog.records` gives what to send back.

    Notes
    -----
    Meant for worker processes: while any field is collected, records of the
    ``dls_microscopy`` loggers and warnings shown go to the fields, not to the process's
    other handlers.  Several fields may be collected at once (one per thread).
    """
    logger = logging.getLogger(ROOT_LOGGER)
    flog = FieldLog()
    with _state.lock:
        if _state.collector is None:
            _state.collector = _Collector()
            _state.collector.setLevel(level)
            _state.level = logger.level
            _state.show_warning = warnings.showwarning
            logger.addHandler(_state.collector)
            if logger.getEffectiveLevel() > level:
                logger.setLevel(level)
            warnings.showwarning = _state.collector.show_warning
        collector = _state.collector
        collector.active.append(flog)
    token = _current.set(flog)
    try:
        yield flog
    finally:
        _current.reset(token)
        with _state.lock:
            collector.active.remove(flog)
            if not collector.active:
                logger.removeHandler(collector)
                logger.setLevel(_state.level)
                if warnings.showwarning == collector.show_warning:
                    warnings.showwarning = _state.show_warning
                _state.collector = None


def relay_field_log(records: list[dict[str, Any]], label: str) -> None:
    """Emit a field's records, collected on a worker, through this process's loggers.

    Each message is tagged ``[label]``; the records keep the worker's time stamp, level
    and logger name.  Records of loggers outside ``dls_microscopy`` (Python warnings)
    go through ``dls_microscopy.pipeline.cluster``, so that ``run.log`` has them too.
    """
    for entry in records:
        record = logging.makeLogRecord({**entry, "msg": f"[{label}] {entry.get('msg', '')}", "args": None})
        ours = record.name == ROOT_LOGGER or record.name.startswith(ROOT_LOGGER + ".")
        logger = logging.getLogger(record.name if ours else _RELAY_LOGGER)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
