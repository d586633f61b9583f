"""Lazy reader for image datasets in HDF5 files (``file.h5:/group/dataset``).

Opening reads only the dataset's shape, type, chunking and attributes; pixels
are read on compute through a :class:`~dls_microscopy.io.lazy.ChunkSource`
with dask chunks that are whole multiples of the HDF5 chunks.  Axes come from
an ``axes`` attribute or HDF5 dimension labels (default: the last N of
``"tczyx"``); spacing from ``element_size_um`` (ilastik / plantseg convention).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from dls_microscopy.errors import (
    CorruptDataError,
    DimensionalityError,
    InputError,
    InputNotFoundError,
    MetadataError,
    UnsupportedFormatError,
)
from dls_microscopy.io.lazy import ChunkSource, SourceLevel
from dls_microscopy.spacing import warn_spacing_fallback
from dls_microscopy.volume import AXES_ORDER, SPATIAL_AXES, Volume, check_dtype, default_axes

__all__ = ["hdf5_datasets", "open_hdf5"]

log = logging.getLogger(__name__)

#: Dask chunks grow (by whole HDF5 chunks) up to about this many bytes.
_TARGET_CHUNK_BYTES = 32 * 2**20
_AXIS_WORDS = {
    "t": "t",
    "time": "t",
    "c": "c",
    "channel": "c",
    "channels": "c",
    "z": "z",
    "y": "y",
    "x": "x",
}

_CACHE_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_CACHE_SIZE = 16


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _open_file(path: Path) -> Any:
    """``h5py.File(path, "r")`` with errors mapped to ours."""
    import h5py

    if not path.exists():
        raise InputNotFoundError("no such file", path=path)
    if path.is_dir():
        raise UnsupportedFormatError("a directory, not an HDF5 file", path=path)
    if path.stat().st_size == 0:
        raise UnsupportedFormatError("file is empty", path=path)
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise InputError(f"cannot read file: {exc.strerror}", path=path) from exc
        if "unable to lock file" in str(exc).lower():
            raise InputError(f"file is locked, perhaps being written: {exc}", path=path) from exc
        if not h5py.is_hdf5(path):
            raise UnsupportedFormatError("not an HDF5 file", path=path) from exc
        raise CorruptDataError(f"cannot open HDF5 file: {exc}", path=path) from exc


def _cached_file(path: Path, stamp: tuple[int, int]) -> Any:
    """One read-only handle per file and process (handles are not picklable)."""
    if _stamp(path) != stamp:
        raise CorruptDataError("file was modified after it was opened; open it again", path=path)
    key = (os.getpid(), str(path), stamp)
    with _CACHE_LOCK:
        handle = _CACHE.get(key)
        if handle is None or not handle.id.valid:
            handle = _open_file(path)
            _CACHE[key] = handle
            while len(_CACHE) > _CACHE_SIZE:  # dropped handles close when unreferenced
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
    return handle


class _Hdf5Reader:
    """Picklable ``read(key)`` for one dataset: holds the path and dataset name only."""

    def __init__(self, path: Path, stamp: tuple[int, int], name: str) -> None:
        self.path, self.stamp, self.name = path, stamp, name

    def __call__(self, key: tuple[slice, ...]) -> np.ndarray:
        return _cached_file(self.path, self.stamp)[self.name][key]


def _datasets(group: Any) -> list[str]:
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            names.append("/" + name.lstrip("/") if group.name == "/" else f"{group.name}/{name}")

    group.visititems(visit)
    return sorted(names)


def hdf5_datasets(path: str | os.PathLike[str]) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]:
    """Every dataset of an HDF5 file, sorted by name: ``(name, shape, dtype)`` (no pixel is read).

    Raises
    ------
    InputNotFoundError, CorruptDataError
        A missing file, or one h5py cannot open.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("no such file", path=path)
    try:
        with h5py.File(path, "r") as handle:
            return [(name, tuple(handle[name].shape), handle[name].dtype) for name in _datasets(handle)]
    except OSError as exc:
        raise CorruptDataError(f"cannot read the HDF5 file: {exc}", path=path) from exc


def _select(handle: Any, dataset: str | None, path: Path) -> Any:
    import h5py

    every = _datasets(handle)
    listing = ", ".join(every) or "none"
    if dataset is None:
        if len(every) == 1:
            return handle[every[0]]
        raise InputError(
            f"the file holds {len(every)} datasets; name one as 'file.h5:/dataset' (datasets: {listing})",
            path=path,
        )
    name = "/" + dataset.strip("/")
    obj = handle.get(name)
    if obj is None:
        raise InputError(f"no dataset {name!r} in the file (datasets: {listing})", path=path)
    if isinstance(obj, h5py.Group):
        inside = ", ".join(_datasets(obj)) or "none"
        raise InputError(f"{name!r} is a group, not a dataset (datasets in it: {inside})", path=path)
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{name!r} is not a dataset", path=path)
    return obj


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _axes(ds: Any, path: Path) -> tuple[str, bool]:
    """File-order axis names and whether they came from the file."""
    labels: list[str] = []
    if "axes" in ds.attrs:
        raw = ds.attrs["axes"]
        labels = list(_text(raw)) if isinstance(raw, str | bytes) else [_text(v) for v in raw]
    elif "DIMENSION_LABELS" in ds.attrs:
        labels = [_text(v) for v in ds.attrs["DIMENSION_LABELS"]]
    labels = [s.strip().lower() for s in labels]
    if not labels or not any(labels):
        try:
            return default_axes(ds.ndim), False
        except DimensionalityError as exc:
            raise DimensionalityError(f"{exc.reason} (shape {ds.shape})", path=path) from exc
    names = [_AXIS_WORDS.get(s) for s in labels]
    if len(names) != ds.ndim or None in names or len(set(names)) != len(names):
        raise MetadataError(
            f"axis labels {labels} do not name the {ds.ndim} dimensions of shape {ds.shape} "
            "with distinct letters of 'tczyx'",
            path=path,
        )
    return "".join(n for n in names if n is not None), True


def _spacing(ds: Any, file_axes: str, path: Path) -> tuple[dict[str, float], bool]:
    spatial = [a for a in file_axes if a in SPATIAL_AXES]
    raw = None
    for obj in (ds, ds.parent):
        if "element_size_um" in obj.attrs:
            try:  # a string such as 'abc', or a type h5py cannot read: uncalibrated, like zeros
                raw = np.atleast_1d(np.asarray(obj.attrs["element_size_um"], dtype=float))
            except (TypeError, ValueError, OSError) as exc:
                warn_spacing_fallback(
                    log, "%s: element_size_um is not numbers (%s); using a spacing of 1 µm", path, exc
                )
                return {}, False
            break
    if raw is None:
        warn_spacing_fallback(log, "%s: no element_size_um attribute; using a spacing of 1 µm", path)
        return {}, False
    if raw.size == len(file_axes) and raw.size != len(spatial):
        raw = raw[[file_axes.index(a) for a in spatial]]
    if raw.size != len(spatial):
        warn_spacing_fallback(
            log,
            "%s: element_size_um %s has %d values for the %d spatial axes %r; using 1 µm",
            path,
            raw.tolist(),
            raw.size,
            len(spatial),
            "".join(spatial),
        )
        return {}, False
    good = np.isfinite(raw) & (raw > 0)
    if not good.all():  # the other axes keep their values
        warn_spacing_fallback(
            log,
            "%s: element_size_um %s: %s not a spacing (positive and finite); using 1 µm for %s",
            path,
            raw.tolist(),
            ", ".join(f"{a} = {v}" for a, v, ok in zip(spatial, raw.tolist(), good, strict=True) if not ok),
            "".join(a for a, ok in zip(spatial, good, strict=True) if not ok),
        )
    return {a: v for a, v, ok in zip(spatial, raw.tolist(), good, strict=True) if ok}, bool(good.all())


def _chunks(shape: tuple[int, ...], base: tuple[int, ...] | None, itemsize: int) -> tuple[int, ...]:
    """Whole multiples of the HDF5 chunks (rows for contiguous data), grown innermost first."""
    chunk = list(base) if base else [1] * (len(shape) - 1) + [shape[-1]]
    chunk = [min(c, s) for c, s in zip(chunk, shape, strict=True)]
    for i in reversed(range(len(shape))):
        nbytes = int(np.prod(chunk, dtype=np.int64)) * itemsize
        chunk[i] = min(shape[i], max(1, _TARGET_CHUNK_BYTES // nbytes) * chunk[i])
        if chunk[i] < shape[i]:
            break
    return tuple(chunk)


def open_hdf5(path: Path, dataset: str | None, *, level: int = 0, series: int = 0) -> Volume:
    """Open one dataset of an HDF5 file lazily.

    Parameters
    ----------
    path : Path
        The HDF5 file.
    dataset : str or None
        Path of the dataset inside the file (``"/group/raw"``); ``None``
        selects the only dataset of the file.
    level, series : int
        HDF5 datasets have a single resolution level and series: only 0.

    Returns
    -------
    Volume
        ``data`` a dask array of shape ``(..., Z, Y, X)`` with axes from the
        ``axes`` attribute or dimension labels (default the last N of
        ``"tczyx"``), spacing in µm from ``element_size_um`` (1.0 and
        ``metadata["calibrated"] = False`` without it), ``format`` ``"hdf5"``.

    Raises
    ------
    InputError
        Dataset missing, ambiguous or a group; ``level``/``series`` not 0.
    FormatError
        Not an HDF5 file, corrupt file (:class:`CorruptDataError`) or
        unusable axis labels (:class:`MetadataError`).
    UnsupportedDtypeError
        Compound, string or complex data.
    """
    path = Path(path)
    if series != 0:
        raise InputError(f"series {series} does not exist: HDF5 datasets have one series", path=path)
    handle = _open_file(path)
    stamp = _stamp(path)
    try:
        ds = _select(handle, dataset, path)
        where = Path(f"{path}:{ds.name}")  # what the dataset's own problems name: file.h5:/raw
        dtype = check_dtype(ds.dtype, path=where).newbyteorder("=")
        file_axes, labelled = _axes(ds, where)
        spacing, calibrated = _spacing(ds, file_axes, where)
        shape = tuple(int(s) for s in ds.shape)
        if any(s == 0 for s in shape):
            raise DimensionalityError(f"empty dataset: shape {shape} has a zero-size axis", path=where)
        source = ChunkSource(
            _Hdf5Reader(path, stamp, ds.name),
            shape=shape,
            dtype=dtype,
            path=path,
            what=f"HDF5 dataset {ds.name!r}",
        )
        chunks = _chunks(shape, ds.chunks, dtype.itemsize)
        name = ds.name
    finally:
        handle.close()
    axes = "".join(sorted(file_axes, key=AXES_ORDER.index))
    # reordered at the source: the level is one dask ``from_array`` (later slices fuse)
    lazy_level = SourceLevel(source, chunks, "dls-hdf5-" + tokenize(str(path), stamp, name))
    lazy_level = lazy_level.transpose(tuple(file_axes.index(a) for a in axes))
    data: da.Array = lazy_level.to_dask()
    vol = Volume(
        data=data,
        level_sources=(lazy_level,),
        axes=axes,
        spacing=tuple(spacing.get(a, 1.0) for a in axes if a in SPATIAL_AXES),
        source=path,
        format="hdf5",
        metadata={"dataset": name, "calibrated": calibrated, "axes_from_file": labelled},
    )
    return vol.at_level(level) if level else vol
