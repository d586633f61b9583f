"""measure_objects: equal to regionprops, blockwise == whole volume, exact percentiles and shells."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import dask.array as da
import numpy as np
import pytest
from skimage.measure import regionprops_table

from dls_microscopy.errors import DimensionalityError, InputError, UnsupportedDtypeError
from dls_microscopy.features import NoObjectsWarning, measure_objects
from dls_microscopy.features.crops import _object_percentiles

Q = (10.0, 25.0, 50.0, 75.0, 90.0)
MOMENT_INDEX = [(2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]


def _fields(m):
    return {
        f.name: getattr(m, f.name)
        for f in dataclasses.fields(m)
        if isinstance(getattr(m, f.name), np.ndarray)
    }


def _percentiles(regionmask, intensity):
    return np.percentile(intensity[regionmask], Q, axis=0)


def _close(a, b, *, scale=None, rtol=1e-10):
    """Equal within float tolerance, relative to the column's scale (moments can be ~0)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    s = np.abs(b).max() if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(s, 1e-300))


@pytest.mark.parametrize("spacing", [(1.0, 0.3, 0.25), (1.0, 1.0, 1.0)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_equals_regionprops_table(nuclei, spacing, dtype):
    lab = nuclei.labels
    img = nuclei.image.astype(dtype)
    if dtype == np.float32:
        img = img * np.float32(0.37) - np.float32(20.0)  # negative values too
    m = measure_objects(img, lab, spacing=spacing, percentiles=Q, radial_shells=0)
    props = [
        "label", "area", "bbox", "centroid", "moments_central", "inertia_tensor_eigvals",
        "axis_major_length", "axis_minor_length", "equivalent_diameter_area", "extent",
        "intensity_mean", "intensity_std", "intensity_min", "intensity_max", "centroid_weighted",
    ]  # fmt: skip
    r = regionprops_table(
        lab,
        intensity_image=np.moveaxis(img, 0, -1),
        spacing=spacing,
        properties=props,
        extra_properties=[_percentiles],
    )
    assert m.ids.tolist() == r["label"].tolist()
    _close(m.volume, r["area"])
    _close(m.equivalent_diameter, r["equivalent_diameter_area"])
    _close(m.extent, r["extent"])
    for i in range(3):
        assert m.bbox_min[:, i].tolist() == r[f"bbox-{i}"].tolist()
        assert m.bbox_max[:, i].tolist() == r[f"bbox-{i + 3}"].tolist()
        _close(m.centroid[:, i], r[f"centroid-{i}"])
        _close(m.inertia_eigvals[:, i], r[f"inertia_tensor_eigvals-{i}"])
    mu_scale = np.abs(m.moments_central[:, :3]).max()
    for col, idx in enumerate(MOMENT_INDEX):
        _close(m.moments_central[:, col], r["moments_central-{}-{}-{}".format(*idx)], scale=mu_scale)
    _close(m.axis_lengths[:, 0], r["axis_major_length"])
    _close(m.axis_lengths[:, 2], r["axis_minor_length"])
    # regionprops sums float32 images in float32; we sum in float64
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    for c in range(img.shape[0]):
        _close(m.intensity_mean[:, c], r[f"intensity_mean-{c}"], rtol=rtol)
        _close(m.intensity_std[:, c], r[f"intensity_std-{c}"], rtol=max(rtol, 1e-8))
        _close(m.intensity_min[:, c], r[f"intensity_min-{c}"])
        _close(m.intensity_max[:, c], r[f"intensity_max-{c}"])
        for i in range(3):
            _close(m.centroid_weighted[:, c, i], r[f"centroid_weighted-{i}-{c}"], rtol=rtol)
        for j in range(len(Q)):
            _close(m.intensity_percentiles[:, c, j], r[f"_percentiles-{j}-{c}"], rtol=1e-12)
        _close(m.intensity_sum[:, c], m.intensity_mean[:, c] * m.voxel_count)


def test_integrated_intensity_and_intermediate_axis(nuclei):
    lab, img = nuclei.labels, nuclei.image
    m = measure_objects(img, lab, spacing=nuclei.spacing, percentiles=(), radial_shells=0)
    sums = np.stack([np.bincount(lab.ravel(), weights=img[c].ravel())[m.ids] for c in range(2)], 1)
    np.testing.assert_array_equal(m.intensity_sum, sums)
    ev = m.inertia_eigvals
    middle = np.sqrt(10 * (ev[:, 0] - ev[:, 1] + ev[:, 2]))
    np.testing.assert_allclose(m.axis_lengths[:, 1], middle)
    assert np.all(m.axis_lengths[:, 0] >= m.axis_lengths[:, 1])
    assert np.all(m.axis_lengths[:, 1] >= m.axis_lengths[:, 2])


@pytest.mark.parametrize("block_shape", [(5, 7, 9), (1, 64, 72), (24, 64, 72), (7, 13, 72), (3, 64, 5)])
def test_blockwise_equals_whole_volume_exactly(nuclei, block_shape):
    """uint16 sums are int64: every field is bit-identical for any block plan."""
    kw = dict(spacing=nuclei.spacing, percentiles=Q, radial_shells=4)
    whole = measure_objects(nuclei.image, nuclei.labels, block_shape=(24, 64, 72), **kw)
    blocks = measure_objects(nuclei.image, nuclei.labels, block_shape=block_shape, workers=2, **kw)
    assert whole.n_objects == nuclei.n_nuclei
    for name, value in _fields(whole).items():
        np.testing.assert_array_equal(getattr(blocks, name), value, err_msg=name)


def test_blockwise_dask_chunks_float_image(nuclei):
    """Float images: equal to rounding; objects cross the chunks of dask inputs."""
    img = nuclei.image.astype(np.float64) * 0.01
    kw = dict(spacing=nuclei.spacing, percentiles=Q, radial_shells=3)
    whole = measure_objects(img, nuclei.labels, block_shape=(24, 64, 72), **kw)
    lazy = measure_objects(
        da.from_array(img, chunks=(2, 8, 16, 24)),
        da.from_array(nuclei.labels, chunks=(8, 16, 24)),
        memory_budget=2**20,
        **kw,
    )
    for name, value in _fields(whole).items():
        np.testing.assert_allclose(getattr(lazy, name), value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_crop_regions_fit_the_budget_and_results_do_not_change(nuclei):
    """Pass 2 plans for block + object extent: every crop region of typical objects fits."""
    from dls_microscopy.features import measure as m
    from dls_microscopy.features.crops import owner_batches

    budget, workers = 2**20, 2
    kw = dict(spacing=nuclei.spacing, percentiles=Q, radial_shells=3)
    whole = measure_objects(nuclei.image, nuclei.labels, block_shape=(24, 64, 72), **kw)
    lazy = measure_objects(
        da.from_array(nuclei.image, chunks=(2, 4, 8, 8)),
        da.from_array(nuclei.labels, chunks=(4, 8, 8)),
        memory_budget=budget,
        workers=workers,
        **kw,
    )
    for name, value in _fields(whole).items():
        np.testing.assert_array_equal(getattr(lazy, name), value, err_msg=name)
    labels = da.from_array(nuclei.labels, chunks=(4, 8, 8))
    image = da.from_array(nuclei.image, chunks=(2, 4, 8, 8))
    first = m._plan(labels, image, block_shape=None, memory_budget=budget, workers=workers)
    bpv = 4 + 2 * 2 + m._WORK_BYTES_PER_VOXEL
    extent = whole.bbox_max - whole.bbox_min
    p99 = np.percentile(extent, 99, axis=0)
    crop = m._crop_plan(labels, image, whole, memory_budget=budget, workers=workers)
    assert np.prod(crop.block_shape) < np.prod(first.block_shape)
    fitting, over = 0, 0
    for b in owner_batches(crop, whole.bbox_min, whole.bbox_max):
        region = np.prod([s.stop - s.start for s in b.region])
        typical = (extent[b.rows] <= p99).all()
        fitting += typical and region * bpv * workers <= budget
        over += typical and region * bpv * workers > budget
    assert fitting and not over
    # the first pass's plan would not have kept them within it
    assert any(
        np.prod([s.stop - s.start for s in b.region]) * bpv * workers > budget
        for b in owner_batches(first, whole.bbox_min, whole.bbox_max)
    )


def test_sparse_large_ids_and_dtypes(nuclei):
    ref = measure_objects(nuclei.image, nuclei.labels, spacing=nuclei.spacing)
    big = np.where(nuclei.labels > 0, nuclei.labels.astype(np.uint64) * 2**40 + 7, 0)
    for lab in (big, nuclei.labels.astype(np.int32)):
        m = measure_objects(nuclei.image, lab, spacing=nuclei.spacing, block_shape=(8, 32, 32))
        expected = np.unique(lab[lab > 0]).astype(np.uint64)
        np.testing.assert_array_equal(m.ids, expected)
        for name, value in _fields(ref).items():
            if name != "ids":
                np.testing.assert_array_equal(getattr(m, name), value, err_msg=name)


def test_radial_shells_match_brute_force(nuclei):
    lab, img, sp = nuclei.labels, nuclei.image, np.asarray(nuclei.spacing)
    shells = 4
    m = measure_objects(img, lab, spacing=sp, percentiles=(), radial_shells=shells)
    for row in (0, 5, len(m.ids) - 1):
        zyx = np.argwhere(lab == m.ids[row])
        d = zyx * sp - m.centroid[row]
        cov = np.cov(d, rowvar=False, bias=True) + np.diag(sp**2 / 12)
        rho = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) / 5)
        shell = np.minimum((rho * shells).astype(int), shells - 1)
        values = img[0][tuple(zyx.T)].astype(float)
        frac = np.bincount(shell, weights=values, minlength=shells) / values.sum()
        vox = np.bincount(shell, minlength=shells) / len(shell)
        np.testing.assert_allclose(m.radial_frac_at_d[row, 0], frac, atol=1e-3)
        np.testing.assert_allclose(m.radial_mean_frac[row, 0], frac / vox, rtol=0.05)
    np.testing.assert_allclose(np.nansum(m.radial_frac_at_d, axis=2), 1.0)


def _radial_reference(img, lab, spacing, shells):
    """Eager radial distribution of every object, with CellProfiler's formulas.

    ``FracAtD = I_shell / I`` and ``MeanFrac = FracAtD / (voxel fraction + eps)``
    (MeasureObjectIntensityDistribution), over the ellipsoidal shells of the
    object's own centroid and covariance (plus a voxel's ``s²/12``).
    """
    sp = np.asarray(spacing, float)
    frac_at_d, mean_frac = [], []
    for obj in np.unique(lab[lab > 0]):
        zyx = np.argwhere(lab == obj)
        d = zyx * sp - (zyx * sp).mean(axis=0)
        cov = d.T @ d / len(d) + np.diag(sp**2 / 12)
        rho = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) / 5)
        shell = np.minimum((rho * shells).astype(int), shells - 1)
        values = img[tuple(zyx.T)].astype(float)
        frac = np.bincount(shell, weights=values, minlength=shells) / values.sum()
        vox = np.bincount(shell, minlength=shells) / len(shell)
        frac_at_d.append(frac)
        mean_frac.append(frac / (vox + np.finfo(float).eps))
    return np.array(frac_at_d), np.array(mean_frac)


@pytest.mark.parametrize("block_shape", [None, (8, 16, 16)])
def test_empty_inner_shells_match_cellprofiler(block_shape):
    """A hollow object has no voxel near its centroid: its inner shells' MeanFrac is 0, not NaN.

    Two of the sample plate's 174 objects had ``MeanFrac_*_1of4`` NaN; a hollow sphere (all
    voxels at ρ ≈ 0.6-0.85) leaves shells 1 and 2 of 4 empty, beside two solid objects.
    """
    zz, yy, xx = np.mgrid[:24, :40, :40]
    lab = np.zeros(zz.shape, np.uint16)
    r = np.sqrt((zz - 11.5) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2)
    lab[(r >= 8) & (r < 10)] = 1  # hollow
    lab[((zz - 12) / 6) ** 2 + ((yy - 30) / 7) ** 2 + ((xx - 30) / 5) ** 2 <= 1] = 2
    lab[2:6, 28:38, 4:9] = 3
    img = np.random.default_rng(4).integers(50, 4000, (2, *lab.shape)).astype(np.uint16)
    shells = 4
    m = measure_objects(img, lab, spacing=(1.0, 1.0, 1.0), radial_shells=shells, block_shape=block_shape)
    for c in range(2):
        frac, mean = _radial_reference(img[c], lab, (1.0, 1.0, 1.0), shells)
        empty = mean == 0
        assert empty[0, :2].all() and not empty[1:].any()  # the case under test, in the reference
        np.testing.assert_allclose(m.radial_frac_at_d[:, c], frac, atol=1e-3)
        np.testing.assert_array_equal(m.radial_mean_frac[:, c][empty], 0.0)
        np.testing.assert_allclose(m.radial_mean_frac[:, c][~empty], mean[~empty], rtol=0.05)
    assert not np.isnan(m.radial_mean_frac).any()


def test_uniform_intensity_gives_mean_frac_one():
    lab = np.zeros((20, 30, 30), np.uint16)
    zz, yy, xx = np.mgrid[:20, :30, :30]
    lab[((zz - 10) / 8) ** 2 + ((yy - 15) / 12) ** 2 + ((xx - 15) / 10) ** 2 <= 1] = 3
    img = np.full(lab.shape, 100, np.uint8)
    m = measure_objects(img, lab, spacing=(1, 1, 1), radial_shells=3)
    np.testing.assert_allclose(m.radial_mean_frac[0, 0], 1.0)
    # a solid ellipsoid's shells hold ~ (i+1)^3 - i^3 / n^3 of its voxels
    np.testing.assert_allclose(m.radial_frac_at_d[0, 0], np.diff(np.arange(4) ** 3) / 27, atol=0.06)
    assert m.intensity_percentiles[0, 0].tolist() == [100.0, 100.0, 100.0]


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).integers(0, 200, 5000).astype(np.uint8),  # histogram path
        np.random.default_rng(1).integers(-(2**30), 2**30, 5000).astype(np.int32),  # sort path
        np.random.default_rng(2).normal(size=5000).astype(np.float32),
    ],
)
def test_object_percentiles_equal_numpy(values):
    sizes = np.array([1, 2, 3, 10, 984, 4000])
    offsets = np.r_[0, np.cumsum(sizes)]
    obj = np.repeat(np.arange(len(sizes)), sizes)
    q = (0, 5, 25, 33.3, 50, 75, 99, 100)
    got = _object_percentiles(values, obj, offsets, q)
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        # computed in float64 (numpy keeps float32 for float32 input)
        np.testing.assert_array_equal(got[i], np.percentile(values[a:b].astype(np.float64), q))


def test_morphology_only_and_single_voxel_objects():
    lab = np.zeros((3, 4, 5), np.uint8)
    lab[0, 0, 0] = 1
    lab[2, 1:3, 2:5] = 2
    m = measure_objects(None, lab, spacing=(2.0, 1.0, 0.5))
    assert m.ids.tolist() == [1, 2]
    assert m.volume.tolist() == [1.0, 6.0]
    assert m.centroid[0].tolist() == [0.0, 0.0, 0.0]
    assert m.axis_lengths[0].tolist() == [0.0, 0.0, 0.0]
    assert m.intensity_mean.shape == (2, 0)
    img = np.arange(lab.size, dtype=np.uint16).reshape(lab.shape)
    m1 = measure_objects(img + 1, lab, spacing=(2.0, 1.0, 0.5), radial_shells=2)
    assert m1.intensity_percentiles[0, 0].tolist() == [1.0, 1.0, 1.0]
    assert m1.radial_frac_at_d[0, 0].tolist() == [1.0, 0.0]
    assert m1.radial_mean_frac[0, 0].tolist() == [1.0, 0.0]  # an empty shell: 0, as CellProfiler
    m0 = measure_objects(img, lab, spacing=(2.0, 1.0, 0.5), radial_shells=2)
    assert np.isnan(m0.radial_frac_at_d[0, 0]).all()  # no intensity at all: 0/0
    assert np.isnan(m0.radial_mean_frac[0, 0]).all()
    assert np.isnan(m0.centroid_weighted[0, 0]).all()


def test_empty_labels_give_empty_result_with_warning(nuclei):
    with pytest.warns(NoObjectsWarning):
        m = measure_objects(nuclei.image, np.zeros(nuclei.labels.shape, np.uint32), spacing=(1, 1, 1))
    assert m.n_objects == 0
    assert m.intensity_percentiles.shape == (0, 2, 3)
    assert m.radial_frac_at_d.shape == (0, 2, 4)


def test_bad_inputs(nuclei):
    img, lab = nuclei.image, nuclei.labels
    with pytest.raises(InputError, match="differ in shape"):
        measure_objects(img, lab[:, :-1], spacing=(1, 1, 1))
    with pytest.raises(UnsupportedDtypeError, match="integer"):
        measure_objects(img, lab.astype(np.float32), spacing=(1, 1, 1))
    with pytest.raises(DimensionalityError):
        measure_objects(img[:, 0], lab[0], spacing=(1, 1))
    with pytest.raises(InputError, match="negative"):
        measure_objects(img, lab.astype(np.int32) - 1, spacing=(1, 1, 1))
    with pytest.raises(InputError, match="spacing"):
        measure_objects(img, lab, spacing=(1, 0, 1))
    with pytest.raises(InputError, match="percentiles"):
        measure_objects(img, lab, spacing=(1, 1, 1), percentiles=(50, 101))
    with pytest.raises(InputError, match="channel name"):
        measure_objects(img, lab, spacing=(1, 1, 1), channel_names=["a"])
    bad = img.astype(np.float32)
    bad[0][lab == lab.max()] = np.nan
    with pytest.raises(InputError, match="NaN"):
        measure_objects(bad, lab, spacing=(1, 1, 1))
    outside = img.astype(np.float32)
    outside[0][lab == 0] = np.nan  # NaN in the background does not matter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert measure_objects(outside, lab, spacing=(1, 1, 1)).n_objects == nuclei.n_nuclei
