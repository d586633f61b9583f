"""NGFF label images inside an image store: checking label sources and writing their pyramids."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import InputError
from dls_microscopy.io._zarr_layout import WriteOptions
from dls_microscopy.io._zarr_pyramid import _level_scales, write_multiscale
from dls_microscopy.io.ngff_build import NgffVersion, label_image_attrs, labels_group_attrs
from dls_microscopy.volume import Volume, volume_where


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
    where = volume_where(vol) if vol is not None else None
    if data.dtype.kind not in "iu":
        raise InputError(f"labels {name!r} must be integers, got {data.dtype}", path=where)
    want = tuple(s for a, s in zip(image.axes, image.shape, strict=True) if a != "c")
    if tuple(data.shape) != want:
        raise InputError(
            f"labels {name!r} have shape {tuple(data.shape)}, expected {want} "
            f"(the image shape without channels)",
            path=where,
        )
    if data.dtype.kind == "i":  # checked as each block is written: a refused write leaves nothing
        data = data.map_blocks(_refuse_negative, dtype=data.dtype, name_=name, where=where)
    return data


def _refuse_negative(block: np.ndarray, *, name_: str, where: str | None) -> np.ndarray:
    """``block`` unchanged; :class:`InputError` when it holds a negative label id."""
    if block.size and (low := block.min()) < 0:
        raise InputError(
            f"labels {name_!r} hold negative ids (as low as {low}): label ids must be non-negative "
            "integers (0 is the background)",
            path=where,
        )
    return block


def labels_group_listing(
    attrs: Mapping[str, Any], version: NgffVersion, names: Sequence[str]
) -> dict[str, Any]:
    """The attributes ``attrs`` of an existing ``labels`` group, listing ``names``.

    Only the ``labels`` list changes: every other key, in the OME part (``"ome"`` in
    0.5, the top level in 0.4) or beside it (another tool's metadata), keeps its
    value, the NGFF ``version`` included; keys NGFF needs and ``attrs`` lacks are
    added.  ``attrs`` is not changed.
    """
    new = copy.deepcopy(dict(attrs))
    fresh = labels_group_attrs(version, names)
    if version == "0.5":
        ome = new.get("ome")
        ome = ome if isinstance(ome, dict) else {}
        for key, value in fresh["ome"].items():
            ome.setdefault(key, value)
        ome["labels"] = list(names)
        new["ome"] = ome
    else:
        for key, value in fresh.items():
            new.setdefault(key, value)
        new["labels"] = list(names)
    return new


def write_label_pyramid(
    group: zarr.Group,
    data: da.Array,
    *,
    axes: str,
    spacing: Sequence[float],
    factors: Sequence[Sequence[int]],
    options: WriteOptions,
    name: str,
    memory_budget: int,
    progress: ProgressCallback | None,
    workers: int | None,
    label: str,
    source_image: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Write ``data`` and its nearest-neighbour pyramid into ``group``, with its NGFF label-image attributes.

    Parameters
    ----------
    group : zarr.Group
        The (empty) label image group: arrays ``"0"``, ``"1"``... go in it.
    data : dask array, shape per ``axes`` (no ``c``)
        Integer labels.
    axes, spacing, factors, options
        Axes of ``data``, its voxel size (µm, z y x), the pyramid's downsampling
        factors per level and the write options.
    name : str
        The label image's name (``image-label`` metadata).
    memory_budget, progress, workers, label
        As :func:`~dls_microscopy.io._zarr_pyramid.write_multiscale`.
    source_image : str, optional
        Recorded as ``image-label.source.image``; None keeps NGFF's ``../../`` (labels inside
        an image), ``""`` records no source (a label image of its own).
    attributes : mapping, optional
        Further attributes of the group, beside NGFF's (``"ome"`` in 0.5): e.g.
        ``{"dls_microscopy": {"segmentation": ...}}``, how the labels were made.
    """
    write_multiscale(
        group, data, axes=axes, factors=factors, options=options, method="nearest",
        memory_budget=memory_budget, progress=progress, label=label, workers=workers,
    )  # fmt: skip
    attrs = label_image_attrs(options.version, axes, _level_scales(axes, spacing, factors), name=name)
    if source_image:
        attrs.get("ome", attrs)["image-label"]["source"] = {"image": source_image}
    elif source_image is not None:  # a label image of its own, of no image: "../../" is nothing
        attrs.get("ome", attrs)["image-label"].pop("source", None)
    clash = set(attributes or {}) & set(attrs)
    if clash:
        raise ValueError(f"attributes {sorted(clash)} would replace NGFF metadata")
    group.attrs.update({**attrs, **(attributes or {})})


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
        write_label_pyramid(
            labels_group.create_group(lname), src, axes=label_axes, spacing=vol.spacing,
            factors=factors, options=options, name=lname, memory_budget=memory_budget,
            progress=progress, workers=workers, label=f"labels {lname}",
        )  # fmt: skip
    labels_group.attrs.update(labels_group_attrs(options.version, list(sources)))
