"""The entry point :func:`main`: runs the typer app and maps errors to exit codes.

Exit codes: 0 success, 2 bad input or configuration, a usage error, or unwritable output (one
line naming the file and the reason), 3 ``run`` finished but some fields failed, 130 interrupted,
1 ``verify`` found a mismatch, a cluster failed (:class:`~dls_microscopy.errors.ClusterError`) or
an internal error.  The table users read is in ``docs/cli.md`` (Exit codes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.markup import escape

from dls_microscopy.cli._common import app, err, log
from dls_microscopy.errors import DlsError, InputError, ModelNotFoundError, OutputError


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    err.print(
        f"[yellow]warning:[/yellow] {escape(str(message))}", markup=True, highlight=False, soft_wrap=True
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map our errors to exit code 2 and anything unexpected to 1."""
    import warnings

    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        with _sigterm_interrupts():
            return _run(argv)
    finally:
        warnings.showwarning = previous


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Handle SIGTERM as Ctrl-C while a command runs.

    A batch system ends a driver job at its wall time with SIGTERM, as do ``kill`` and
    ``timeout``.  By default that ended the process at once: a run wrote no "interrupted"
    to its log, and worker jobs still queued were never cancelled.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(argv: list[str] | None) -> int:
    try:
        # without standalone mode, click returns the code of a typer.Exit instead of raising it
        rc = app(args=argv, standalone_mode=False)
        if rc == 130:  # typer returns Ctrl-C as this code, silently
            err.print("interrupted")
        if isinstance(rc, int) and rc:
            return rc
    except (InputError, OutputError, ModelNotFoundError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return 2
    except DlsError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error from the argument parser (click/typer): exit code 2
            return int(exc.exit_code)
        log.debug("internal error", exc_info=True)
        err.print(
            f"[red]internal error:[/red] {escape(f'{type(exc).__name__}: {exc}')} (run with -vv for details)",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0
