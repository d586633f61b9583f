"""Validation of written stores with ome-zarr-models, skipped for metadata already validated.

ome-zarr-models validates a store from its metadata documents alone (``zarr.json``,
or ``.zgroup``/``.zattrs``/``.zarray`` for zarr v2) and the members each group lists;
it reads no chunk.  :func:`validate_once` reads those documents and the names in
every group's folder (a *snapshot*, a few KiB, no chunk listing) and runs the
validation only for a snapshot it has not seen pass in this process: the same bytes
give the same verdict, so a repeat write of the same shape, spacing and name (a
batch of same-sized crops, a benchmark loop) skips the ~4-6 ms of model building
without validating anything less.  Failures are never cached.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["metadata_snapshot", "validate_once"]

#: Metadata documents of zarr v3 and v2 nodes.
_META_FILES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"})
#: Snapshots remembered (each a few KiB).
_MAX_ENTRIES = 64

_validated: collections.OrderedDict[tuple[object, ...], None] = collections.OrderedDict()
_lock = threading.Lock()


def _is_array(meta: dict[str, bytes]) -> bool:
    if ".zarray" in meta:
        return True
    doc = meta.get("zarr.json")
    if doc is None:
        return False
    try:
        return json.loads(doc).get("node_type") == "array"
    except (ValueError, AttributeError):
        return False


def metadata_snapshot(root: Path) -> tuple[object, ...]:
    """Every metadata document under ``root`` and the entries of every group folder.

    Array folders contribute their metadata documents only (their chunks are not
    listed); every other folder contributes its sorted entry names and documents,
    and its sub-folders are visited.

    Parameters
    ----------
    root : Path
        The root folder of a zarr hierarchy.

    Returns
    -------
    tuple
        ``(relative path, kind, entries, documents)`` per folder, in sorted order;
        hashable and equal exactly when the same documents sit at the same places.
    """
    out: list[tuple[object, ...]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        folder = root / rel if rel else root
        with os.scandir(folder) as it:
            entries = sorted((e.name, e.is_dir()) for e in it)
        meta = {
            name: (folder / name).read_bytes()
            for name, is_dir in entries
            if name in _META_FILES and not is_dir
        }
        docs = tuple(sorted(meta.items()))
        if _is_array(meta):
            out.append((rel, "array", (), docs))
            continue
        out.append((rel, "folder", tuple(entries), docs))
        stack.extend(f"{rel}/{name}" if rel else name for name, is_dir in entries if is_dir)
    return tuple(sorted(out, key=lambda item: str(item[0])))


def validate_once(root: Path, kind: str, validate: Callable[[], None]) -> None:
    """Run ``validate()`` unless the same ``kind`` of check passed on identical metadata.

    Parameters
    ----------
    root : Path
        The hierarchy ``validate`` reads.
    kind : str
        What ``validate`` checks (model and NGFF version), part of the cache key.
    validate : callable
        Raises when the store is invalid; its exceptions propagate and nothing is
        remembered.
    """
    key = (kind, metadata_snapshot(Path(root)))
    with _lock:
        if key in _validated:
            _validated.move_to_end(key)
            return
    validate()
    with _lock:
        _validated[key] = None
        while len(_validated) > _MAX_ENTRIES:
            _validated.popitem(last=False)
