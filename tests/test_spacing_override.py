"""A voxel size given in place of the file's: ``--spacing`` on every command, ``input.spacing``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from dls_microscopy.cli import main
from dls_microscopy.errors import InputError
from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
from dls_microscopy.volume import check_spacing


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def pair(tmp_path):
    """A TIFF stack without a voxel size (read as 1 µm) and its labels: two boxes."""
    rng = np.random.default_rng(1)
    img = rng.integers(100, 200, (8, 32, 32)).astype(np.uint16)
    lab = np.zeros((8, 32, 32), np.uint16)
    lab[2:6, 4:12, 4:14] = 1  # 4 × 8 × 10 voxels
    lab[1:7, 18:28, 16:30] = 2
    img[lab > 0] += 500
    image, labels = tmp_path / "stack.tif", tmp_path / "labels.tif"
    tifffile.imwrite(image, img)
    tifffile.imwrite(labels, lab)
    return image, labels, lab


def test_check_spacing_counts_and_values():
    assert check_spacing([2, 0.5, 0.25], "zyx") == (2.0, 0.5, 0.25)
    assert check_spacing(0.5, "zyx") == (0.5, 0.5, 0.5)
    assert check_spacing([0.5], "yx") == (0.5, 0.5)
    with pytest.raises(InputError, match=r"one value per spatial axis \(z, y, x\).*got 2"):
        check_spacing([1, 2], "zyx")
    with pytest.raises(InputError, match="axis y must be a positive number of µm, got 0"):
        check_spacing([1, 0, 1], "zyx")
    with pytest.raises(InputError, match="axis x"):
        check_spacing([1, 1, float("nan")], "zyx")


def test_with_spacing_scales_every_level_and_keeps_the_file_value(tmp_path):
    img = np.random.default_rng(0).integers(0, 999, (16, 64, 64)).astype(np.uint16)
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", spacing=(1, 1, 1), n_levels=2)
    vol = open_volume(store)
    assert vol.level_spacings[1][1] == pytest.approx(2.0)  # the file's level 1 is twice as coarse
    given = vol.with_spacing((3, 0.5, 0.25))
    assert given.spacing == (3.0, 0.5, 0.25)
    np.testing.assert_allclose(given.level_spacings[1], np.array(vol.level_spacings[1]) * (3, 0.5, 0.25))
    assert given.metadata["spacing_from_file_um"] == [1.0, 1.0, 1.0]
    # the value is full resolution's, whichever level is shown: the same as at level 0
    coarse = open_volume(store, level=1, spacing=(3, 0.5, 0.25))
    assert coarse.spacing == given.level_spacings[1] and coarse.level == 1
    assert given.data is vol.data  # metadata only


def test_info_shows_the_given_spacing_and_the_files(capsys, pair):
    image, _, _ = pair
    code, out, _ = run(capsys, "info", str(image), "--spacing", "2,0.5,0.5", "--json")
    assert code == 0
    res = json.loads(out)
    assert res["spacing_um"] == {"z": 2.0, "y": 0.5, "x": 0.5}
    assert res["spacing_from_file_um"] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2,0.5", "one value per spatial axis (z, y, x) or one for all, got 2"),
        ("a,b,c", "--spacing 'a,b,c' is not a voxel size"),
        ("1,-1,1", "--spacing '1,-1,1' is not a voxel size"),
        ("1,1,inf", "is not a voxel size"),
    ],
)
def test_a_bad_spacing_is_one_line_exit_2(capsys, pair, value, reason):
    image, _, _ = pair
    code, _, err = run(capsys, "info", str(image), "--spacing", value)
    assert code == 2
    assert reason in err and err.count("\n") == 1


def test_features_measure_in_the_given_spacing_and_record_it(capsys, pair, tmp_path):
    image, labels, lab = pair
    for name, extra in (("plain", []), ("given", ["--spacing", "2,0.5,0.25"])):
        code, _, err = run(capsys, "features", str(image), str(labels), str(tmp_path / name), "--no-progress",
                           "--radial-shells", "0", *extra)  # fmt: skip
        assert code == 0, err
    plain = pq.read_table(tmp_path / "plain" / "objects.parquet").to_pandas()
    given = pq.read_table(tmp_path / "given" / "objects.parquet").to_pandas()
    counts = np.bincount(lab.ravel())[1:]
    np.testing.assert_allclose(plain["Nuclei_AreaShape_Volume"], counts)
    np.testing.assert_allclose(given["Nuclei_AreaShape_Volume"], counts * 2 * 0.5 * 0.25)
    # centroids in µm: z doubled, x a quarter
    zz, _, xx = np.nonzero(lab == 1)
    first = given.iloc[0]
    assert first["Metadata_Centroid_Z"] == pytest.approx(zz.mean() * 2)
    assert first["Metadata_Centroid_X"] == pytest.approx(xx.mean() * 0.25)
    manifest = json.loads((tmp_path / "given" / "manifest.json").read_text())
    assert manifest["parameters"]["spacing"] == [2.0, 0.5, 0.25]
    # verify --recompute reruns with it: the same bytes
    code, out, err = run(capsys, "verify", str(tmp_path / "given"), "--recompute", "--json")
    assert code == 0, out + err


def test_mesh_uses_the_given_spacing(capsys, pair, tmp_path):
    _, labels, _ = pair
    volumes = {}
    for name, extra in (("plain", []), ("m", ["--spacing", "2,1,1"])):
        code, _, err = run(capsys, "mesh", str(labels), str(tmp_path / name), "--smooth", "0", "--json",
                           "--no-progress", *extra)  # fmt: skip
        assert code == 0, err
        index = json.loads((tmp_path / name / "meshes.json").read_text())
        volumes[name] = np.array([o["volume_um3"] for o in index["objects"]])
    assert index["spacing_um"] == {"z": 2.0, "y": 1.0, "x": 1.0}
    np.testing.assert_allclose(volumes["m"], volumes["plain"] * 2.0, rtol=1e-6)  # z twice as long
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["parameters"]["spacing"] == [2.0, 1.0, 1.0]


def test_convert_writes_the_given_spacing_to_image_and_labels(capsys, pair, tmp_path):
    image, labels, _ = pair
    dest = tmp_path / "fixed.ome.zarr"
    code, _, err = run(capsys, "convert", str(image), str(dest), "--labels", f"cells={labels}",
                       "--spacing", "1.5,0.3,0.3", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert open_volume(dest).spacing == pytest.approx((1.5, 0.3, 0.3))
    assert open_labels(dest, "cells").spacing == pytest.approx((1.5, 0.3, 0.3))
    # the pyramid keeps its factors: level 1 is coarser in y and x than the given value
    vol = open_volume(dest)
    if len(vol.levels) > 1:
        assert vol.level_spacings[1][1] > 0.3


def test_segment_uses_the_given_spacing_for_the_diameter(capsys, tmp_path):
    """The diameter in µm means other voxels under another spacing: fewer, larger objects."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 64, 64), seed=4)
    tif = tmp_path / "n.tif"
    tifffile.imwrite(tif, np.asarray(s.image[0]))  # no voxel size in the file: 1 µm
    n = {}
    for name, extra in (("plain", []), ("given", ["--spacing", "0.5"])):
        dest = str(tmp_path / f"{name}.ome.zarr")
        code, out, err = run(capsys, "segment", str(tif), dest, "--diameter", "6", "--no-progress", "--json",
                             *extra)  # fmt: skip
        assert code == 0, err
        n[name] = json.loads(out)["objects"]
    assert open_volume(tmp_path / "given.ome.zarr").spacing == (0.5, 0.5, 0.5)
    assert n["given"] < n["plain"]


def test_pipeline_input_spacing(tmp_path, pair):
    from dls_microscopy.pipeline.checks import check_inputs
    from dls_microscopy.pipeline.config import load_config
    from dls_microscopy.pipeline.run import run_pipeline

    image, _, lab = pair
    store = write_ome_zarr(tifffile.imread(image), tmp_path / "s.ome.zarr", labels={"cells": lab})
    cfg = tmp_path / "pipeline.yaml"
    text = (
        f"input:\n  path: {store}\n  labels: cells\n  spacing: [2, 0.5, 0.5]\n"
        "output:\n  path: out\nsteps:\n  features: {}\n  mesh: {smooth: 0}\n"
        "compute:\n  memory_budget: 256MB\n  device: cpu\n"
    )
    cfg.write_text(text)
    summary = run_pipeline(cfg, progress=False)
    assert summary.ok
    objects = pq.read_table(tmp_path / "out" / "objects.parquet").to_pandas()
    counts = np.bincount(lab.ravel())[1:]
    np.testing.assert_allclose(objects["Nuclei_AreaShape_Volume"], counts * 0.5)
    # the mesh (no smoothing) cuts the boxes' edges: a few % under the voxels' volume
    np.testing.assert_allclose(objects["Nuclei_AreaShape_MeshVolume"], counts * 0.5, rtol=0.06)
    # a count that does not fit the image: a config error naming the key, before any field runs
    cfg.write_text(text.replace("[2, 0.5, 0.5]", "[2, 0.5]").replace("path: out", "path: out2"))
    with pytest.raises(InputError, match=r"input\.spacing: .*one value per spatial axis"):
        check_inputs(load_config(cfg))
    cfg.write_text(text.replace("[2, 0.5, 0.5]", "[2, 0, 0.5]"))
    with pytest.raises(Exception, match=r"input\.spacing"):
        load_config(cfg)


def test_a_label_image_on_a_coarser_grid_keeps_its_factor_to_the_image(tmp_path):
    """NGFF lets a label image have its own grid: the given voxel is the image's."""
    import shutil

    import zarr

    img = np.zeros((8, 64, 64), np.uint16)
    lab = np.zeros((8, 64, 64), np.uint16)
    lab[2:6, 4:12, 4:14] = 1
    store = write_ome_zarr(img, tmp_path / "full.ome.zarr", spacing=(1, 1, 1), n_levels=1,
                           labels={"cells": lab})  # fmt: skip
    half = write_ome_zarr(img[:, ::2, ::2], tmp_path / "half.ome.zarr", spacing=(1, 2, 2), n_levels=1,
                          labels={"half": lab[:, ::2, ::2].copy()})  # fmt: skip
    shutil.copytree(half / "labels" / "half", store / "labels" / "half")
    group = zarr.open_group(str(store / "labels"), mode="a")
    attrs = dict(group.attrs)
    attrs["ome"]["labels"] = ["cells", "half"]
    group.attrs.update(attrs)
    assert open_labels(store, "half", spacing=(2, 0.5, 0.5)).spacing == (2.0, 1.0, 1.0)
    assert open_labels(store, "cells", spacing=(2, 0.5, 0.5)).spacing == (2.0, 0.5, 0.5)


def test_a_voxel_size_outside_microscopy_is_refused(capsys, pair):
    """Metres typed for µm (2e-06) made estimate-diameter fail deep inside, or run for minutes."""
    image, _, _ = pair
    for value in ("2e-6,6.5e-7,6.5e-7", "1e200", "1,,1"):
        code, _, err = run(capsys, "estimate-diameter", str(image), "--spacing", value)
        assert code == 2 and err.count("\n") == 1, err
    assert "give it in µm" in run(capsys, "info", str(image), "--spacing", "2e-6")[2]
    with pytest.raises(InputError, match="must be numbers"):
        check_spacing("255", "zyx")
    assert check_spacing(np.float32(0.5), "yx") == (0.5, 0.5)


def test_the_files_missing_voxel_size_is_not_warned_when_one_is_given(caplog, pair):
    """The "using 1 µm" warning is moot once the caller gives the voxel size."""
    import logging

    image, _, _ = pair
    with caplog.at_level(logging.DEBUG, logger="dls_microscopy"):
        open_volume(image)
        warned = [r for r in caplog.records if "1 µm" in r.getMessage()]
        assert warned and all(r.levelno == logging.WARNING for r in warned)
        caplog.clear()
        vol = open_volume(image, spacing=(2, 0.5, 0.5))
        moot = [r for r in caplog.records if "1 µm" in r.getMessage()]
        assert moot and all(r.levelno == logging.DEBUG for r in moot)  # still in a debug log
        assert vol.spacing == (2.0, 0.5, 0.5)
        caplog.clear()
        open_volume(image)  # the next open without one warns again
        assert any(r.levelno == logging.WARNING and "1 µm" in r.getMessage() for r in caplog.records)


def test_three_values_for_a_2d_image_say_it_is_2d(tmp_path):
    from dls_microscopy.pipeline.checks import check_inputs
    from dls_microscopy.pipeline.config import load_config

    with pytest.raises(InputError, match=r"3 values, and the image has 2 spatial axes \(y, x\): a 2D image"):
        check_spacing([2, 0.5, 0.5], "yx")
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((32, 32), np.uint16))
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        f"input:\n  path: {flat}\n  spacing: [2, 0.5, 0.5]\noutput:\n  path: {tmp_path / 'out'}\n"
        "steps:\n  segment: {method: watershed}\n  features: {}\ncompute:\n  device: cpu\n"
    )
    with pytest.raises(InputError) as info:  # the image's dimensions are the reason, not the spacing
        check_inputs(load_config(cfg))
    assert "3D" in str(info.value) and "input.spacing" not in str(info.value)


def test_a_wrong_level_with_a_given_voxel_size_warns_nothing_of_1_um(tmp_path, pair, caplog):
    """The check's retry at full resolution opened the file outside the given voxel size."""
    import logging

    from dls_microscopy.pipeline.checks import check_inputs
    from dls_microscopy.pipeline.config import load_config

    image, _, _ = pair
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        f"input:\n  path: {image}\n  level: 2\n  spacing: [2, 0.5, 0.5]\noutput:\n  path: {tmp_path / 'o'}\n"
        "steps:\n  segment: {method: watershed}\n  features: {}\ncompute:\n  device: cpu\n"
    )
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        with pytest.raises(InputError, match=r"input\.level"):
            check_inputs(load_config(cfg))
    assert not [r for r in caplog.records if "1 µm" in r.getMessage()]


def test_the_checks_that_moved_to_verify_still_import_from_provenance():
    from dls_microscopy.pipeline import provenance, verify

    assert provenance.verify_manifest is verify.verify_manifest and provenance.Mismatch is verify.Mismatch
