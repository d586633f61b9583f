"""The napari plugin's logic without a display: manifest, reader layers, writer, sample data, CLI."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dls_microscopy.napari._reader import napari_get_reader
from dls_microscopy.napari._writer import write_labels_layer
from dls_microscopy.napari.layers import LevelView, read_path, volume_layer_data

IDR = "omezarr_idr0062A_6001240/6001240_labels.zarr"
IDR_SPACING = (0.5002025531914894, 0.3603981534640209, 0.3603981534640209)


def test_manifest_is_valid_and_registered():
    """``npe2 validate`` passes and the napari.manifest entry point finds the manifest."""
    npe2 = pytest.importorskip("npe2")
    from importlib.metadata import entry_points

    path = Path(importlib.util.find_spec("dls_microscopy.napari").origin).with_name("napari.yaml")
    manifest = npe2.PluginManifest.from_file(path)
    assert manifest.name == "dls-microscopy"
    npe2.PluginManifest.validate(manifest.model_dump())
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment",
        "Meshes and shape",
        "Features and embeddings",
        "Export",
        "Pipeline",
        "Plate",
    }
    for command in manifest.contributions.commands:  # every python_name resolves
        module, _, name = command.python_name.partition(":")
        assert hasattr(importlib.import_module(module), name), command.python_name
    eps = [e for e in entry_points(group="napari.manifest") if e.name == "dls-microscopy"]
    if not eps:
        pytest.skip("the package is installed without the napari.manifest entry point (reinstall: make venv)")
    assert eps[0].value == "dls_microscopy.napari:napari.yaml"


def test_reader_on_real_idr_reads_nothing(shared_data, count_reads):
    """Layers, names, colormaps and µm scale of the real IDR store, with no pixel read at all."""
    reader = napari_get_reader(str(shared_data / IDR))
    assert reader is not None
    layers = reader(str(shared_data / IDR))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("LaminB1", "image"),
        ("Dapi", "image"),
        ("labels/0", "labels"),
    ]
    for data, kw, _ in layers:
        assert kw["multiscale"] and kw["scale"] == pytest.approx(IDR_SPACING)
        assert all(isinstance(lv, LevelView) for lv in data)
    assert [kw["colormap"] for _, kw, _ in layers[:2]] == ["green", "magenta"]
    assert [tuple(lv.shape) for lv in layers[0][0]] == [(236, 275, 271), (236, 137, 135), (236, 68, 67)]
    assert len(layers[2][0]) == 4 and layers[2][0][0].dtype == np.int8
    assert count_reads == []
    # a plane of a channel reads that plane only (one fused read), and the right channel
    plane = np.asarray(layers[1][0][0][100][:, 10:20])
    assert plane.shape == (275, 10)
    assert sum(n for _, n in count_reads) == 275 * 10
    from dls_microscopy.io import open_volume

    expected = open_volume(shared_data / IDR).data[1, 100, :, 10:20].compute()
    np.testing.assert_array_equal(plane, expected)


@pytest.mark.parametrize("name", ["notes.txt", "folder", "missing.ome.zarr"])
def test_reader_declines_what_it_does_not_handle(tmp_path, name):
    target = tmp_path / name
    if name == "notes.txt":
        target.write_text("not an image")
    elif name == "folder":
        target.mkdir()
    assert napari_get_reader(str(target)) is None
    assert napari_get_reader([str(target), str(target)]) is None


def test_level_view_composes_indices():
    import dask.array as da

    base = da.from_array(np.arange(2 * 6 * 5 * 4).reshape(2, 6, 5, 4), chunks=(1, 6, 5, 4))
    view = LevelView(base[1])  # the channel is taken first, as Volume.select does at the reader
    ref = np.asarray(base[1])
    assert view.shape == (6, 5, 4)
    np.testing.assert_array_equal(np.asarray(view[:, 1:4][2]), ref[:, 1:4][2])
    np.testing.assert_array_equal(np.asarray(view[-1, ..., 2]), ref[-1, ..., 2])
    np.testing.assert_array_equal(view[::2, 0], ref[::2, 0])
    np.testing.assert_array_equal(np.asarray(view[1:3][1:]), ref[2:3])
    with pytest.raises(IndexError):
        view[6]


def test_sample_data_layers():
    from dls_microscopy.napari._sample_data import real_nuclei, synthetic_nuclei

    synth = synthetic_nuclei()
    assert [(kw["name"], kind) for _, kw, kind in synth] == [
        ("DAPI", "image"),
        ("LaminB1", "image"),
        ("ground truth", "labels"),
    ]
    assert synth[0][1]["scale"] == (1.0, 0.3, 0.3)
    real = real_nuclei()
    assert [kind for _, _, kind in real] == ["image", "labels"]
    assert int(np.asarray(real[1][0]).max()) == 54


def test_writer_writes_ngff_labels_that_readers_open(tmp_path):
    """Labels layer → standalone NGFF label image and → labels/ of an image; napari-ome-zarr reads both."""
    from dls_microscopy.io import open_labels, open_volume, write_ome_zarr
    from dls_microscopy.sample_data import make_synthetic_nuclei

    sample = make_synthetic_nuclei((12, 40, 40), spacing=(1.0, 0.5, 0.5), diameter_um=6.0, seed=1)
    meta = {"name": "nuclei", "scale": (1.0, 0.5, 0.5), "metadata": {}}
    (standalone,) = write_labels_layer(str(tmp_path / "nuclei.zarr"), sample.labels, meta)
    vol = open_volume(standalone)
    assert vol.spacing == (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(vol.load(), sample.labels)

    image = tmp_path / "image.ome.zarr"
    write_ome_zarr(sample.as_volume(), image)
    layers = volume_layer_data(sample.as_volume(labels=True))
    (inside,) = write_labels_layer(str(image / "labels" / "cells"), [layers[0][0]], meta)
    assert Path(inside) == image / "labels" / "cells"
    np.testing.assert_array_equal(open_labels(image, "cells").load(), sample.labels)

    if importlib.util.find_spec("napari_ome_zarr") is not None:
        from napari_ome_zarr import napari_get_reader as ome_reader

        found = ome_reader(str(image))(str(image))
        kinds = [kind for _, _, kind in found]
        assert "labels" in kinds, kinds
        lab = next(d for d, _, kind in found if kind == "labels")
        lab0 = lab[0] if isinstance(lab, list) else lab
        np.testing.assert_array_equal(np.asarray(lab0).squeeze(), sample.labels)
    else:  # fall back to ome-zarr-py's own reader
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader

        nodes = list(Reader(parse_url(str(image / "labels" / "cells")))())
        np.testing.assert_array_equal(np.asarray(nodes[0].data[0]).squeeze(), sample.labels)


def test_writer_rejects_float_layers(tmp_path):
    from dls_microscopy.errors import OutputError

    # an OutputError: napari takes a writer's ValueError for "not a valid writer" and drops it
    with pytest.raises(OutputError, match="cannot save the labels layer: labels must be integers"):
        write_labels_layer(str(tmp_path / "x.zarr"), np.zeros((4, 4, 4), np.float32), {"scale": (1, 1, 1)})


def test_read_path_on_a_plate_opens_one_field(small_plate):
    plate = small_plate
    layers = read_path(plate)
    assert len(layers) == 1
    meta = layers[0][1]["metadata"]
    assert (meta["dls_plate"], meta["dls_well"], meta["dls_field"]) == (str(plate), "A/1", 0)
    other = read_path(plate, well="B/2", field=0)
    assert other[0][1]["metadata"]["dls_well"] == "B/2"
    assert not np.array_equal(np.asarray(layers[0][0]), np.asarray(other[0][0]))


def test_cli_gui_without_the_gui_extra_exits_2(monkeypatch, capsys):
    from dls_microscopy import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "napari" else real(name, *a)
    )
    assert cli.main(["gui"]) == 2
    err = capsys.readouterr().err
    assert "gui' extra" in err and "pip install 'dls-microscopy[gui]'" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_gui_bad_path_exits_2(tmp_path, capsys, monkeypatch):
    from dls_microscopy import cli

    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert cli.main(["gui", str(tmp_path / "nope.ome.zarr")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_icon_files_exist():
    from dls_microscopy.napari.app import icon_path

    assert icon_path("png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in icon_path("svg").read_text()


def test_reader_tiff_and_hdf5(tmp_path):
    """OME-TIFF and HDF5 (``file.h5:/dataset``) open as image layers with their µm scale."""
    import tifffile

    from dls_microscopy.sample_data import nuclei_1135_resource

    data = np.arange(2 * 4 * 8 * 8, dtype=np.uint16).reshape(2, 4, 8, 8)
    tif = tmp_path / "x.ome.tif"
    tifffile.imwrite(
        tif,
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeZ": 2.0,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeX": 0.25,
            "Channel": {"Name": ["a", "b"]},
        },
    )
    layers = napari_get_reader(str(tif))(str(tif))
    assert [(kw["name"], kw["scale"]) for _, kw, _ in layers] == [
        ("a", (2.0, 0.25, 0.25)),
        ("b", (2.0, 0.25, 0.25)),
    ]
    np.testing.assert_array_equal(np.asarray(layers[1][0]), data[1])
    # a label TIFF saved beside its image opens as labels (it opened as an image layer)
    tifffile.imwrite(tmp_path / "x_labels.tif", data[0], metadata={"axes": "ZYX"})
    ((_, kw, kind),) = napari_get_reader(str(tmp_path / "x_labels.tif"))(str(tmp_path / "x_labels.tif"))
    assert (kw["name"], kind) == ("x_labels", "labels")
    h5 = tmp_path / "n.h5"
    h5.write_bytes(nuclei_1135_resource().read_bytes())
    spec = f"{h5}:/raw"
    (layer,) = napari_get_reader(spec)(spec)
    assert layer[2] == "image" and layer[1]["scale"] == pytest.approx((0.284, 0.127, 0.127), abs=1e-3)
    # the file itself (File > Open cannot name a dataset): every 3D dataset, labels as labels
    layers = napari_get_reader(str(h5))(str(h5))
    assert [(kw["name"], kind, kw["metadata"]["dls_source"]) for _, kw, kind in layers] == [
        ("raw", "image", f"{h5}:/raw"),
        ("label", "labels", f"{h5}:/label"),
    ]
    assert layers[1][1]["scale"] == layers[0][1]["scale"]


def test_reader_hdf5_without_a_volume_says_what_the_file_holds(tmp_path):
    import h5py

    from dls_microscopy.errors import InputError

    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f["table"] = np.arange(10)
        f["plane"] = np.zeros((8, 8), np.uint16)
    with pytest.raises(InputError, match=r"no dataset of 3 or more dimensions .*/plane 8×8, /table 10"):
        napari_get_reader(str(path))(str(path))
    with h5py.File(path, "a") as f:  # one volume among them: it alone opens
        f["stack/raw"] = np.zeros((4, 8, 8), np.uint16)
    ((_, kw, kind),) = napari_get_reader(str(path))(str(path))
    assert (kw["name"], kind) == ("raw", "image")


def test_cli_gui_without_display_exits_2(monkeypatch, capsys):
    import sys

    from dls_microscopy import cli

    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is for Linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["gui"]) == 2
    assert "no display" in capsys.readouterr().err


@pytest.mark.gui
def test_embedding_determinism_after_a_viewer_does_not_crash():
    """Seeded embedding work after napari made its GL context: no triton/LLVM clash (it segfaulted)."""
    import subprocess
    import sys

    code = (
        "import napari, torch\n"
        "v = napari.Viewer(show=False)\n"
        "from dls_microscopy.features.embeddings.training import deterministic\n"
        "with deterministic(1):\n"
        "    assert torch.are_deterministic_algorithms_enabled()\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "v.close()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])


def test_writer_writes_the_full_resolution_level_of_naparis_multiscale_data(tmp_path):
    """napari hands a MultiScaleData (no list): the coarsest level was written at level 0's scale."""
    from napari.layers._multiscale_data import MultiScaleData

    from dls_microscopy.io import open_volume

    full = np.zeros((8, 32, 32), np.uint16)
    full[2:6, 4:20, 4:20] = 3
    data = MultiScaleData([full, full[:, ::2, ::2], full[:, ::4, ::4]])
    (written,) = write_labels_layer(
        str(tmp_path / "ms.zarr"), data, {"scale": (1.0, 0.5, 0.5), "metadata": {}}
    )
    vol = open_volume(written)
    assert vol.spacing == (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(vol.load(), full)


def test_a_refusal_is_logged_in_one_line_and_a_bug_with_its_traceback(caplog, tmp_path):
    """In plain napari no logging is set up: a warning's traceback reached the console (plugin QA)."""
    import logging

    from dls_microscopy.errors import InputError
    from dls_microscopy.napari._reader import _read
    from dls_microscopy.napari._task_helpers import log_failure as _log_failure

    with caplog.at_level(logging.WARNING):
        _log_failure("Segment: %s", InputError("a 3D layer is needed"))
        _log_failure("Segment: %s", RuntimeError("a bug"))
        (tmp_path / "x.zarr").mkdir()
        with pytest.raises(InputError):
            _read(str(tmp_path / "x.zarr"))
    by_message = {r.getMessage(): r.exc_info for r in caplog.records}
    assert by_message["Segment: a 3D layer is needed"] is None
    assert by_message["Segment: a bug"] is not None
    assert by_message[f"DLS Microscopy cannot open {tmp_path / 'x.zarr'}"] is None


def test_a_zarr_folder_without_metadata_is_claimed_to_say_what_is_missing(tmp_path):
    """napari said only "Reader 'dls-microscopy' ... refused the file" (plugin QA)."""
    from dls_microscopy.errors import InputError
    from dls_microscopy.napari._reader import napari_get_reader

    (tmp_path / "empty.zarr").mkdir()
    (tmp_path / "plain").mkdir()
    assert napari_get_reader(str(tmp_path / "plain")) is None  # any folder: not ours to judge
    read = napari_get_reader(str(tmp_path / "empty.zarr"))
    assert read is not None
    with pytest.raises(InputError) as info:
        read(str(tmp_path / "empty.zarr"))
    assert "empty.zarr" in str(info.value)
