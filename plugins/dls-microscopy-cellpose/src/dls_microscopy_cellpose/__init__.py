"""Cellpose 4 (Cellpose-SAM) 3D segmenter for DLS Microscopy.

Registered as ``cellpose`` in the entry-point group ``dls_microscopy.segmenters``::

    dls-microscopy segment image.ome.zarr --method cellpose --model cpsam_v2 --diameter 8

Weights are never downloaded: see :mod:`dls_microscopy_cellpose.weights`.
"""

from __future__ import annotations

from dls_microscopy_cellpose.segmenter import CellposeParams, CellposeSegmenter, cellpose_scale

__all__ = ["CellposeParams", "CellposeSegmenter", "cellpose_scale"]
