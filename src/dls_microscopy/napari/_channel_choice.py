"""Which image layers the Features widget measures with a labels layer (Qt-free, tested headless).

With several images, plate fields or plates open, the image layers that belong with
the labels are those read from the same source (file or plate field) on the same
voxel grid; the others are offered unchecked.  :func:`channel_choices` makes that
choice, :func:`measurement_problem` says in words why checked layers cannot be
measured together with the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dls_microscopy.napari._levels import layer_level_spacings, level_shape, made_at_level

__all__ = [
    "ChannelChoice",
    "channel_choices",
    "channel_name",
    "layer_grid",
    "layer_origin",
    "measurement_problem",
]


@dataclass(frozen=True)
class ChannelChoice:
    """One image layer as offered to measure: its name, whether checked at first, and why.

    Attributes
    ----------
    name : str
        The layer's name (unique in a viewer).
    checked : bool
        Whether it is measured unless the user unchecks it.
    where : str
        Where the layer comes from, in short (``plate.ome.zarr B/2 field 0``).
    note : str
        Its channel, where it comes from and why it is unchecked when it is (a tooltip).
    """

    name: str
    checked: bool
    where: str
    note: str


def channel_choices(labels: Any, images: Sequence[Any]) -> list[ChannelChoice]:
    """The image layers offered to measure with ``labels``, those that belong with them checked.

    A layer belongs with the labels when it lies on their voxel grid (the same
    ``(Z, Y, X)`` shape and voxel size; for labels segmented at a coarser resolution
    level, the layer's grid at that level) and comes from the same source: the same
    file or plate field (``dls_source``, ``dls_series``) or the same sample.
    Labels of no such layer (made by another plugin, or read from a file of their
    own) take the layers on their grid when those all come from one source, and
    none otherwise: the user checks them.

    Parameters
    ----------
    labels : napari Labels layer or None
        The labels to measure; None checks every image layer.
    images : sequence of napari Image layers
        In the viewer's order.

    Returns
    -------
    list of ChannelChoice
        One per image layer, in the order given.
    """
    if labels is None:
        return [ChannelChoice(layer.name, True, _where(layer), _describe(layer)) for layer in images]
    grid, origin, level = layer_grid(labels), layer_origin(labels), made_at_level(labels)
    on_grid = [layer for layer in images if layer_grid(layer, level) == grid]
    belonging = [layer for layer in on_grid if origin is not None and layer_origin(layer) == origin]
    if not belonging and len({layer_origin(layer) for layer in on_grid}) == 1:
        belonging = on_grid
    checked = {id(layer) for layer in belonging}
    out = []
    for layer in images:
        note = _describe(layer)
        if id(layer) in checked:
            pass
        elif layer_grid(layer, level) == grid:
            note += f"; unchecked: not of the image that {labels.name!r} were made from"
        else:
            note += f"; unchecked: {_grid_text(layer, level)}, {labels.name!r} {_grid_text(labels)}"
        out.append(ChannelChoice(layer.name, id(layer) in checked, _where(layer), note))
    return out


def measurement_problem(labels: Any, images: Sequence[Any]) -> str | None:
    """Why ``images`` cannot be measured with ``labels`` (a sentence for the user), or None.

    The checked layers must have the labels' ``(Z, Y, X)`` shape (at the resolution
    level the labels were segmented at), and each must be another channel: two layers
    of one channel name (the same channel of two fields) would make two columns of one name.
    """
    shape, level = layer_grid(labels)[0], made_at_level(labels)
    for layer in images:
        if level and level_shape(layer, level) is None:
            return (
                f"cannot measure {layer.name!r} with the labels {labels.name!r}: the labels were "
                f"segmented at resolution level {level} and the image has no level {level}; check "
                "only image layers of the image the labels were made from"
            )
        if layer_grid(layer, level)[0] != shape:
            return (
                f"cannot measure {layer.name!r} with the labels {labels.name!r}: the image is "
                f"{_grid_text(layer, level)}, the labels {_grid_text(labels)}; check only image "
                "layers of the image the labels were made from"
            )
    seen: dict[str, str] = {}
    for layer in images:
        channel = channel_name(layer)
        if channel in seen:
            return (
                f"{seen[channel]!r} and {layer.name!r} are both channel {channel!r} (of different "
                "images or fields?): check one layer per channel, those of the image the labels "
                "were made from"
            )
        seen[channel] = layer.name
    return None


def channel_name(layer: Any) -> str:
    """The channel name a layer is measured as (the file's channel name, else the layer's name)."""
    return str(layer.metadata.get("dls_channel") or layer.name)


def layer_origin(layer: Any) -> tuple[Any, ...] | None:
    """Where a layer comes from: its file or plate field and series, or its sample; None if unknown."""
    meta = layer.metadata
    if meta.get("dls_source"):
        return ("file", str(meta["dls_source"]), int(meta.get("dls_series") or 0))
    if meta.get("dls_sample"):
        return ("sample", str(meta["dls_sample"]))
    return None


def _where(layer: Any) -> str:
    """Where a layer comes from, in short: a plate's well and field, a file's name, a sample."""
    meta = layer.metadata
    if meta.get("dls_plate"):
        return f"{Path(str(meta['dls_plate'])).name} {meta.get('dls_well')} field {meta.get('dls_field')}"
    if meta.get("dls_source"):
        return Path(str(meta["dls_source"])).name
    if meta.get("dls_sample"):
        return f"sample {meta['dls_sample']}"
    return ""


def _describe(layer: Any) -> str:
    meta = layer.metadata
    where = str(meta["dls_source"]) if meta.get("dls_source") and not meta.get("dls_plate") else _where(layer)
    return f"{layer.name}: channel {channel_name(layer)!r} of {where or 'no file'}"


def layer_grid(layer: Any, level: int = 0) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The ``(Z, Y, X)`` shape of a level's data (the full resolution's by default) and its
    voxel size, rounded to compare; empty for a level the layer does not have."""
    shape = level_shape(layer, level)
    if shape is None:
        return (), ()
    spacing = layer_level_spacings(layer)[level]  # level 0's is the layer's scale
    return shape, tuple(round(float(s), 9) for s in spacing)


def _grid_text(layer: Any, level: int = 0) -> str:
    shape, spacing = layer_grid(layer, level)
    if not shape:  # a single-scale image, or a shallower pyramid
        return f"of no resolution level {level}"
    at = f" at level {level}" if level else ""
    return f"{'×'.join(map(str, shape))} voxels of {' × '.join(f'{s:g}' for s in spacing)} µm{at}"
