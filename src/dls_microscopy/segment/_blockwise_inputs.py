"""What the blockwise engine checks of its input before any work (split from :mod:`.blockwise`).

:func:`select_image` picks the one 3D image to segment (a channel, a time point);
:func:`check_diameter_against_the_image` refuses a diameter that cannot be one nucleus.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from dls_microscopy.channels import channel_index
from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["check_diameter_against_the_image", "select_image"]

log = logging.getLogger(__name__)

#: A diameter of fewer lateral voxels than this is warned about (the watershed's smoothing,
#: seeds and surface level need a few voxels per nucleus).
_FEW_VOXELS = 3


def select_image(
    volume: Volume, *, channel: int | str | None = None, time_point: int | None = None
) -> Volume:
    """The single 3D (z, y, x) image to segment from a possibly multi-channel, timed volume."""
    vol = volume.at_time_point(time_point)
    if "c" in vol.axes:
        if channel is None and vol.n_channels > 1:
            raise InputError(
                f"the image has {vol.n_channels} channels ({', '.join(vol.channel_names)}); "
                "choose one with channel=/--channel",
                path=vol.source,
            )
        vol = vol.select(c=channel if channel is not None else 0)
    elif channel is not None:
        # the one channel answers to what it would in a channel axis: 0, -1, "0", its
        # name in any case, its column spelling (channel0 for channel_0)
        names = vol.channel_names[:1] or ("channel_0",)
        try:
            channel_index(channel, names, vol.source)
        except InputError:
            raise InputError(
                f"the image has a single channel ({names[0]}); channel {channel!r} does not exist",
                path=vol.source,
            ) from None
    return vol.require_spatial_ndim(3)


def check_diameter_against_the_image(segmenter: Any, image: Any) -> None:
    """Refuse a diameter that cannot be one nucleus of this image; warn at a few voxels.

    Everything the watershed sizes derives from it.  More than twice the image's
    diagonal is a mistake (units, a typo): 5,000 µm on a 13 µm crop took minutes, 1e9 µm
    exhausted the memory.  Twice the diagonal leaves room for objects cut by the image's
    faces and for :func:`~dls_microscopy.segment.estimate_diameter`'s large start.  Less
    than one voxel across (y, x: the finer axes) is a mistake too, or a wrong voxel size
    (a file in other units): 0.01 µm on 0.2 µm voxels made 837 objects of noise.
    """
    diameter = getattr(getattr(segmenter, "params", None), "diameter_um", None)
    if not isinstance(diameter, (int, float)):
        return
    extent = [n * s for n, s in zip(image.spatial_shape, image.spacing, strict=True)]
    diagonal = math.sqrt(sum(e * e for e in extent))
    if diameter > 2 * diagonal:
        shown = " × ".join(f"{e:.4g}" for e in extent)
        raise InputError(
            f"diameter_um {diameter:g} µm is more than twice the image's diagonal ({shown} µm): "
            "give the diameter of one nucleus, in µm",
            path=image.source,
        )
    voxel = min(image.spacing[-2:])
    if diameter < voxel:
        raise InputError(
            f"diameter_um {diameter:g} µm is less than one voxel ({voxel:.4g} µm in y and x): give "
            "the diameter of one nucleus, in µm, and check the voxel size (`dls-microscopy info`; "
            "--spacing replaces it)",
            path=image.source,
        )
    if diameter < _FEW_VOXELS * voxel:
        log.warning(
            "%s: diameter %g µm is %.1f voxels across (%.4g µm each): nuclei this small are not "
            "segmented reliably; use a finer level, or check the voxel size",
            image.source,
            diameter,
            diameter / voxel,
            voxel,
        )
