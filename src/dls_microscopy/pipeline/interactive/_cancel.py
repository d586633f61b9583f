"""Stopping a running GUI task: :class:`CancelToken` and :class:`CancelledError`."""

from __future__ import annotations

import threading

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import DlsError

__all__ = ["CancelToken", "CancelledError"]


class CancelledError(DlsError):
    """The user stopped a running task."""


class CancelToken:
    """A flag a GUI sets to stop a task at its next progress report."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the task to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`CancelledError` when cancelled."""
        if self._event.is_set():
            raise CancelledError("cancelled by the user")

    def wrap(self, progress: ProgressCallback | None = None) -> ProgressCallback:
        """A progress callback that first checks the flag, then forwards to ``progress``."""

        def report(description: str, done: int, total: int) -> None:
            self.check()
            if progress is not None:
                progress(description, done, total)

        return report
