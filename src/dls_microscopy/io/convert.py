"""Conversion of any readable image (and its label images) to OME-Zarr, streaming."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.io.open import open_volume
from dls_microscopy.io.zarr_write import write_ome_zarr
from dls_microscopy.volume import Volume

__all__ = ["convert"]

log = logging.getLogger(__name__)


def convert(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    series: int = 0,
    labels: Mapping[str, str | os.PathLike[str]] | None = None,
    spacing: Sequence[float] | None = None,
    **write_options: Any,
) -> Path:
    """Convert ``source`` to an OME-Zarr store at ``destination``, block by block.

    Parameters
    ----------
    source : path-like
        Anything :func:`~dls_microscopy.io.open_volume` reads (OME-TIFF, TIFF,
        HDF5 ``file.h5:/dataset``, OME-Zarr).
    destination : path-like
        The new ``.ome.zarr`` store; it appears only when complete.
    series : int
        Series of a multi-series source.
    labels : mapping of str to path-like, optional
        Label images to store as NGFF labels, by name; each must have the
        image's spatial shape.  The label images of an OME-Zarr source are
        carried over too (one given here under the same name replaces it).
    spacing : sequence of float, optional
        Voxel size in µm at full resolution (``(dz, dy, dx)`` or one value for all
        axes) to write in place of the source's: the way to mend a file whose
        metadata lacks it or has it wrong.  The label images get it too.
    **write_options
        Passed to :func:`~dls_microscopy.io.zarr_write.write_ome_zarr`
        (``version``, ``chunks``, ``shards``, ``compression``, ``clevel``,
        ``n_levels``, ``memory_budget``, ``overwrite``, ``progress``).

    Returns
    -------
    Path
        The written store. Peak memory is set by ``memory_budget``, not by the
        size of the source.
    """
    from dls_microscopy.io.atomic import refuse_output_over_inputs

    refuse_output_over_inputs(destination, [source, *(labels or {}).values()])
    image = open_volume(source, series=series, spacing=spacing)
    label_volumes = {name: open_volume(p, spacing=spacing) for name, p in (labels or {}).items()}
    carried = _labels_of_source(source, image, skip=set(label_volumes), spacing=spacing)
    label_volumes = {**carried, **label_volumes}
    log.info("converting %s (%s, %s) to %s", source, image.shape, image.dtype, destination)
    return write_ome_zarr(image, destination, labels=label_volumes, **write_options)


def _labels_of_source(
    source: str | os.PathLike[str],
    image: Volume,
    *,
    skip: set[str],
    spacing: Sequence[float] | None = None,
) -> dict[str, Volume]:
    """The NGFF label images of an OME-Zarr ``source`` that fit ``image``, by name (conversions dropped them).

    One that cannot be read or does not fit the image's spatial shape is left out with a warning.
    """
    from dls_microscopy.errors import DlsError
    from dls_microscopy.io.zarr_read import open_labels

    found = {}
    for name in image.labels:
        if name in skip:
            continue
        try:
            lab = open_labels(source, name, spacing=spacing)
        except DlsError as exc:
            log.warning("%s: label image %r not carried over: %s", source, name, exc)
            continue
        if lab.spatial_shape != image.spatial_shape:
            log.warning(
                "%s: label image %r not carried over: its shape differs from the image's", source, name
            )
            continue
        found[name] = lab
    if found:
        log.info("carrying over the label images %s", ", ".join(found))
    return found
