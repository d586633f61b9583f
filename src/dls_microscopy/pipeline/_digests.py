"""Digests of inputs and outputs: sha256 of files, of zarr stores' metadata and chunks.

Split from :mod:`dls_microscopy.pipeline.provenance`, which writes and verifies
manifests with them (and re-exports the public names).  An input digested in this
process is remembered (``_DIGESTS``): the fields of one run share inputs.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError

__all__ = ["IMAGE_EXCLUDES", "digest_file", "digest_input", "image_excludes"]

_READ_BYTES = 8 * 2**20
#: Inputs this process has digested, by path and a fingerprint of every file's name, size and
#: modification time (the fields of one run share inputs: every time point of a time series
#: reads the same store, which is then read once, not once per field).  Least recently used
#: entries go first.
_DIGESTS: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
_DIGESTS_MAX = 64
_DIGESTS_LOCK = threading.Lock()


def digest_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 8 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BYTES):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path, exclude: Iterable[str] = ()) -> list[Path]:
    """The files under ``root``, sorted by relative path; not those under its subfolders ``exclude``."""
    skip = {root / name for name in exclude}
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and not any(d in p.parents for d in skip)),
        key=lambda p: p.relative_to(root).as_posix(),
    )


#: Subfolders of an image store that an ``image`` input's digest leaves out: label images are
#: inputs of their own (``store/labels/NAME``), and adding one (``segment`` writes into the
#: store) must not make every earlier output of that image fail verify.
IMAGE_EXCLUDES = ("labels",)


def image_excludes(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """:data:`IMAGE_EXCLUDES` present in the image store ``path`` (none for a file)."""
    p = Path(os.fspath(path))
    return tuple(name for name in IMAGE_EXCLUDES if (p / name).is_dir())


def digest_input(
    path: str | os.PathLike[str], *, reuse: bool = False, exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """Size and digests of an input file or store.

    A directory (zarr store) gets ``sha256_metadata`` over its metadata files
    and ``sha256_data`` over the digests of all other files (chunks, shards),
    each keyed by its relative path, so a moved, added, removed or changed
    chunk changes the digest.  A file gets ``sha256_data`` of its bytes.
    An HDF5 ``"file.h5:/dataset"`` path is digested as the file.

    ``exclude`` names subfolders of a store left out (recorded as ``excluded``): an
    image's ``labels`` (:func:`image_excludes`).

    With ``reuse`` (:func:`write_manifest`), an input this process has digested
    before is not read again while every file keeps its name, size and modification
    time: the change check that resuming a run also relies on (an edit that keeps
    all three is not seen).  Without it (:func:`verify_manifest`), every byte is read.
    """
    from dls_microscopy.io import split_dataset_path

    file_path, internal = split_dataset_path(path)
    p = Path(file_path).absolute()
    if not p.exists():
        raise InputError("input does not exist", path=p)
    excluded = tuple(exclude) if p.is_dir() else ()
    files = _walk(p, excluded) if p.is_dir() else [p]
    stats = [f.stat() for f in files]
    fingerprint = hashlib.sha256()
    for f, st in zip(files, stats, strict=True):
        fingerprint.update(f"{f.relative_to(p).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = (f"{p}:{internal or ''}:{','.join(excluded)}", fingerprint.hexdigest())
    with _DIGESTS_LOCK:
        if reuse and key in _DIGESTS:
            _DIGESTS.move_to_end(key)
            return dict(_DIGESTS[key])
    entry = _digest(p, internal, files, stats)
    if excluded:
        entry["excluded"] = list(excluded)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = dict(entry)
        while len(_DIGESTS) > _DIGESTS_MAX:
            _DIGESTS.popitem(last=False)
    return entry


def _digest(p: Path, internal: str | None, files: list[Path], stats: list[os.stat_result]) -> dict[str, Any]:
    """:func:`digest_input` of ``p``, whose ``files`` (sorted) and their ``stats`` are listed."""
    from dls_microscopy.io._zarr_chunks import ZARR_METADATA_FILES  # zarr is imported with it: lazily

    entry: dict[str, Any] = {"path": str(p)}
    if internal:
        entry["dataset"] = internal
    if p.is_dir():
        meta, data = hashlib.sha256(), hashlib.sha256()
        size = n = 0
        for f, st in zip(files, stats, strict=True):
            rel = f.relative_to(p).as_posix().encode()
            size += st.st_size
            n += 1
            if f.name in ZARR_METADATA_FILES:
                content = f.read_bytes()
                meta.update(rel + b"\0" + str(len(content)).encode() + b"\0" + content)
            else:
                data.update(rel + b"\0" + digest_file(f).encode() + b"\n")
        entry.update(
            kind="directory",
            size=size,
            n_files=n,
            sha256_metadata=meta.hexdigest(),
            sha256_data=data.hexdigest(),
        )
    else:
        entry.update(kind="file", size=stats[0].st_size, n_files=1, sha256_data=digest_file(p))
    return entry


def _digest_external(path: Path, content: Path | None = None) -> dict[str, Any]:
    """The record of an output outside the folder: its path, and the size and sha256 of ``content``.

    ``content`` is where the file is now when it is renamed to ``path`` later (default ``path``).
    """
    f = path.absolute()
    read = content if content is not None else f
    return {"path": str(f), "size": read.stat().st_size, "sha256": digest_file(read)}
