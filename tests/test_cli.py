"""The command line: exit codes, one-line errors, --json output, help with examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tifffile

from dls_microscopy.cli import main, parse_size
from dls_microscopy.errors import InputError
from dls_microscopy.io import open_labels, open_volume, write_ome_zarr


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def store(tmp_path):
    img = np.random.default_rng(0).integers(0, 999, (2, 6, 40, 40)).astype(np.uint16)
    lab = np.zeros((6, 40, 40), np.uint16)
    lab[1:4, 5:15, 5:15] = 1
    return write_ome_zarr(
        img,
        tmp_path / "s.ome.zarr",
        axes="czyx",
        spacing=(2, 0.5, 0.5),
        channel_names=["DAPI", "Actin"],
        labels={"nuclei": lab},
    )


def test_info_json(capsys, store):
    code, out, _ = run(capsys, "info", str(store), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["shape"] == [2, 6, 40, 40]
    assert info["axes"] == "czyx"
    assert info["dtype"] == "uint16"
    assert info["spacing_um"] == {"z": 2.0, "y": 0.5, "x": 0.5}
    assert info["channels"] == ["DAPI", "Actin"]
    assert info["labels"] == ["nuclei"]
    assert info["levels"][0]["shape"] == [2, 6, 40, 40]


def test_info_table(capsys, store):
    code, out, _ = run(capsys, "info", str(store))
    assert code == 0
    assert "czyx" in out and "DAPI" in out and "nuclei" in out


def test_info_of_segmented_labels_says_how_they_were_made(capsys, tmp_path):
    """The label record was printed as one Python repr of every package's version."""
    img = np.zeros((12, 48, 48), np.uint16)
    zz, yy, xx = np.mgrid[:12, :48, :48]
    img[(zz - 6) ** 2 / 9 + ((yy - 24) ** 2 + (xx - 24) ** 2) / 64 < 1] = 1000
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5))
    code, _, err = run(capsys, "segment", str(store), "--method", "watershed", "--diameter", "8")
    assert code == 0, err
    code, out, _ = run(capsys, "info", f"{store}/labels/nuclei")
    assert code == 0
    assert "watershed" in out and "1 objects" in out and "voxel 1 × 0.5 × 0.5 µm" in out
    assert "diameter_um=8.0" in out and "by dls-microscopy segment" in out
    assert "'packages'" not in out and "numpy" not in out  # versions are in --json
    code, out, _ = run(capsys, "info", f"{store}/labels/nuclei", "--json")
    record = json.loads(out)["dls_microscopy"]
    assert record["segmentation"]["n_objects"] == 1 and "numpy" in record["software"]["packages"]


def test_paths_with_brackets_print_as_they_are(capsys, tmp_path):
    """rich read "[a]" in a path as a style tag (dropped) and "[/a]" as a closing one (a traceback)."""
    for folder in ("run[a]", "run[/a]", "run:ok:"):  # and ":ok:" was an emoji code
        code, _, err = run(capsys, "info", str(tmp_path / folder / "missing.zarr"))
        assert code == 2 and f"{folder}/missing.zarr" in err and "Traceback" not in err
    path = write_ome_zarr(np.zeros((4, 8, 8), np.uint8), tmp_path / "run[/a]" / "s.ome.zarr", axes="zyx")
    code, out, _ = run(capsys, "info", str(path))
    assert code == 0 and str(path) in out.replace("\n", "").replace("│", "").replace(" ", "")


def test_the_label_record_summary_takes_records_of_other_shapes():
    from dls_microscopy.cli.data import _made_by

    text = _made_by({"segmentation": {"method": "x", "spacing_um": [1, None, "a"], "params": {"a": None}}})
    assert "voxel 1 × None × a µm" in text and "parameters" not in text
    assert _made_by({"other": 1}) == "{'other': 1}"


def test_info_table_wraps_long_values_instead_of_cutting_them(tmp_path):
    """A long path in a narrow terminal was cut with "…" in its table cell."""
    folder = tmp_path / ("a_rather_long_folder_name_" * 3)
    folder.mkdir()
    path = write_ome_zarr(np.zeros((4, 8, 8), np.uint8), folder / "s.ome.zarr", axes="zyx")
    res = subprocess.run(
        [sys.executable, "-m", "dls_microscopy.cli", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "60"},
    )
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    assert rows and all(len(line) <= 60 for line in res.stdout.splitlines())
    assert "…" not in res.stdout
    body = re.sub(r"[│\s]", "", "".join(rows))  # the cells, their lines joined
    assert f"path{path}format" in body


def _write(path, content):
    path.write_bytes(content)
    return path


def _truncated_tiff(path):
    """A 3D TIFF cut after its first planes: tifffile logs errors of its own while reading it."""
    tifffile.imwrite(path, np.arange(31 * 61 * 57, dtype=np.uint16).reshape(31, 61, 57) % 1000)
    return _write(path, path.read_bytes()[:20000])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p / "missing.ome.zarr", "no such file"),
        (lambda p: _write(p / "notes.tif", b"hello"), "not a supported image"),
        (lambda p: _write(p / "empty.h5", b""), "empty"),
    ],
)
def test_bad_input_exit_2_one_line(capsys, tmp_path, make, reason):
    path = make(tmp_path)
    code, _, err = run(capsys, "info", str(path))
    assert code == 2
    assert reason in err
    assert str(path) in err
    assert err.count("\n") == 1  # one line
    assert "Traceback" not in err


def test_convert_tiff_with_labels(capsys, tmp_path):
    img = np.random.default_rng(2).integers(0, 255, (5, 2, 24, 24)).astype(np.uint8)  # ZCYX
    tifffile.imwrite(
        tmp_path / "in.ome.tif",
        img,
        ome=True,
        metadata={
            "axes": "ZCYX",
            "PhysicalSizeZ": 1.5,
            "PhysicalSizeY": 0.2,
            "PhysicalSizeX": 0.2,
            "Channel": {"Name": ["a", "b"]},
        },
    )
    lab = (img[:, 0] > 128).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    out = tmp_path / "out.ome.zarr"
    code, _, err = run(
        capsys,
        "convert",
        str(tmp_path / "in.ome.tif"),
        str(out),
        "--labels",
        f"cells={tmp_path / 'lab.tif'}",
        "--no-progress",
    )
    assert code == 0, err
    vol = open_volume(out)
    assert vol.axes == "czyx" and vol.channel_names == ("a", "b")
    assert vol.spacing == pytest.approx((1.5, 0.2, 0.2))
    np.testing.assert_array_equal(vol.load(), img.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(open_labels(out, "cells").load(), lab)
    # second run without --overwrite: clear refusal
    code, _, err = run(capsys, "convert", str(tmp_path / "in.ome.tif"), str(out), "--no-progress")
    assert code == 2 and "already exists" in err
    # a label name holding '/' is named as such, not read as a file called 'a/b=...'
    code, _, err = run(
        capsys, "convert", str(tmp_path / "in.ome.tif"), str(tmp_path / "o2.ome.zarr"),
        "--labels", f"a/b={tmp_path / 'lab.tif'}", "--no-progress",
    )  # fmt: skip
    assert code == 2 and "invalid label name 'a/b'" in err and not (tmp_path / "o2.ome.zarr").exists()
    # one name given twice: the last one silently won
    for names in (["nuclei=", "nuclei="], ["", ""]):
        twice = [a for n in names for a in ("--labels", f"{n}{tmp_path / 'lab.tif'}")]
        code, _, err = run(capsys, "convert", str(tmp_path / "in.ome.tif"), str(tmp_path / "o3.ome.zarr"),
                           *twice, "--no-progress")  # fmt: skip
        name = names[0].rstrip("=") or "labels"
        assert code == 2 and f"label name {name!r} given twice" in err, err
        assert not (tmp_path / "o3.ome.zarr").exists()


def test_convert_ngff04(capsys, tmp_path, store):
    out = tmp_path / "v04.ome.zarr"
    code, _, err = run(capsys, "convert", str(store), str(out), "--ngff-version", "0.4", "--no-progress")
    assert code == 0, err
    assert (out / ".zattrs").exists()
    assert open_volume(out).metadata["ngff_version"] == "0.4"


def test_convert_carries_the_label_images_of_an_ome_zarr_over(capsys, tmp_path):
    """Converting an OME-Zarr with labels (0.5 → 0.4) dropped them in silence."""
    img = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16)
    gold = (img % 7 == 0).astype(np.uint16)
    other = (img % 5 == 0).astype(np.uint16)
    tifffile.imwrite(tmp_path / "gold.tif", gold)
    tifffile.imwrite(tmp_path / "other.tif", other)
    src = write_ome_zarr(img, tmp_path / "src.ome.zarr", labels={"gold": gold, "other": other})
    out = tmp_path / "out.ome.zarr"
    code, _, err = run(capsys, "convert", str(src), str(out), "--ngff-version", "0.4", "--no-progress")
    assert code == 0, err
    assert set(open_volume(out).labels) == {"gold", "other"}
    np.testing.assert_array_equal(open_labels(out, "gold").load(), gold)
    # one given by name replaces the source's
    code, _, err = run(
        capsys,
        "convert",
        str(src),
        str(tmp_path / "o2.ome.zarr"),
        "--labels",
        f"gold={tmp_path / 'other.tif'}",
        "--no-progress",
    )
    assert code == 0, err
    np.testing.assert_array_equal(open_labels(tmp_path / "o2.ome.zarr", "gold").load(), other)


def test_usage_error_exit_2(capsys):
    code, _, err = run(capsys, "info")
    assert code == 2
    assert "Missing argument" in err


def test_every_command_help_has_example(capsys):
    for cmd in ("info", "convert", "sample", "segment", "evaluate", "features", "verify", "mesh"):
        code, out, _ = run(capsys, cmd, "--help")
        assert code == 0
        assert "Example: dls-microscopy " + cmd in out


def test_console_script_version():
    res = subprocess.run(
        [sys.executable, "-m", "dls_microscopy.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0
    assert res.stdout.startswith("dls-microscopy ")


@pytest.mark.parametrize("module", ["dls_microscopy", "dls_microscopy.cli"])
def test_python_m_runs_the_cli_with_its_exit_codes(module, tmp_path):
    """``python -m dls_microscopy`` is the console script too (it said the package cannot be executed)."""
    version = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("dls-microscopy "), version.stderr
    missing = tmp_path / "nope.ome.zarr"
    res = subprocess.run(
        [sys.executable, "-m", module, "info", str(missing)], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and res.stderr.startswith(f"error: {missing}"), res.stderr


@pytest.mark.parametrize(
    ("text", "value"),
    [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1e6", 10**6), ("64 kib", 65536)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_parse_size_rejects_garbage():
    with pytest.raises(InputError):
        parse_size("lots")


def test_evaluate_json(capsys, store):
    lab = str(store / "labels" / "nuclei")
    code, out, err = run(capsys, "evaluate", lab, lab, "--json", "--thresholds", "0.5,0.9")
    assert code == 0, err
    res = json.loads(out)
    assert json.dumps(res).count('"f1": 1.0') == 2


def test_mesh_command_writes_meshes_and_descriptors(capsys, store, tmp_path):
    import pyarrow.parquet as pq
    import trimesh

    out = tmp_path / "meshes"
    code, stdout, err = run(
        capsys,
        "mesh",
        str(store),
        str(out),
        "--label-name",
        "nuclei",
        "--descriptors",
        str(tmp_path / "shape.parquet"),
        "--json",
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n_objects"] == 1
    glb = next(out.glob("*.glb"))
    scene = trimesh.load(glb)
    mesh = next(iter(scene.geometry.values()))
    assert mesh.is_watertight and mesh.volume > 0
    table = pq.read_table(tmp_path / "shape.parquet")
    assert table.num_rows == 1


def test_mesh_level_option_meshes_that_level_and_verifies(capsys, tmp_path):
    lab = np.zeros((8, 48, 48), np.uint16)
    lab[2:6, 8:24, 8:24] = 1
    lab[2:7, 28:44, 26:46] = 2
    store = write_ome_zarr(lab, tmp_path / "lab.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5), n_levels=2)
    out = tmp_path / "m1"
    code, stdout, err = run(capsys, "mesh", str(store), str(out), "--level", "1", "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(stdout)["n_objects"] == 2
    index = json.loads((out / "meshes.json").read_text())
    assert index["level"] == 1 and index["spacing_um"] == {"z": 1.0, "y": 1.0, "x": 1.0}
    assert run(capsys, "verify", str(out), "--recompute")[0] == 0  # the level is recorded
    code, _, err = run(capsys, "mesh", str(store), str(tmp_path / "m5"), "--level", "5")
    assert code == 2 and "level 5 does not exist" in err and not (tmp_path / "m5").exists()


def test_features_level_option_measures_that_level_and_verifies(capsys, tmp_path):
    import pyarrow.parquet as pq

    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 64, 64), seed=8)
    img, lab = np.asarray(s.image[0]), np.asarray(s.labels)
    store = write_ome_zarr(
        img, tmp_path / "s.ome.zarr", axes="zyx", spacing=(1, 0.5, 0.5), n_levels=2, labels={"nuclei": lab}
    )
    out = tmp_path / "f1"
    code, _, err = run(capsys, "features", str(store), "nuclei", str(out), "--level", "1", "--no-progress")
    assert code == 0, err
    objects = pq.read_table(out / "objects.parquet").to_pandas()
    coarse = np.asarray(open_labels(store, "nuclei", level=1).data)
    ids, counts = np.unique(coarse[coarse > 0], return_counts=True)
    assert list(objects["Metadata_ObjectID"]) == list(ids)
    np.testing.assert_allclose(objects["Nuclei_AreaShape_Volume"], counts * 1.0 * 1.0 * 1.0)  # 1 µm voxels
    assert run(capsys, "verify", str(out), "--recompute")[0] == 0
    # a label file made on that level's grid serves; one of full resolution is refused, saying why
    tifffile.imwrite(tmp_path / "coarse.tif", coarse)
    code, _, err = run(capsys, "features", str(store), str(tmp_path / "coarse.tif"), str(tmp_path / "f2"),
                       "--level", "1", "--no-progress")  # fmt: skip
    assert code == 0, err
    tifffile.imwrite(tmp_path / "full.tif", lab)
    code, _, err = run(capsys, "features", str(store), str(tmp_path / "full.tif"), str(tmp_path / "f3"),
                       "--level", "1")  # fmt: skip
    assert code == 2 and "resolution level 1" in err and not (tmp_path / "f3").exists()


def test_segment_level_option_then_features_at_that_level(capsys, tmp_path):
    """A quick look at a large image: segment a coarser level, measure the same level."""
    import pyarrow.parquet as pq

    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 96, 96), seed=9)
    image = np.asarray(s.image[0])
    store = write_ome_zarr(image, tmp_path / "s.ome.zarr", axes="zyx", spacing=(1, 0.25, 0.25), n_levels=2)
    code, _, err = run(capsys, "segment", str(store), "--level", "1", "--diameter", "6")
    assert code == 2 and "give an output path" in err and not (store / "labels").exists()
    out = tmp_path / "l1.ome.zarr"
    code, stdout, err = run(capsys, "segment", str(store), str(out), "--level", "1", "--diameter=6", "--json")
    assert code == 0, err
    labels = open_volume(out)
    level1 = open_volume(store, level=1)
    assert labels.spatial_shape == level1.spatial_shape and labels.spacing == level1.spacing
    assert labels.metadata["dls_microscopy"]["segmentation"]["level"] == 1
    table = tmp_path / "f"
    code, _, err = run(capsys, "features", str(store), str(out), str(table), "--level=1", "--no-progress")
    assert code == 0, err
    assert pq.read_table(table / "objects.parquet").num_rows == json.loads(stdout)["objects"] > 0
    assert json.loads(pq.read_schema(table / "objects.parquet").metadata[b"dls_microscopy"])["level"] == 1
    # without --level, the shapes differ: the labels' record says which level to give
    code, _, err = run(capsys, "features", str(store), str(out), str(tmp_path / "f0"))
    assert code == 2 and "give --level 1" in err
    # with a voxel size given, the label file's level takes the image's voxel there: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run(capsys, "segment", str(store), str(tmp_path / "g.ome.zarr"), "--level=1",
                           "--diameter=6", "--spacing", "2,0.5,0.5")  # fmt: skip
        assert code == 0, err
        code, _, err = run(capsys, "features", str(store), str(tmp_path / "g.ome.zarr"), str(tmp_path / "fg"),
                           "--level=1", "--spacing", "2,0.5,0.5", "--no-progress")  # fmt: skip
        assert code == 0, err
    voxel = json.loads(pq.read_schema(tmp_path / "fg" / "objects.parquet").metadata[b"dls_microscopy"])
    assert voxel["spacing_um"] == [2.0, 1.0, 1.0]


def test_features_label_mismatches_with_spacing_or_odd_records_are_one_line_errors(capsys, tmp_path):
    """A 2D label file with --spacing, or a label record of another shape, ended in internal errors."""
    import zarr

    img = np.zeros((8, 32, 32), np.uint16)
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", axes="zyx", n_levels=2, labels={"nuclei": img})
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((32, 32), np.uint16))
    code, _, err = run(capsys, "features", str(store), str(tmp_path / "flat.tif"), str(tmp_path / "a"),
                       "--spacing", "1,0.5,0.5")  # fmt: skip
    assert code == 2 and "3D" in err and "internal error" not in err
    small = write_ome_zarr(np.zeros((8, 16, 16), np.uint16), tmp_path / "l.ome.zarr", axes="zyx")
    for record in ({"segmentation": None}, {"segmentation": {"level": 2}}):
        zarr.open_group(str(small), mode="a").attrs["dls_microscopy"] = record
        for level in ("0", "1"):
            out = str(tmp_path / "b")
            code, _, err = run(capsys, "features", str(store), str(small), out, f"--level={level}")
            assert code == 2 and "internal error" not in err, err
            assert ("give --level 2" in err) == (record["segmentation"] is not None), err
    # a record without a level is of full resolution (written only above 0)
    zarr.open_group(str(small), mode="a").attrs["dls_microscopy"] = {"segmentation": {"method": "threshold"}}
    code, _, err = run(capsys, "features", str(store), str(small), str(tmp_path / "b"), "--level=1")
    assert code == 2 and "give --level 0" in err, err


def test_time_point_option_of_segment_features_and_embed(capsys, tmp_path):
    """A time series: without --time-point a one-line error naming the option; with it, that point."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    points = [make_synthetic_nuclei((12, 40, 40), seed=30 + t) for t in range(2)]
    tif = tmp_path / "movie.ome.tif"
    tifffile.imwrite(tif, np.stack([s.image[0] for s in points]), metadata={"axes": "TZYX"})
    code, _, err = run(capsys, "segment", str(tif), str(tmp_path / "x.ome.zarr"), "--diameter", "7")
    assert code == 2 and "2 time points" in err and "--time-point" in err and err.count("\n") == 1
    code, out, _ = run(
        capsys, "segment", str(tif), str(tmp_path / "t1.ome.zarr"), "--diameter", "7", "--time-point", "1",
        "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0
    n = json.loads(out)["objects"]
    labels = open_volume(tmp_path / "t1.ome.zarr").load()
    assert labels.shape == (12, 40, 40) and n == len(np.unique(labels)) - 1 > 3
    # the labels of time point 1 match its image, not time point 0's
    inside = np.asarray(points[1].image[0])[labels > 0].mean()
    assert inside > np.asarray(points[1].image[0])[labels == 0].mean()
    code, out, err = run(capsys, "features", str(tif), str(tmp_path / "t1.ome.zarr"), str(tmp_path / "f"),
                         "--time-point", "1", "--no-progress", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_objects"] == n
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["parameters"]["time_point"] == 1
    import pyarrow.parquet as pq

    objects = pq.read_table(tmp_path / "f" / "objects.parquet").to_pandas()
    assert (objects["Metadata_TimePoint"] == 1).all()
    assert (objects["Metadata_ImageID"] == "movie.ome.tif_t1").all()
    # the intensities are time point 1's: each object's mean over its voxels in that image
    t1 = np.asarray(points[1].image[0], np.float64)
    want = [t1[labels == i].mean() for i in objects["Metadata_ObjectID"]]
    (mean,) = [c for c in objects.columns if c.startswith("Nuclei_Intensity_MeanIntensity_")]
    np.testing.assert_allclose(objects[mean], want, rtol=1e-9)
    code, _, err = run(capsys, "features", str(tif), str(tmp_path / "t1.ome.zarr"), str(tmp_path / "g"))
    assert code == 2 and "--time-point" in err
    code, _, err = run(capsys, "segment", str(tif), str(tmp_path / "y.ome.zarr"), "--time-point", "5")
    assert code == 2 and "time point 5 out of range (0..1)" in err
    still = tmp_path / "still.tif"  # no time axis: a time point other than 0 is an error, not ignored
    tifffile.imwrite(still, np.asarray(points[0].image[0]), metadata={"axes": "ZYX"})
    code, _, err = run(capsys, "segment", str(still), str(tmp_path / "z.ome.zarr"), "--time-point", "1")
    assert code == 2 and "no time axis" in err
    # embed train / apply take the same option (an image model reads the image's time point)
    model = tmp_path / "m.pt"
    code, _, err = run(capsys, "embed", "train", str(tif), str(tmp_path / "t1.ome.zarr"), "--kind", "image",
                       "--out", str(model), "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                       "--time-point", "1")  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "embed", "apply", str(tif), str(tmp_path / "t1.ome.zarr"), str(model),
                         str(tmp_path / "e.parquet"), "--device", "cpu", "--time-point", "1",
                         "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_objects"] == n
    code, _, err = run(capsys, "embed", "apply", str(tif), str(tmp_path / "t1.ome.zarr"), str(model),
                       str(tmp_path / "e2.parquet"), "--device", "cpu")  # fmt: skip
    assert code == 2 and "--time-point" in err


def test_an_output_over_an_input_is_refused_and_the_input_kept(capsys, tmp_path):
    """--overwrite must never replace an input: output = input, holds it, or lies in its store."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((16, 48, 48), seed=1)
    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "img.tif", s.image[0])
    tifffile.imwrite(d / "lab.tif", s.labels)
    store = write_ome_zarr(s.image[:1], tmp_path / "s.ome.zarr", axes="czyx", labels={"nuclei": s.labels})
    before = {p: p.read_bytes() for p in d.iterdir()}
    cases = [
        ["features", str(d / "img.tif"), str(d / "lab.tif"), str(d / "img.tif"), "--overwrite"],
        ["features", str(d / "img.tif"), str(d / "lab.tif"), str(d), "--overwrite"],
        ["features", str(store), "nuclei", str(store / "features")],
        ["mesh", str(d / "lab.tif"), str(d), "--overwrite"],
        ["mesh", str(d / "lab.tif"), str(tmp_path / "m"), "--descriptors", str(d / "lab.tif")],
        ["convert", str(d / "img.tif"), str(d / "img.tif"), "--overwrite"],
        ["convert", str(store), str(store), "--overwrite"],
        ["segment", str(d / "img.tif"), str(d / "img.tif"), "--overwrite", "--diameter", "7"],
    ]
    for args in cases:
        code, _, err = run(capsys, *args, "--no-progress")
        assert code == 2 and "inputs are never written" in err, (args, err)
    assert {p: p.read_bytes() for p in d.iterdir()} == before
    assert open_labels(store, "nuclei").load().max() == s.labels.max()
    assert not (tmp_path / "m").exists() and not (store / "features").exists()
    # a descriptors file that exists is replaced only with --overwrite
    (tmp_path / "t.parquet").write_bytes(b"keep")
    code, _, err = run(capsys, "mesh", str(d / "lab.tif"), str(tmp_path / "m2"), "--descriptors",
                       str(tmp_path / "t.parquet"), "--no-progress")  # fmt: skip
    assert code == 2 and "already exists" in err and (tmp_path / "t.parquet").read_bytes() == b"keep"


@pytest.mark.parametrize("command", ["features", "mesh", "convert", "segment"])
def test_overwrite_replaces_only_an_output_of_ours(capsys, tmp_path, command):
    """--overwrite deleted any folder given as the output: a typo'd path lost a thesis."""
    from dls_microscopy.sample_data import make_synthetic_nuclei

    s = make_synthetic_nuclei((12, 40, 40), seed=1)
    tifffile.imwrite(tmp_path / "img.tif", s.image[0])
    tifffile.imwrite(tmp_path / "lab.tif", s.labels)
    inputs = {
        "features": [str(tmp_path / "img.tif"), str(tmp_path / "lab.tif")],
        "mesh": [str(tmp_path / "lab.tif")],
        "convert": [str(tmp_path / "img.tif")],
        "segment": [str(tmp_path / "img.tif")],
    }[command]
    extra = ["--diameter", "7"] if command == "segment" else []
    out = tmp_path / "P"
    out.mkdir()
    (out / "thesis.docx").write_text("three years")
    code, _, err = run(capsys, command, *inputs, str(out), "--overwrite", "--no-progress", *extra)
    assert code == 2 and str(out) in err and "not an output of dls-microscopy" in err, err
    assert [p.name for p in out.iterdir()] == ["thesis.docx"]
    # our own output is replaced: written once, then again over itself
    (out / "thesis.docx").unlink()
    for _ in range(2):
        code, _, err = run(capsys, command, *inputs, str(out), "--overwrite", "--no-progress", *extra)
        assert code == 0, err


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["convert", "{img}", "{tmp}/c.ome.zarr", "--chunks", "0"], "chunks must be at least 1"),
        (["convert", "{img}", "{tmp}/c.ome.zarr", "--chunks", "-5"], "chunks must be at least 1"),
        (["convert", "{img}", "{tmp}/c.ome.zarr", "--shards", "-1"], "shards must be at least 0"),
        (["convert", "{img}", "{tmp}/c.ome.zarr", "--clevel", "99"], "compression level must be 0 to 9"),
        (["convert", "{img}", "{tmp}/c.ome.zarr", "--levels", "0"], "pyramid levels must be at least 1"),
        (["segment", "{img}", "{tmp}/s.ome.zarr", "--memory-budget", "0"], "memory size must be positive"),
        (
            ["segment", "{img}", "{tmp}/s.ome.zarr", "--param", "diameter_um=5", "--diameter", "9"],
            "--diameter and --param diameter_um=... both give diameter_um",  # 9 won silently (QA)
        ),
        (["features", "{img}", "{lab}", "{tmp}/f", "--time-point", "-1"], "time points count from 0"),
        (["features", "{img}", "{flt}", "{tmp}/f"], "{flt}: labels must be an integer label image"),
        (["features", "{img}", "{neg}", "{tmp}/f"], "{neg}: labels contain negative ids"),
        (["evaluate", "{flt}", "{lab}"], "{flt}: predicted labels must be an integer label image"),
        # found while reading the data: the file is still named (QA, 2026-11-29)
        (["mesh", "{neg}", "{tmp}/m"], "{neg}: labels must be non-negative integers"),
        (["evaluate", "{lab}", "{neg}"], "{neg}: gt labels contain negative ids"),
        (["evaluate", "{neg}", "{lab}"], "{neg}: pred labels contain negative ids"),
        (["features", "{nan}", "{lab}", "{tmp}/f"], "{nan}: channel 0 has 1 NaN/inf value(s) inside objects"),
    ],
)
def test_bad_options_and_labels_exit_2_with_the_reason(capsys, tmp_path, args, reason):
    """Values no library should see (review findings): a reason, the file where there is one, no output."""
    rng = np.random.default_rng(0)
    names = {
        "img": "img.tif",
        "lab": "lab.tif",
        "flt": "float.tif",
        "neg": "neg.tif",
        "nan": "nan.tif",
        "tmp": "",
    }
    paths = {k: str(tmp_path / v) if v else str(tmp_path) for k, v in names.items()}
    tifffile.imwrite(paths["img"], rng.integers(0, 999, (8, 24, 24)).astype(np.uint16))
    lab = np.zeros((8, 24, 24), np.int32)
    lab[2:5, 3:9, 3:9] = 1
    tifffile.imwrite(paths["lab"], lab)
    tifffile.imwrite(paths["flt"], lab.astype(np.float32))
    tifffile.imwrite(paths["neg"], -lab)
    nan = rng.random((8, 24, 24)).astype(np.float32)
    nan[3, 5, 5] = np.nan  # inside object 1
    tifffile.imwrite(paths["nan"], nan)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(
        capsys, *[a.format(**paths) for a in args], *(["--no-progress"] if args[0] != "evaluate" else [])
    )
    assert code == 2 and reason.format(**paths) in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_truncated_tiff_gives_one_line_not_tifffiles_too(tmp_path):
    """tifffile logs its own errors while parsing a damaged file; the user sees only ours."""
    path = _truncated_tiff(tmp_path / "cut.tif")
    res = subprocess.run(
        [sys.executable, "-m", "dls_microscopy.cli", "info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()], res.stderr
    assert "truncated or corrupt TIFF" in res.stderr and "tifffile" in res.stderr


def test_sample_keeps_existing_files_unless_overwrite(capsys, tmp_path):
    """An edited pipeline.yaml is not replaced by a second 'sample' (review finding)."""
    out = tmp_path / "s"
    code, _, _ = run(capsys, "sample", str(out), "--plate")
    assert code == 0
    (out / "pipeline.yaml").write_text("# mine\n")
    code, _, err = run(capsys, "sample", str(out), "--plate")
    assert code == 2 and "pipeline.yaml" in err and "--overwrite" in err
    assert (out / "pipeline.yaml").read_text() == "# mine\n"
    code, _, _ = run(capsys, "sample", str(out), "--plate", "--overwrite")
    assert code == 0 and (out / "pipeline.yaml").read_text() != "# mine\n"


def test_run_refuses_zero_workers_before_anything(capsys, tmp_path):
    """``run --workers 0`` was accepted in silence when no field was left to do."""
    code, _, err = run(capsys, "run", str(tmp_path / "pipeline.yaml"), "--workers", "0")
    assert code == 2 and "--workers" in err and "greater than or equal to 1" in err


def test_segment_json_gives_the_halo_overhead_and_warns_when_halos_dominate(
    capsys, tmp_path, caplog, monkeypatch
):
    """A budget too small for the halo made a real volume's run 21x slower without a word."""
    import logging

    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment import _blockwise_plan

    s = make_synthetic_nuclei((24, 96, 96), seed=4)
    store = write_ome_zarr(s.image[:1], tmp_path / "n.ome.zarr", axes="czyx", spacing=s.spacing, n_levels=1)
    got = {}
    for budget in ("2GB", "12MB"):
        monkeypatch.setattr(_blockwise_plan, "_warned", set())
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
            code, out, err = run(
                capsys, "segment", str(store), str(tmp_path / f"{budget}.ome.zarr"), "--diameter", "6",
                "--memory-budget", budget, "--workers", "1", "--no-progress", "--json",
            )  # fmt: skip
        assert code == 0, err
        warned = [r.getMessage() for r in caplog.records if "the blocks compute" in r.getMessage()]
        got[budget] = (json.loads(out)["halo_overhead"], warned)
    assert got["2GB"] == (1.0, [])
    overhead, (message,) = got["12MB"]
    assert overhead > 3 and f"{overhead:.1f}×" in message and "--memory-budget" in message


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_segment_imports_torch_only_to_find_a_device(tmp_path, device):
    """What the docs' memory table rests on: torch (0.25-0.6 GB resident) only where device auto
    may find a GPU (a GPU driver's device file, or macOS); never with device cpu."""
    from dls_microscopy.device import _surely_cpu_only
    from dls_microscopy.sample_data import make_synthetic_nuclei

    imported = device == "auto" and not _surely_cpu_only()

    s = make_synthetic_nuclei((16, 64, 64), seed=4)
    store = write_ome_zarr(s.image[:1], tmp_path / "n.ome.zarr", axes="czyx", spacing=s.spacing, n_levels=1)
    code = (
        "import sys\n"
        "from dls_microscopy.cli import main\n"
        f"rc = main(['segment', {str(store)!r}, {str(tmp_path / 'l.ome.zarr')!r}, '--diameter', '6',\n"
        f"           '--device', {device!r}, '--no-progress'])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.stdout.split()[-2:] == ["0", str(imported)], res.stderr[-2000:]


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "{store}", "{tmp}/s.ome.zarr", "--channel", "DAPI", "--workers", "0"],  # ran, exit 0
        ["segment", "{store}", "{tmp}/s.ome.zarr", "--channel", "DAPI", "--workers", "-1"],  # exit 1
        ["features", "{store}", "nuclei", "{tmp}/f", "--workers", "0"],  # ran, exit 0
        ["features", "{store}", "nuclei", "{tmp}/f", "--workers", "-2"],  # a negative memory budget
        ["embed", "train", "{store}", "nuclei", "--kind", "shape", "--out", "{tmp}/e.pt", "--threads", "0"],
        ["embed", "apply", "{store}", "nuclei", "{tmp}/m.pt", "{tmp}/e.parquet", "--threads", "0"],
        ["embed", "apply", "{store}", "nuclei", "{tmp}/m.pt", "{tmp}/e.parquet", "--batch-size", "0"],
    ],
)
def test_counts_below_one_are_usage_errors_exit_2(capsys, tmp_path, store, args):
    """As ``run --workers 0``: 0 workers or threads ran in silence (exit 0), -1 was an internal error."""
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, *[a.format(store=store, tmp=tmp_path) for a in args], "--no-progress"
                       if args[0] in ("segment", "features") else "--json")  # fmt: skip
    assert code == 2 and f"Invalid value for '{args[-2]}'" in err and "internal error" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("series", ["1", "-1"])
@pytest.mark.parametrize(
    "args",
    [
        ["info", "{store}"],
        ["segment", "{store}", "{tmp}/seg.ome.zarr", "--channel", "DAPI", "--no-progress"],
        ["features", "{store}", "nuclei", "{tmp}/f", "--no-progress"],
    ],
)
def test_a_series_an_ome_zarr_image_lacks_exits_2(capsys, tmp_path, store, args, series):
    """A TIFF or HDF5 refused it; an OME-Zarr image gave its one series instead (exit 0, other data)."""
    code, out, err = run(capsys, *[a.format(store=store, tmp=tmp_path) for a in args], "--series", series)
    assert code == 2 and f"series {series} does not exist" in err and not out, err
    assert not (tmp_path / "seg.ome.zarr").exists() and not (tmp_path / "f").exists()
    assert run(capsys, "info", str(store), "--series", "0")[0] == 0  # its one series
