"""What the encoders train on: the samples, the objects drawn from them, and their crops or point clouds.

:func:`~dls_microscopy.features.embeddings.train_embedding_model` (in :mod:`.training`) calls
:func:`subset_indexes` to draw at most ``max_objects`` objects, then :func:`image_data` (crops
of every image, its channels taken by name in the first image's order) or :func:`shape_data`
(surface point clouds).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.errors import InputError
from dls_microscopy.features.embeddings.object_crops import CropSpec, iter_object_crops
from dls_microscopy.features.embeddings.point_clouds import MESH_SMOOTH, iter_object_points

__all__ = ["POOL_FACTOR", "TrainingSample", "image_data", "shape_data", "subset_indexes"]

log = logging.getLogger(__name__)

#: Pooled surface points per object and points per view are ``POOL_FACTOR`` apart.
POOL_FACTOR = 4


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingSample:
    """One image and its labels to learn from.

    Attributes
    ----------
    image : (C, Z, Y, X) ndarray or dask array
        Needed by image models (may be None for shape models).
    labels : (Z, Y, X) integer ndarray or dask array
    spacing : tuple of 3 float
        µm per voxel.
    channel_names : tuple of str
        Names of ``image``'s channels.  An image model takes every sample's channels by
        name in the first sample's order (by position where names do not match but the
        count does, with a warning).
    """

    image: Any
    labels: Any
    spacing: tuple[float, float, float]
    channel_names: tuple[str, ...] = ()


def subset_indexes(samples: Sequence[TrainingSample], max_objects: int, seed: int) -> list[Any]:
    """Each sample's object index, cut to at most ``max_objects`` objects in all (seeded draw).

    Raises
    ------
    InputError
        The labels hold no object.
    """
    from dls_microscopy.geometry.index import build_object_index

    indexes = [build_object_index(s.labels, spacing=s.spacing) for s in samples]
    total = sum(len(i) for i in indexes)
    if total == 0:
        raise InputError("the training labels contain no object")
    if total <= max_objects:
        return indexes
    keep = np.sort(np.random.default_rng(seed).choice(total, max_objects, replace=False))
    out, start = [], 0
    for idx in indexes:
        rows = keep[(keep >= start) & (keep < start + len(idx))] - start
        out.append(dataclasses.replace(idx, ids=idx.ids[rows], lo=idx.lo[rows], hi=idx.hi[rows]))
        start += len(idx)
    log.info("training on %d of %d objects (max_objects)", max_objects, total)
    return out


def _extents_um(samples: Sequence[TrainingSample], indexes: Sequence[Any]) -> np.ndarray:
    """``(n,)`` largest bounding-box side of every indexed object, µm."""
    return np.concatenate(
        [((i.hi - i.lo) * np.asarray(s.spacing)).max(axis=1) for s, i in zip(samples, indexes, strict=True)]
    )


def _aligned_images(samples: Sequence[TrainingSample]) -> tuple[list[Any], tuple[str, ...]]:
    """Each sample's image with its channels in the first sample's order, and their names.

    Each image's channels are taken by name
    (:func:`~dls_microscopy.channels.channel_by_name`) in the first sample's order, as
    inference takes a model's channels: two files that list their stains in different
    orders must not feed one stain into the network's input meant for another.  Where
    the names cannot be matched (a sample has none, or other ones, e.g. ``channel_0``
    from a file without metadata) but the channel count is the same, the channels are
    used in their order, with a warning, again as inference does.

    Returns
    -------
    images : list of (C, Z, Y, X) arrays
    names : tuple of str
        The first sample's channel names (empty when it has none).

    Raises
    ------
    InputError
        A sample has no image, or lacks one of the first sample's channels and has
        another number of channels (the message names both lists and how to choose
        common ones).
    """
    from dls_microscopy.channels import channel_by_name, select_channels

    if any(s.image is None for s in samples):
        raise InputError("image models need an image for every pair of training inputs")
    names = tuple(samples[0].channel_names)
    images = [samples[0].image]
    for i, s in enumerate(samples[1:], start=2):
        own = tuple(s.channel_names)
        if not names or own == names:
            images.append(s.image)
            continue
        try:
            order = [channel_by_name(n, own) for n in names]
        except InputError:
            if int(s.image.shape[0]) != len(names):
                raise InputError(
                    f"training image {i} has channels {list(own)}, the first has {list(names)}: "
                    "give the channels to learn (--channel NAME or INDEX, repeatable) that every "
                    "image has"
                ) from None
            warnings.warn(
                f"training image {i}: channel names {list(own)} differ from the first image's "
                f"{list(names)}; using its channels in their order",
                UserWarning,
                stacklevel=4,
            )
            images.append(s.image)
            continue
        log.info("training image %d: channels %s taken by name as %s", i, list(own), list(names))
        images.append(select_channels(s.image, order))
    return images, names


def image_data(
    samples: Sequence[TrainingSample],
    indexes: Sequence[Any],
    size: int,
    fov_um: float | None,
    mask_channel: bool,
    frame: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(n, C + mask, S, S, S)`` float32 crops of the indexed objects and their preprocessing record."""
    images, names = _aligned_images(samples)
    n_ch = {int(i.shape[0]) for i in images}
    if len(n_ch) != 1:
        raise InputError(f"image models need images with one common channel count, got {sorted(n_ch)}")
    if fov_um is None:  # cover 95 % of objects whole, with a margin; whole µm
        fov_um = float(math.ceil(1.2 * np.percentile(_extents_um(samples, indexes), 95)))
    spec = CropSpec(size=int(size), fov_um=float(fov_um), mask_channel=bool(mask_channel), frame=frame)
    channels = next(iter(n_ch))
    # filled in place: a list of batches and their concatenation would hold the crops twice
    data = np.empty(
        (sum(len(i.ids) for i in indexes), channels + spec.extra_channels, *(spec.size,) * 3), np.float32
    )
    start = 0
    for s, image, idx in zip(samples, images, indexes, strict=True):
        for _, crops in iter_object_crops(image, s.labels, spacing=s.spacing, spec=spec, index=idx):
            data[start : start + len(crops)] = crops
            start += len(crops)
    if start != len(data):  # every indexed object yields one crop; never train on unset memory
        raise RuntimeError(f"{start} crops for {len(data)} objects")
    names = names or tuple(f"channel_{i}" for i in range(channels))  # as Volume names them
    pre = {
        "size": spec.size,
        "fov_um": spec.fov_um,
        "mask": spec.mask,
        "mask_channel": spec.mask_channel,
        "frame": spec.frame,
        "channels": list(names),
        "tta": "cube48",
    }
    return data, pre


def shape_data(
    samples: Sequence[TrainingSample],
    indexes: Sequence[Any],
    n_points: int,
    scale_um: float | None,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``(n, POOL_FACTOR × n_points, 3)`` surface points of the indexed objects, and their preprocessing."""
    if scale_um is None:  # a typical object radius, to half a µm
        scale_um = max(0.5, round(float(np.median(_extents_um(samples, indexes))) / 2 * 2) / 2)
    parts = []
    for s, idx in zip(samples, indexes, strict=True):
        batches = list(
            iter_object_points(
                s.labels,
                spacing=s.spacing,
                n_points=POOL_FACTOR * n_points,
                seed=seed,
                scale_um=scale_um,
                index=idx,
            )
        )
        ids = np.concatenate([b[0] for b in batches])
        pts = np.concatenate([b[1] for b in batches])
        parts.append(pts[np.argsort(ids, kind="stable")])  # mesher order → id order
    pre = {
        "n_points": int(n_points),
        "scale_um": float(scale_um),
        "sample_seed": int(seed),
        "mesh_smooth": MESH_SMOOTH,
        "tta": "flips8",
    }
    return np.concatenate(parts), pre
