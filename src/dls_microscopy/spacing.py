"""A voxel size given in place of a file's: one positive, plausible value per axis, in µm.

Shared by the command line (``--spacing``), ``input.spacing`` and the app's voxel size
row, through :meth:`~dls_microscopy.volume.Volume.with_spacing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dls_microscopy.errors import InputError

__all__ = ["SPACING_RANGE_UM", "check_spacing"]

#: Voxel sizes a given spacing may have, in µm: from electron microscopy (0.1 nm) to
#: whole-organism scans (1 cm).  Outside, the value is in another unit (metres).
SPACING_RANGE_UM = (1e-4, 1e4)


def check_spacing(
    spacing: Sequence[float] | float, spatial_axes: str, *, source: str | Path | None = None
) -> tuple[float, ...]:
    """A given voxel size as one positive, finite value per spatial axis, in µm.

    Parameters
    ----------
    spacing : float or sequence of float
        One value for every axis, or one per axis of ``spatial_axes`` in that order.
    spatial_axes : str
        The volume's spatial axes, e.g. ``"zyx"``.

    Raises
    ------
    InputError
        Naming the axes expected, or the axis whose value is not a spacing.
    """
    if isinstance(spacing, str):
        raise InputError(f"the voxel size must be numbers, got the text {spacing!r}", path=source)
    values = [spacing] if isinstance(spacing, int | float | np.number) else list(spacing)
    if len(values) == 1:
        values = values * len(spatial_axes)
    if len(values) != len(spatial_axes):
        raise InputError(
            f"the voxel size needs one value per spatial axis ({', '.join(spatial_axes)}) or one "
            f"for all, got {len(values)}: {values}",
            path=source,
        )
    out: list[float] = []
    for axis, value in zip(spatial_axes, values, strict=True):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or v <= 0:
            raise InputError(
                f"the voxel size of axis {axis} must be a positive number of µm, got {value!r}",
                path=source,
            )
        if not SPACING_RANGE_UM[0] <= v <= SPACING_RANGE_UM[1]:
            raise InputError(
                f"the voxel size of axis {axis}, {v:g} µm, is outside {SPACING_RANGE_UM[0]:g} to "
                f"{SPACING_RANGE_UM[1]:g} µm: give it in µm (2e-06 is metres: 2)",
                path=source,
            )
        out.append(v)
    return tuple(out)
