"""Shape descriptors: known values on analytic shapes, invariance, ShapeDNA discrimination.

Shapes are voxelised at spacing (1.0, 0.5, 0.5) µm and meshed with 30 Taubin iterations.
Tolerances for "the same shape voxelised after a rotation / sub-voxel translation"
(different voxelisations, so not bit-equal): volume and axis lengths 1 %, area 2 %,
sphericity 0.02, spherical-harmonics powers 0.02 absolute, ShapeDNA 3 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_shapes import ellipsoid, sphere, torus, voxelise
from scipy.spatial.transform import Rotation

from dls_microscopy.geometry import descriptor_units, mesh_objects, shape_descriptors
from dls_microscopy.geometry.descriptors import curvature_statistics, solid_moments
from dls_microscopy.geometry.spectral import shapedna

SPACING = (1.0, 0.5, 0.5)


def _describe(shape, *, rotation=None, offset=(0.0, 0.0, 0.0), smooth=30):
    lab = voxelise(shape, SPACING, rotation=rotation, offset=offset)
    (mesh,) = mesh_objects(lab, spacing=SPACING, smooth=smooth)
    return mesh, shape_descriptors(mesh)


@pytest.fixture(scope="module")
def ellipsoid_pair():
    shape = ellipsoid(10.0, 7.0, 5.0)
    _, a = _describe(shape, offset=(0.2, 0.1, -0.15))
    _, b = _describe(shape, rotation=Rotation.from_euler("zyx", [0.4, 1.1, -0.7]), offset=(-0.3, 0.05, 0.2))
    return a, b


def test_columns_have_units():
    _, d = _describe(sphere(6.0), smooth=10)
    units = descriptor_units()
    assert list(d) == list(units)
    for name, unit in units.items():
        if name.endswith("_per_um2"):
            assert unit == "1/um^2"
        elif name.endswith("_per_um"):
            assert unit == "1/um"
        elif name.endswith("_um3"):
            assert unit == "um^3"
        elif name.endswith("_um2"):
            assert unit == "um^2"
        elif name.endswith("_um"):
            assert unit == "um"


def test_sphere_values():
    r = 9.0
    _, d = _describe(sphere(r))
    assert d["sphericity"] == pytest.approx(1.0, abs=0.02)
    assert d["equivalent_diameter_um"] == pytest.approx(2 * r, rel=0.01)
    for axis in ("major", "intermediate", "minor"):
        assert d[f"{axis}_axis_length_um"] == pytest.approx(2 * r, rel=0.01)
    assert d["elongation"] == pytest.approx(1, abs=0.01)
    assert d["flatness"] == pytest.approx(1, abs=0.01)
    assert d["solidity"] == pytest.approx(1, abs=0.02)
    assert d["mean_curvature_mean_per_um"] == pytest.approx(1 / r, rel=0.05)
    assert d["gaussian_curvature_mean_per_um2"] == pytest.approx(1 / r**2, rel=0.05)
    assert d["integrated_gaussian_curvature"] == pytest.approx(2.0)
    assert d["sh_star_like"]
    assert d["sh_mean_radius_um"] == pytest.approx(r, rel=0.01)
    assert all(d[f"sh_power_l{i}"] < 0.01 for i in range(1, 9))
    # ShapeDNA of a sphere (unit area): 4π l(l+1) with multiplicity 2l + 1
    expected = [4 * math.pi * 2] * 3 + [4 * math.pi * 6] * 5 + [4 * math.pi * 12] * 2
    got = [d[f"shapedna_{i}"] for i in range(1, 11)]
    np.testing.assert_allclose(got, expected, rtol=0.05)


def test_ellipsoid_axes_and_form():
    _, d = _describe(ellipsoid(12.0, 9.0, 6.0))
    assert d["major_axis_length_um"] == pytest.approx(24.0, rel=0.01)
    assert d["intermediate_axis_length_um"] == pytest.approx(18.0, rel=0.01)
    assert d["minor_axis_length_um"] == pytest.approx(12.0, rel=0.01)
    assert d["elongation"] == pytest.approx(0.75, abs=0.01)
    assert d["flatness"] == pytest.approx(2 / 3, abs=0.01)
    assert d["sh_power_l2"] > 0.1  # an ellipsoid is mostly degree 2
    assert d["sh_power_l2"] > 3 * d["sh_power_l3"]


def test_descriptors_invariant_under_rotation_and_translation(ellipsoid_pair):
    a, b = ellipsoid_pair
    for key in (
        "volume_um3",
        "major_axis_length_um",
        "intermediate_axis_length_um",
        "minor_axis_length_um",
        "convex_hull_volume_um3",
        "equivalent_diameter_um",
    ):
        assert a[key] == pytest.approx(b[key], rel=0.01), key
    assert a["surface_area_um2"] == pytest.approx(b["surface_area_um2"], rel=0.02)
    for key in ("sphericity", "elongation", "flatness", "solidity"):
        assert a[key] == pytest.approx(b[key], abs=0.02), key
    for i in range(1, 9):
        assert a[f"sh_power_l{i}"] == pytest.approx(b[f"sh_power_l{i}"], abs=0.02), i
    for i in range(1, 11):
        assert a[f"shapedna_{i}"] == pytest.approx(b[f"shapedna_{i}"], rel=0.03), i


def test_exact_copies_have_equal_descriptors():
    lab = voxelise(ellipsoid(8.0, 6.0, 4.0), SPACING, margin=1)
    big = np.zeros((lab.shape[0] + 5, 2 * lab.shape[1] + 7, lab.shape[2] + 3), np.uint16)
    big[: lab.shape[0], : lab.shape[1], : lab.shape[2]] = lab
    big[5:, 7 + lab.shape[1] :, 3:] = lab * 2  # a translated copy, another id
    a, b = (shape_descriptors(m) for m in mesh_objects(big, spacing=SPACING, smooth=20))
    assert a["object_id"] != b["object_id"]
    skip = {"object_id", "centroid_z_um", "centroid_y_um", "centroid_x_um"}
    for key in a:
        if key not in skip:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key


def test_shapedna_separates_different_shapes_and_is_scale_free(ellipsoid_pair):
    a, b = ellipsoid_pair
    _, s = _describe(sphere(7.5))
    dna = [np.array([d[f"shapedna_{i}"] for i in range(1, 11)]) for d in (a, b, s)]
    same = np.abs(dna[0] - dna[1]).max() / dna[0].max()
    different = np.abs(dna[0] - dna[2]).max() / dna[0].max()
    assert different > 5 * same
    v = np.random.default_rng(0).normal(size=(200, 3))
    from scipy.spatial import ConvexHull

    hull = ConvexHull(v)
    small = shapedna(v, hull.simplices, k=5)
    large = shapedna(3.0 * v + 11.0, hull.simplices, k=5)
    for key in small:
        assert small[key] == pytest.approx(large[key], rel=1e-6)


def test_torus_is_not_star_like_and_has_euler_characteristic_zero():
    _, d = _describe(torus(8.0, 3.5), smooth=20)
    assert not d["sh_star_like"]
    assert d["sh_back_facing_fraction"] > 0.1
    assert d["integrated_gaussian_curvature"] == pytest.approx(0.0, abs=1e-9)
    assert d["solidity"] < 0.8


def test_tiny_meshes_give_nan_not_errors():
    lab = np.zeros((3, 3, 3), np.uint8)
    lab[1, 1, 1] = 4
    (m,) = mesh_objects(lab, spacing=(1.0, 1.0, 1.0))
    d = shape_descriptors(m)
    assert d["object_id"] == 4 and d["volume_um3"] > 0
    assert math.isnan(d["shapedna_1"]) and math.isnan(d["sh_power_l8"])
    assert np.isfinite(solid_moments(m.vertices, m.faces.astype(np.int64))[1]).all()
    assert curvature_statistics(m.vertices, m.faces)["integrated_gaussian_curvature"] == pytest.approx(2.0)
