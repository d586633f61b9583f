"""Resolution levels of a multiscale layer: their voxel sizes, and where labels of one lie.

Qt-free (tested headless).  A multiscale image layer holds the file's pyramid, full
resolution first; napari draws every level through the layer's one ``scale`` (that of
level 0).  The Segment tab can segment a coarser level: :func:`layer_level_spacings`
gives each level's voxel size as a pipeline run at ``input.level`` uses it, and
:func:`labels_placement` the ``scale`` and ``translate`` that put labels of that level
over the image.  Labels made at a level say so in their metadata (``dls_level``,
:func:`made_at_level`), so that Meshes and Features pair them with the image's level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# the relative difference under which a layer's voxel size is the file's
from dls_microscopy.pipeline.interactive._spacing import _SAME

__all__ = [
    "labels_placement",
    "layer_level_spacings",
    "layer_levels",
    "level_choices",
    "level_shape",
    "made_at_level",
]


def layer_levels(layer: Any) -> list[Any]:
    """The levels of a layer's data, full resolution first (one for a single-scale layer)."""
    return list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]


def layer_level_spacings(layer: Any) -> list[tuple[float, ...]]:
    """The voxel size ``(dz, dy, dx)`` in µm of each level of ``layer``.

    Level 0's is the layer's ``scale``; a coarser level keeps the file's factor to it
    (the layer's ``dls_level_spacings``, from our reader), as
    :meth:`~dls_microscopy.volume.Volume.with_spacing` keeps it for ``input.spacing``.
    Where the layer's voxel size is the file's, the file's level voxel sizes are given
    as they are, so that the app segments at the voxel size a run reads.  A layer of
    no file (another plugin's, a script's) takes the ratio of the level shapes.

    Parameters
    ----------
    layer : napari Image or Labels layer
        Of three or more dimensions.

    Returns
    -------
    list of tuple of float
        One per level, full resolution first.
    """
    levels = layer_levels(layer)
    scale0 = tuple(float(s) for s in layer.scale[-3:])
    shapes = [tuple(int(n) for n in lv.shape[-3:]) for lv in levels]
    known = layer.metadata.get("dls_level_spacings")
    if (
        len(scale0) == 3
        and isinstance(known, list | tuple)
        and len(known) == len(levels)
        and all(isinstance(sp, list | tuple) and len(sp) == 3 for sp in known)
    ):
        file_levels = [tuple(float(s) for s in sp) for sp in known]
        base = file_levels[0]
        if np.allclose(scale0, base, rtol=_SAME, atol=0.0):
            return [scale0, *file_levels[1:]]
        return [tuple(s * f / b for s, f, b in zip(scale0, sp, base, strict=True)) for sp in file_levels]
    return [tuple(s * a / n for s, a, n in zip(scale0, shapes[0], shape, strict=True)) for shape in shapes]


def level_choices(layer: Any) -> list[str]:
    """One line per level of ``layer``: ``"1: 20×32×32 (1, 1, 1 µm)"`` (shape z×y×x, voxel size).

    Only the levels before the first one that napari's index does not give as the file
    does (``dls_file_levels``: a file level no smaller than the one before it is not shown,
    and those after it move up): ``input.level`` and the labels' record name the file's.
    """
    out = []
    file_levels = layer.metadata.get("dls_file_levels")
    for i, (lv, spacing) in enumerate(zip(layer_levels(layer), layer_level_spacings(layer), strict=True)):
        if isinstance(file_levels, list | tuple) and i < len(file_levels) and file_levels[i] != i:
            break
        shape = "×".join(str(int(n)) for n in lv.shape[-3:])
        out.append(f"{i}: {shape} ({', '.join(f'{s:.4g}' for s in spacing)} µm)")
    return out


def labels_placement(image: Any, level: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``scale`` and ``translate`` (z, y, x) of labels segmented at ``level`` of ``image``.

    A voxel of a coarser level is the mean of a box of full-resolution voxels (our
    pyramids, :func:`~dls_microscopy.io.pyramid.downsample_block`): its centre is that
    box's centre, half a coarse voxel less half a fine one past the box's first voxel.
    The labels are placed there, so that each covers the part of the image it was
    segmented from when napari shows full resolution.

    Parameters
    ----------
    image : napari Image layer
        The layer segmented (three or more dimensions).
    level : int
        The level segmented.

    Returns
    -------
    scale, translate : tuple of float
        Three values each, in µm.
    """
    scale0 = tuple(float(s) for s in image.scale[-3:])
    origin = tuple(float(t) for t in image.translate[-3:])
    if level == 0:
        return scale0, origin
    spacing = layer_level_spacings(image)[level]
    translate = tuple(t + (s - s0) / 2 for t, s, s0 in zip(origin, spacing, scale0, strict=True))
    return spacing, translate


def made_at_level(layer: Any) -> int:
    """The image level that labels were segmented at (``dls_level``; 0 when not said)."""
    level = layer.metadata.get("dls_level")
    return int(level) if isinstance(level, int | np.integer) and not isinstance(level, bool) else 0


def level_shape(layer: Any, level: int) -> tuple[int, ...] | None:
    """The ``(Z, Y, X)`` shape of ``layer``'s level ``level``, or None if it has no such level."""
    levels = layer_levels(layer)
    if not 0 <= level < len(levels):
        return None
    return tuple(int(n) for n in levels[level].shape[-3:])
