"""npe2 reader contribution: any image our IO opens → multiscale image and labels layers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from dls_microscopy.errors import DlsError
from dls_microscopy.napari.layers import LayerData, handles_path, read_path

__all__ = ["napari_get_reader"]

log = logging.getLogger(__name__)


def napari_get_reader(
    path: str | os.PathLike[str] | Sequence[str],
) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """Return a reader function for ``path``, or ``None`` when we do not handle it.

    Handled: OME-Zarr (NGFF 0.4/0.5 images, plates: one field at a time),
    OME-TIFF/TIFF and HDF5.  The check is cheap (names and zarr metadata
    files); opening errors surface when napari calls the returned function.
    """
    try:
        if not handles_path(path):
            return None
    except OSError:
        return None
    return _read


def _read(path: str | Sequence[str]) -> list[LayerData]:
    if isinstance(path, list | tuple):
        path = path[0]
    try:
        return read_path(path)
    except DlsError:
        # one line: napari shows the error itself; the traceback only for debugging
        log.warning("DLS Microscopy cannot open %s", path)
        log.debug("traceback", exc_info=True)
        raise
