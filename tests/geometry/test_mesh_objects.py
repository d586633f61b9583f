"""mesh_objects: closed, outward meshes in µm, independent of the block plan, streaming."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest
import trimesh

from dls_microscopy.errors import InputError
from dls_microscopy.geometry import build_object_index, mesh_objects
from dls_microscopy.geometry.batch import MeshBatch


def _blobs(shape=(30, 48, 40), n=40, seed=0, dtype=np.uint32):
    """Touching ellipsoids (later ones overwrite earlier ones), some cut by the border."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    for i in range(1, n + 1):
        c = rng.uniform(0, shape)
        r = rng.uniform(1.5, 6, 3)
        lab[np.sum(((grid - c) / r) ** 2, axis=-1) <= 1] = i
    return lab


def _by_id(meshes):
    return {m.id: m for m in meshes}


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.25)])
def test_every_mesh_is_watertight_outward_and_in_micrometres(spacing):
    lab = _blobs()
    meshes = list(mesh_objects(lab, spacing=spacing))
    present = set(np.unique(lab)) - {0}
    assert {m.id for m in meshes} == present
    for m in meshes:
        assert m.watertight and m.volume_um3 > 0
        assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int32
        tm = m.to_trimesh()
        assert tm.is_watertight and tm.is_winding_consistent
        assert tm.volume == pytest.approx(m.volume_um3, rel=1e-9)
        assert tm.area == pytest.approx(m.surface_area_um2, rel=1e-6)  # float32 arithmetic
        assert not (tm.area_faces <= 0).any()
        # the surface lies half a voxel outside the voxel centres of the bounding box
        lo = np.array([s.start for s in m.bbox]) - 0.5
        hi = np.array([s.stop for s in m.bbox]) - 0.5
        np.testing.assert_allclose(m.vertices.min(axis=0), lo * spacing)
        np.testing.assert_allclose(m.vertices.max(axis=0), hi * spacing)
        assert np.count_nonzero(lab == m.id) * np.prod(spacing) == pytest.approx(
            m.volume_um3, rel=0.5, abs=np.prod(spacing)
        )


@pytest.mark.parametrize("block_shape", [(8, 12, 8), (10, 48, 40)])
@pytest.mark.parametrize("options", [{}, {"smooth": 5}, {"smooth": 3, "decimate": 0.5}])
def test_meshes_do_not_depend_on_the_block_plan(block_shape, options):
    lab = _blobs(seed=2)
    spacing = (1.5, 0.5, 0.5)
    whole = _by_id(mesh_objects(lab, spacing=spacing, block_shape=lab.shape, **options))
    blocks = _by_id(
        mesh_objects(da.from_array(lab, chunks=4), spacing=spacing, block_shape=block_shape, **options)
    )
    assert whole.keys() == blocks.keys()
    cut = 0
    for i, a in whole.items():
        b = blocks[i]
        cut += any(s.start // bs != (s.stop - 1) // bs for s, bs in zip(a.bbox, block_shape, strict=True))
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
        assert (a.volume_um3, a.surface_area_um2, a.watertight) == (
            b.volume_um3,
            b.surface_area_um2,
            b.watertight,
        )
    assert cut >= 5  # the plan really cuts objects


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.uint64, bool])
def test_edge_cases_dtypes_single_voxels_gaps_and_border(dtype):
    lab = np.zeros((6, 7, 8), dtype)
    big = 1 if dtype is bool else (2**64 - 2 if dtype is np.uint64 else 100)
    lab[0, 0, 0] = big  # single voxel in a corner of the volume
    if dtype is not bool:
        lab[2:6, 3:7, 4:8] = 3  # touches three faces of the volume
        lab[3, 1, 1] = 57  # another single voxel, ids with gaps
    meshes = _by_id(mesh_objects(lab, spacing=(2.0, 1.0, 0.5), block_shape=(4, 4, 4)))
    single = meshes[int(big)]
    assert single.n_faces == 8 and single.watertight  # an octahedron
    assert single.volume_um3 == pytest.approx(1 / 6 * 2.0 * 1.0 * 0.5 * 8 / 8)
    if dtype is not bool:
        assert set(meshes) == {int(big), 3, 57}
        assert meshes[3].watertight and meshes[3].volume_um3 > 0


def test_empty_labels_yield_nothing():
    assert list(mesh_objects(np.zeros((5, 5, 5), np.uint16), spacing=(1, 1, 1))) == []


def test_bad_options_raise_input_errors():
    lab = np.ones((3, 3, 3), np.uint8)
    for kwargs in ({"smooth": -1}, {"decimate": 0}, {"decimate": 1.5}, {"max_faces": 2}, {"max_error_um": 0}):
        with pytest.raises(InputError):
            next(mesh_objects(lab, spacing=(1, 1, 1), **kwargs))
    index = build_object_index(lab, spacing=(1, 1, 1))
    with pytest.raises(InputError, match="does not match"):
        next(mesh_objects(np.ones((4, 3, 3), np.uint8), spacing=(1, 1, 1), index=index))


@pytest.mark.parametrize("kwargs", [{"decimate": 0.25}, {"max_faces": 200}, {"max_error_um": 0.3}])
def test_decimation_reduces_faces_and_keeps_meshes_closed(kwargs):
    lab = _blobs(shape=(24, 40, 40), n=8, seed=5)
    full = _by_id(mesh_objects(lab, spacing=(1, 0.5, 0.5), smooth=10))
    small = _by_id(mesh_objects(lab, spacing=(1, 0.5, 0.5), smooth=10, **kwargs))
    for i, m in small.items():
        assert m.watertight and m.volume_um3 > 0
        if full[i].n_faces > 1000:
            assert m.n_faces < 0.6 * full[i].n_faces
            assert m.volume_um3 == pytest.approx(full[i].volume_um3, rel=0.05)
        if "max_faces" in kwargs:
            assert (
                m.n_faces
                <= max(kwargs["max_faces"], full[i].n_faces if full[i].n_faces <= kwargs["max_faces"] else 0)
                + 2
            )


def test_progress_reports_index_and_meshes():
    calls = []
    lab = _blobs(n=5)
    n = len(
        list(
            mesh_objects(
                lab, spacing=(1, 1, 1), block_shape=(16, 16, 16), progress=lambda *a: calls.append(a)
            )
        )
    )
    assert ("index", 0, 18) in calls and ("index", 18, 18) in calls
    assert ("meshes", n, n) in calls


def test_batch_watertight_check_flags_open_and_flipped_meshes():
    tm = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(tm.vertices), np.asarray(tm.faces, np.int32)
    flipped = f.copy()
    flipped[0] = flipped[0, ::-1]
    batch = MeshBatch.from_meshes(
        np.array([1, 2, 3], np.uint64), np.zeros((3, 3), int), np.ones(3), [v, v, v], [f, f[1:], flipped]
    )
    for exact in (False, True):
        assert batch.measure(exact=exact, orient=False).watertight.tolist() == [True, False, False]
    # inward faces are flipped to outward
    inward = MeshBatch.from_meshes(
        np.array([1], np.uint64), np.zeros((1, 3), int), (2.0, 1.0, 0.5), [v], [f[:, ::-1].copy()]
    )
    m = inward.measure()
    assert m.volume[0] == pytest.approx(tm.volume, rel=1e-6)
    assert m.area[0] == pytest.approx(tm.copy().apply_scale([2.0, 1.0, 0.5]).area, rel=1e-6)
    assert inward.measure().volume[0] > 0


def test_memory_stays_bounded_on_a_volume_larger_than_the_budget():
    shape, chunk = (128, 512, 512), (32, 128, 128)  # 128 MiB of uint32 labels

    def make(block, block_info=None):
        loc = block_info[0]["array-location"]
        z, y, x = (np.arange(a, b, dtype=np.int32) for a, b in loc)
        cell = ((z // 16) * 10_000)[:, None, None] + ((y // 32) * 100)[:, None] + (x // 32) + 1
        d = (
            (((z % 16) - 8.0) ** 2 / 36)[:, None, None].astype(np.float32)
            + (((y % 32) - 16.0) ** 2 / 144)[:, None].astype(np.float32)
            + (((x % 32) - 8.0) ** 2 / 49).astype(np.float32)
        )
        cell[d >= 1] = 0  # ellipsoids in a lattice, some cut by chunk boundaries
        return cell.astype(np.uint32)

    lab = da.zeros(shape, np.uint32, chunks=chunk).map_blocks(make, dtype=np.uint32)
    next(mesh_objects(np.ones((2, 2, 2), np.uint8), spacing=(1, 1, 1)))  # imports outside the trace
    tracemalloc.start()
    try:
        n = sum(1 for _ in mesh_objects(lab, spacing=(1, 1, 1), memory_budget=24 * 2**20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 8 * 16 * 16
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 128 MiB volume"


def test_measure_false_gives_the_same_triangles_without_measures():
    lab = _blobs(n=6, seed=4)
    full = _by_id(mesh_objects(lab, spacing=(1, 0.5, 0.5)))
    fast = _by_id(mesh_objects(lab, spacing=(1, 0.5, 0.5), measure=False))
    for i, m in fast.items():
        np.testing.assert_array_equal(m.vertices, full[i].vertices)
        np.testing.assert_array_equal(m.faces, full[i].faces)
        assert m.watertight is None and np.isnan(m.volume_um3)
