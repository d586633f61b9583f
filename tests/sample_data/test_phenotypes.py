"""The synthetic phenotype set: seeded, and each treatment changes nuclei the way it says."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dls_microscopy.errors import InputError
from dls_microscopy.features import measure_objects
from dls_microscopy.sample_data.phenotypes import TREATMENTS, make_phenotype_well, write_phenotype_plate

SMALL = {"shape": (32, 96, 96), "n_nuclei": 7}


@pytest.fixture(scope="module")
def measured():
    """One default-sized well (12 nuclei) of every treatment, with its measurements."""
    out = {}
    for name in TREATMENTS:
        w = make_phenotype_well(name, seed=11, n_nuclei=12)
        out[name] = w, measure_objects(w.image, w.labels, spacing=w.spacing, percentiles=(), radial_shells=0)
    return out


def test_same_seed_same_well_other_seed_differs():
    a = make_phenotype_well("lobed", seed=1, **SMALL)
    b = make_phenotype_well("lobed", seed=1, **SMALL)
    c = make_phenotype_well("lobed", seed=2, **SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert a.image.dtype == np.uint16 and a.image.shape == (1, *SMALL["shape"])


def test_treatments_change_size_and_shape_as_stated(measured):
    control, enlarged, elongated = (measured[t][1] for t in ("control", "enlarged", "elongated"))
    assert np.median(enlarged.volume) > 1.5 * np.median(control.volume)
    ratio = lambda m: np.median(m.axis_lengths[:, 0] / m.axis_lengths[:, 2])  # noqa: E731
    assert ratio(elongated) > 1.5 * ratio(control)
    assert np.median(elongated.volume) == pytest.approx(np.median(control.volume), rel=0.25)


def test_granules_keep_the_mean_but_coarsen_the_texture(measured):
    control, granular = measured["control"][1], measured["granular"][1]
    mean_c, mean_g = np.median(control.intensity_mean[:, 0]), np.median(granular.intensity_mean[:, 0])
    assert mean_g == pytest.approx(mean_c, rel=0.15)
    cv = lambda m: np.median(m.intensity_std[:, 0] / m.intensity_mean[:, 0])  # noqa: E731
    assert cv(granular) > 1.3 * cv(control)


def test_nuclei_are_separate_and_inside_the_volume(measured):
    w = measured["lobed"][0]
    assert 10 <= w.n_nuclei <= 12
    lab = w.labels
    for face in (lab[0], lab[-1], lab[:, 0], lab[:, -1], lab[:, :, 0], lab[:, :, -1]):
        assert not face.any()
    assert set(np.unique(lab)) == set(range(w.n_nuclei + 1))


def test_write_plate_layout(tmp_path):
    from dls_microscopy.io import open_labels

    layout = write_phenotype_plate(tmp_path, plate="Q", replicates=2, treatments=["control"], **SMALL)
    assert sorted(layout) == ["A01", "B01"]
    assert json.loads((tmp_path / "layout.json").read_text()) == layout
    lab = open_labels(tmp_path / layout["A01"]["path"], "nuclei")
    assert lab.spacing == pytest.approx((0.6, 0.25, 0.25))
    with pytest.raises(InputError, match="unknown treatment"):
        make_phenotype_well("sparkly")
    assert next(iter(TREATMENTS)) == "control"


def test_strength_scales_the_change_from_control():
    half = TREATMENTS["elongated"].at_strength(0.5)
    assert half.aspect == pytest.approx((1.45, 1.9))
    assert TREATMENTS["granular"].at_strength(0.5).granule_fraction == pytest.approx(0.165)
    assert TREATMENTS["enlarged"].at_strength(0.5).diameter_um == pytest.approx(7.8)
    # strength 0 is the control well of the same seed and index, voxel for voxel
    zero = make_phenotype_well("lobed", seed=4, well_index=2, strength=0, **SMALL)
    control = make_phenotype_well("control", seed=4, well_index=2, **SMALL)
    assert np.array_equal(zero.image, control.image) and np.array_equal(zero.labels, control.labels)
    assert zero.treatment == "lobed"
    with pytest.raises(InputError, match="strength"):
        TREATMENTS["lobed"].at_strength(4.0)  # lobes of amplitude 1.12
    with pytest.raises(InputError, match="strength"):
        TREATMENTS["enlarged"].at_strength(-0.5)


def test_half_strength_gives_half_the_size_change():
    # same seed and index: nucleus 1 gets the same random draws in the three wells
    diam = {}
    for name, strength in (("control", 1.0), ("enlarged", 0.5), ("enlarged", 1.0)):
        w = make_phenotype_well(name, seed=11, strength=strength, **SMALL)
        diam[name, strength] = np.cbrt(6 / np.pi * np.count_nonzero(w.labels == 1) * np.prod(w.spacing))
    ctrl, half, full = diam["control", 1.0], diam["enlarged", 0.5], diam["enlarged", 1.0]
    assert full > 1.15 * ctrl
    assert (half - ctrl) / (full - ctrl) == pytest.approx(0.5, abs=0.08)
