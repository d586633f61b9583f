"""Reading and writing microscopy images: OME-Zarr, OME-TIFF, TIFF, HDF5.

Readers are imported lazily by :func:`open_volume`, so importing this package
does not import h5py or tifffile.
"""

from __future__ import annotations

from dls_microscopy.io.convert import convert
from dls_microscopy.io.open import detect_format, open_volume, split_dataset_path
from dls_microscopy.io.zarr_read import describe_plate, open_labels, open_zarr
from dls_microscopy.io.zarr_write import WriteOptions, write_labels, write_ome_zarr

__all__ = [
    "WriteOptions",
    "convert",
    "describe_plate",
    "detect_format",
    "open_labels",
    "open_volume",
    "open_zarr",
    "split_dataset_path",
    "write_labels",
    "write_ome_zarr",
]
