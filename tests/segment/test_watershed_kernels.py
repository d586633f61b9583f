"""The compiled watershed kernels give exactly what the numpy formulation gives.

The numpy path (``_drain_numpy``, ``_labels_numpy``) is the reference, and also what
runs where numba cannot be imported.
"""

from __future__ import annotations

import numpy as np
import pytest

from dls_microscopy.sample_data import make_synthetic_nuclei
from dls_microscopy.segment import _watershed_shared as shared
from dls_microscopy.segment._watershed_cpu import _drain_compiled, _padded
from dls_microscopy.segment._watershed_numpy import _drain_numpy
from dls_microscopy.segment.watershed import WatershedSegmenter

pytest.importorskip("numba")


def _basins_equal(a: shared._Basins, b: shared._Basins) -> None:
    for name in ("basin", "peak", "peak_pos", "edge_a", "edge_b", "saddle"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _flooding_image(shape, fraction, *, seed, plateaus=False):
    """A random smooth field, foreground = its top ``fraction``; quantised for ties."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    f = ndi.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    mask = f > np.quantile(f, 1 - fraction)
    if plateaus:  # many equal neighbours: the tie rules decide the drainage
        f = np.round(f * 20) / 20
    return f.astype(np.float32), mask


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("fraction", "plateaus", "spacing"),
    [
        (0.6, False, (1.0, 1.0, 1.0)),  # dense: the numpy path's full-volume passes
        (0.15, False, (2.0, 0.4, 0.4)),  # sparse: the numpy path's gathers; anisotropic
        (0.5, True, (1.0, 0.5, 0.5)),  # plateaus: ties go to the first direction / later voxel
    ],
)
def test_compiled_drainage_equals_numpy(fraction, plateaus, spacing, threads):
    f, mask = _flooding_image((20, 90, 70), fraction, seed=3, plateaus=plateaus)
    value = f[mask]
    fpad = _padded(f, mask)
    want = _drain_numpy(fpad, mask, value, spacing, threads=threads)
    got = _drain_compiled(fpad, mask, value, spacing, threads=threads)
    assert len(want.peak) > 20  # many basins and edges: the comparison means something
    assert len(want.edge_a) > 20
    _basins_equal(got, want)


@pytest.mark.parametrize("surface", [0.5, None])
@pytest.mark.parametrize("method", ["distance", "intensity", "combined"])
def test_segmenter_labels_identical_with_and_without_numba(method, surface, monkeypatch):
    s = make_synthetic_nuclei(shape=(24, 96, 96), spacing=(2.0, 0.4, 0.4), seed=1)
    seg = WatershedSegmenter(
        diameter_um=7.0, device="cpu", backend="cpu", seed_method=method, surface_level=surface
    )
    compiled = seg.segment(s.image[0], spacing=s.spacing)
    monkeypatch.setattr(shared, "_KERNELS", None)  # as where numba does not import
    reference = seg.segment(s.image[0], spacing=s.spacing)
    assert reference.max() > 20
    np.testing.assert_array_equal(compiled, reference)


def test_labels_kernel_drops_small_objects_and_numbers_by_first_voxel():
    """Objects below min_voxels vanish; the others are 1..N in C order of their first voxel."""
    f, mask = _flooding_image((12, 40, 40), 0.5, seed=5)
    basins = _drain_numpy(_padded(f, mask), mask, f[mask], (1.0, 1.0, 1.0))
    objects = np.arange(len(basins.peak), dtype=np.int64)  # every basin its own object
    sizes = np.bincount(basins.basin)
    cut = float(np.median(sizes))
    kw = {"shape": mask.shape, "surface": (0.3, float(f.min())), "min_voxels": cut}
    got = shared._labels_from_objects(basins, objects, **kw)
    want = shared._labels_numpy(basins, objects, **kw)
    np.testing.assert_array_equal(got, want)
    ids = got[got > 0]
    first = np.unique(ids, return_index=True)[1]
    np.testing.assert_array_equal(np.unique(ids), np.arange(1, ids.max() + 1))
    assert np.all(np.diff(first) > 0)  # numbered in order of first appearance
    assert 0 < ids.max() < len(basins.peak)  # some, not all, were dropped


@pytest.mark.parametrize(("prominence", "separation_um"), [(0.0, 0.0), (0.05, 2.0), (0.3, 6.0)])
def test_compiled_merge_equals_python(prominence, separation_um):
    f, mask = _flooding_image((20, 90, 70), 0.6, seed=7, plateaus=True)
    basins = _drain_numpy(_padded(f, mask), mask, f[mask], (1.0, 0.5, 0.5))
    kw = {
        "shape": mask.shape,
        "spacing": (1.0, 0.5, 0.5),
        "prominence": prominence,
        "separation_um": separation_um,
    }
    got = shared._merge_basins(basins, **kw)
    want = shared._merge_numpy(basins, **kw)
    np.testing.assert_array_equal(got, want)
    assert 1 < len(np.unique(want)) < len(basins.peak) or prominence == 0.0


def test_kernels_unavailable_falls_back_to_numpy_with_a_warning(monkeypatch, caplog):
    """numba missing (or without a writable cache): the numpy path runs, and says so once."""
    import sys

    monkeypatch.setattr(shared, "_KERNELS", shared._UNSET)
    monkeypatch.setitem(sys.modules, "dls_microscopy.segment._watershed_kernels", None)  # import fails
    with caplog.at_level("WARNING", logger=shared.__name__):
        assert shared._kernels() is None
        assert shared._kernels() is None
    assert sum("numpy path" in r.getMessage() for r in caplog.records) == 1
