"""The in-memory contract between layers: a lazy array with axes and physical spacing.

A :class:`Volume` never holds pixels: ``data`` is a dask array whose chunks are
read from the file on compute.  Axis names are a subset of ``"tczyx"`` in that
order; physical spacing is always in micrometres (converted from the file's
units when they differ).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import dask.array as da
import numpy as np

from dls_microscopy.channels import channel_index
from dls_microscopy.errors import DimensionalityError, InputError
from dls_microscopy.pixels import check_dtype as check_dtype
from dls_microscopy.pixels import replace_nonfinite as replace_nonfinite
from dls_microscopy.pixels import warn_nonfinite as warn_nonfinite
from dls_microscopy.spacing import SPACING_RANGE_UM as SPACING_RANGE_UM
from dls_microscopy.spacing import check_spacing as check_spacing

__all__ = [
    "AXES_ORDER",
    "SPATIAL_AXES",
    "LevelSource",
    "Volume",
    "check_dtype",
    "check_spacing",
    "replace_nonfinite",
]

AXES_ORDER = "tczyx"
SPATIAL_AXES = "zyx"


class LevelSource(Protocol):
    """What a reader knows about how a level's dask array is built from the file.

    Implemented by :class:`dls_microscopy.io.lazy.SourceLevel`.  A volume uses
    it to drop an axis (:meth:`Volume.select`) at the source, so the new level
    is again one read per dask chunk and later slices fuse with the read.
    """

    def matches(self, array: da.Array) -> bool:
        """Whether ``array`` is the dask array this object builds (unchanged)."""
        ...

    def take(self, axis: int, index: int) -> LevelSource:
        """The level without ``axis``, fixed at ``index``."""
        ...

    def to_dask(self) -> da.Array:
        """The level as a dask array (nothing is read)."""
        ...


@dataclasses.dataclass(frozen=True, eq=False)
class Volume:
    """A lazily read image (or labels) volume with axes and physical spacing.

    Parameters
    ----------
    data : dask.array.Array
        The pixels of the selected resolution level, shape given by ``axes``.
    axes : str
        Axis names, a subsequence of ``"tczyx"`` (e.g. ``"czyx"``).
    spacing : tuple of float
        Physical pixel size in micrometres for each spatial axis present in
        ``axes``, in axis order (e.g. ``(dz, dy, dx)``).
    channel_names : tuple of str
        One name per channel (length of the ``c`` axis, or 1 without it).
    levels : tuple of dask.array.Array
        All resolution levels, full resolution first; ``data`` is one of them.
    level_spacings : tuple of tuple of float
        ``spacing`` of each level.
    level : int
        Index of ``data`` in ``levels``.
    labels : tuple of str
        Names of the label images stored with this image (NGFF ``labels/``).
    source : Path, optional
        Where the data comes from.
    format : str
        Short name of the reader used (``"ome-zarr"``, ``"ome-tiff"``...).
    metadata : dict
        Reader-specific extras (NGFF version, plate position, time unit...).
    level_sources : tuple of LevelSource or None
        Per level, how the reader built it (or None); empty (or a length other
        than that of ``levels``) means none known.
        Used only to select channels/time points at the source; a level that
        no longer matches its source (replaced, rechunked) is indexed with dask.
    """

    data: da.Array
    axes: str
    spacing: tuple[float, ...]
    channel_names: tuple[str, ...] = ()
    levels: tuple[da.Array, ...] = ()
    level_spacings: tuple[tuple[float, ...], ...] = ()
    level: int = 0
    labels: tuple[str, ...] = ()
    source: Path | None = None
    format: str = "array"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    level_sources: tuple[LevelSource | None, ...] = ()

    def __post_init__(self) -> None:
        axes = self.axes.lower()
        object.__setattr__(self, "axes", axes)
        if len(axes) != self.data.ndim:
            raise DimensionalityError(
                f"axes {axes!r} do not match data with {self.data.ndim} dimensions",
                path=self.source,
            )
        if len(set(axes)) != len(axes) or any(a not in AXES_ORDER for a in axes):
            raise InputError(f"invalid axes {axes!r}: use a subset of 'tczyx'", path=self.source)
        if [AXES_ORDER.index(a) for a in axes] != sorted(AXES_ORDER.index(a) for a in axes):
            raise InputError(f"axes {axes!r} are not in 'tczyx' order", path=self.source)
        if any(s == 0 for s in self.data.shape):
            raise DimensionalityError(
                f"empty data: shape {tuple(self.data.shape)} has a zero-size axis", path=self.source
            )
        check_dtype(self.data.dtype, path=self.source)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != len(self.spatial_axes):
            raise InputError(
                f"spacing {spacing} does not match spatial axes {self.spatial_axes!r}",
                path=self.source,
            )
        if any(not np.isfinite(s) or s <= 0 for s in spacing):
            raise InputError(f"spacing must be positive and finite, got {spacing}", path=self.source)
        object.__setattr__(self, "spacing", spacing)
        if not self.levels:
            object.__setattr__(self, "levels", (self.data,))
            object.__setattr__(self, "level_spacings", (spacing,))
        if len(self.level_sources) != len(self.levels):
            # e.g. ``dataclasses.replace(vol, levels=...)``: the sources describe other levels
            object.__setattr__(self, "level_sources", (None,) * len(self.levels))
        n_c = self.n_channels
        names = tuple(str(n) for n in self.channel_names)
        if len(names) != n_c:  # missing or inconsistent names: number the channels
            names = tuple(f"channel_{i}" for i in range(n_c))
        object.__setattr__(self, "channel_names", names)

    # -- shape helpers -------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """Pixel data type."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of axes of ``data``."""
        return self.data.ndim

    @property
    def spatial_axes(self) -> str:
        """The spatial axes present, e.g. ``"zyx"``."""
        return "".join(a for a in self.axes if a in SPATIAL_AXES)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape along the spatial axes only."""
        return tuple(self.shape[self.axes.index(a)] for a in self.spatial_axes)

    @property
    def n_channels(self) -> int:
        """Length of the ``c`` axis (1 when absent)."""
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    @property
    def nbytes(self) -> int:
        """Size of ``data`` in bytes once loaded."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def load(self) -> np.ndarray:
        """Read ``data`` fully into memory (only for volumes that fit in RAM).

        Blocks are written straight into one preallocated array, which is about
        twice as fast as ``data.compute()`` (no final concatenation copy).
        """
        out = np.empty(self.shape, dtype=self.dtype)
        da.store(self.data, out, lock=False)
        return out

    def axis_size(self, name: str) -> int:
        """Length of axis ``name`` (1 when the axis is absent)."""
        return self.shape[self.axes.index(name)] if name in self.axes else 1

    # -- derived volumes -----------------------------------------------
    def at_level(self, level: int) -> Volume:
        """The same image at another resolution level (metadata only, no IO)."""
        if not -len(self.levels) <= level < len(self.levels):
            raise InputError(
                f"resolution level {level} does not exist (levels: 0..{len(self.levels) - 1})",
                path=self.source,
            )
        level %= len(self.levels)
        return dataclasses.replace(
            self, data=self.levels[level], spacing=self.level_spacings[level], level=level
        )

    def with_spacing(self, spacing: Sequence[float] | float) -> Volume:
        """The same volume with the full-resolution spacing replaced (metadata only).

        For files whose voxel size is missing or wrong.  Every level keeps its
        factor to full resolution, so a level twice as coarse stays twice as
        coarse in the new unit.

        Parameters
        ----------
        spacing : float or sequence of float
            Voxel size in µm at full resolution (level 0): one value per spatial
            axis in axis order (``(dz, dy, dx)``), or one value for every axis.

        Raises
        ------
        InputError
            When the number of values does not match the spatial axes, or a value is
            not positive and finite.
        """
        new = check_spacing(spacing, self.spatial_axes, source=self.source)
        base = self.level_spacings[0]
        level_spacings = tuple(
            tuple(n * s / b for n, s, b in zip(new, sp, base, strict=True)) for sp in self.level_spacings
        )
        metadata = {**self.metadata, "spacing_from_file_um": list(base)}
        return dataclasses.replace(
            self, spacing=level_spacings[self.level], level_spacings=level_spacings, metadata=metadata
        )

    def select(self, *, c: int | str | None = None, t: int | None = None) -> Volume:
        """Select one channel and/or one time point; the axis is dropped.

        ``c`` is an index, a digit string or a name (:func:`~dls_microscopy.channels.channel_index`).
        """
        vol = self
        if t is not None:
            vol = vol._drop_axis("t", _check_index(t, vol.axis_size("t"), "time point", vol.source))
        if c is not None:
            c = channel_index(c, vol.channel_names, vol.source)
            names = (vol.channel_names[c],)
            vol = dataclasses.replace(vol._drop_axis("c", c), channel_names=names)
        return vol

    def at_time_point(self, t: int | None, *, strict: bool = True) -> Volume:
        """The volume without its time axis: time point ``t`` of a time series.

        ``t`` may be None where there is at most one time point.  Without a time axis
        the volume is returned as it is; ``strict`` then makes a ``t`` other than 0 an
        error (labels of one time point serve any time point: ``strict=False``).  A time
        axis of length 1 counts as none: its one point is taken for any ``t`` unless
        ``strict``, and a strict ``t`` other than 0 is refused with that reason.

        Raises
        ------
        InputError
            Several time points and none chosen, ``t`` out of range, or (``strict``)
            a time point asked of data without a time axis.
        """
        if t is not None and t < 0:
            raise InputError(f"time point {t}: time points count from 0", path=self.source)
        if "t" not in self.axes:
            if strict and t:
                raise InputError(f"time point {t} asked for; the image has no time axis", path=self.source)
            return self
        n = self.axis_size("t")
        if t is None and n > 1:
            raise InputError(
                f"the image has {n} time points; choose one (--time-point N, or time_point= in Python)",
                path=self.source,
            )
        if n == 1 and t:
            if strict:
                raise InputError(f"time point {t} asked for; the image has one time point", path=self.source)
            t = 0
        return self.select(t=t or 0)

    def _drop_axis(self, name: str, index: int) -> Volume:
        """Drop axis ``name`` at ``index`` on every level.

        Levels the reader described (``level_sources``) are rebuilt from the
        file source with the index applied there: one read per dask chunk, so a
        later slice (a plane, a block, a crop) reads only its region of that
        channel.  Other levels are indexed with dask; dask (2026.8) does not
        fuse that ``getitem`` with a later one, so a later small slice of them
        reads whole dask chunks.
        """
        if name not in self.axes:
            return self
        ax = self.axes.index(name)
        take = (slice(None),) * ax + (index,)
        levels: list[da.Array] = []
        sources: list[LevelSource | None] = []
        for lv, src in zip(self.levels, self.level_sources, strict=True):
            if src is not None and src.matches(lv):
                new_src = src.take(ax, index)
                levels.append(new_src.to_dask())
                sources.append(new_src)
            else:
                levels.append(lv[take])
                sources.append(None)
        return dataclasses.replace(
            self,
            data=levels[self.level],
            axes=self.axes.replace(name, ""),
            levels=tuple(levels),
            level_sources=tuple(sources),
        )

    def require_spatial_ndim(self, ndim: int = 3) -> Volume:
        """Raise :class:`DimensionalityError` unless the volume has ``ndim`` spatial axes."""
        if len(self.spatial_axes) != ndim:
            raise DimensionalityError(
                f"{ndim}D data required, but this image has spatial axes "
                f"{self.spatial_axes!r} (shape {self.shape}, axes {self.axes!r})",
                path=self.source,
            )
        return self

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable summary (what ``dls-microscopy info`` prints)."""
        return {
            "path": str(self.source) if self.source else None,
            "format": self.format,
            "shape": list(self.shape),
            "axes": self.axes,
            "dtype": str(self.dtype),
            "spacing_um": dict(zip(self.spatial_axes, self.spacing, strict=True)),
            "channels": list(self.channel_names),
            "levels": [
                {"shape": [int(s) for s in lv.shape], "spacing_um": list(sp)}
                for lv, sp in zip(self.levels, self.level_spacings, strict=True)
            ],
            "labels": list(self.labels),
            **{k: v for k, v in self.metadata.items() if _jsonable(v)},
        }


def _check_index(index: int, size: int, what: str, source: Path | None) -> int:
    if not -size <= index < size:
        raise InputError(f"{what} {index} out of range (0..{size - 1})", path=source)
    return index % size


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict | type(None))


def default_axes(ndim: int) -> str:
    """Axis names assumed for an array without metadata: the last ``ndim`` of ``tczyx``.

    An image has at least y and x: a 1-D array is refused, as is one of 0 or over 5 dimensions.
    """
    if ndim == 1:
        raise DimensionalityError("cannot interpret a 1-D array as an image (it needs at least y and x)")
    if not 2 <= ndim <= 5:
        raise DimensionalityError(f"cannot interpret an array with {ndim} dimensions as an image")
    return AXES_ORDER[-ndim:]


def volume_where(volume: Volume) -> str | None:
    """What names ``volume``'s data in a message: its file, with the dataset for HDF5 (``file.h5:/raw``)."""
    if volume.source is None:
        return None
    dataset = volume.metadata.get("dataset") if volume.format == "hdf5" else None
    return f"{volume.source}:{dataset}" if dataset else str(volume.source)


def volume_from_array(
    array: np.ndarray | da.Array,
    *,
    axes: str | None = None,
    spacing: Sequence[float] | None = None,
    channel_names: Sequence[str] = (),
) -> Volume:
    """Wrap an in-memory or dask array as a :class:`Volume` (spacing defaults to 1 µm)."""
    data = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    axes = axes or default_axes(data.ndim)
    n_spatial = sum(a in SPATIAL_AXES for a in axes)
    sp = tuple(spacing) if spacing is not None else (1.0,) * n_spatial
    return Volume(data=data, axes=axes, spacing=sp, channel_names=tuple(channel_names))
