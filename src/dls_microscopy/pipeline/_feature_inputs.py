"""Opening an image and its labels for measuring: checked to belong together, at one level.

:func:`open_feature_inputs` serves ``features``, ``embed train`` and ``embed apply``
(:mod:`dls_microscopy.pipeline.features`, :mod:`dls_microscopy.pipeline.embeddings`).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.channels import channel_data
from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["names_label_image", "open_feature_inputs"]

log = logging.getLogger(__name__)


def names_label_image(labels: str | os.PathLike[str], image: Volume) -> bool:
    """Whether ``labels`` is the name of one of ``image``'s label images, written bare.

    A bare name of a label image means that label image, even where a file or folder of
    that name lies in the working directory (``./nuclei`` or an absolute path means the path).
    """
    return isinstance(labels, str) and labels in image.labels


def open_feature_inputs(
    image_path: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    *,
    channels: Sequence[int | str] | None = None,
    time_point: int | None = None,
    series: int = 0,
    spacing: Sequence[float] | None = None,
    level: int = 0,
) -> tuple[Volume, Volume, Any]:
    """Open the image and its labels lazily and check that they belong together.

    ``labels`` is a path (any readable format, or an NGFF label group), or the
    name of a label image stored in the OME-Zarr ``image_path``.  ``spacing``
    (µm at full resolution, :meth:`~dls_microscopy.volume.Volume.with_spacing`)
    replaces the voxel size of both files.  ``level``: the image's resolution
    level to measure, and the labels' level of it (a label file of one level
    serves when it has that level's shape).

    Returns
    -------
    image, labels : Volume
        Both with spatial axes ``zyx`` only besides the image's ``c``.
    data : (C, Z, Y, X) dask array
        The selected channels.
    """
    from dls_microscopy.features.runs import check_label_dtype
    from dls_microscopy.io import open_labels, open_volume, split_dataset_path
    from dls_microscopy.spacing import spacing_given

    image = open_volume(image_path, series=series, spacing=spacing, level=level)
    if names_label_image(labels, image):
        if split_dataset_path(labels)[0].exists():
            log.warning(
                "%r is a label image of %s and a path in %s: using the label image (write ./%s for the path)",
                str(labels),
                image.source or image_path,
                os.getcwd(),
                labels,
            )
        # the image's own store: for a plate, the field opened (it said "no zarr group here")
        lab = open_labels(image.source or image_path, str(labels), spacing=spacing, level=level)
        given_to_file = False
    elif split_dataset_path(labels)[0].exists():
        with spacing_given(spacing is not None):  # no "using 1 µm" for a label TIFF
            lab = _labels_at_level(open_volume(labels), image, level)
        given_to_file = spacing is not None  # given below, once the labels are known to be 3D
    else:
        avail = ", ".join(image.labels) or "none"
        raise InputError(
            f"labels {os.fspath(labels)!r} is neither an existing path nor a label image of the "
            f"image (its label images: {avail})",
            path=image.source or image_path,
        )
    image = image.at_time_point(time_point)
    lab = lab.at_time_point(time_point, strict=False)  # labels of one time point serve it
    check_label_dtype(lab.dtype, path=lab.source)
    if "c" in lab.axes:
        if lab.n_channels != 1:
            raise InputError(f"labels have {lab.n_channels} channels; expected one", path=lab.source)
        lab = lab.select(c=0)
    image.require_spatial_ndim(3)
    lab.require_spatial_ndim(3)
    if given_to_file:
        # the given voxel size is the image's; the label level on its grid takes the image's
        # voxel there, whichever level of the label file that is
        ratios = zip(image.spacing, lab.level_spacings[0], lab.spacing, strict=True)
        lab = lab.with_spacing([s * b0 / b for s, b0, b in ratios])
    if image.spatial_shape != lab.spatial_shape:
        raise InputError(
            f"image and labels differ in shape: image {image.spatial_shape} (zyx) vs labels "
            f"{lab.spatial_shape} (zyx){_level_hint(lab, level)}",
            path=lab.source,
        )
    if not np.allclose(image.spacing, lab.spacing, rtol=1e-4):
        warnings.warn(
            f"labels spacing {lab.spacing} µm differs from the image's {image.spacing} µm; using the image's",
            UserWarning,
            stacklevel=3,
        )
    return image, lab, channel_data(image, channels)


def _labels_at_level(lab: Volume, image: Volume, level: int) -> Volume:
    """The level of a label file on the grid of the image's level ``level``.

    Its own level ``level`` (a pyramid like the image's), else the level with the
    image level's shape (labels segmented at that level: their level 0).
    """
    if not level:
        return lab
    candidates = [level] if level < len(lab.levels) else []
    candidates += [i for i in range(len(lab.levels)) if i != level]
    for i in candidates:
        if lab.at_level(i).spatial_shape == image.spatial_shape:
            if i != level:
                log.info("%s: using its level %d, on the grid of the image's level %d", lab.source, i, level)
            return lab.at_level(i)
    raise InputError(
        f"the image is measured at resolution level {level}, shape {image.spatial_shape} (zyx), "
        f"and these labels have {len(lab.levels)} level(s), of shape {lab.spatial_shape}: give "
        f"labels of that level's shape, or a label image with a pyramid{_level_hint(lab, level)}",
        path=lab.source,
    )


def _level_hint(lab: Volume, level: int) -> str:
    """`` (the labels were segmented at resolution level N: give --level N)``, where their record says so."""
    made = lab.metadata.get("dls_microscopy")
    seg = made.get("segmentation") if isinstance(made, dict) else None
    # a record without ``level`` is of full resolution (it is written only above 0)
    made_at = seg.get("level", 0) if isinstance(seg, dict) else None
    if isinstance(made_at, int) and not isinstance(made_at, bool) and made_at != level:
        return f" (the labels were segmented at resolution level {made_at}: give --level {made_at})"
    return ""
