"""Blockwise watershed equals the whole-volume watershed on dense, touching synthetic nuclei."""

from __future__ import annotations

import numpy as np
import pytest

from dls_microscopy.io import open_volume, write_ome_zarr
from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment.blockwise import segment_blockwise
from dls_microscopy.segment.metrics import match_objects
from dls_microscopy.segment.overlaps import contingency
from dls_microscopy.segment.watershed import WatershedSegmenter


@pytest.mark.parametrize(
    ("spacing", "diameter", "block", "contrast"),
    [
        ((1.0, 0.3, 0.3), 7.0, (16, 64, 64), None),
        ((1.0, 0.3, 0.3), 7.0, (32, 96, 48), None),
        ((2.0, 0.4, 0.4), 10.0, (16, 48, 48), None),
        ((0.5, 0.25, 0.25), 6.0, (32, 64, 64), None),
        ((1.0, 0.3, 0.3), 7.0, (16, 64, 64), 0.7),  # seed_contrast
    ],
)
def test_blockwise_matches_whole_volume(tmp_path, spacing, diameter, block, contrast):
    s = make_synthetic_nuclei(shape=(48, 160, 160), spacing=spacing, diameter_um=diameter, seed=7)
    store = write_ome_zarr(
        s.image, tmp_path / "n.ome.zarr", axes="czyx", spacing=spacing, channel_names=s.channel_names
    )
    seg = WatershedSegmenter(diameter_um=diameter, device="cpu", seed_contrast=contrast)
    vol = open_volume(store)
    stats = seg.global_stats(vol.select(c=0).data, spacing=spacing)
    whole = seg.segment(s.image[0], spacing=spacing, stats=stats)
    res = segment_blockwise(vol, seg, channel="DAPI", block_shape=block, workers=2)
    got = res.labels.load()
    n = int(whole.max())
    assert res.plan.n_blocks >= 4
    # many objects cross block faces: the seams must have been stitched
    assert res.seam_qc["merged_pairs"] >= 5, res.seam_qc
    m = match_objects(got, whole, thresholds=(0.5,))[0.5]
    assert m.f1 >= 0.99, (m.to_dict(), res.seam_qc)
    assert abs(res.n_objects - n) <= max(1, 0.01 * n), (res.n_objects, n)
    splits, merges = _splits_and_merges(got, whole)
    assert splits <= 0.01 * n and merges <= 0.01 * n, (splits, merges, res.seam_qc)
    # and the result is still accurate against the ground truth
    truth = match_objects(got, s.labels, thresholds=(0.5,))[0.5]
    assert truth.f1 >= 0.85, truth.to_dict()


def _splits_and_merges(pred, ref, fraction=0.1):
    """Reference objects covered by >1 predicted object (each over ``fraction`` of it), and
    predicted objects covering >1 reference object."""
    ov = contingency(pred, ref)
    size_p = dict(zip(ov.pred_labels.tolist(), ov.pred_sizes.tolist(), strict=True))
    size_r = dict(zip(ov.gt_labels.tolist(), ov.gt_sizes.tolist(), strict=True))
    big_for_ref = [
        g for p, g, c in zip(ov.pred_ids, ov.gt_ids, ov.counts, strict=True) if c >= fraction * size_r[int(g)]
    ]
    big_for_pred = [
        p for p, g, c in zip(ov.pred_ids, ov.gt_ids, ov.counts, strict=True) if c >= fraction * size_p[int(p)]
    ]
    splits = int((np.unique(big_for_ref, return_counts=True)[1] > 1).sum())
    merges = int((np.unique(big_for_pred, return_counts=True)[1] > 1).sum())
    return splits, merges
