"""Lazy, error-guarded array access shared by all readers.

Readers expose the pixels of a file as an object with ``shape``, ``dtype``,
``ndim`` and ``__getitem__`` (a :class:`ChunkSource`); :func:`to_dask` wraps it
as a dask array.  Axis reordering and dropping an axis at an index (a channel
or time point) are applied to the source itself (:meth:`ChunkSource.take`,
:meth:`ChunkSource.transpose`, :class:`SourceLevel`), so that a level is
always *one* dask ``from_array`` and a later slice of it fuses with the file
read: dask does not fuse two successive ``getitem`` calls (from 2026.8 on), so
``level[c][z]`` would otherwise read whole dask chunks of every channel.

Any failure while decoding pixels at compute time (a truncated TIFF, a
corrupt zarr chunk) surfaces as our
:class:`~dls_microscopy.errors.CorruptDataError`, naming the file and the
region, instead of a traceback from inside a codec.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.errors import CorruptDataError, DlsError

__all__ = ["ChunkSource", "SourceLevel", "to_dask"]

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
                f"cannot read {self.what} at {_region_text(bounds)}: {type(exc).__name__}: {exc}".rstrip(
                    ": "
                ),
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

    def take(self, axis: int, index: int) -> ChunkSource:
        """A view without ``axis``, fixed at ``index`` (like ``source[..., index, ...]``).

        The view reads through the same reader with the index inserted into
        every key, so the reader still sees only contiguous slices and reads
        only that index of the axis.  Nothing is read here.

        Parameters
        ----------
        axis : int
            Axis to drop, ``0 <= axis < ndim``.
        index : int
            Position along that axis; negative values count from the end.

        Returns
        -------
        ChunkSource
            Shape ``shape`` without ``shape[axis]``.
        """
        axis = _check_axis(axis, self.ndim)
        n = self.shape[axis]
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for an axis of size {n}")
        index = int(index) % n
        return ChunkSource(
            _TakeRead(self._read, axis, index),
            shape=self.shape[:axis] + self.shape[axis + 1 :],
            dtype=self.dtype,
            path=self.path,
            what=f"{self.what} (axis {axis} at {index})",
        )

    def transpose(self, axes: tuple[int, ...]) -> ChunkSource:
        """A view with the axes permuted (like ``numpy.transpose(source, axes)``).

        Parameters
        ----------
        axes : tuple of int
            A permutation of ``range(ndim)``: axis ``i`` of the view is axis
            ``axes[i]`` of this source.

        Returns
        -------
        ChunkSource
            Shape ``tuple(shape[a] for a in axes)``.
        """
        axes = tuple(int(a) for a in axes)
        if sorted(axes) != list(range(self.ndim)):
            raise ValueError(f"{axes} is not a permutation of {self.ndim} axes")
        if axes == tuple(range(self.ndim)):
            return self
        return ChunkSource(
            _TransposeRead(self._read, axes),
            shape=tuple(self.shape[a] for a in axes),
            dtype=self.dtype,
            path=self.path,
            what=self.what,
        )


def _check_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise IndexError(f"axis {axis} out of range for {ndim} dimensions")
    return int(axis) % ndim


class _TakeRead:
    """``read(key)`` of a view that fixes one axis of an underlying read at one index."""

    def __init__(self, read: Callable[[tuple[slice, ...]], np.ndarray], axis: int, index: int) -> None:
        self.read, self.axis, self.index = read, axis, index

    def __call__(self, key: tuple[slice, ...]) -> np.ndarray:
        i = self.axis
        full = (*key[:i], slice(self.index, self.index + 1), *key[i:])
        return np.asarray(self.read(full))[(slice(None),) * i + (0,)]


class _TransposeRead:
    """``read(key)`` of a view whose axis ``i`` is axis ``axes[i]`` of an underlying read."""

    def __init__(self, read: Callable[[tuple[slice, ...]], np.ndarray], axes: tuple[int, ...]):
        self.read, self.axes = read, axes

    def __call__(self, key: tuple[slice, ...]) -> np.ndarray:
        base: list[slice] = [slice(None)] * len(self.axes)
        for k, a in zip(key, self.axes, strict=True):
            base[a] = k
        return np.asarray(self.read(tuple(base))).transpose(self.axes)


def _bounding_key(key: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], list[Any]]:
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


def to_dask(source: ChunkSource, chunks: tuple[int, ...] | str, *, name: str | None = None) -> da.Array:
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


@dataclasses.dataclass(frozen=True)
class SourceLevel:
    """How one resolution level is built: a :class:`ChunkSource`, its dask chunks and name.

    Readers hand these to :class:`~dls_microscopy.volume.Volume` (as
    ``level_sources``) beside the dask levels, so that selecting a channel or
    time point builds the new level from the source (:meth:`take`) instead of
    indexing the dask array: the result is again one ``from_array``, and a
    later slice of it reads only its own region of that channel.

    Parameters
    ----------
    source : ChunkSource
        The pixels, shape ``S``.
    chunks : tuple of int
        Dask chunk shape, one entry per axis of ``S``.
    name : str
        Deterministic dask name of the array (:meth:`to_dask` uses it as is).
    """

    source: ChunkSource
    chunks: tuple[int, ...]
    name: str

    def __post_init__(self) -> None:
        if len(self.chunks) != self.source.ndim:
            raise ValueError(f"chunks {self.chunks} do not match {self.source.ndim} dimensions")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the level."""
        return self.source.shape

    def to_dask(self) -> da.Array:
        """The level as a dask array named :attr:`name` (nothing is read)."""
        return to_dask(self.source, self.chunks, name=self.name)

    def matches(self, array: da.Array) -> bool:
        """Whether ``array`` is this level unchanged (same dask name and shape)."""
        return array.name == self.name and tuple(array.shape) == self.shape

    def take(self, axis: int, index: int) -> SourceLevel:
        """This level without ``axis``, fixed at ``index`` (see :meth:`ChunkSource.take`)."""
        axis = _check_axis(axis, self.source.ndim)
        index = int(index) % self.source.shape[axis] if index < 0 else int(index)
        return SourceLevel(
            self.source.take(axis, index),
            self.chunks[:axis] + self.chunks[axis + 1 :],
            f"{self.name}-take{axis}.{index}",
        )

    def transpose(self, axes: tuple[int, ...]) -> SourceLevel:
        """This level with permuted axes (see :meth:`ChunkSource.transpose`)."""
        axes = tuple(int(a) for a in axes)
        if axes == tuple(range(self.source.ndim)):
            return self
        return SourceLevel(
            self.source.transpose(axes),
            tuple(self.chunks[a] for a in axes),
            f"{self.name}-T{''.join(map(str, axes))}",
        )
