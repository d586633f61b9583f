"""Pyramid planning and block downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from dls_microscopy.io.pyramid import downsample_block, plan_pyramid


def test_plan_makes_anisotropic_volumes_isotropic_first():
    assert plan_pyramid((64, 1024, 1024), (2.0, 0.5, 0.5)) == [
        (1, 1, 1),
        (1, 2, 2),
        (1, 4, 4),
        (2, 8, 8),
    ]
    assert plan_pyramid((100, 100, 100), (0.28, 0.127, 0.127)) == [(1, 1, 1)]
    assert len(plan_pyramid((8, 8, 8), (1, 1, 1), n_levels=3)) == 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.float32, np.float64])
@pytest.mark.parametrize("step", [(1, 2, 2), (2, 2, 2), (1, 1, 2)])
def test_mean_matches_reference(dtype, step):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    lo, hi = (info.min, info.max) if info else (-1e3, 1e3)
    block = rng.uniform(lo, hi, (5, 9, 7)).astype(dtype)
    got = downsample_block(block, step, method="mean")
    pad = [(0, (-n) % s) for n, s in zip(block.shape, step, strict=True)]
    ref = np.pad(block.astype(np.float64), pad, mode="edge")
    shape = []
    for n, s in zip(ref.shape, step, strict=True):
        shape += [n // s, s]
    ref = ref.reshape(shape).mean(axis=(1, 3, 5))
    assert got.dtype == block.dtype
    if info:
        np.testing.assert_array_equal(got, np.clip(np.floor(ref + 0.5), lo, hi).astype(dtype))
    else:
        np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_nearest_keeps_ids():
    labels = np.arange(4 * 6 * 6, dtype=np.uint64).reshape(4, 6, 6) + 2**40
    got = downsample_block(labels, (2, 2, 2), method="nearest")
    np.testing.assert_array_equal(got, labels[::2, ::2, ::2])
