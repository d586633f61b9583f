"""A layer's voxel size against its file's: ``input.spacing`` when it is not the file's.

A pipeline needs the voxel size set in the app as ``input.spacing``
(:func:`input_spacing`); labels segmented in the app record the file's voxel size
beside it, as ``--spacing`` does (:func:`spacing_against_file`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from dls_microscopy.errors import DlsError

__all__ = ["SpacingAgainstFile", "input_spacing", "spacing_against_file"]

log = logging.getLogger(__name__)

#: Relative difference under which a layer's voxel size is the file's (float noise of a scale).
_SAME = 1e-9


class SpacingAgainstFile(NamedTuple):
    """A layer's voxel size against its file's (:func:`spacing_against_file`)."""

    input_spacing: list[float] | None
    """The ``input.spacing`` a run needs: ``[dz, dy, dx]`` in µm at full resolution, or None
    where it is the file's (:func:`input_spacing`)."""
    file_spacing: list[float] | None
    """The file's own voxel size at full resolution where the layer's differs; None where
    they are the same, the layer is not from a file or the file cannot be opened."""


def input_spacing(
    scale: Sequence[float],
    shape: Sequence[int],
    *,
    source: str | os.PathLike[str] | None,
    series: int = 0,
) -> list[float] | None:
    """The ``input.spacing`` a run needs to see a layer's voxel size; None where the file has it.

    The app shows an image with the voxel size the user set there; a pipeline
    reads the file, which has its own.  ``input.spacing`` is the voxel size at
    full resolution: a layer of another level of the file (found by its shape)
    is brought to full resolution with the file's factor between the two levels.

    Parameters
    ----------
    scale : sequence of float
        The layer's ``scale``; its last three values are the voxel size in µm of
        its data (of the first level for a multiscale layer), ``(dz, dy, dx)``.
    shape : sequence of int
        The shape of that data; its last three values are ``(Z, Y, X)``.
    source : path-like or None
        The file the layer was read from (``dls_source``); None: not from a file.
    series : int
        The file's series (``dls_series``).

    Returns
    -------
    list of float or None
        ``[dz, dy, dx]`` in µm at full resolution, or None when it is the file's
        (within float noise) or the layer is not from a file.  A file that cannot
        be opened (moved, say) cannot be compared: the layer's voxel size is given.

    Examples
    --------
    >>> input_spacing((1.0, 0.5, 0.5), (8, 32, 32), source=None) is None
    True
    """
    return spacing_against_file(scale, shape, source=source, series=series).input_spacing


def spacing_against_file(
    scale: Sequence[float],
    shape: Sequence[int],
    *,
    source: str | os.PathLike[str] | None,
    series: int = 0,
) -> SpacingAgainstFile:
    """A layer's voxel size at full resolution and, where it differs, the file's.

    Opens the file (its metadata only).  Both values are at full resolution, as
    ``input.spacing`` and the ``spacing_from_file_um`` that
    :meth:`~dls_microscopy.volume.Volume.with_spacing` records are.

    Parameters
    ----------
    scale, shape, source, series
        As for :func:`input_spacing`.

    Returns
    -------
    SpacingAgainstFile
        ``input_spacing`` as :func:`input_spacing` gives it; ``file_spacing`` the
        file's voxel size where ``input_spacing`` is not None because the two differ
        (None for a file that cannot be opened: it is not known).

    Examples
    --------
    >>> spacing_against_file((1.0, 0.5, 0.5), (8, 32, 32), source=None)
    SpacingAgainstFile(input_spacing=None, file_spacing=None)
    """
    if not source:
        return SpacingAgainstFile(None, None)
    from dls_microscopy.io import open_volume
    from dls_microscopy.pipeline.fields import _quiet_readers

    n = min(3, len(scale))
    spacing = [float(s) for s in list(scale)[-n:]]
    try:
        with _quiet_readers():  # the file's warnings ("using 1 µm") were given when it opened
            volume = open_volume(source, series=series)
    except (DlsError, OSError) as exc:
        log.warning("%s: cannot compare the voxel size with the file's (%s); given as set", source, exc)
        return SpacingAgainstFile(spacing, None)
    n = len(volume.spatial_axes)
    spacing = [float(s) for s in list(scale)[-n:]]
    spatial = [volume.axes.index(a) for a in volume.spatial_axes]
    layer_shape = tuple(int(k) for k in list(shape)[-n:])
    level = next(
        (i for i, lv in enumerate(volume.levels) if tuple(lv.shape[a] for a in spatial) == layer_shape), 0
    )
    file_full = [float(s) for s in volume.level_spacings[0]]
    full = spacing
    if level:  # the factor between the file's levels; rounded off the float noise of the ratio
        factors = zip(spacing, file_full, volume.level_spacings[level], strict=True)
        full = [float(f"{s * f / float(lv):.12g}") for s, f, lv in factors]
    if np.allclose(full, file_full, rtol=_SAME, atol=0.0):
        return SpacingAgainstFile(None, None)
    return SpacingAgainstFile(full, file_full)
