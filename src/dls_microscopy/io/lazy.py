"""Lazy, error-guarded array access shared by all readers.

Readers expose the pixels of a file as an object with ``shape``, ``dtype``,
``ndim`` and ``__getitem__`` (a :class:`ChunkSource`); :func:`to_dask` wraps it
as a dask array.  Any failure while decoding pixels at compute time (a
truncated TIFF, a corrupt zarr chunk) surfaces as our
:class:`~dls_microscopy.errors.CorruptDataError`, naming the file and the
region, instead of a traceback from inside a codec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.errors import CorruptDataError, DlsError

__all__ = ["ChunkSource", "to_dask"]

log = logging.getLogger(__name__)


def _region_text(key: tuple[Any, ...]) -> str:
    parts = []
    for k in key:
        if isinstance(k, slice):
            parts.append(f"{k.start or 0}:{'' if k.stop is None else k.stop}")
        else:
            parts.append(str(k))
    return "[" + ", ".join(parts) + "]"


class ChunkSource:
    """Array-like view of pixels in a file that reads only what is indexed.

    Parameters
    ----------
    read : callable
        ``read(key) -> ndarray`` for a tuple of slices ``key``; it must return
        exactly the requested region.
    shape : tuple of int
        Full shape.
    dtype : numpy dtype
        Pixel type.
    path : Path
        The file, for error messages.
    what : str
        What is being read (e.g. ``"zarr array 'labels/0/0'"``), for messages.

    Notes
    -----
    The object must stay picklable for distributed schedulers, so ``read``
    should be a module-level function or a bound method of a picklable object.
    """

    def __init__(
        self,
        read: Callable[[tuple[slice, ...]], np.ndarray],
        *,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        path: Path,
        what: str,
    ) -> None:
        self._read = read
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.path = path
        self.what = what

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        ellipsis = [i for i, k in enumerate(key) if k is Ellipsis]
        if ellipsis:
            i = ellipsis[0]
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        bounds, post = _bounding_key(key, self.shape)
        try:
            out = np.asarray(self._read(bounds))
        except DlsError:
            raise
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise CorruptDataError(
                f"cannot read {self.what} at {_region_text(bounds)}: "
                f"{type(exc).__name__}: {exc}".rstrip(": "),
                path=self.path,
            ) from exc
        # apply steps, integer and array indices axis by axis (orthogonal indexing)
        axis = 0
        for p in post:
            if p is None:
                axis += 1
                continue
            out = out[(slice(None),) * axis + (p,)]
            if not isinstance(p, int | np.integer):
                axis += 1
        return out


def _bounding_key(
    key: tuple[Any, ...], shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], list[Any]]:
    """Split an index into step-1 slices to read and the indexing to apply afterwards.

    Readers only ever see contiguous slices; steps, integers and index arrays
    (which dask passes with ``fancy=True``) are applied to the read region.
    """
    bounds: list[slice] = []
    post: list[Any] = []
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step == 1:
                bounds.append(slice(start, max(start, stop)))
                post.append(None)
            elif step > 0:
                stop = max(start, stop)
                bounds.append(slice(start, stop))
                post.append(slice(None, None, step))
            else:  # negative step: read ascending, then reverse
                idx = np.arange(start, stop, step)
                lo, hi = (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0)
                bounds.append(slice(lo, hi))
                post.append(idx - lo)
        elif isinstance(k, int | np.integer):
            i = int(k) + n if k < 0 else int(k)
            bounds.append(slice(i, i + 1))
            post.append(0)
        else:
            idx = np.asarray(k)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
            idx = np.where(idx < 0, idx + n, idx)
            lo, hi = (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0)
            bounds.append(slice(lo, hi))
            post.append(idx - lo)
    return tuple(bounds), post


def to_dask(
    source: ChunkSource, chunks: tuple[int, ...] | str, *, name: str | None = None
) -> da.Array:
    """Wrap a :class:`ChunkSource` as a dask array with the given chunking.

    ``name`` should identify the data deterministically (path, level...) so
    that two opens of the same file give the same dask keys.
    """
    return da.from_array(
        source,
        chunks=chunks,
        asarray=False,
        fancy=True,
        lock=False,
        inline_array=True,
        name=name or False,
        meta=np.empty((0,) * source.ndim, dtype=source.dtype),
    )
