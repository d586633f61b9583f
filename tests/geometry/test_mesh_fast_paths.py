"""The fast paths of meshing equal their plain counterparts.

zmesh's compiled ``get_mesh`` (half-voxel vertices), blocks read straight into a
zero-padded buffer, the chunked per-face measures and the cached vertex hashes.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import trimesh
import zmesh

from dls_microscopy.errors import InputError
from dls_microscopy.geometry import batch as batch_module
from dls_microscopy.geometry.batch import MeshBatch, _splitmix64, _vertex_hashes
from dls_microscopy.geometry.index import as_label_source
from dls_microscopy.geometry.mesh import _half_voxel_getter


def _labels(shape=(14, 18, 16), n=12, seed=0, dtype=np.uint32):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype)
    for i in range(1, n + 1):
        lo = rng.integers(0, np.array(shape) - 2)
        size = rng.integers(1, 7, 3)
        lab[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = i
    return lab


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_compiled_getter_equals_public_get(dtype):
    lab = _labels(dtype=dtype)
    mesher = zmesh.Mesher((1.0, 1.0, 1.0))
    mesher.mesh(lab, close=True)
    get = _half_voxel_getter(mesher)
    ids = mesher.ids()
    assert len(ids) >= 8
    for i in ids:
        public = mesher.get(i, normals=False)
        vertices, faces = get(int(i))
        assert vertices.dtype == np.float32 and vertices.shape[1] == 3
        np.testing.assert_array_equal(vertices * np.float32(0.5), public.vertices)
        np.testing.assert_array_equal(faces, public.faces)


@pytest.mark.parametrize("kind", ["numpy", "dask", "bool", "int16"])
def test_read_padded_is_the_block_with_a_zero_border(kind):
    lab = _labels(shape=(9, 11, 10), n=6, seed=1)
    if kind == "bool":
        lab = lab > 0
    elif kind == "int16":
        lab = lab.astype(np.int16)
    data = da.from_array(lab, chunks=(4, 5, 5)) if kind == "dask" else lab
    source = as_label_source(data, spacing=(1, 1, 1))
    region = (slice(2, 8), slice(1, 11), slice(3, 7))
    padded = source.read_padded(region)
    plain = source.read(region)
    assert padded.flags.c_contiguous and padded.dtype == plain.dtype and padded.dtype.kind == "u"
    np.testing.assert_array_equal(padded, np.pad(plain, 1))
    view = source.read(region, contiguous=False)
    np.testing.assert_array_equal(view, plain)


def test_read_padded_rejects_negative_labels():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[1, 1, 1] = -3
    source = as_label_source(lab, spacing=(1, 1, 1))
    with pytest.raises(InputError, match="negative"):
        source.read_padded((slice(0, 4),) * 3)


def test_measures_do_not_depend_on_the_face_chunks(monkeypatch):
    """Objects split across many face chunks get the same measures as trimesh gives."""
    meshes = [
        trimesh.creation.icosphere(subdivisions=2),
        trimesh.creation.box(extents=(2.0, 3.0, 1.0)),
        trimesh.creation.annulus(r_min=1.0, r_max=2.0, height=1.0),
    ]
    open_box = trimesh.creation.box()
    verts = [np.asarray(m.vertices, np.float32) for m in meshes] + [np.asarray(open_box.vertices, np.float32)]
    faces = [np.asarray(m.faces, np.int32) for m in meshes] + [np.asarray(open_box.faces[1:], np.int32)]
    spacing = (2.0, 1.0, 0.5)
    results = []
    for chunk in (7, 64, 1 << 14):
        monkeypatch.setattr(batch_module, "_FACE_CHUNK", chunk)
        batch = MeshBatch.from_meshes(
            np.arange(1, 5, dtype=np.uint64), np.zeros((4, 3), int), spacing, verts, faces
        )
        results.append(batch.measure(orient=False))
    for r in results:
        assert r.watertight.tolist() == [True, True, True, False]
        np.testing.assert_array_equal(r.volume, results[0].volume)
        np.testing.assert_array_equal(r.area, results[0].area)
    for k, m in enumerate(meshes):
        scaled = m.copy().apply_transform(np.diag([*spacing, 1.0]))
        assert results[0].volume[k] == pytest.approx(scaled.volume, rel=1e-5)
        assert results[0].area[k] == pytest.approx(scaled.area, rel=1e-5)


def test_vertex_hashes_are_the_splitmix_of_the_index():
    small_h1, small_h2 = _vertex_hashes(10)
    large_h1, large_h2 = _vertex_hashes(batch_module._HASHES_MAX + 5)  # beyond the cache
    mixed = _splitmix64(np.arange(batch_module._HASHES_MAX + 5, dtype=np.uint64))
    np.testing.assert_array_equal(large_h1, (mixed >> np.uint64(32)).astype(np.uint32))
    np.testing.assert_array_equal(large_h2, mixed.astype(np.uint32))
    np.testing.assert_array_equal(small_h1, large_h1[:10])
    np.testing.assert_array_equal(small_h2, large_h2[:10])
    assert batch_module._HASHES[0].size <= batch_module._HASHES_MAX
