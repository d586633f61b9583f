"""NGFF label images inside an image store: checking label sources and writing their pyramids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dask.array as da
import numpy as np
import zarr

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import InputError
from dls_microscopy.io._zarr_layout import WriteOptions
from dls_microscopy.io._zarr_pyramid import _level_scales, write_multiscale
from dls_microscopy.io.ngff_build import label_image_attrs, labels_group_attrs
from dls_microscopy.volume import Volume


def _label_source(labels: Volume | np.ndarray | da.Array, image: Volume, name: str) -> da.Array:
    vol = labels if isinstance(labels, Volume) else None
    data = (
        vol.data
        if vol is not None
        else (labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels)))
    )
    if vol is not None and "c" in vol.axes and vol.n_channels == 1:
        data = vol.select(c=0).data
    if data.dtype.kind == "b":
        data = data.astype(np.uint8)
    if data.dtype.kind not in "iu":
        raise InputError(f"labels {name!r} must be integers, got {data.dtype}")
    want = tuple(s for a, s in zip(image.axes, image.shape, strict=True) if a != "c")
    if tuple(data.shape) != want:
        raise InputError(
            f"labels {name!r} have shape {tuple(data.shape)}, expected {want} "
            f"(the image shape without channels)"
        )
    return data


def _write_label_images(
    root: zarr.Group,
    vol: Volume,
    sources: Mapping[str, da.Array],
    factors: Sequence[Sequence[int]],
    options: WriteOptions,
    memory_budget: int,
    progress: ProgressCallback | None,
    workers: int | None,
) -> None:
    label_axes = vol.axes.replace("c", "")
    labels_group = root.require_group("labels")
    for lname, src in sources.items():
        g = labels_group.create_group(lname)
        write_multiscale(
            g,
            src,
            axes=label_axes,
            factors=factors,
            options=options,
            method="nearest",
            memory_budget=memory_budget,
            progress=progress,
            label=f"labels {lname}",
            workers=workers,
        )
        g.attrs.update(
            label_image_attrs(
                options.version,
                label_axes,
                _level_scales(label_axes, vol.spacing, factors),
                name=lname,
            )
        )
    labels_group.attrs.update(labels_group_attrs(options.version, list(sources)))
