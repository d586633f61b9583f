"""The watershed's depth correction: nuclei that dim with depth, fitted once, applied per block."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest

from dls_microscopy.io import open_volume, write_ome_zarr
from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment._watershed_stats import _DEPTH_MAX_GAIN, _depth_gain, _smoothed_sample
from dls_microscopy.segment.blockwise import segment_blockwise
from dls_microscopy.segment.metrics import match_objects
from dls_microscopy.segment.watershed import WatershedSegmenter

SPACING = (1.0, 0.3, 0.3)


@pytest.fixture(scope="module")
def dimming():
    """48 µm deep; the signal falls by e every 30 µm (the deepest nuclei at a fifth)."""
    return make_synthetic_nuclei(
        (48, 128, 128), spacing=SPACING, diameter_um=7.0, seed=3, attenuation_length_um=30.0
    )


def test_off_by_default():
    assert WatershedSegmenter().params.depth_correction is False


def test_finds_the_deep_nuclei_that_one_threshold_misses(dimming):
    img = dimming.image[0]
    plain = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="cpu")
    corrected = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="cpu", depth_correction=True)
    stats = corrected.global_stats(img, spacing=SPACING)
    # the fit sees the fall: brightness at the bottom about a fifth of the top's
    bottom = float(_depth_gain(stats, np.array([stats["depth_z1_um"]]))[0])
    assert stats["depth_c1"] < 0 and 2.0 < bottom < 6.0, stats
    json.dumps(stats)  # plain floats: they go to the run's record
    f_plain = match_objects(plain.segment(img, spacing=SPACING), dimming.labels, thresholds=(0.5,))[0.5].f1
    f_corr = match_objects(corrected.segment(img, spacing=SPACING), dimming.labels, thresholds=(0.5,))[0.5].f1
    assert f_corr >= f_plain + 0.08 and f_corr >= 0.88, (f_plain, f_corr)


def test_no_correction_where_nothing_dims():
    s = make_synthetic_nuclei(
        (48, 96, 96), spacing=SPACING, diameter_um=7.0, seed=4, attenuation_length_um=1e9
    )
    img = s.image[0]
    on = WatershedSegmenter(diameter_um=7.0, device="cpu", depth_correction=True)
    off = WatershedSegmenter(diameter_um=7.0, device="cpu")
    stats = on.global_stats(img, spacing=SPACING)
    assert not any(k.startswith("depth_") for k in stats), stats
    assert stats == off.global_stats(img, spacing=SPACING)
    np.testing.assert_array_equal(on.segment(img, spacing=SPACING), off.segment(img, spacing=SPACING))


def test_no_correction_in_a_stack_under_three_diameters_deep():
    s = make_synthetic_nuclei(
        (12, 128, 128), spacing=SPACING, diameter_um=7.0, seed=5, attenuation_length_um=5.0
    )
    seg = WatershedSegmenter(diameter_um=7.0, device="cpu", depth_correction=True)
    assert "depth_c0" not in seg.global_stats(s.image[0], spacing=SPACING)


def test_gain_is_held_beyond_the_fitted_depths_and_capped():
    stats = {"depth_c0": 5.0, "depth_c1": -0.1, "depth_peak": 4.0, "depth_z0_um": 10.0, "depth_z1_um": 30.0}
    g = _depth_gain(stats, np.array([0.0, 10.0, 20.0, 30.0, 100.0]))
    np.testing.assert_allclose(g[:4], [1.0, 1.0, np.exp(1.0), np.exp(2.0)], rtol=1e-6)
    assert g[4] == g[3]  # no extrapolation past the last fitted depth
    steep = {**stats, "depth_c1": -1.0, "depth_peak": -5.0}
    assert float(_depth_gain(steep, np.array([30.0]))[0]) == pytest.approx(_DEPTH_MAX_GAIN)


def test_sampled_voxels_know_their_plane():
    # each plane constant (10 × its index), smoothing in y and x only: a voxel's value names its plane
    img = da.from_array(
        np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None] * 10, (40, 96, 96)).copy()
    )
    values, z = _smoothed_sample(img, (0.0, 1.5, 1.5), 40_000)  # under the volume: sub-blocks
    assert values.size > 1000 and np.unique(z).size > 10
    np.testing.assert_allclose(values, z * 10.0, atol=1e-3)


def test_blockwise_equals_whole_volume_with_the_correction(tmp_path, dimming):
    store = write_ome_zarr(
        dimming.image,
        tmp_path / "n.ome.zarr",
        axes="czyx",
        spacing=SPACING,
        channel_names=dimming.channel_names,
    )
    seg = WatershedSegmenter(diameter_um=7.0, device="cpu", depth_correction=True)
    vol = open_volume(store)
    stats = seg.global_stats(vol.select(c=0).data, spacing=SPACING)
    assert "depth_c0" in stats
    whole = seg.segment(dimming.image[0], spacing=SPACING, stats=stats)
    res = segment_blockwise(vol, seg, channel="DAPI", block_shape=(16, 64, 64), workers=2)
    assert res.plan.n_blocks >= 4 and res.plan.grid[0] >= 2  # blocks at several depths
    m = match_objects(res.labels.load(), whole, thresholds=(0.5,))[0.5]
    assert m.f1 >= 0.99, (m.to_dict(), res.seam_qc)


def test_torch_path_applies_the_same_correction(dimming):
    img = dimming.image[0]
    cpu = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="cpu", depth_correction=True)
    torch_path = WatershedSegmenter(diameter_um=7.0, device="cpu", backend="torch", depth_correction=True)
    a, b = cpu.segment(img, spacing=SPACING), torch_path.segment(img, spacing=SPACING)
    assert abs(int(a.max()) - int(b.max())) <= max(1, 0.03 * int(a.max()))
    assert match_objects(b, a, thresholds=(0.5,))[0.5].f1 >= 0.95
