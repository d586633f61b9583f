"""A voxel size given in place of a file's: one positive, plausible value per axis, in µm.

Shared by the command line (``--spacing``), ``input.spacing`` and the app's voxel size
row, through :meth:`~dls_microscopy.volume.Volume.with_spacing`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from dls_microscopy.errors import InputError

__all__ = ["SPACING_RANGE_UM", "check_spacing", "spacing_given", "warn_spacing_fallback"]

#: Voxel sizes a given spacing may have, in µm: from electron microscopy (0.1 nm) to
#: whole-organism scans (1 cm).  Outside, the value is in another unit (metres).
SPACING_RANGE_UM = (1e-4, 1e4)

#: true while a file is opened with a voxel size given in place of its own
_GIVEN: ContextVar[bool] = ContextVar("dls_microscopy_spacing_given", default=False)


@contextlib.contextmanager
def spacing_given(given: bool = True) -> Iterator[None]:
    """While open: the caller replaces the file's voxel size, so a reader's fallback is moot.

    Readers report a missing or invalid voxel size with :func:`warn_spacing_fallback`;
    inside this context that report is a debug message, not a warning the user must
    read past after giving ``--spacing``.
    """
    token = _GIVEN.set(bool(given) or _GIVEN.get())
    try:
        yield
    finally:
        _GIVEN.reset(token)


def warn_spacing_fallback(logger: logging.Logger, msg: str, *args: object) -> None:
    """A reader's "no voxel size in the file; using 1 µm": a warning, unless one is given.

    Parameters
    ----------
    logger : logging.Logger
        The reader's logger.
    msg, args
        The message and its ``%`` arguments, as for :meth:`logging.Logger.warning`.
    """
    logger.log(logging.DEBUG if _GIVEN.get() else logging.WARNING, msg, *args)


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
    if len(values) > len(spatial_axes):  # most often a 2D image where 3D was expected
        raise InputError(
            f"the voxel size has {len(values)} values, and the image has {len(spatial_axes)} spatial "
            f"axes ({', '.join(spatial_axes)}): a {len(spatial_axes)}D image",
            path=source,
        )
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
