"""Writing OME-Zarr and reading it back: values, metadata, validation, interoperability."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.io import convert, open_labels, open_volume, write_ome_zarr
from dls_microscopy.io.zarr_write import validate_written_store

RNG = np.random.default_rng(42)


def _image(shape=(2, 20, 70, 90), dtype=np.uint16):
    if np.dtype(dtype).kind == "f":
        return RNG.normal(100, 10, shape).astype(dtype)
    return RNG.integers(0, 4000, shape).astype(dtype)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_round_trip_values_spacing_channels(tmp_path, version, dtype):
    img = _image(dtype=dtype)
    out = write_ome_zarr(
        img,
        tmp_path / "a.ome.zarr",
        axes="czyx",
        spacing=(2.0, 0.3, 0.25),
        channel_names=["DAPI", "LaminB1"],
        version=version,
        chunks=16,
        n_levels=3,
    )
    vol = open_volume(out)
    assert vol.axes == "czyx"
    assert vol.shape == img.shape
    assert vol.dtype == img.dtype
    assert vol.spacing == pytest.approx((2.0, 0.3, 0.25))
    assert vol.channel_names == ("DAPI", "LaminB1")
    np.testing.assert_array_equal(vol.data.compute(), img)
    assert vol.metadata["ngff_version"] == version
    assert vol.metadata["zarr_format"] == (3 if version == "0.5" else 2)
    assert len(vol.levels) == 3
    # level spacing doubles exactly where the shape halves
    for lv, sp in zip(vol.levels, vol.level_spacings, strict=True):
        for ax_i, s in zip((1, 2, 3), sp, strict=True):
            ratio = -(-img.shape[ax_i] // lv.shape[ax_i])
            assert s == pytest.approx((2.0, 0.3, 0.25)[ax_i - 1] * ratio)
    validate_written_store(out, version)


def test_pyramid_is_block_mean(tmp_path):
    img = _image((1, 8, 33, 47))
    out = write_ome_zarr(
        img, tmp_path / "p.ome.zarr", axes="czyx", spacing=(0.5, 0.5, 0.5), n_levels=2, chunks=8
    )
    lvl1 = open_volume(out, level=1).data.compute()
    # isotropic: every spatial axis halved; odd edges replicate the last voxel
    padded = np.pad(img.astype(np.float64), [(0, 0), (0, 0), (0, 1), (0, 1)], mode="edge")
    expect = padded.reshape(1, 4, 2, 17, 2, 24, 2).mean(axis=(2, 4, 6))
    # integer means round half up (exact integer arithmetic)
    np.testing.assert_array_equal(lvl1, np.floor(expect + 0.5).astype(np.uint16))


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_mean_levels_carry_the_translation_of_their_voxel_centres(tmp_path, version):
    # a ramp along x: each coarse voxel's value is the position (in level-0 voxels) of
    # its box's centre, which the metadata must place it at; labels keep each box's
    # first voxel, so they sit where level 0's do
    img = np.broadcast_to(np.arange(64, dtype=np.float32) * 4, (8, 64, 64)).copy()
    out = write_ome_zarr(
        img,
        tmp_path / "t.ome.zarr",
        spacing=(3.0, 0.5, 0.5),
        n_levels=3,
        version=version,
        labels={"cells": np.ones(img.shape, np.uint8)},
    )

    def transforms(path):
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        return [
            ds["coordinateTransformations"] for ds in attrs.get("ome", attrs)["multiscales"][0]["datasets"]
        ]

    image_levels = transforms(out)
    assert len(image_levels[0]) == 1  # level 0: scale only
    for k, level in enumerate(image_levels[1:], start=1):
        by_type = {t["type"]: t[t["type"]] for t in level}
        scale, translation = by_type["scale"], by_type["translation"]
        full = (3.0, 0.5, 0.5)
        assert translation == pytest.approx([(s - s0) / 2 for s, s0 in zip(scale, full, strict=True)])
        ramp = open_volume(out, level=k).data[0, 0].compute()  # along x
        centre_um = np.arange(ramp.size) * scale[2] + translation[2]
        np.testing.assert_allclose(ramp / 4 * 0.5, centre_um)
    assert all(len(level) == 1 for level in transforms(out / "labels" / "cells"))
    validate_written_store(out, version)


def test_sharded_layout_and_codec(tmp_path):
    img = _image((1, 64, 128, 128))
    out = write_ome_zarr(img, tmp_path / "s.ome.zarr", axes="czyx", spacing=(1, 1, 1), chunks=32, shards=64)
    meta = json.loads((out / "0" / "zarr.json").read_text())
    codec = meta["codecs"][0]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [1, 32, 32, 32]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 64, 64, 64]
    inner = codec["configuration"]["codecs"]
    assert any(c["name"] == "blosc" and c["configuration"]["cname"] == "zstd" for c in inner)
    assert meta["dimension_names"] == ["c", "z", "y", "x"]


def test_labels_written_with_matching_pyramid(tmp_path):
    img = _image((2, 16, 64, 64))
    lab = np.zeros((16, 64, 64), np.uint32)
    lab[2:9, 10:30, 5:25] = 7
    lab[9:15, 40:60, 30:60] = 2**31 + 5  # large ids survive
    out = write_ome_zarr(
        img,
        tmp_path / "l.ome.zarr",
        axes="czyx",
        spacing=(1, 0.5, 0.5),
        labels={"nuclei": lab},
        n_levels=3,
    )
    vol = open_volume(out)
    assert vol.labels == ("nuclei",)
    lv = open_labels(out, "nuclei")
    assert lv.axes == "zyx"
    assert lv.spacing == pytest.approx((1, 0.5, 0.5))
    np.testing.assert_array_equal(lv.data.compute(), lab)
    assert len(lv.levels) == len(vol.levels) == 3
    # nearest sampling keeps only existing ids
    low = lv.levels[2].compute()
    assert set(np.unique(low)) <= set(np.unique(lab))
    validate_written_store(out, "0.5")


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_64_bit_integer_tiffs_convert_with_their_labels(tmp_path, version):
    # tifffile reads 64-bit integers as longlong ('q'/'Q'), a numpy class zarr did not match
    img = RNG.integers(-5, 4000, (6, 16, 16)).astype(np.int64)
    lab = np.zeros((6, 16, 16), np.uint64)
    lab[1:4, 2:9, 3:12] = 2**40 + 1
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    tifffile.imwrite(tmp_path / "lab_i.tif", lab.astype(np.int64))
    out = convert(
        tmp_path / "img.tif",
        tmp_path / "a.ome.zarr",
        labels={"u": tmp_path / "lab.tif", "i": tmp_path / "lab_i.tif"},
        version=version,
    )
    vol = open_volume(out)
    assert vol.dtype == np.int64
    np.testing.assert_array_equal(vol.data.compute(), img)
    for name, dtype in (("u", np.uint64), ("i", np.int64)):
        lv = open_labels(out, name)
        assert lv.dtype == dtype
        np.testing.assert_array_equal(lv.data.compute(), lab.astype(dtype))


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_bool_image_is_written_with_a_0_1_window(tmp_path, version):
    # the display window's percentiles cannot subtract booleans
    img = RNG.random((8, 40, 40)) > 0.7
    out = write_ome_zarr(img, tmp_path / "b.ome.zarr", version=version, n_levels=2, chunks=16)
    vol = open_volume(out)
    assert vol.dtype == np.bool_
    np.testing.assert_array_equal(vol.data.compute(), img)
    attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    window = (attrs["ome"] if version == "0.5" else attrs)["omero"]["channels"][0]["window"]
    assert (window["min"], window["max"]) == (0.0, 1.0)
    validate_written_store(out, version)


def test_dask_input_streams_without_compute(tmp_path):
    src = da.random.RandomState(0).randint(0, 100, size=(40, 96, 96), chunks=(7, 50, 33)).astype(np.uint8)
    out = write_ome_zarr(src, tmp_path / "d.ome.zarr", spacing=(1, 1, 1), chunks=16, memory_budget=64 * 1024)
    np.testing.assert_array_equal(open_volume(out).data.compute(), src.compute())


def test_write_is_atomic_on_failure(tmp_path):
    class Boom(Exception):
        pass

    def fail(block):
        raise Boom("disk on fire")

    src = da.zeros((8, 64, 64), dtype=np.uint16, chunks=(8, 32, 32)).map_blocks(
        lambda b: fail(b), dtype=np.uint16
    )
    with pytest.raises(Boom):
        write_ome_zarr(src, tmp_path / "x.ome.zarr", spacing=(1, 1, 1))
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_then_overwritten(tmp_path):
    out = tmp_path / "o.ome.zarr"
    write_ome_zarr(np.ones((4, 8, 8), np.uint8), out)
    with pytest.raises(OutputError, match="already exists"):
        write_ome_zarr(np.ones((4, 8, 8), np.uint8), out)
    write_ome_zarr(np.full((4, 8, 8), 3, np.uint8), out, overwrite=True)
    assert int(open_volume(out).data.max().compute()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.ome.zarr"]


def test_bad_labels_rejected(tmp_path):
    img = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(InputError, match="shape"):
        write_ome_zarr(img, tmp_path / "a.zarr", labels={"x": np.zeros((4, 8, 9), np.uint8)})
    with pytest.raises(InputError, match="integers"):
        write_ome_zarr(img, tmp_path / "b.zarr", labels={"x": np.zeros((4, 8, 8), np.float32)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_py_reads_our_store(tmp_path, version):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    img = _image((2, 12, 40, 40))
    out = write_ome_zarr(
        img,
        tmp_path / "ours.ome.zarr",
        axes="czyx",
        spacing=(2, 0.5, 0.5),
        version=version,
        n_levels=2,
        labels={"cells": np.ones((12, 40, 40), np.uint8)},
    )
    nodes = list(Reader(parse_url(str(out)))())
    image_node = nodes[0]
    np.testing.assert_array_equal(np.asarray(image_node.data[0]), img)
    scale = image_node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([1, 2, 0.5, 0.5])
    assert any("labels" in str(n.zarr) or n.metadata.get("name") == "cells" for n in nodes[1:])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_we_read_ome_zarr_py_store(tmp_path, version):
    import ome_zarr.format as fmts
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    fmt = fmts.FormatV05() if version == "0.5" else fmts.FormatV04()
    img = _image((2, 16, 64, 64))
    path = tmp_path / "theirs.zarr"
    root = zarr.group(store=parse_url(str(path), mode="w", fmt=fmt).store)
    write_image(
        image=img,
        group=root,
        axes="czyx",
        fmt=fmt,
        scale_factors=(2, 4),
        scale={"z": 2.0, "y": 500.0, "x": 500.0},
        axes_units={"z": "micrometer", "y": "nanometer", "x": "nanometer"},
    )
    vol = open_volume(path)
    assert vol.axes == "czyx"
    assert vol.spacing == pytest.approx((2.0, 0.5, 0.5))
    np.testing.assert_array_equal(vol.data.compute(), img)
    assert len(vol.levels) >= 2
    assert vol.metadata["ngff_version"] == version


def test_labels_go_into_a_store_that_was_not_valid_ngff_as_it_was(tmp_path, caplog):
    """Real stores can be invalid before we write (idr0062A's label image has one level more than
    its image): the new label image is validated on its own, and listed."""
    import logging

    from dls_microscopy.io.zarr_write import write_labels

    img = _image((1, 8, 32, 32))
    lab = np.zeros((8, 32, 32), np.uint16)
    lab[2:5, 4:12, 4:12] = 1
    store = write_ome_zarr(img, tmp_path / "s.ome.zarr", axes="czyx", labels={"old": lab}, n_levels=2)
    old = zarr.open_group(store=str(store / "labels" / "old"), mode="a")
    ms = old.attrs["ome"]["multiscales"]
    last = ms[0]["datasets"][-1]
    scale = [2 * v for v in last["coordinateTransformations"][0]["scale"]]
    shape = tuple(max(1, n // 2) for n in old[last["path"]].shape)
    old.create_array("extra", shape=shape, dtype=old[last["path"]].dtype)
    ms[0]["datasets"].append(
        {"path": "extra", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
    )
    old.attrs["ome"] = {**old.attrs["ome"], "multiscales": ms}
    with pytest.raises(Exception, match="failed validation"):
        validate_written_store(store, "0.5")
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        write_labels(store, "new", lab * 2)
    assert any("not valid NGFF 0.5 as it is" in r.getMessage() for r in caplog.records)
    assert list(open_volume(store).labels) == ["old", "new"]
    np.testing.assert_array_equal(open_labels(store, "new").load(), lab * 2)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_labels_added_to_another_tools_labels_group_keep_its_keys(tmp_path, version):
    """``segment IMAGE.ome.zarr`` rewrote the labels group: 0.5 lost every other key of its ``ome``,
    and a label image written again moved to the end of the list."""
    from dls_microscopy.io import write_labels

    lab = np.zeros((8, 32, 32), np.uint16)
    lab[2:5, 4:12, 4:12] = 1
    store = write_ome_zarr(
        np.ones((8, 32, 32), np.uint16), tmp_path / "s.ome.zarr", version=version, labels={"b": lab, "a": lab}
    )
    # the labels group as another tool wrote it: its own keys beside and inside the OME part
    ome = {"version": "0.5", "labels": ["b", "a"], "x-viewer": {"colormap": "glasbey"}}
    attrs = {"ome": ome} if version == "0.5" else {k: v for k, v in ome.items() if k != "version"}
    attrs["other_tool"] = {"made_by": "hand", "run": 7}
    meta = store / "labels" / ("zarr.json" if version == "0.5" else ".zattrs")
    document = json.loads(meta.read_text())
    if version == "0.5":
        document["attributes"] = attrs
    else:
        document = attrs
    meta.write_text(json.dumps(document))

    def listing() -> dict:
        written = json.loads(meta.read_text())
        return written["attributes"] if version == "0.5" else written

    def listed(names: list[str]) -> dict:
        expected = json.loads(json.dumps(attrs))
        (expected["ome"] if version == "0.5" else expected)["labels"] = names
        return expected

    write_labels(store, "c", lab * 2)
    assert listing() == listed(["b", "a", "c"])
    write_labels(store, "b", lab * 3, overwrite=True)  # replaced in place, not moved to the end
    assert listing() == listed(["b", "a", "c"])
    assert open_volume(store).labels == ("b", "a", "c")
    np.testing.assert_array_equal(open_labels(store, "b").load(), lab * 3)
    validate_written_store(store, version)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_labels_stopped_midway_leave_the_store_valid(tmp_path, monkeypatch, version):
    """Ctrl-C while labels are written: the labels group was made first, empty, and failed validation."""
    from dls_microscopy.io import write_labels, zarr_write

    lab = np.zeros((8, 32, 32), np.uint16)
    lab[2:5, 4:12, 4:12] = 1
    store = write_ome_zarr(np.ones((8, 32, 32), np.uint16), tmp_path / "s.ome.zarr", version=version)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    real = zarr_write.write_label_pyramid
    monkeypatch.setattr(zarr_write, "write_label_pyramid", stopped)
    with pytest.raises(KeyboardInterrupt):
        write_labels(store, "nuclei", lab)
    assert not (store / "labels").exists()
    validate_written_store(store, version)
    assert open_volume(store).labels == ()
    # with a label image there already: it stays listed, alone
    monkeypatch.setattr(zarr_write, "write_label_pyramid", real)
    write_labels(store, "truth", lab)
    monkeypatch.setattr(zarr_write, "write_label_pyramid", stopped)
    with pytest.raises(KeyboardInterrupt):
        write_labels(store, "nuclei", lab)
    validate_written_store(store, version)
    assert open_volume(store).labels == ("truth",)
    assert sorted(p.name for p in (store / "labels").iterdir() if p.is_dir()) == ["truth"]


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_a_label_image_of_its_own_points_at_its_image_or_at_none(tmp_path, version):
    """A standalone label image recorded NGFF's default source "../../", which is no image (plugin QA)."""
    from dls_microscopy.io.zarr_write import write_label_image

    lab = np.zeros((4, 16, 16), np.uint16)
    lab[1:3, 2:8, 2:8] = 1

    def source(path):
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        return attrs.get("ome", attrs)["image-label"].get("source")

    alone = write_label_image(lab, tmp_path / "alone.ome.zarr", spacing=(1, 1, 1), version=version)
    assert source(alone) is None
    made = write_label_image(
        lab, tmp_path / "of.ome.zarr", spacing=(1, 1, 1), version=version, source_image="/d/img.ome.zarr"
    )
    assert source(made) == {"image": "/d/img.ome.zarr"}
    inside = write_ome_zarr(
        lab, tmp_path / "img.ome.zarr", spacing=(1, 1, 1), version=version, labels={"n": lab}
    )
    assert source(inside / "labels" / "n") == {"image": "../../"}
    validate_written_store(alone, version)
