"""Every kind of bad input gives our error (exit code 2, one line naming the file), never a traceback.

This is also the catalogue quoted in the closing notes: run
``pytest tests/test_bad_input.py -s -k catalogue`` to print each case's message.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from dls_microscopy.cli import main
from dls_microscopy.errors import NonFiniteDataWarning
from dls_microscopy.io import write_ome_zarr


def _missing(tmp):
    return [str(tmp / "nope.ome.zarr")]


def _not_an_image(tmp):
    (tmp / "notes.tif").write_text("these are my lab notes")
    return [str(tmp / "notes.tif")]


def _truncated_tiff(tmp):
    img = np.random.default_rng(0).integers(0, 255, (20, 64, 64)).astype(np.uint8)
    tifffile.imwrite(tmp / "t.ome.tif", img, ome=True, metadata={"axes": "ZYX"})
    data = (tmp / "t.ome.tif").read_bytes()
    (tmp / "cut.ome.tif").write_bytes(data[: len(data) // 2])
    return [str(tmp / "cut.ome.tif")]


def _store(tmp, **kw):
    return write_ome_zarr(
        np.arange(16 * 32 * 32, dtype=np.uint16).reshape(16, 32, 32),
        tmp / "s.ome.zarr",
        chunks=16,
        shards=0,
        **kw,
    )


def _corrupt_chunk(tmp):
    out = _store(tmp)
    (out / "0" / "c" / "0" / "0" / "1").write_bytes(b"\x00garbage" * 7)
    return ["convert", str(out), str(tmp / "copy.ome.zarr"), "--no-progress"]


def _malformed_json(tmp):
    out = _store(tmp)
    (out / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {')
    return [str(out)]


def _spec_violation(tmp):
    out = _store(tmp)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"] = []
    (out / "zarr.json").write_text(json.dumps(meta))
    return [str(out)]


def _unsupported_dtype(tmp):
    tifffile.imwrite(tmp / "c.tif", np.zeros((4, 8, 8), np.complex64))
    return [str(tmp / "c.tif")]


def _zero_size(tmp):
    import zarr

    out = _store(tmp)
    shutil.rmtree(out / "0")
    zarr.open_group(str(out), mode="a").create_array(
        "0", shape=(0, 32, 32), dtype="uint16", dimension_names=("z", "y", "x")
    )
    return [str(out)]


def _two_d_for_segment(tmp):
    out = write_ome_zarr(np.ones((64, 64), np.uint16), tmp / "flat.ome.zarr")
    return ["segment", str(out), "--no-progress"]


def _wrong_channel(tmp):
    out = write_ome_zarr(np.ones((2, 8, 32, 32), np.uint16), tmp / "two.ome.zarr", axes="czyx")
    return ["segment", str(out), "--channel", "GFP", "--no-progress"]


def _hdf5_missing_dataset(tmp):
    import h5py

    with h5py.File(tmp / "x.h5", "w") as f:
        f["raw"] = np.zeros((4, 8, 8), np.uint8)
    return [str(tmp / "x.h5") + ":/labels"]


def _labels_of_another_shape(tmp):
    import h5py

    tifffile.imwrite(tmp / "t.ome.tif", np.ones((8, 16, 16), np.uint16), ome=True, metadata={"axes": "ZYX"})
    with h5py.File(tmp / "x.h5", "w") as f:
        f["raw"] = np.zeros((8, 16, 16), np.uint16)
        f["big"] = np.zeros((9, 16, 16), np.uint16)
    return [
        "convert",
        str(tmp / "t.ome.tif"),
        str(tmp / "copy.ome.zarr"),
        "--labels",
        f"a={tmp / 'x.h5'}:/big",
    ]


def _negative_label_ids(tmp):
    lab = np.zeros((8, 16, 16), np.int32)
    lab[1:3, 1:4, 1:4] = -5
    lab[5:7, 5:9, 5:9] = 3
    tifffile.imwrite(tmp / "t.ome.tif", np.ones((8, 16, 16), np.uint16), ome=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp / "l.ome.tif", lab, ome=True, metadata={"axes": "ZYX"})
    return [
        "convert",
        str(tmp / "t.ome.tif"),
        str(tmp / "copy.ome.zarr"),
        "--labels",
        f"n={tmp / 'l.ome.tif'}",
    ]


CASES = {
    "missing path": (_missing, "no such file"),
    "not an image": (_not_an_image, "not a supported image"),
    "truncated TIFF": (_truncated_tiff, ""),
    "corrupt zarr chunk": (_corrupt_chunk, "cannot read zarr array"),
    "malformed NGFF JSON": (_malformed_json, "JSON"),
    "NGFF spec violation": (_spec_violation, "NGFF"),
    "unsupported dtype": (_unsupported_dtype, "complex"),
    "zero-size axis": (_zero_size, "zero-size"),
    "2D where 3D is required": (_two_d_for_segment, "3D data required"),
    "wrong channel": (_wrong_channel, "GFP"),
    "HDF5 dataset missing": (_hdf5_missing_dataset, "labels"),
    "negative label ids": (_negative_label_ids, "l.ome.tif: labels 'n' hold negative ids (as low as -5)"),
    "labels of another shape": (_labels_of_another_shape, "x.h5:/big: labels 'a' have shape (9, 16, 16)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_catalogue(case, tmp_path, capsys):
    make, reason = CASES[case]
    args = make(tmp_path)
    if args[0] not in ("convert", "segment"):
        args = ["info", *args]
    code = main(args)
    err = capsys.readouterr().err
    with capsys.disabled():
        print(f"\n[{case}] exit {code}: {err.strip()}")
    assert code == 2, err
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert str(tmp_path) in err
    assert reason.lower() in err.lower()
    # nothing partial was left behind by a failed conversion
    assert not (tmp_path / "copy.ome.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def _nonfinite_tiff(tmp_path):
    img = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    img[0, 0, :5] = np.nan
    img[1, 1, 1] = np.inf
    tifffile.imwrite(tmp_path / "f.tif", img)
    return tmp_path / "f.tif"


def test_nonfinite_float_data_warns_and_says_how_handled(tmp_path):
    from dls_microscopy.io import convert

    src = _nonfinite_tiff(tmp_path)
    with pytest.warns(NonFiniteDataWarning, match="6 NaN/inf value.*written unchanged.*background"):
        convert(src, tmp_path / "f.ome.zarr")


@pytest.mark.filterwarnings("default::dls_microscopy.errors.NonFiniteDataWarning")
def test_nonfinite_warning_is_one_cli_line(tmp_path, capsys):
    src = _nonfinite_tiff(tmp_path)
    code = main(["convert", str(src), str(tmp_path / "f.ome.zarr"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0
    assert err.startswith("warning: ") and "6 NaN/inf" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "command",
    [
        ["convert", "{image}", "{out}", "--no-progress"],
        ["segment", "{image}", "{out}", "--diameter", "6", "--no-progress"],
        ["features", "{image}", "nuclei", "{out}", "--no-progress"],
        ["mesh", "{image}", "{out}", "--no-progress"],
        ["mesh", "{image}", "{tmp}/meshes", "--descriptors", "{out}.parquet", "--no-progress"],
    ],
    ids=["convert", "segment", "features", "mesh", "mesh-descriptors"],
)
def test_an_output_under_a_regular_file_exits_2(tmp_path, capsys, command):
    """OUT = notes.txt/out was an internal error (NotADirectoryError) after the work was done."""
    lab = np.zeros((8, 32, 32), np.uint16)
    lab[2:6, 4:12, 4:12] = 1
    pixels = 100 + 900 * lab  # one bright object: segment finds it, with no warning
    image = write_ome_zarr(pixels, tmp_path / "i.ome.zarr", labels={"nuclei": lab})
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "notes.txt" / "out"
    fill = {"image": str(image), "out": str(out), "tmp": str(tmp_path)}
    code = main([arg.format(**fill) for arg in command])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "notes.txt is not a folder" in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "meshes").exists()
