"""3D segmentation: the segmenter contract and registry, blockwise execution, stitching, metrics.

Segmenters are found through the entry-point group ``dls_microscopy.segmenters``
(see :func:`segmenter_names` and :func:`get_segmenter`); torch is imported only
when a segmenter runs.
"""

from __future__ import annotations

from dls_microscopy.segment.base import (
    BaseSegmenter,
    EmptyResultWarning,
    Segmenter,
    SegmenterParams,
    get_segmenter,
    segmenter_names,
)
from dls_microscopy.segment.blockwise import BlockwiseResult, segment_blockwise, select_image
from dls_microscopy.segment.diameter import DiameterEstimate, estimate_diameter

__all__ = [
    "BaseSegmenter",
    "BlockwiseResult",
    "DiameterEstimate",
    "EmptyResultWarning",
    "Segmenter",
    "SegmenterParams",
    "estimate_diameter",
    "get_segmenter",
    "segment_blockwise",
    "segmenter_names",
    "select_image",
]
