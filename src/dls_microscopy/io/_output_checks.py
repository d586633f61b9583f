"""Checks before writing an output: not over an input, writable, and only ours replaced.

Split from :mod:`dls_microscopy.io.atomic` (which re-exports them): the one rule of
``--overwrite`` (:func:`not_an_output`: only what dls-microscopy writes is replaced),
the check of a folder output before any work (:func:`check_output_dir`) and of a file
output (:func:`check_output_file`), stores marked read-only (:func:`check_store_writable`)
and outputs over inputs (:func:`refuse_output_over_inputs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from dls_microscopy.errors import InputError, OutputError

__all__ = [
    "check_output_dir",
    "check_output_file",
    "check_store_writable",
    "not_an_output",
    "refuse_output_over_inputs",
]


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
#: The name and ``format`` of our ``manifest.json`` (features, mesh, pipeline fields and runs),
#: which :mod:`dls_microscopy.pipeline.provenance` writes (named here: io imports no pipeline)
MANIFEST = ("manifest.json", "dls-microscopy-manifest")
#: What our zarr stores' root metadata names (see :func:`_ours`)
MARK = "dls_microscopy"
_MAX_METADATA_BYTES = 2**20
#: A mesh folder's index, written with or without a manifest (geometry.command's INDEX_NAME)
MESH_INDEX = "meshes.json"
#: A pipeline run folder's lock, made before anything else in it (pipeline._run_folder's LOCK_FILE)
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
    """Whether the zarr metadata file ``metadata`` carries our mark in its attributes.

    Every store we write names us in its root attributes: a ``dls_microscopy`` record (a
    label image's provenance, the sample plate's), or an image's multiscales
    ``metadata.method`` (``dls_microscopy.io.pyramid (mean)``).  The text alone would not
    do: another tool's attributes may hold a path such as ``/data/dls_microscopy_runs``.
    The file is a few kB; a large one is not ours.
    """
    try:
        if metadata.stat().st_size > _MAX_METADATA_BYTES:
            return False
    except OSError:
        return False
    document = _json_object(metadata)
    attrs = document.get("attributes", document) if metadata.name == "zarr.json" else document
    if not isinstance(attrs, dict):
        return False
    if MARK in attrs:
        return True
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    return any(
        isinstance(m, dict)
        and isinstance(m.get("metadata"), dict)
        and str(m["metadata"].get("method", "")).startswith(f"{MARK}.")
        for m in (multiscales if isinstance(multiscales, list) else [])
    )


def _plate_of_ours(store: Path) -> bool:
    """Whether ``store`` is an NGFF plate whose first field image we wrote.

    Plates written before their root was marked (the sample plate before 2026-11-29) are
    still ours: their fields' images carry our pyramid's mark.
    """
    plate = _attributes(store).get("plate")
    wells = plate.get("wells") if isinstance(plate, dict) else None
    if not isinstance(wells, list) or not wells or not isinstance(wells[0], dict):
        return False
    well = store / str(wells[0].get("path", ""))
    about = _attributes(well).get("well")
    images = about.get("images") if isinstance(about, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], dict):
        return False
    image = well / str(images[0].get("path", ""))
    return image.resolve().is_relative_to(store.resolve()) and any(
        _ours(image / n) for n in ("zarr.json", ".zattrs") if (image / n).is_file()
    )


def _attributes(group: Path) -> dict:
    """The NGFF attributes of the zarr group ``group`` (``ome`` of v3 ``zarr.json``, or ``.zattrs``)."""
    if (group / "zarr.json").is_file():
        found = _json_object(group / "zarr.json").get("attributes", {})
    else:
        found = _json_object(group / ".zattrs")
    found = found.get("ome", found) if isinstance(found, dict) else {}
    return found if isinstance(found, dict) else {}


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
    if any(_ours(path / n) for n in names & set(ZARR_METADATA)) or _plate_of_ours(path):
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
