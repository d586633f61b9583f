"""Atomic creation of output directories: build under a temporary name, then rename.

A store that is being written lives at ``.<name>.partial-<pid>-<token>`` beside
its final path, so an interrupted or failed write never leaves anything that
looks complete.  Partial directories of dead processes are removed on the next
write to the same destination.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from dls_microscopy.errors import DlsError, InputError, OutputError

__all__ = ["atomic_directory", "refuse_output_over_inputs"]

log = logging.getLogger(__name__)


def _partial_prefix(final: Path) -> str:
    return f".{final.name}.partial-"


def _remove_stale_partials(final: Path) -> None:
    prefix = _partial_prefix(final)
    if not final.parent.is_dir():
        return
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and psutil.pid_exists(int(pid_text)) and int(pid_text) != os.getpid():
            continue  # another live process is writing it
        log.info("removing stale partial output %s", entry)
        shutil.rmtree(entry, ignore_errors=True)


def refuse_output_over_inputs(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
    *,
    inside_ok: bool = False,
) -> None:
    """Refuse an output that is an input, holds one, or lies inside one.

    Writing (with overwrite) would replace the input: inputs are never written.
    ``inside_ok`` allows an output inside an input (NGFF labels written into the
    image's store on purpose).
    ``inputs`` may name HDF5 datasets (``file.h5:/raw``) and things that are not
    paths (a label image's name, None): those that do not exist are skipped.

    Raises
    ------
    InputError
        Naming the output and the input.
    """
    from dls_microscopy.io.open import split_dataset_path

    out = Path(output).absolute().resolve()
    for item in inputs:
        if item is None:
            continue
        src = split_dataset_path(item)[0]
        if not src.exists():
            continue
        src = src.absolute().resolve()
        if src == out:
            how = "is"
        elif out in src.parents:
            how = "contains"
        elif src in out.parents and not inside_ok:
            how = "lies inside"
        else:
            continue
        raise InputError(
            f"the output {how} the input {os.fspath(item)}; inputs are never written: choose another output",
            path=Path(output),
        )


@contextlib.contextmanager
def atomic_directory(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``final`` when the block succeeds.

    Parameters
    ----------
    final : Path
        Destination directory.
    overwrite : bool
        Replace an existing ``final``. The old one is only removed after the
        new one is complete.

    Raises
    ------
    OutputError
        When ``final`` exists (without ``overwrite``), or the parent cannot be
        written (permissions, disk full).
    """
    final = Path(final).absolute()
    if final.exists() and not overwrite:
        raise OutputError("output already exists (use overwrite / --overwrite)", path=final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(final)
        tmp = final.parent / f"{_partial_prefix(final)}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create output: {exc.strerror or exc}", path=final) from exc
    try:
        yield tmp
        trash = None
        if final.exists():
            trash = final.parent / f"{_partial_prefix(final)}{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
            os.replace(final, trash)
        os.replace(tmp, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, DlsError):  # ours (e.g. a missing model) say why
            reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            raise OutputError(f"writing failed: {reason}", path=final) from exc
        raise
