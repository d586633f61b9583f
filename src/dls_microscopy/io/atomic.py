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
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from dls_microscopy.errors import DlsError, InputError, OutputError

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


def check_output_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, a file output that cannot or must not be written.

    Asks the file system only (nothing is written): a full disk or a quota is still found
    by the write itself.

    Parameters
    ----------
    path : path-like
        The file to write; missing parent folders are made by the writer.
    overwrite : bool
        Allow replacing an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        ``path`` exists (without ``overwrite``) or is a folder; or its folder (the nearest
        existing one) is a file or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError("is a folder, not a file", path=path)
    if os.path.lexists(path) and not overwrite:
        raise OutputError("output already exists (use overwrite / --overwrite)", path=path)
    problem = _folder_problem(path)
    if problem:
        raise OutputError(problem, path=path)
    return path


#: Files at a folder's top level that make it a store of zarr (convert's and segment's outputs)
ZARR_METADATA = ("zarr.json", ".zgroup", ".zattrs", ".zarray")
#: The ``format`` of our ``manifest.json`` (features, mesh, pipeline fields and runs); named
#: here as in :mod:`dls_microscopy.pipeline.provenance`, which io does not import
MANIFEST = ("manifest.json", "dls-microscopy-manifest")
#: What our zarr stores' root metadata names (see :func:`_ours`)
MARK = "dls_microscopy"
_MAX_METADATA_BYTES = 2**20
#: A mesh folder's index, written with or without a manifest
MESH_INDEX = "meshes.json"
#: A pipeline run folder's lock, made before anything else in it
RUN_LOCK = ".run.lock"


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``, or an empty one (missing, unreadable, not an object)."""
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _ours(metadata: Path) -> bool:
    """Whether the zarr metadata file ``metadata`` carries our mark.

    Every store we write names us in its root attributes: an image's multiscales
    ``metadata.method`` (``dls_microscopy.io.pyramid``), a label image's ``dls_microscopy``
    record, a plate's provenance.  The file is a few kB; a large one is not ours.
    """
    try:
        if metadata.stat().st_size > _MAX_METADATA_BYTES:
            return False
        return MARK in metadata.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def not_an_output(path: str | os.PathLike[str]) -> str | None:
    """Why the existing ``path`` must not be replaced by an output, or None if it may be.

    The one rule of overwriting: only what dls-microscopy writes is replaced, so a wrong
    output path with ``--overwrite`` cannot delete anything else.  A folder may be replaced
    when it is empty, or holds at its top level zarr metadata (``zarr.json``, ``.zgroup``,
    ``.zattrs``, ``.zarray``: an OME-Zarr or zarr store) that names us, our ``manifest.json`` (its
    ``format`` is ``dls-microscopy-manifest``), a mesh index (``meshes.json`` listing
    ``objects``) or a pipeline run's ``.run.lock``.  Anything else, a file included, is
    refused.

    Parameters
    ----------
    path : path-like
        An existing path.

    Returns
    -------
    str or None
        The reason, for an :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    advice = "--overwrite replaces only those; remove it yourself or choose another path"
    if not path.is_dir():
        return f"is a file, not an output folder of dls-microscopy; {advice}"
    try:
        names = set(os.listdir(path))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}), so it cannot be replaced; {advice}"
    if not names or RUN_LOCK in names:
        return None
    if any(_ours(path / n) for n in names & set(ZARR_METADATA)):
        return None
    if names & set(ZARR_METADATA):  # an acquisition, another tool's result: not ours to delete
        return f"is a zarr store that dls-microscopy did not write (its metadata lacks our mark); {advice}"
    if MANIFEST[0] in names and _json_object(path / MANIFEST[0]).get("format") == MANIFEST[1]:
        return None
    if MESH_INDEX in names and isinstance(_json_object(path / MESH_INDEX).get("objects"), list):
        return None
    return (
        "is not an output of dls-microscopy (no manifest.json of ours, zarr metadata, mesh index "
        f"or run lock, and not empty); {advice}"
    )


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, a folder output that cannot or must not be written.

    The checks :func:`atomic_directory` makes when it starts, for a caller that computes
    for a while before it writes: nothing is written.

    Parameters
    ----------
    path : path-like
        The folder to write.
    overwrite : bool
        Allow replacing an existing output (only one of ours: :func:`not_an_output`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        ``path`` exists (without ``overwrite``) or is not one of our outputs; or its folder
        (the nearest existing one) is a file or cannot be written.
    """
    path = Path(path)
    if os.path.exists(path):
        if not overwrite:
            raise OutputError("output already exists (use overwrite / --overwrite)", path=path)
        problem = not_an_output(path)
        if problem:
            raise OutputError(problem, path=path)
    problem = _folder_problem(path)
    if problem:
        raise OutputError(problem, path=path)
    return path


def check_store_writable(store: str | os.PathLike[str]) -> Path:
    """Refuse to write into a zarr store that this user cannot write or that is marked read-only.

    Marked read-only: its folder, its ``labels`` folder or their zarr metadata (``zarr.json``,
    ``.zattrs``, ``.zgroup``) has no write permission bit for anyone (mode 444 or 555, as
    shared reference data is kept).  Root may write them all the same; the mark says not to.

    Parameters
    ----------
    store : path-like
        The store's root folder.

    Returns
    -------
    Path
        ``store``.

    Raises
    ------
    OutputError
        Naming the store, the file that marks it and what to do (give an output path).
    """
    store = Path(store)
    if not os.access(store, os.W_OK):
        raise OutputError("the OME-Zarr store is not writable; give an output path", path=store)
    for folder in (store, store / "labels"):
        for p in (folder, *(folder / n for n in ZARR_METADATA[:3])):
            try:
                mode = p.stat().st_mode
            except OSError:  # not there (a labels group yet to be made, zarr v2 or v3)
                continue
            if not mode & 0o222:
                where = p.relative_to(store).as_posix() if p != store else "its folder"
                raise OutputError(
                    f"the OME-Zarr store is marked read-only ({where} has no write permission); "
                    "give an output path",
                    path=store,
                )
    return store


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be made in its folder (the nearest existing one), or None.

    Asked with ``os.access``, nothing written: a folder that is a file (``notes.txt/out``)
    or one this user cannot write.
    """
    parent = path.absolute().parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be made: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be made: {parent} is not writable (permission denied)"
    return None


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
