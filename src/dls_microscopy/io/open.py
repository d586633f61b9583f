"""Open any supported path as a lazy :class:`~dls_microscopy.volume.Volume`.

Dispatch is by what the path *is* (directory with zarr metadata, TIFF or HDF5
magic bytes), with the extension only as a hint, so that misnamed files still
open and files that are not images give a clear error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from dls_microscopy.errors import InputNotFoundError, UnsupportedFormatError
from dls_microscopy.spacing import spacing_given
from dls_microscopy.volume import Volume

__all__ = ["detect_format", "open_volume", "split_dataset_path"]

log = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def split_dataset_path(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Split ``"file.h5:/group/dataset"`` into ``(Path("file.h5"), "/group/dataset")``.

    Paths without an internal part return ``(path, None)``.

    Examples
    --------
    >>> split_dataset_path("crop.h5:/raw")
    (PosixPath('crop.h5'), '/raw')
    """
    text = os.fspath(path)
    lower = text.lower()
    for suffix in _HDF5_SUFFIXES:
        marker = suffix + ":"
        idx = lower.rfind(marker)
        if idx >= 0:
            return Path(text[: idx + len(suffix)]), text[idx + len(marker) :] or None
    return Path(text), None


def detect_format(path: Path) -> str:
    """Return ``"zarr"``, ``"tiff"`` or ``"hdf5"`` for an existing path.

    Raises
    ------
    InputNotFoundError
        If ``path`` does not exist.
    UnsupportedFormatError
        If it is none of the supported formats.
    """
    if not path.exists():
        raise InputNotFoundError("no such file or directory", path=path)
    if path.is_dir():
        if any((path / name).exists() for name in ("zarr.json", ".zgroup", ".zattrs", ".zarray")):
            return "zarr"
        raise UnsupportedFormatError(
            "directory is not a zarr store (no zarr.json or .zgroup inside)", path=path
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UnsupportedFormatError(f"cannot read file: {exc.strerror}", path=path) from exc
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head == _HDF5_MAGIC:
        return "hdf5"
    if not head:
        raise UnsupportedFormatError("file is empty", path=path)
    raise UnsupportedFormatError(
        "not a supported image (expected OME-Zarr, OME-TIFF/TIFF or HDF5)", path=path
    )


def open_volume(
    path: str | os.PathLike[str],
    *,
    level: int = 0,
    series: int = 0,
    well: str | None = None,
    field: int | None = None,
    spacing: Sequence[float] | float | None = None,
) -> Volume:
    """Open an image lazily: only metadata is read until the data is computed.

    Parameters
    ----------
    path : str or path-like
        An OME-Zarr store (NGFF 0.4/0.5, image, ``bioformats2raw`` layout or
        HCS plate), an OME-TIFF/TIFF file, or an HDF5 dataset written
        ``"file.h5:/dataset"`` (the only dataset is used when omitted).
    level : int
        Resolution level to expose as ``Volume.data`` (0 = full resolution);
        all levels remain available in ``Volume.levels``.
    series : int
        Image series in multi-series files (OME-TIFF series,
        ``bioformats2raw`` series, or the n-th field of a plate in row-major
        well order).
    well, field : optional
        For HCS plates: the well (``"B/3"`` or ``"B3"``) and the field index
        within it.  ``series`` is ignored when ``well`` is given.
    spacing : float or sequence of float, optional
        Voxel size in µm at full resolution, one value per spatial axis
        (``(dz, dy, dx)``) or one for all, in place of the file's
        (:meth:`Volume.with_spacing`); for files whose metadata lacks it or has
        it wrong.

    Returns
    -------
    Volume
        Axes a subset of ``"tczyx"``, spacing in µm.

    Raises
    ------
    InputNotFoundError, UnsupportedFormatError, MetadataError, DimensionalityError
        With the path and the reason in the message.
    """
    file_path, internal = split_dataset_path(path)
    fmt = detect_format(file_path)
    log.debug("opening %s as %s", file_path, fmt)
    with spacing_given(spacing is not None):  # then "no voxel size; using 1 µm" is moot
        if fmt == "zarr":
            from dls_microscopy.io.zarr_read import open_zarr

            vol = open_zarr(file_path, level=0, series=series, well=well, field=field)
        elif fmt == "tiff":
            from dls_microscopy.io.tiff import open_tiff

            vol = open_tiff(file_path, level=0, series=series)
        else:
            from dls_microscopy.io.hdf5 import open_hdf5

            vol = open_hdf5(file_path, internal, level=0, series=series)
    if spacing is not None:
        vol = vol.with_spacing(spacing)
    return vol.at_level(level) if level else vol
