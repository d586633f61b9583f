"""Object crops and surface point clouds: the encoders' inputs."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from dls_microscopy.features.embeddings import (
    CropSpec,
    canonical_frame,
    iter_object_crops,
    iter_object_points,
    sample_surface,
)


def _ellipsoid(shape, spacing, centre_um, semi_um):
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)), indexing="ij")
    r = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre_um, semi_um, strict=True))
    return r < 1


def test_crops_are_isotropic_in_um_masked_and_normalised():
    spacing = (1.0, 0.25, 0.25)
    shape = (20, 80, 80)
    lab = np.zeros(shape, np.uint16)
    lab[_ellipsoid(shape, spacing, (10, 10, 10), (3, 3, 3))] = 1
    lab[_ellipsoid(shape, spacing, (10, 10, 17), (2, 2, 2))] = 2  # a neighbour inside the view
    img = np.where(lab > 0, 1000, 100).astype(np.uint16)[None]
    spec = CropSpec(size=16, fov_um=12.0)
    ((ids, crops),) = list(iter_object_crops(img, lab, spacing=spacing, spec=spec))
    assert list(ids) == [1, 2] and crops.shape == (2, 1, 16, 16, 16) and crops.dtype == np.float32
    inside = crops[0, 0] > 0.5
    voxel = 12 / 16
    for axis in range(3):  # extents in µm agree with the labels' (anisotropic) extents
        others = tuple(j for j in range(3) if j != axis)
        crop_um = (np.ptp(np.flatnonzero(inside.any(axis=others))) + 1) * voxel
        label_um = (np.ptp(np.flatnonzero((lab == 1).any(axis=others))) + 1) * spacing[axis]
        assert abs(crop_um - label_um) <= voxel, axis
    assert abs(inside.sum() * (12 / 16) ** 3 - 4 / 3 * np.pi * 27) < 0.2 * 4 / 3 * np.pi * 27
    assert crops[0, 0, 8, 8, 15] == 0  # the neighbour is masked out
    assert 0.9 < crops[0, 0].max() <= 1.01


def test_mask_channel_is_the_objects_own_mask_whatever_its_brightness():
    spacing = (1.0, 0.25, 0.25)
    shape = (20, 80, 80)
    lab = np.zeros(shape, np.uint16)
    lab[_ellipsoid(shape, spacing, (10, 10, 10), (3, 3, 3))] = 1
    lab[_ellipsoid(shape, spacing, (10, 10, 17), (2, 2, 2))] = 2
    img = np.where(lab == 1, 1000, np.where(lab == 2, 300, 100)).astype(np.uint16)[None]
    plain = CropSpec(size=16, fov_um=12.0)
    with_mask = CropSpec(size=16, fov_um=12.0, mask_channel=True)
    ((_, a),) = list(iter_object_crops(img, lab, spacing=spacing, spec=plain))
    ((ids, b),) = list(iter_object_crops(img, lab, spacing=spacing, spec=with_mask))
    assert list(ids) == [1, 2] and b.shape == (2, 2, 16, 16, 16)
    assert np.array_equal(a, b[:, :1])  # the intensity channel is unchanged
    assert set(np.unique(b[:, 1])) == {0.0, 1.0}
    for k in range(2):  # the mask is where the masked intensity is, for a bright and a dim object
        assert np.array_equal(b[k, 1] > 0, b[k, 0] != 0)
    # equal shapes give equal masks whatever the brightness: a dim copy of object 1 has its mask
    dim = np.where(lab == 1, 300, np.where(lab == 2, 1000, 100)).astype(np.uint16)[None]
    ((_, c),) = list(iter_object_crops(dim, lab, spacing=spacing, spec=with_mask))
    assert np.array_equal(c[0, 1], b[0, 1]) and not np.array_equal(c[0, 0], b[0, 0])


def _rotated_ellipsoid(shape, spacing, centre_um, semi_um, rot):
    axes = (np.arange(n) * s for n, s in zip(shape, spacing, strict=True))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    local = np.einsum("ji,j...->i...", rot, grid - np.asarray(centre_um)[:, None, None, None])
    return sum((local[i] / semi_um[i]) ** 2 for i in range(3)) < 1


def test_principal_frame_crops_remove_pose_and_keep_size():
    spacing = (0.6, 0.25, 0.25)
    shape = (40, 96, 96)
    semi = (5.0, 3.0, 2.0)  # µm
    masks = []
    for seed in (0, 1, 2):
        rot = Rotation.random(random_state=seed).as_matrix()
        lab = np.zeros(shape, np.uint16)
        lab[_rotated_ellipsoid(shape, spacing, (12, 12, 12), semi, rot)] = 7
        lab[_rotated_ellipsoid(shape, spacing, (12, 12, 20.5), (2, 2, 2), np.eye(3))] = 9  # a neighbour
        img = np.where(lab > 0, 1000, 100).astype(np.uint16)[None]
        for masked in (True, False):
            spec = CropSpec(size=24, fov_um=14.0, mask=masked, mask_channel=True, frame="principal")
            ((_, crops),) = list(iter_object_crops(img, lab, spacing=spacing, spec=spec))
            inside = crops[0, 1] > 0
            if masked:
                masks.append(inside)
                assert crops[0, 0][~inside].max() == 0  # nothing of the neighbour
            else:
                assert crops[0, 0][~inside].max() > 0  # the background is seen
        voxel = 14.0 / 24
        extents = [(np.ptp(np.flatnonzero(inside.any(axis=tuple(j for j in range(3) if j != a)))) + 1) * voxel
                   for a in range(3)]  # fmt: skip
        np.testing.assert_allclose(extents, 2 * np.asarray(semi), atol=2 * voxel)  # long axis first, in µm
    for m in masks[1:]:  # three poses, one crop (up to the sign of each axis and resampling)
        best = max(
            (m[::sx, ::sy, ::sz] & masks[0]).sum() / (m[::sx, ::sy, ::sz] | masks[0]).sum()
            for sx in (1, -1) for sy in (1, -1) for sz in (1, -1)
        )  # fmt: skip
        assert best > 0.85


def test_surface_samples_are_area_weighted_and_seeded():
    import trimesh

    box = trimesh.creation.box(extents=(4.0, 1.0, 1.0))  # the long faces hold 16 of 18 area units
    a = sample_surface(box.vertices, box.faces, 4000, np.random.default_rng(0))
    b = sample_surface(box.vertices, box.faces, 4000, np.random.default_rng(0))
    assert np.array_equal(a, b)
    on_ends = np.isclose(np.abs(a[:, 0]), 2.0).mean()
    assert abs(on_ends - 2 / 18) < 0.02


def test_canonical_frame_removes_pose():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((500, 3)) * [3.0, 2.0, 1.0]
    p[:, 0] += 0.5 * p[:, 0] ** 2 / 3  # skewed, so the signs are defined
    p[:, 1] += 0.3 * p[:, 1] ** 2 / 2
    p[:, 2] += 0.2 * p[:, 2] ** 2
    rot = Rotation.random(random_state=2).as_matrix()
    a = canonical_frame(p)
    b = canonical_frame(p @ rot.T + [5.0, -3.0, 1.0])
    np.testing.assert_allclose(a, b, atol=1e-8)
    assert np.all(np.diff(a.var(axis=0)) < 0)


def test_point_clouds_keep_size_and_do_not_depend_on_neighbours():
    spacing = (0.5, 0.25, 0.25)
    shape = (24, 64, 64)
    small = _ellipsoid(shape, spacing, (6, 4, 4), (2, 2, 2))
    big = _ellipsoid(shape, spacing, (6, 10, 10), (4, 4, 4))
    lab = np.zeros(shape, np.uint16)
    lab[small], lab[big] = 1, 2
    alone = np.where(small, 1, 0).astype(np.uint16)
    opts = {"spacing": spacing, "n_points": 64, "seed": 3, "scale_um": 1.0}
    both = {int(i): p for ids, pts in iter_object_points(lab, **opts) for i, p in zip(ids, pts, strict=True)}
    ((_, pts),) = list(iter_object_points(alone, **opts))
    np.testing.assert_array_equal(pts[0], both[1])
    r1 = np.linalg.norm(both[1], axis=1).mean()
    r2 = np.linalg.norm(both[2], axis=1).mean()
    assert abs(r1 - 2.0) < 0.3 and abs(r2 - 4.0) < 0.4
