"""Mesh files (PLY, OBJ, STL, GLB) read back by trimesh; the mesh command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.geometry import GlbWriter, export_meshes_command, mesh_objects, write_mesh_file
from dls_microscopy.io import write_ome_zarr
from dls_microscopy.pipeline.meshes import run_meshes
from dls_microscopy.pipeline.verify import verify_manifest

SPACING = (2.0, 0.5, 0.25)


@pytest.fixture(scope="module")
def labels():
    lab = np.zeros((10, 24, 30), np.uint32)
    lab[2:7, 3:12, 4:20] = 5
    lab[1:9, 14:23, 10:28] = 70_000
    lab[0, 0, 0] = 3  # single voxel at the border
    return lab


@pytest.fixture(scope="module")
def meshes(labels):
    return {m.id: m for m in mesh_objects(labels, spacing=SPACING, smooth=5)}


@pytest.mark.parametrize("fmt", ["ply", "obj", "stl"])
def test_object_files_round_trip(tmp_path, meshes, fmt):
    for m in meshes.values():
        path = write_mesh_file(m, tmp_path / f"o{m.id}.{fmt}")
        back = trimesh.load(path, process=False, force="mesh")
        if fmt == "stl":  # STL stores triangles only: merge corners to compare
            back.merge_vertices()
        assert back.is_watertight and back.is_winding_consistent
        assert back.volume == pytest.approx(m.volume_um3, rel=1e-5)
        assert back.area == pytest.approx(m.surface_area_um2, rel=1e-5)
        v, _ = m.xyz()
        np.testing.assert_allclose(back.bounds, [v.min(axis=0), v.max(axis=0)], rtol=1e-6)
    assert str(next(iter(meshes))) in (tmp_path / f"o{next(iter(meshes))}.{fmt}").read_bytes()[:200].decode(
        "ascii", "replace"
    )


def test_unknown_format_raises(tmp_path, meshes):
    with pytest.raises(InputError, match="unknown mesh format"):
        write_mesh_file(next(iter(meshes.values())), tmp_path / "x.vtk")


def test_glb_scene_has_one_node_per_object_named_by_id(tmp_path, meshes):
    path = tmp_path / "all.glb"
    with GlbWriter(path) as glb:
        for m in meshes.values():
            glb.add(m)
    scene = trimesh.load(path)
    assert set(scene.graph.nodes_geometry) == {str(i) for i in meshes}
    for name in scene.graph.nodes_geometry:
        transform, geom = scene.graph[name]
        np.testing.assert_allclose(transform, np.eye(4))
        g = scene.geometry[geom]
        m = meshes[int(name)]
        assert g.is_watertight
        assert g.volume == pytest.approx(m.volume_um3, rel=1e-5)


def test_empty_glb_is_valid(tmp_path):
    path = tmp_path / "empty.glb"
    with GlbWriter(path):
        pass
    assert len(trimesh.load(path).geometry) == 0


@pytest.mark.parametrize("fmt", ["glb", "stl"])
def test_mesh_command_writes_meshes_manifest_and_descriptors(tmp_path, labels, fmt):
    store = tmp_path / "img.ome.zarr"
    write_ome_zarr(labels, store, axes="zyx", spacing=SPACING)
    calls = []
    summary = export_meshes_command(
        store,
        tmp_path / "out",
        fmt=fmt,
        smooth=10,
        decimate=0.5,
        descriptors_path=tmp_path / "d.parquet",
        progress=lambda *a: calls.append(a),
    )
    assert summary["n_objects"] == 3 and summary["n_not_watertight"] == 0
    manifest = json.loads((tmp_path / "out" / "meshes.json").read_text())
    assert manifest["units"] == "micrometre" and manifest["axes"] == "xyz"
    assert {o["id"] for o in manifest["objects"]} == {3, 5, 70_000}
    for entry in manifest["objects"]:
        path = tmp_path / "out" / entry["file"]
        assert path.is_file()
        if fmt == "stl":
            assert trimesh.load(path).volume == pytest.approx(entry["volume_um3"], rel=1e-4)
    table = pq.read_table(tmp_path / "d.parquet")
    assert sorted(table.column("object_id").to_pylist()) == [3, 5, 70_000]
    assert table.schema.field("object_id").type == "uint64"
    assert table.schema.field("volume_um3").metadata[b"unit"] == b"um^3"
    units = json.loads(table.schema.metadata[b"units"])
    assert units["surface_area_um2"] == "um^2"
    assert ("meshes", 3, 3) in calls
    with pytest.raises(OutputError, match="exists"):
        export_meshes_command(store, tmp_path / "out", fmt=fmt)


def test_mesh_command_on_empty_labels_and_bad_arguments(tmp_path):
    store = tmp_path / "empty.ome.zarr"
    write_ome_zarr(np.zeros((4, 5, 6), np.uint16), store, axes="zyx", spacing=(1, 1, 1))
    summary = export_meshes_command(
        store, tmp_path / "out", fmt="ply", descriptors_path=tmp_path / "d.parquet"
    )
    assert summary["n_objects"] == 0
    assert pq.read_table(tmp_path / "d.parquet").num_rows == 0
    with pytest.raises(InputError, match="unknown mesh format"):
        export_meshes_command(store, tmp_path / "o2", fmt="vtk")
    with pytest.raises(InputError, match="no label images"):
        export_meshes_command(store, tmp_path / "o3", label_name="nuclei")
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_mesh_command_finds_ngff_labels_of_an_image(tmp_path, labels):
    store = tmp_path / "img.ome.zarr"
    image = np.zeros(labels.shape, np.uint16)
    write_ome_zarr(image, store, axes="zyx", spacing=SPACING, labels={"nuclei": labels})
    summary = export_meshes_command(store, tmp_path / "out", fmt="obj")
    assert summary["n_objects"] == 3
    assert (tmp_path / "out" / "object_70000.obj").is_file()


def test_mesh_folder_has_a_provenance_manifest_that_verify_checks(tmp_path, labels, monkeypatch):
    """``dls-microscopy mesh`` output is verified like a features folder (review finding).

    Paths given relative to the working folder (as in the quickstart): the index
    records the absolute labels path, which the recompute gives too.
    """
    from dls_microscopy.cli import main

    write_ome_zarr(labels, tmp_path / "img.ome.zarr", axes="zyx", spacing=SPACING)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m"
    assert main(["mesh", "img.ome.zarr", "m", "--smooth", "5", "--no-progress"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # verify from another folder
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "mesh" and "labels" in manifest["inputs"]
    assert {o["path"] for o in manifest["outputs"]} >= {"meshes.glb", "meshes.json"}
    assert verify_manifest(out) == [] and verify_manifest(out, recompute=True) == []
    assert main(["verify", str(out)]) == 0
    (out / "meshes.glb").write_bytes(b"changed")
    assert {m.item for m in verify_manifest(out)} == {"meshes.glb"}


def test_mesh_descriptors_file_is_recorded_in_the_manifest(tmp_path, labels):
    """``mesh --descriptors FILE`` writes beside the folder: the manifest records it (it did not)."""
    from dls_microscopy.cli import main
    from dls_microscopy.pipeline.provenance import digest_file

    write_ome_zarr(labels, tmp_path / "img.ome.zarr", axes="zyx", spacing=SPACING)
    out, table = tmp_path / "m", tmp_path / "shape.parquet"
    args = ["mesh", str(tmp_path / "img.ome.zarr"), str(out), "--descriptors", str(table)]
    assert main([*args, "--smooth", "5", "--no-progress"]) == 0
    recorded = json.loads((out / "manifest.json").read_text())["external_outputs"]["descriptors_path"]
    assert recorded == {"path": str(table), "size": table.stat().st_size, "sha256": digest_file(table)}
    before = table.stat().st_mtime_ns
    assert verify_manifest(out) == [] and verify_manifest(out, recompute=True) == []
    assert table.stat().st_mtime_ns == before  # a recompute writes its own copy, not over this one
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    found = verify_manifest(out)
    assert [(m.kind, m.item, m.field) for m in found] == [("output", f"descriptors_path ({table})", "sha256")]
    assert main(["verify", str(out)]) == 1
    table.unlink()
    assert [(m.item, m.field) for m in verify_manifest(out)] == [(f"descriptors_path ({table})", "exists")]


def test_mesh_command_meshes_the_level_asked_for(tmp_path, labels):
    from dls_microscopy.io import open_volume

    store = tmp_path / "lab.ome.zarr"
    write_ome_zarr(labels, store, axes="zyx", spacing=SPACING, n_levels=2)
    level1 = open_volume(store, level=1)
    assert level1.spacing != SPACING
    table = tmp_path / "shape.parquet"
    summary = export_meshes_command(store, tmp_path / "out", level=1, descriptors_path=table)
    index = json.loads((tmp_path / "out" / "meshes.json").read_text())
    assert index["level"] == 1 and index["spacing_um"] == dict(zip("zyx", level1.spacing, strict=True))
    meta = pq.read_schema(table).metadata
    assert json.loads(meta[b"level"]) == 1 and json.loads(meta[b"spacing_um"]) == list(level1.spacing)
    export_meshes_command(store, tmp_path / "out0", descriptors_path=tmp_path / "t0.parquet")
    assert b"level" not in pq.read_schema(tmp_path / "t0.parquet").metadata  # level 0: as tables were before
    expected = {m.id: m for m in mesh_objects(level1)}
    assert summary["n_objects"] == len(expected)
    assert {o["id"]: o["n_faces"] for o in index["objects"]} == {i: m.n_faces for i, m in expected.items()}
    with pytest.raises(InputError, match="level 2 does not exist"):
        export_meshes_command(store, tmp_path / "o2", level=2)
    assert not (tmp_path / "o2").exists()


# -- the descriptor table appears only after the meshes' folder -------------------------------

#: Run in a child process: ``mesh --descriptors`` killed (``os._exit``, no cleanup) as it renames
#: the meshes' folder (``folder``) or the descriptor table (``table``) into place.
KILLED_MESH = """
import os, sys
from pathlib import Path
from dls_microscopy.pipeline.meshes import run_meshes

labels, out, table, stage = sys.argv[1:]
rename = os.replace

def killed(src, dst, *args, **kwargs):
    src, dst = Path(src), Path(dst)
    if (stage == "folder" and dst == Path(out).absolute() and ".partial-" in src.name) or (
        stage == "table" and dst == Path(table).absolute()
    ):
        os._exit(9)
    return rename(src, dst, *args, **kwargs)

os.replace = killed
run_meshes(labels, out, smooth=0, descriptors_path=table)
raise SystemExit("not killed")
"""


@pytest.fixture
def label_store(tmp_path, labels):
    """The labels as an OME-Zarr store in ``tmp_path/in`` (outputs go beside it)."""
    return write_ome_zarr(labels, tmp_path / "in" / "lab.ome.zarr", axes="zyx", spacing=SPACING)


def test_a_failed_folder_commit_leaves_no_descriptor_table(tmp_path, label_store, monkeypatch):
    """The table was renamed into place before the meshes' folder: a failure between left a table only."""
    out, table = tmp_path / "out", tmp_path / "shape.parquet"
    rename = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(dst) == out.absolute():
            raise OSError(5, "I/O error")
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OutputError, match="I/O error"):
        export_meshes_command(label_store, out, descriptors_path=table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no table, no folder, no partial
    monkeypatch.undo()
    summary = export_meshes_command(label_store, out, descriptors_path=table)  # reruns cleanly
    assert pq.read_table(table).num_rows == summary["n_objects"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "shape.parquet"]


def test_a_failed_overwrite_keeps_the_old_meshes_with_their_table(tmp_path, label_store, monkeypatch):
    """A table that stays is always the table of the meshes in place: the old one goes aside first,
    and comes back with its meshes when the new ones cannot take their place."""
    out, table = tmp_path / "out", tmp_path / "shape.parquet"
    export_meshes_command(label_store, out, descriptors_path=table, smooth=0)
    before, old_table = (out / "meshes.json").read_bytes(), table.read_bytes()
    rename = os.replace

    def failing(src, dst, *args, **kwargs):
        if Path(src) == out.absolute():  # moving the old folder aside, to put the new one there
            raise OSError(5, "I/O error")
        return rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OutputError, match="I/O error"):
        export_meshes_command(label_store, out, descriptors_path=table, smooth=3, overwrite=True)
    # the old meshes stay, with their table; the new table never came
    assert (out / "meshes.json").read_bytes() == before and table.read_bytes() == old_table
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "shape.parquet"]


def test_a_descriptor_table_inside_the_mesh_folder_is_refused(tmp_path, label_store):
    """The folder is replaced as a whole: a table in it was lost after the meshes were committed."""
    out = tmp_path / "out"
    with pytest.raises(InputError, match="outside the mesh folder"):
        export_meshes_command(label_store, out, descriptors_path=out / "shape.parquet", smooth=0)
    assert not out.exists()
    # however the path is spelled: through '..' or a link to the folder
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    for spelled in (
        tmp_path / "elsewhere" / ".." / "out" / "shape.parquet",
        tmp_path / "link" / "shape.parquet",
    ):
        with pytest.raises(InputError, match="outside the mesh folder"):
            export_meshes_command(label_store, out, descriptors_path=spelled, smooth=0)
        assert not out.exists() and not (tmp_path / "elsewhere").exists()


def test_a_label_name_in_an_image_without_labels_is_refused_at_any_level(tmp_path):
    """With a level, the image itself was opened and meshed as if it were labels."""
    img = write_ome_zarr(np.zeros((8, 32, 32), np.uint16), tmp_path / "img.ome.zarr", axes="zyx", n_levels=2)
    for level in (0, 1):
        with pytest.raises(InputError, match="no label images in this file"):
            export_meshes_command(img, tmp_path / f"m{level}", label_name="nuclei", level=level)


@pytest.mark.parametrize("stage", ["folder", "table"])
def test_mesh_killed_while_committing_leaves_no_table_without_meshes_and_reruns(tmp_path, label_store, stage):
    out, table = tmp_path / "out", tmp_path / "shape.parquet"
    args = [str(label_store), str(out), str(table), stage]
    res = subprocess.run(
        [sys.executable, "-c", KILLED_MESH, *args], capture_output=True, text=True, check=False
    )
    assert res.returncode == 9, res.stderr
    assert not table.exists()  # never a table whose meshes are not in place
    # killed before the folder was in place: nothing; after: the meshes, whose table is missing
    assert out.is_dir() == (stage == "table")
    run_meshes(label_store, out, smooth=0, descriptors_path=table, overwrite=stage == "table")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "shape.parquet"]  # no partials
    assert pq.read_table(table).num_rows == 3
    # the table recorded (read under its temporary name) is the table in place, and a recompute
    # (its table written into a scratch folder) gives the same bytes
    assert verify_manifest(out, recompute=True) == []
    table.write_bytes(table.read_bytes() + b"\0")
    assert [(m.item, m.field) for m in verify_manifest(out)] == [
        (f"descriptors_path ({table.absolute()})", "size"),
        (f"descriptors_path ({table.absolute()})", "sha256"),
    ]
