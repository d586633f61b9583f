"""Reading and writing microscopy images: OME-Zarr, OME-TIFF, TIFF, HDF5."""

from __future__ import annotations

from dls_microscopy.io.open import detect_format, open_volume, split_dataset_path

__all__ = ["detect_format", "open_volume", "split_dataset_path"]
