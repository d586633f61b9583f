"""Accuracy of the blockwise watershed on real data from ``../shared/data``, against gold labels.

Both volumes go through the whole path a user takes: open a file, segment block by block with
``segment_blockwise`` (several blocks, stitched seams), read the written labels back, and score
them with ``match_objects`` against the published labels.  The diameter is the median
equivalent diameter of the labelled nuclei that do not touch the border, computed here, and a
scikit-image baseline (Gaussian + Otsu + distance-transform watershed, sizes from the same
diameter) runs on the same image in the same test.

The floors are the values measured on 2026-11-25 minus a small margin; they guard against
regressions in the segmenter, the stitching and the IO, not against run-to-run noise (the
results are deterministic).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
from dls_microscopy.segment.blockwise import segment_blockwise
from dls_microscopy.segment.metrics import match_objects
from dls_microscopy.segment.watershed import WatershedSegmenter

GOLD_CROP = "nuclei_gold_crops/1135_mini.h5"
IDR_STORE = "omezarr_idr0062A_6001240/6001240_labels.zarr"
#: Resolution level of the IDR image used: level 1, (236, 137, 135) voxels of
#: (0.50, 0.72, 0.72) µm, keeps the test fast; level 0 has 4x the voxels.
IDR_LEVEL = 1
#: Allowed drop below the measured values.
MARGIN = 0.03

pytestmark = pytest.mark.shared_data


def _median_diameter(labels: np.ndarray, spacing) -> float:
    """Median equivalent diameter (µm) of the labelled objects not touching the border."""
    labels = np.asarray(labels).astype(np.int64)
    faces = np.concatenate([np.take(labels, [0, -1], axis=ax).ravel() for ax in range(3)])
    counts = np.bincount(labels.ravel())
    ids = np.flatnonzero(counts)
    inner = counts[ids[(ids > 0) & ~np.isin(ids, faces)]]
    return float(np.median(np.cbrt(6 / math.pi * inner * float(np.prod(spacing)))))


def _skimage_baseline(image: np.ndarray, spacing, diameter_um: float) -> np.ndarray:
    """Gaussian (σ = d/8) + Otsu + distance-transform watershed; seeds a radius apart."""
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    sp = np.asarray(spacing, float)
    smooth = gaussian(image.astype(np.float32), sigma=diameter_um / 8 / sp, preserve_range=True)
    mask = smooth > threshold_otsu(smooth)
    dist = ndi.distance_transform_edt(mask, sampling=sp)
    radius = np.maximum(1, np.round(diameter_um / 2 / sp)).astype(int)
    peaks = peak_local_max(
        dist,
        min_distance=int(radius.min()),
        footprint=np.ones(tuple(2 * radius + 1), bool),
        labels=ndi.label(mask)[0],
        exclude_border=False,
    )
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


def test_gold_crop_blockwise_accuracy(shared_data, tmp_path):
    path = shared_data / GOLD_CROP
    raw = open_volume(f"{path}:/raw")
    gold = open_volume(f"{path}:/label").load()
    diameter = _median_diameter(gold, raw.spacing)
    assert 3.8 < diameter < 4.6  # measured: 4.18 µm

    store = write_ome_zarr(raw, tmp_path / "1135.ome.zarr")
    seg = WatershedSegmenter(diameter_um=diameter, device="cpu")
    res = segment_blockwise(open_volume(store), seg, block_shape=(48, 48, 48), workers=2)
    assert res.plan.n_blocks == 27  # (100, 100, 100) in cores of 48³
    assert res.seam_qc["merged_pairs"] > 0  # objects were stitched across seams
    pred = res.labels.load()
    ours = match_objects(pred, gold, thresholds=(0.5,))[0.5]
    base = match_objects(_skimage_baseline(raw.load(), raw.spacing, diameter), gold, thresholds=(0.5,))[0.5]
    # measured 2026-11-25: ours F1@0.5 = 0.722 (43 predicted, 54 gold, 35 matched,
    # mean IoU 0.726); skimage baseline F1@0.5 = 0.400
    assert ours.f1 >= 0.722 - MARGIN, ours.to_dict()
    assert ours.f1 >= base.f1, (ours.to_dict(), base.to_dict())


def test_idr_dapi_blockwise_accuracy_over_labelled_nuclei(shared_data, tmp_path):
    store = shared_data / IDR_STORE
    vol = open_volume(store).at_level(IDR_LEVEL)
    gold = open_labels(store, level=IDR_LEVEL).load()
    diameter = _median_diameter(gold, vol.spacing)
    assert 12.5 < diameter < 15.0  # measured: 13.78 µm

    seg = WatershedSegmenter(diameter_um=diameter, device="cpu")
    # the shared store is read-only: the labels go to a standalone store
    res = segment_blockwise(
        vol, seg, channel="Dapi", block_shape=(128, 80, 80), output=tmp_path / "labels.ome.zarr", workers=2
    )
    assert res.plan.n_blocks == 8
    pred = res.labels.load()
    # not every nucleus is labelled: predictions overlapping no label are not counted
    ours = match_objects(pred, gold, thresholds=(0.5,), restrict_to_gt=True)[0.5]
    image = vol.select(c="Dapi").load()
    base = match_objects(
        _skimage_baseline(image, vol.spacing, diameter), gold, thresholds=(0.5,), restrict_to_gt=True
    )[0.5]
    # measured 2026-11-25 (level 1, 8 blocks): ours precision 0.610, recall 0.410 (41 predicted
    # objects touch a label, 25 of the 61 labelled nuclei matched; misses are mostly clusters
    # of touching nuclei kept as one object: 33 labelled nuclei lie, each over half, in 10
    # predicted objects), F1 0.490; skimage baseline precision 0.429,
    # recall 0.197, F1 0.270.  (Level 0, for reference: ours 0.586 / 0.279, baseline
    # 0.519 / 0.230.)
    assert ours.recall >= 0.410 - MARGIN, ours.to_dict()
    assert ours.precision >= 0.610 - MARGIN, ours.to_dict()
    assert ours.recall >= base.recall, (ours.to_dict(), base.to_dict())
    assert ours.precision >= base.precision, (ours.to_dict(), base.to_dict())
