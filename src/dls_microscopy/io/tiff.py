"""Lazy reader for OME-TIFF, ImageJ hyperstacks and plain TIFF stacks.

Opening a file reads only its structure (IFDs, OME-XML, ImageJ description);
pixels are read on compute, one page (or, for huge tiled planes, one tile)
at a time, through tifffile's zarr store wrapped in a
:class:`~dls_microscopy.io.lazy.ChunkSource`.  Every resolution level of the
selected series becomes one dask array; axes are renamed to ``"tczyx"``
letters and transposed (lazily) into that order.

The parts live in private modules: ``_tiff_open`` (header check, structure
parse, truncation check), ``_tiff_metadata`` (OME-XML and ImageJ calibration)
and ``_tiff_axes`` (axis letters and reordering).  The per-process file cache,
chunking and the :class:`~dls_microscopy.volume.Volume` assembly stay here.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
from dask.base import tokenize

from dls_microscopy.errors import (
    CorruptDataError,
    DimensionalityError,
    DlsError,
    InputError,
    InputNotFoundError,
    MetadataError,
)
from dls_microscopy.io._tiff_axes import _map_axes, _to_our_axes
from dls_microscopy.io._tiff_metadata import _imagej_metadata, _ome_metadata, _resolution_metadata
from dls_microscopy.io._tiff_open import _check_extent, _check_imagej_images, _check_planes, _open_tifffile
from dls_microscopy.io.lazy import ChunkSource, SourceLevel
from dls_microscopy.spacing import warn_spacing_fallback
from dls_microscopy.volume import AXES_ORDER, SPATIAL_AXES, Volume, check_dtype

__all__ = ["open_tiff"]

log = logging.getLogger(__name__)

#: Dask chunks aim at this size; planes above _MAX_CHUNK_BYTES are read by tiles/strips.
_TARGET_CHUNK_BYTES = 32 * 2**20
_MAX_CHUNK_BYTES = 64 * 2**20
Stamp = tuple[int, int]


# --------------------------------------------------------- per-process file cache
_CACHE_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_CACHE_SIZE = 16


@atexit.register
def _close_cached_files() -> None:
    """Close this process's cached TIFF handles at exit (no ResourceWarning)."""
    with _CACHE_LOCK:
        for entry in _CACHE.values():
            tif = entry.get("tif")
            if tif is not None:
                tif.close()
        _CACHE.clear()


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", path=path) from exc
    return st.st_mtime_ns, st.st_size


def _cache_entry(path: Path, stamp: Stamp) -> dict[str, Any]:
    """This process's parsed file (handles are never shared across fork or pickling)."""
    key = (os.getpid(), str(path), stamp)
    with _CACHE_LOCK:
        entry = _CACHE.get(key)
    if entry is None:
        fresh = {"tif": _open_tifffile(path), "arrays": {}}  # outside the lock: slow
        with _CACHE_LOCK:
            entry = _CACHE.setdefault(key, fresh)
    with _CACHE_LOCK:
        _CACHE[key] = entry
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:  # dropped handles close once unreferenced
            _CACHE.popitem(last=False)
    return entry


def _level_array(path: Path, stamp: Stamp, series: int, level: int, mode: int) -> Any:
    """tifffile's zarr array of one level; ``mode`` 2 chunks by page, 0 by strip/tile."""
    import zarr

    if _stamp(path) != stamp:
        raise CorruptDataError("file was modified after it was opened; open it again", path=path)
    entry = _cache_entry(path, stamp)
    with _CACHE_LOCK:
        array = entry["arrays"].get((series, level, mode))
        if array is None:
            store = entry["tif"].series[series].aszarr(level=level, chunkmode=mode)
            array = entry["arrays"][(series, level, mode)] = zarr.open_array(store, mode="r")
    return array


class _TiffLevelReader:
    """Picklable ``read(key)`` of one level of one series, for :class:`ChunkSource`.

    Holds only the path, the file's (mtime, size) stamp and indices; the file is
    opened once per process.
    """

    def __init__(
        self, path: Path, stamp: Stamp, series: int, level: int, mode: int, dtype: np.dtype[Any]
    ) -> None:
        self.path, self.stamp, self.series, self.level = path, stamp, series, level
        self.mode, self.dtype = mode, dtype

    def __call__(self, key: tuple[slice, ...]) -> np.ndarray:
        array = _level_array(self.path, self.stamp, self.series, self.level, self.mode)
        return np.asarray(array[key]).astype(self.dtype, copy=False)


def _chunks(
    shape: tuple[int, ...], base: tuple[int, ...], letters: list[str | None], itemsize: int
) -> tuple[int, ...]:
    """Dask chunks in file order, whole multiples of the store's chunks (pages or tiles).

    A huge plane is split into ~``_TARGET_CHUNK_BYTES`` blocks of tiles (or strips);
    smaller planes are grouped along z, then c, then t up to that size.
    """
    chunk = [min(b, s) for b, s in zip(base, shape, strict=True)]

    def nbytes() -> int:
        return int(np.prod(chunk, dtype=np.int64)) * itemsize

    iy, ix = letters.index("y"), letters.index("x")
    if chunk[iy] < shape[iy] or chunk[ix] < shape[ix]:
        grow_x = chunk[ix] < shape[ix]  # tiles grow in y and x, strips in y
        n = max(1, int((_TARGET_CHUNK_BYTES / nbytes()) ** (0.5 if grow_x else 1.0)))
        chunk[iy] = min(shape[iy], n * chunk[iy])
        chunk[ix] = min(shape[ix], n * chunk[ix]) if grow_x else chunk[ix]
    others = [i for i, a in enumerate(letters) if a is not None and a not in "yx"]
    for i in sorted(others, key=lambda i: -AXES_ORDER.index(letters[i] or "t")):
        if chunk[i] < shape[i]:
            chunk[i] = min(shape[i], max(1, _TARGET_CHUNK_BYTES // nbytes()) * chunk[i])
            if chunk[i] < shape[i]:
                break
    return tuple(chunk)


# ----------------------------------------------------------------------- public API
def open_tiff(path: Path, *, level: int = 0, series: int = 0) -> Volume:
    """Open an OME-TIFF, ImageJ hyperstack or plain TIFF lazily.

    Parameters
    ----------
    path : Path
        The TIFF file.
    level : int
        Resolution level exposed as ``Volume.data`` (0 = full resolution);
        all levels of the series (SubIFD pyramids) are in ``Volume.levels``.
    series : int
        Image series of a multi-series file (OME ``Image`` elements).

    Returns
    -------
    Volume
        ``data`` a dask array with axes a subset of ``"tczyx"``, e.g. shape
        ``(C, Z, Y, X)``, read page by page on compute; ``spacing`` in µm
        (1.0 with ``metadata["calibrated"] = False`` where the file has none);
        ``format`` ``"ome-tiff"``, ``"imagej-tiff"`` or ``"tiff"``.

    Raises
    ------
    UnsupportedFormatError
        The file is empty or not a TIFF.
    CorruptDataError
        The structure cannot be parsed, the file is truncated or its OME-XML
        declares more planes than it has pages (at open), or pixel data cannot
        be decoded (at compute).
    MetadataError
        Axes without a ``tczyx`` equivalent, or an unknown length unit.
    InputError
        ``series`` or ``level`` out of range.
    UnsupportedDtypeError
        Complex or other non-numeric pixel types.
    """
    path = Path(path)
    stamp = _stamp(path)
    tif = _cache_entry(path, stamp)["tif"]  # parsed once; this process's readers reuse it
    vol = _volume(tif, path, stamp, series)
    return vol.at_level(level) if level else vol


def _volume(tif: tifffile.TiffFile, path: Path, stamp: Stamp, index: int) -> Volume:
    n_series = len(tif.series)
    if not 0 <= index < n_series:
        raise InputError(
            f"series {index} does not exist: the file has {n_series} series (0..{n_series - 1})",
            path=path,
        )
    ser = tif.series[index]
    dtype = check_dtype(ser.dtype, path=path).newbyteorder("=")
    if 0 in ser.shape:
        raise DimensionalityError(f"empty image: shape {ser.shape} has a zero-size axis", path=path)
    _check_extent(ser, path)
    if ser.kind == "ome":
        _check_planes(ser, index, path)
    elif ser.kind == "imagej":
        _check_imagej_images(tif, path)

    levels: list[da.Array] = []
    sources: list[SourceLevel | None] = []
    shapes: list[dict[str, int]] = []
    for i, lev in enumerate(ser.levels):
        letters = _map_axes(lev.axes, lev.shape, path)
        plane_bytes = int(np.prod(lev.keyframe.shape, dtype=np.int64)) * dtype.itemsize
        mode = 0 if plane_bytes > _MAX_CHUNK_BYTES else 2
        source = ChunkSource(
            _TiffLevelReader(path, stamp, index, i, mode, dtype),
            shape=lev.shape,
            dtype=dtype,
            path=path,
            what=f"TIFF series {index} level {i}",
        )
        chunks = _chunks(
            lev.shape,
            _store_chunks(path, stamp, index, i, mode, lev.shape),
            letters,
            dtype.itemsize,
        )
        name = "dls-tiff-" + tokenize(str(path), stamp, index, i, mode)
        array, axes, lazy_level = _to_our_axes(SourceLevel(source, chunks, name), letters, lev.axes)
        if shapes and axes != "".join(shapes[0]):
            log.warning("%s: pyramid level %d has axes %r; it and smaller levels are ignored", path, i, axes)
            break
        levels.append(array)
        sources.append(lazy_level)
        shapes.append(dict(zip(axes, array.shape, strict=True)))
    axes = "".join(shapes[0])

    if ser.kind == "ome":
        fmt, meta = "ome-tiff", _ome_metadata(tif, index, (shapes[0]["y"], shapes[0]["x"]), path)
    elif tif.is_imagej:
        fmt, meta = "imagej-tiff", _imagej_metadata(tif, ser.keyframe, shapes[0].get("c", 1), path)
    else:
        broken_ome = "<OME" in (tif.pages.first.description or "")[:2000]
        ignored = "malformed OME-XML ignored and " if broken_ome else ""
        fmt, meta = "tiff", _resolution_metadata(ser.keyframe, path, ignored)

    spatial = [a for a in axes if a in SPATIAL_AXES]
    missing = [a for a in spatial if a not in meta["spacing"]]
    if meta["calibrated"] and missing:
        warn_spacing_fallback(log, "%s: no physical size for axes %s; using 1 µm", path, "".join(missing))
    spacing = [meta["spacing"].get(a, 1.0) for a in spatial]
    level_spacings = tuple(
        tuple(sp * shapes[0][a] / shp[a] for sp, a in zip(spacing, spatial, strict=True)) for shp in shapes
    )
    extra = {k: meta[k] for k in ("time_increment_s",) if k in meta}
    return Volume(
        data=levels[0],
        axes=axes,
        spacing=level_spacings[0],
        channel_names=meta.get("channel_names", ()),
        levels=tuple(levels),
        level_spacings=level_spacings,
        level_sources=tuple(sources),
        source=path,
        format=fmt,
        metadata={
            "series_count": n_series,
            "calibrated": meta["calibrated"],
            "tiff_axes": ser.axes,
            **extra,
        },
    )


def _store_chunks(
    path: Path, stamp: Stamp, index: int, level: int, mode: int, shape: tuple[int, ...]
) -> tuple[int, ...]:
    """Chunk shape of tifffile's zarr store for a level (metadata only, no pixels read)."""
    try:
        array = _level_array(path, stamp, index, level, mode)
    except DlsError:
        raise
    except Exception as exc:  # tifffile and zarr raise many types
        raise CorruptDataError(
            f"cannot map series {index} level {level} to chunks: {type(exc).__name__}: {exc}",
            path=path,
        ) from exc
    if tuple(array.shape) != tuple(shape):
        raise MetadataError(f"tifffile store shape {array.shape} is not {shape}", path=path)
    return tuple(int(c) for c in array.chunks)
