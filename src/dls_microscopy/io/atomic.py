"""Atomic creation of output directories: build under a temporary name, then rename.

A store that is being written lives at ``.<name>.partial-<pid>-<token>@<host>``
beside its final path, so an interrupted or failed write never leaves anything
that looks complete.  Partial directories of dead processes on this host are
removed on the next write to the same destination.  Those of another host (a
cluster worker writing to a shared file system) are left alone there: a process
number says nothing about another machine, and removing a live worker's folder
would break its write.  :func:`remove_partials` removes them all, for a caller
that knows nobody else writes (a pipeline run holding its output's lock).

Overwriting replaces only a folder that is one of our outputs (:func:`not_an_output`
says which): a typo'd ``--overwrite`` path must not delete someone's files.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

from dls_microscopy.errors import DlsError, OutputError
from dls_microscopy.io._output_checks import (
    check_output_dir,
    check_output_file,
    check_store_writable,
    not_an_output,
    refuse_output_over_inputs,
)

__all__ = [
    "atomic_directory",
    "check_output_dir",
    "check_output_file",
    "check_store_writable",
    "not_an_output",
    "partial_file",
    "refuse_output_over_inputs",
    "release_partial",
    "remove_partials",
]

log = logging.getLogger(__name__)


def _partial_prefix(final: Path) -> str:
    return f".{final.name}.partial-"


def _partial_name(final: Path, kind: str = "") -> str:
    """``.<name>.partial-<pid>-[<kind>-]<token>@<host>``: who writes it, and where."""
    return f"{_partial_prefix(final)}{os.getpid()}-{kind}{uuid.uuid4().hex[:8]}@{socket.gethostname()}"


#: Partial outputs this process is writing now (their names), registered before they are
#: created: another write of the same output in this process (another thread) must not take
#: them for leftovers
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _is_stale(rest: str) -> bool:
    """Whether the writer of a partial output (its name after the prefix) is gone.

    Only processes of this host can be checked; names without a host come from
    versions that wrote none, on this machine.  A name of this very process is a
    leftover (the caller has checked it is not live): an earlier write that ended,
    or a killed run whose process number this one has again (a container's).
    """
    owner, at, host = rest.rpartition("@")
    if at and host != socket.gethostname():
        return False
    pid_text = (owner if at else rest).split("-", 1)[0]
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return True
    return not psutil.pid_exists(int(pid_text))


def _remove_stale_partials(final: Path) -> None:
    prefix = _partial_prefix(final)
    if not final.parent.is_dir():
        return
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        with _LIVE_LOCK:  # asked now, not of a copy: a writer registers its name before creating it
            if entry.name in _LIVE:
                continue
        if _is_stale(entry.name[len(prefix) :]):
            log.info("removing stale partial output %s", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:  # best effort, as for a folder: another user's, in a shared (sticky) folder, stays
                    entry.unlink(missing_ok=True)
                except OSError as exc:
                    log.debug("cannot remove stale partial output %s: %s", entry, exc)


def _hold(path: Path) -> Path:
    """Register ``path`` (a partial name of this process) as live, before it is created."""
    with _LIVE_LOCK:
        _LIVE.add(path.name)
    return path


def release_partial(path: str | os.PathLike[str]) -> None:
    """The partial output ``path`` is no longer written: removed if still there, and unregistered."""
    path = Path(path)
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # never made
                path.unlink()
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(path.name)


def partial_file(final: str | os.PathLike[str], *, kind: str = "") -> Path:
    """Where to write a file that is renamed onto ``final`` (``os.replace``) once complete.

    The name is this writer's own (``.<name>.partial-<pid>-<token>@<host>``), so two
    writers of one output never write into each other's file, and it is registered as
    live until :func:`release_partial`; partial files of ``final`` left by writers that
    are gone (killed processes, or this process's writes that ended) are removed first.
    The caller creates the file, renames it, then calls :func:`release_partial` (also
    when writing fails: it removes what is left).

    Parameters
    ----------
    final : path-like
        The file's final path; its folder must exist.
    kind : str
        Said in the name after the process number (``"scratch-"``: a folder of work files
        for ``final``, which the caller makes), so that a leftover says what it was.
    """
    final = Path(final)
    _remove_stale_partials(final)
    return _hold(final.parent / _partial_name(final, kind))


def remove_partials(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove every partial output directly in ``directory``, whichever host wrote it.

    Only for a caller that holds ``directory`` alone (a pipeline run holds its
    output's lock): the writers of these folders belong to runs that ended,
    on this host or another.

    Returns
    -------
    list of Path
        The folders removed.
    """
    root = Path(directory)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".") and ".partial-" in entry.name and entry.is_dir():
                log.info("removing partial output %s, left by an earlier run", entry.name)
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_directory(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds.

    Parameters
    ----------
    final : Path
        Destination directory.
    overwrite : bool
        Replace an existing ``final``, if it is one of our outputs (:func:`not_an_output`).
        The old one is only removed after the new one is complete.

    Raises
    ------
    OutputError
        When ``final`` exists (without ``overwrite``) or is not one of our outputs, or the
        parent cannot be written (permissions, disk full).
    """
    final = check_output_dir(Path(final).absolute(), overwrite=overwrite)
    tmp = final.parent / _partial_name(final)
    trash = final.parent / _partial_name(final, "old-")  # where an old output waits, if any
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(final)
        _hold(tmp).mkdir()
    except OSError as exc:
        release_partial(tmp)
        raise OutputError(f"cannot create output: {exc.strerror or exc}", path=final) from exc
    committed = False
    try:
        yield tmp
        moved = False
        if final.exists():
            os.replace(final, _hold(trash))
            moved = True
        try:
            os.replace(tmp, final)
            committed = True
        except BaseException as exc:
            if moved and not final.exists():  # the old output goes back, not lost
                try:
                    os.replace(trash, final)
                except OSError as back:  # say where it is: a later write would take it for a leftover
                    raise OutputError(
                        f"writing failed ({exc}), and the old output could not be put back "
                        f"({back.strerror or back}): it is at {trash}; move it back before writing again",
                        path=final,
                    ) from exc
            raise
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, DlsError):  # ours (e.g. a missing model) say why
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise OutputError(f"writing failed: {reason}", path=final) from exc
        raise
    finally:
        if committed:
            release_partial(trash)  # the replaced output, if there was one
        else:  # nothing there, or (its return failed) the old output: never removed here
            with _LIVE_LOCK:
                _LIVE.discard(trash.name)
        release_partial(tmp)  # renamed (nothing left) or failed
