"""The layers of one image and their voxel size (Qt-free, tested headless).

Our reader gives an image one layer per channel and its NGFF label images labels
layers, all with the file in ``metadata["dls_source"]`` (:mod:`.layers`); Segment's
labels carry the metadata of the image layer segmented, and its name
(``dls_image_layer``).  Setting the voxel size of an image (:func:`set_voxel_size`)
sets the ``scale`` of all those layers, as ``--spacing`` and ``input.spacing`` give
one voxel size to the image and its labels.  The widgets read their µm from
``layer.scale``, so everything after uses it; :func:`input_spacing_of` turns it
back into the ``input.spacing`` a pipeline needs, and :func:`spacing_against_file_of`
gives the file's voxel size too, which labels segmented in the app record.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from dls_microscopy.errors import InputError
from dls_microscopy.napari._channel_choice import layer_grid, layer_origin
from dls_microscopy.napari._levels import made_at_level
from dls_microscopy.napari.layers import is_volume_layer, layer_axes
from dls_microscopy.pipeline.interactive import SpacingAgainstFile, input_spacing, spacing_against_file
from dls_microscopy.volume import check_spacing

__all__ = [
    "image_layers",
    "input_spacing_of",
    "parse_voxel_size",
    "set_voxel_size",
    "spacing_against_file_of",
    "voxel_size_text",
]


def parse_voxel_size(text: str) -> tuple[float, ...]:
    """A voxel size typed as ``"z, y, x"`` in µm (commas, spaces or ``×``), or one value for all.

    Raises
    ------
    InputError
        Not three numbers (or one), or one that is not a positive, finite length.

    Examples
    --------
    >>> parse_voxel_size("0.28, 0.13 × 0.13")
    (0.28, 0.13, 0.13)
    >>> parse_voxel_size("0.5")
    (0.5, 0.5, 0.5)
    """
    parts = [p for p in re.split(r"[\s,;×]+", text.strip()) if p]
    if not parts:
        raise InputError("type the voxel size in µm as z, y, x (or one value for every axis)")
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise InputError(f"voxel size: {part!r} is not a number of µm (type z, y, x)") from None
    return check_spacing(values, "zyx")


def voxel_size_text(spacing: Sequence[float]) -> str:
    """``spacing`` as shown to be edited: ``"0.28, 0.13, 0.13"`` (6 significant digits)."""
    return ", ".join(f"{float(v):.6g}" for v in spacing)


def image_layers(layers: Sequence[Any], chosen: Any) -> list[Any]:
    """The image and labels layers of the image that ``chosen`` is a channel of.

    Those are, besides ``chosen``: the layers read from the same file or plate
    field (or sample), labels made from one of its image layers (``dls_image_layer``,
    set by Segment), and labels of no open image (a labels file of their own, or
    added by a script) on its voxel grid: same ``(Z, Y, X)`` shape and voxel size.
    Layers of fewer than three dimensions are left out.

    Parameters
    ----------
    layers : sequence of napari layers
        The viewer's layers.
    chosen : napari Image layer
        A layer of the image.

    Returns
    -------
    list of napari layers
        In the viewer's order.
    """
    origin = layer_origin(chosen)
    spatial = [lay for lay in layers if _kind(lay) in ("image", "labels") and is_volume_layer(lay)]
    same = [lay for lay in spatial if origin is not None and layer_origin(lay) == origin]
    members = [lay for lay in spatial if lay is chosen or lay in same]
    images = {lay.name for lay in members if _kind(lay) == "image"}
    image_origins = {layer_origin(lay) for lay in spatial if _kind(lay) == "image"}
    grid = layer_grid(chosen)
    out = []
    for layer in spatial:
        if layer in members:
            out.append(layer)
        elif _kind(layer) == "labels":
            made_from, of = layer.metadata.get("dls_image_layer"), layer_origin(layer)
            loose = made_from is None and (of is None or of not in image_origins)
            if made_from in images or (loose and layer_grid(layer) == grid):
                out.append(layer)
    return out


def set_voxel_size(layers: Sequence[Any], chosen: Any, spacing: Sequence[float]) -> list[Any]:
    """Give the image of ``chosen`` the voxel size ``spacing``: set the ``scale`` of its layers.

    The last three values of each layer's ``scale`` (z, y, x) change; the others
    (time) are kept.  A layer on another grid than ``chosen`` (labels at another
    resolution) keeps its factor to it, as every pyramid level keeps its factor to
    full resolution with ``--spacing``; labels segmented at a coarser level keep their place
    over the image too (their ``translate``, half a coarse voxel in, scales with it).

    Parameters
    ----------
    layers : sequence of napari layers
        The viewer's layers (:func:`image_layers` picks those of the image).
    chosen : napari Image layer
        A layer of the image, of 3 or more dimensions.
    spacing : sequence of float
        ``(dz, dy, dx)`` in µm of ``chosen``'s data (its first level), or one value for all.

    Returns
    -------
    list of napari layers
        Those whose scale changed.

    Raises
    ------
    InputError
        ``chosen`` has no z, y, x axes (:func:`~dls_microscopy.napari.layers.is_volume_layer`),
        or ``spacing`` is no voxel size.
    """
    if not is_volume_layer(chosen):  # a 2D time series too: its t is no z
        axes = layer_axes(chosen)
        has = f"axes {', '.join(axes)}" if axes else f"{chosen.ndim} dimensions"
        raise InputError(f"{chosen.name!r} has {has}: a voxel size is for 3D images")
    new = check_spacing(spacing, "zyx")
    reference = [float(s) for s in chosen.scale[-3:]]
    changed = []
    for layer in image_layers(layers, chosen):
        scale = [float(s) for s in layer.scale]
        spatial = [
            n if math.isclose(s, r, rel_tol=1e-9) else s * n / r
            for s, r, n in zip(scale[-3:], reference, new, strict=True)
        ]
        if spatial != scale[-3:]:
            if made_at_level(layer):
                _keep_place(layer, chosen, [n / s for s, n in zip(scale[-3:], spatial, strict=True)])
            layer.scale = [*scale[:-3], *spatial]
            changed.append(layer)
    return changed


def _keep_place(layer: Any, image: Any, factors: Sequence[float]) -> None:
    """Scale ``layer``'s offset from ``image`` (z, y, x) by ``factors``, as its voxel size."""
    origin = [float(t) for t in image.translate[-3:]]
    translate = [float(t) for t in layer.translate]
    offsets = [o + (t - o) * f for t, o, f in zip(translate[-3:], origin, factors, strict=True)]
    layer.translate = [*translate[:-3], *offsets]


def input_spacing_of(layer: Any) -> Callable[[], list[float] | None]:
    """:func:`~dls_microscopy.pipeline.interactive.input_spacing` of ``layer``, to call later.

    Read from the layer now, on the GUI thread; the call opens the file (its
    metadata), so a widget makes it in its worker thread.
    """
    return functools.partial(input_spacing, **_spacing_args(layer))


def spacing_against_file_of(layer: Any) -> Callable[[], SpacingAgainstFile]:
    """:func:`~dls_microscopy.pipeline.interactive.spacing_against_file` of ``layer``, to call later.

    Like :func:`input_spacing_of`: read from the layer now, called in a worker thread.
    """
    return functools.partial(spacing_against_file, **_spacing_args(layer))


def _spacing_args(layer: Any) -> dict[str, Any]:
    """What comparing ``layer``'s voxel size with its file's needs: its scale, shape and file."""
    data = layer.data[0] if layer.multiscale else layer.data
    meta = layer.metadata
    return {
        "scale": tuple(float(s) for s in layer.scale),
        "shape": tuple(int(n) for n in data.shape),
        "source": meta.get("dls_source"),
        "series": int(meta.get("dls_series") or 0),
    }


def _kind(layer: Any) -> str:
    return type(layer).__name__.lower()
