"""A minimal, exactly local segmenter and blob volumes, for testing the engine on its own."""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage as ndi

from dls_microscopy.segment.base import BaseSegmenter, SegmenterParams


class ThresholdParams(SegmenterParams):
    threshold: float = 0.5
    reach: int = 12


class ThresholdSegmenter(BaseSegmenter):
    """Smooth a little, threshold globally, label 6-connected components.

    Its result inside a block depends on pixels within ``reach`` voxels (the
    smoothing) plus the extent of the object, so a halo of ``reach`` is exact
    for objects smaller than ``reach``.
    """

    name = "test-threshold"
    Params = ThresholdParams

    def halo(self, spacing):
        return (self.params.reach,) * 3

    def global_stats(self, image, *, spacing):
        return {"threshold": self.params.threshold}

    def _segment(self, image, *, spacing, stats):
        smooth = ndi.uniform_filter(image.astype(np.float32), size=3, mode="nearest")
        mask = smooth > stats["threshold"]
        labels = cc3d.connected_components(mask, connectivity=6)
        return labels.astype(np.uint32)


def blob_volume(shape=(40, 96, 96), n=60, radius=4, seed=0):
    """Separated balls (radius in voxels), value 1 inside, some crossing any block face."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    zz, yy, xx = np.indices(shape)
    centres = []
    for _ in range(n * 20):
        c = rng.uniform([radius] * 3, np.array(shape) - radius)
        if all(np.linalg.norm(c - o) > 2 * radius + 3 for o in centres):
            centres.append(c)
        if len(centres) == n:
            break
    for c in centres:
        img[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2] = 1.0
    return img, len(centres)
