"""Lazy reader for OME-TIFF, ImageJ hyperstacks and plain TIFF stacks.

Opening a file reads only its structure (IFDs, OME-XML, ImageJ description);
pixels are read on compute, one page (or, for huge tiled planes, one tile)
at a time, through tifffile's zarr store wrapped in a
:class:`~dls_microscopy.io.lazy.ChunkSource`.  Every resolution level of the
selected series becomes one dask array; axes are renamed to ``"tczyx"``
letters and transposed (lazily) into that order.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
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
    UnsupportedFormatError,
)
from dls_microscopy.io.lazy import ChunkSource, SourceLevel
from dls_microscopy.io.units import to_micrometres
from dls_microscopy.volume import AXES_ORDER, SPATIAL_AXES, Volume, check_dtype

__all__ = ["open_tiff"]

log = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: tifffile axis letters with an equivalent in "tczyx" (RGB samples become channels).
_AXIS_MAP = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
#: Dask chunks aim at this size; planes above _MAX_CHUNK_BYTES are read by tiles/strips.
_TARGET_CHUNK_BYTES = 32 * 2**20
_MAX_CHUNK_BYTES = 64 * 2**20
#: tifffile log messages that mean the file structure is truncated or corrupt.
_CORRUPT = re.compile(
    r"invalid page offset|invalid offset to page|corrupted tag list|circular reference"
    r"|missing data offset|missing (data )?ByteCounts|incorrect Strip(ByteCounts|Offsets)"
)
#: "invalid value offset N": a tag value beyond the end of the file (N < 8: writer bug).
_VALUE_OFFSET = re.compile(r"invalid value offset (\d+)")
_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "ms": 1e-3,
    "µs": 1e-6,
    "us": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
}
Stamp = tuple[int, int]


# ------------------------------------------------------------------------ opening
class _ThreadErrors(logging.Handler):
    """Collects tifffile's warnings and errors emitted by the current thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    handler = _ThreadErrors()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _open_tifffile(path: Path) -> tifffile.TiffFile:
    """Open and parse ``path``; a damaged structure raises :class:`CorruptDataError`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if not head:
        raise UnsupportedFormatError("file is empty", path=path)
    if head not in _TIFF_MAGIC:
        raise UnsupportedFormatError("not a TIFF file (no TIFF header)", path=path)
    tif = None
    try:
        with _tifffile_errors() as messages:
            tif = tifffile.TiffFile(path)
            _ = tif.series  # parses every series (metadata only)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    except Exception as exc:  # tifffile raises many types on damaged files
        if tif is not None:
            tif.close()
        raise CorruptDataError(
            f"cannot parse TIFF structure: {type(exc).__name__}: {exc}", path=path
        ) from exc
    for message in messages:
        beyond = _VALUE_OFFSET.search(message)
        if _CORRUPT.search(message) or (beyond and int(beyond.group(1)) >= 8):
            tif.close()
            raise CorruptDataError(f"truncated or corrupt TIFF (tifffile: {message})", path=path)
    return tif


def _check_extent(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Raise when pixel data of ``series`` (first and last page) lies beyond its file's end."""
    for level in series.levels:
        if level.dataoffset is not None:  # contiguous pixels
            spans = [(level.dataoffset + level.nbytes, level.parent.filehandle.size)]
        else:
            try:
                pages = [level[0], level[len(level) - 1]]
            except Exception as exc:  # a page that cannot be loaded
                raise CorruptDataError(f"cannot read TIFF pages: {exc}", path=path) from exc
            spans = [
                (
                    max(o + n for o, n in zip(p.dataoffsets, p.databytecounts, strict=False)),
                    p.parent.filehandle.size,
                )
                for p in pages
                if p is not None and len(p.dataoffsets)
            ]
        for end, size in spans:
            if end > size:
                raise CorruptDataError(
                    f"file is truncated: pixel data extends to byte {end}, the file has {size}",
                    path=path,
                )


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


# ------------------------------------------------------------------------ metadata
def _uncalibrated(path: Path, why: str) -> dict[str, Any]:
    log.warning("%s: %s; using a spacing of 1 µm", path, why)
    return {"spacing": {}, "calibrated": False}


def _seconds(value: Any, unit: str | None) -> float | None:
    try:
        return float(value) * _SECONDS[(unit or "s").strip().lower()]
    except (KeyError, ValueError, TypeError):
        return None


def _ome_metadata(
    tif: tifffile.TiffFile, index: int, yx: tuple[int, int], path: Path
) -> dict[str, Any]:
    """Spacing (µm), channel names and time step of series ``index`` from the OME-XML."""
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError as exc:
        return _uncalibrated(path, f"malformed OME-XML ({exc})")
    images = root.findall("{*}Image")
    names = [im.get("Name") for im in images]
    if len(images) == len(tif.series):
        image = images[index]
    elif names.count(tif.series[index].name) == 1:
        image = images[names.index(tif.series[index].name)]
    else:
        return _uncalibrated(path, f"cannot match series {index} to an OME Image element")
    pixels = image.find("{*}Pixels")
    if pixels is None or (pixels.get("SizeY"), pixels.get("SizeX")) != tuple(map(str, yx)):
        return _uncalibrated(path, f"no OME Pixels element of size {yx} for series {index}")
    spacing: dict[str, float] = {}
    for axis in "ZYX":
        text = pixels.get(f"PhysicalSize{axis}")
        try:
            value = float(text) if text is not None else None
        except ValueError:
            log.warning("%s: invalid PhysicalSize%s %r ignored", path, axis, text)
            continue
        if value is not None and np.isfinite(value) and value > 0:
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            spacing[axis.lower()] = to_micrometres(value, unit, path=path)
    out: dict[str, Any] = {"spacing": spacing, "calibrated": bool(spacing)}
    if not spacing:
        _uncalibrated(path, "the OME-XML has no PhysicalSize")
    channels = pixels.findall("{*}Channel")
    out["channel_names"] = tuple(ch.get("Name") or f"channel_{i}" for i, ch in enumerate(channels))
    step = _seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))
    if step is not None:
        out["time_increment_s"] = step
    return out


def _imagej_metadata(
    tif: tifffile.TiffFile, keyframe: Any, n_channels: int, path: Path
) -> dict[str, Any]:
    """Spacing (µm) from the resolution tags and ``spacing``; channel labels; frame interval."""
    ij = tif.imagej_metadata or {}
    out: dict[str, Any] = {"spacing": {}, "calibrated": False}
    labels = ij.get("Labels")
    if isinstance(labels, list) and n_channels > 1 and len(labels) >= n_channels:
        if all(isinstance(s, str) and s for s in labels[:n_channels]):  # ImageJ: C fastest
            out["channel_names"] = tuple(labels[:n_channels])
    step = _seconds(ij.get("finterval"), ij.get("tunit", "s"))
    if step is not None:
        out["time_increment_s"] = step
    unit = ij.get("unit")
    if isinstance(unit, str):  # ImageJ escapes non-ASCII units: "\\u00B5m" is "µm"
        unit = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unit).strip()
    if not isinstance(unit, str) or unit.lower() in {"", "pixel", "pixels"}:
        return {**out, **_uncalibrated(path, "the ImageJ metadata has no length unit")}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = keyframe.tags.valueof(tag)  # (pixels, per unit length)
        if isinstance(value, tuple) and len(value) == 2 and value[0] > 0 and value[1] > 0:
            out["spacing"][axis] = to_micrometres(value[1] / value[0], unit, path=path)
    if isinstance(ij.get("spacing"), int | float) and ij["spacing"] > 0:
        out["spacing"]["z"] = to_micrometres(float(ij["spacing"]), unit, path=path)
    out["calibrated"] = bool(out["spacing"])
    return out


# ------------------------------------------------------------------- axes, chunks
def _map_axes(axes: str, shape: tuple[int, ...], path: Path) -> list[str | None]:
    """Our letter for each tifffile axis; ``None`` for length-1 axes to squeeze."""
    letters = [_AXIS_MAP.get(a) if shape[i] > 1 or a in "YX" else None for i, a in enumerate(axes)]
    unknown = [i for i, a in enumerate(axes) if a not in _AXIS_MAP and shape[i] > 1]
    if len(unknown) == 1 and "z" not in letters:  # a plain page stack: 'Q', 'I' or other
        (i,) = unknown
        if axes[i] not in "QI":
            log.warning(
                "%s: TIFF axis %r (%s) read as z",
                path,
                axes[i],
                tifffile.TIFF.AXES_NAMES.get(axes[i], "unknown"),
            )
        letters[i] = "z"
    elif unknown:
        described = ", ".join(
            f"{axes[i]!r} ({tifffile.TIFF.AXES_NAMES.get(axes[i], 'unknown')}, length {shape[i]})"
            for i in unknown
        )
        raise MetadataError(
            f"TIFF axes {axes!r} (shape {shape}) have no equivalent in 'tczyx': {described}",
            path=path,
        )
    if "y" not in letters or "x" not in letters:
        raise MetadataError(f"TIFF axes {axes!r} lack Y or X", path=path)
    return letters


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


def _to_our_axes(
    level: SourceLevel, letters: list[str | None], tiff_axes: str
) -> tuple[da.Array, str, SourceLevel | None]:
    """Squeeze, transpose to 'tczyx' order and merge channels with RGB samples.

    Squeezing and reordering are applied to the source, so the level stays one
    dask ``from_array`` whose later slices fuse with the file read.  Channels
    and samples (C and S both longer than 1) are merged with a dask reshape;
    such a level has no source (None) and is indexed with dask afterwards.
    """
    for i in reversed(range(len(letters))):
        if letters[i] is None:
            level = level.take(i, 0)
    kept = [(a, t) for a, t in zip(letters, tiff_axes, strict=True) if a is not None]
    perm = sorted(range(len(kept)), key=lambda i: (AXES_ORDER.index(kept[i][0]), kept[i][1]))
    level = level.transpose(tuple(perm))
    axes = "".join(kept[i][0] for i in perm)
    if axes.count("c") == 2:  # C then S: channel index c * samples + s
        i = axes.index("c")
        shape = level.shape
        if 1 in shape[i : i + 2]:  # one of the two has length 1: drop it at the source
            level = level.take(i if shape[i] == 1 else i + 1, 0)
        else:
            array = level.to_dask()
            array = array.reshape((*shape[:i], shape[i] * shape[i + 1], *shape[i + 2 :]))
            return array, axes[:i] + axes[i + 1 :], None
        axes = axes[:i] + axes[i + 1 :]
    return level.to_dask(), axes, level


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
        The structure cannot be parsed or the file is truncated (at open), or
        pixel data cannot be decoded (at compute).
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
        array, axes, lazy_level = _to_our_axes(
            SourceLevel(source, chunks, name), letters, lev.axes
        )
        if shapes and axes != "".join(shapes[0]):
            log.warning(
                "%s: pyramid level %d has axes %r; it and smaller levels are ignored", path, i, axes
            )
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
        fmt, meta = (
            "tiff",
            _uncalibrated(
                path,
                ("malformed OME-XML ignored and " if broken_ome else "")
                + "no physical calibration in the file",
            ),
        )

    spatial = [a for a in axes if a in SPATIAL_AXES]
    missing = [a for a in spatial if a not in meta["spacing"]]
    if meta["calibrated"] and missing:
        log.warning("%s: no physical size for axes %s; using 1 µm", path, "".join(missing))
    spacing = [meta["spacing"].get(a, 1.0) for a in spatial]
    level_spacings = tuple(
        tuple(sp * shapes[0][a] / shp[a] for sp, a in zip(spacing, spatial, strict=True))
        for shp in shapes
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
