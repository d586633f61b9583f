"""napari layer data → :class:`~dls_microscopy.volume.Volume` (no copy, nothing read)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["volume_from_layer"]


def volume_from_layer(
    data: Any,
    *,
    scale: Sequence[float],
    channel_names: Sequence[str] = (),
    source: str | os.PathLike[str] | None = None,
    level_spacings: Sequence[Sequence[float]] | None = None,
) -> Volume:
    """A :class:`Volume` over a napari layer's data (no copy, nothing read).

    Parameters
    ----------
    data : array-like or list of array-like
        ``(Z, Y, X)`` (or ``(C, Z, Y, X)``) array, or a multiscale list of them,
        full resolution first.
    scale : sequence of float
        The layer's scale; its last three values are the voxel size in µm.
    channel_names : sequence of str
        Names of the channels.
    source : path-like, optional
        Where the data comes from (for messages and provenance).
    level_spacings : sequence of sequence of float, optional
        The voxel size ``(dz, dy, dx)`` of each level, full resolution first (the file's
        factors between levels); default: ``scale`` times the ratio of the level shapes.
    """
    levels = list(data) if isinstance(data, list | tuple) else [data]
    arrays = [_as_dask(lv) for lv in levels]
    base = arrays[0]
    if base.ndim not in (3, 4):
        raise InputError(
            f"a 3D layer is needed (Z, Y, X), got {base.ndim} dimensions of shape {tuple(base.shape)}",
            path=source,
        )
    spacing = tuple(float(s) for s in list(scale)[-3:])
    if level_spacings is None:
        level_spacings = [
            [sp * b / max(1, s) for sp, b, s in zip(spacing, base.shape[-3:], lv.shape[-3:], strict=True)]
            for lv in arrays
        ]
    if len(level_spacings) != len(arrays):
        raise InputError(f"{len(level_spacings)} level voxel sizes for {len(arrays)} levels", path=source)
    return Volume(
        data=base,
        axes="zyx" if base.ndim == 3 else "czyx",
        spacing=spacing,
        channel_names=tuple(channel_names),
        levels=tuple(arrays),
        level_spacings=tuple(tuple(float(v) for v in sp) for sp in level_spacings),
        source=Path(source) if source else None,
        format="napari-layer",
    )


def _as_dask(array: Any) -> da.Array:
    """A dask array over ``array`` without reading it (objects with ``to_dask()`` supply their own)."""
    if isinstance(array, da.Array):
        return array
    if hasattr(array, "to_dask"):
        return array.to_dask()
    return da.from_array(np.asarray(array))
