"""npe2 writer contribution: a labels layer → an NGFF label image (validated)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dls_microscopy.errors import InputError, OutputError

__all__ = ["write_labels_layer"]

log = logging.getLogger(__name__)


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer as NGFF labels; return the paths written (see :func:`_write`).

    Refusals are raised as :class:`~dls_microscopy.errors.OutputError`: napari takes any
    ``ValueError`` (our :class:`~dls_microscopy.errors.InputError`) out of a writer for "not a
    valid writer for this path", and the reason (a wrong shape, float labels) was lost.
    """
    try:
        return _write(path, data, meta)
    except InputError as exc:
        raise OutputError(f"cannot save the labels layer: {exc.reason}", path=exc.path or path) from None


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer as NGFF labels; return the paths written.

    * ``path`` inside an OME-Zarr image (``image.ome.zarr/labels/NAME``, a
      trailing ``.zarr`` is dropped): the label image ``NAME`` is added to that
      image (``write_labels``); labels segmented at a coarser level are refused there;
    * any other ``*.zarr`` path: a standalone OME-Zarr label image
      (``write_label_image``) with the layer's scale as spacing (µm).

    Multiscale layers are written from their full-resolution level, read
    block by block.  Existing outputs are replaced only for a name that the
    user chose in the save dialog (napari asks before overwriting).
    """
    from dls_microscopy.io.zarr_write import write_label_image, write_labels

    target = Path(path)
    # multiscale: the full-resolution level.  napari hands a MultiScaleData, a Sequence but
    # no list: taken whole, the coarsest level was written with the finest level's scale
    if isinstance(data, Sequence):
        data = data[0]
    if hasattr(data, "to_dask"):  # our lazy LevelView
        data = data.to_dask()
    if np.dtype(data.dtype).kind not in "iub":
        raise InputError(f"labels must be integers, got {data.dtype}", path=target)
    ndim = len(data.shape)
    scale = tuple(float(s) for s in (meta.get("scale") if meta.get("scale") is not None else (1.0,) * ndim))
    spacing = scale[-3:] if ndim >= 3 else scale
    if target.parent.name == "labels" and _is_ngff_image(target.parent.parent):
        level = (meta.get("metadata") or {}).get("dls_level")
        if level:  # segmented at a coarser level (Segment tab): not on the image's grid
            from dls_microscopy.segment._blockwise_write import level_into_store_error

            raise level_into_store_error(int(level), target.parent.parent)
        # napari appends the writer's extension to the name typed in the save dialog
        name = target.name.removesuffix(".zarr").removesuffix(".ome")
        written = write_labels(target.parent.parent, name, data, overwrite=True)
    else:
        if target.suffix != ".zarr":
            target = target.with_name(target.name + ".ome.zarr")
        source = (meta.get("metadata") or {}).get("dls_source")
        written = write_label_image(data, target, spacing=spacing, source_image=source, overwrite=True)
    log.info("wrote labels layer %r to %s", meta.get("name"), written)
    return [str(written)]


def _is_ngff_image(path: Path) -> bool:
    return path.is_dir() and ((path / "zarr.json").exists() or (path / ".zattrs").exists())
