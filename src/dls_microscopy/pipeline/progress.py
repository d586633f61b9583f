"""Progress of a run: fields done, the step each running field is in, ETA; on stderr with rich."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["NoProgress", "RunProgress"]


class NoProgress:
    """The progress interface of :func:`~dls_microscopy.pipeline.run.run_pipeline`, doing nothing."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self, *, total: int, done: int, link: str | None) -> None:
        """The run starts: ``total`` fields, ``done`` of them already committed."""

    def step(self, key: str, step: str) -> None:
        """Field ``key`` starts ``step`` (called from worker threads)."""

    def field_done(self, key: str, status: str) -> None:
        """Field ``key`` ended with ``status`` (``done`` or ``failed``)."""


class RunProgress(NoProgress):
    """Rich bar of fields (done/total, elapsed, ETA) with the running fields' current steps.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw (default: stderr).
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, markup=False, emoji=False)
        self.progress = Progress(
            TextColumn("[bold]fields"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[current]}", markup=False),  # field keys come from file names
            console=self.console,
            transient=False,
        )
        self.task: Any = None
        self.failed = 0
        self.running: dict[str, str] = {}
        self.lock = threading.Lock()

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, *, total: int, done: int, link: str | None) -> None:
        if link:
            self.console.print(f"Dask dashboard: {link}", highlight=False, soft_wrap=True)
        self.task = self.progress.add_task("fields", total=total, completed=done, failed=0, current="")

    def _current(self) -> str:
        return ", ".join(f"{k}: {s}" for k, s in list(self.running.items())[:3])

    def step(self, key: str, step: str) -> None:
        with self.lock:
            self.running[key] = step
            self.progress.update(self.task, current=self._current())

    def field_done(self, key: str, status: str) -> None:
        with self.lock:
            self.running.pop(key, None)
            self.failed += status == "failed"
            self.progress.update(self.task, advance=1, failed=self.failed, current=self._current())
