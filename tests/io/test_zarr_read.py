"""Reading OME-Zarr: real data, plates, bioformats2raw, laziness and bad stores."""

from __future__ import annotations

import json
import logging
import shutil
import time

import numpy as np
import pytest
import zarr

from dls_microscopy.errors import CorruptDataError, DlsError, InputError, MetadataError
from dls_microscopy.io import (
    _zarr_chunks,
    describe_plate,
    open_labels,
    open_volume,
    write_ome_zarr,
    zarr_read,
)

IDR = "omezarr_idr0062A_6001240/6001240_labels.zarr"


def test_idr_ngff05_image_and_labels(shared_data):
    path = shared_data / IDR
    vol = open_volume(path)
    assert vol.format == "ome-zarr"
    assert vol.metadata["ngff_version"] == "0.5"
    assert vol.axes == "czyx"
    assert vol.shape == (2, 236, 275, 271)
    assert vol.dtype == np.uint16
    assert vol.spacing == pytest.approx((0.5002025531914894, 0.3603981534640209, 0.3603981534640209))
    assert vol.channel_names == ("LaminB1", "Dapi")
    assert len(vol.levels) == 3
    assert vol.level_spacings[2][1] == pytest.approx(1.4415926138560835)
    assert vol.labels == ("0",)
    # a real read through the sharded, blosc-zstd codec
    plane = vol.data[1, 118].compute()
    assert plane.shape == (275, 271) and plane.max() > 0
    lab = open_labels(path)
    assert lab.axes == "zyx" and lab.shape == (236, 275, 271)
    assert lab.dtype == np.int8
    assert len(lab.levels) == 4
    ids = np.unique(lab.data.compute())
    assert ids[0] == 0 and len(ids) - 1 == 61


def test_level_selection_is_metadata_only(shared_data):
    vol = open_volume(shared_data / IDR, level=2)
    assert vol.level == 2 and vol.shape == (2, 236, 68, 67)
    assert vol.at_level(0).shape == (2, 236, 275, 271)
    with pytest.raises(InputError, match="level 5"):
        vol.at_level(5)


def test_hcs_plate_metadata_v04(shared_data, tmp_path):
    src = shared_data / "ome_zarr_models_py_fixtures/tests/data/examples/v04/hcs_example.ome.zarr"
    layout = describe_plate(src)
    assert layout.ngff_version == "0.4"
    assert layout.n_fields >= 1
    well = layout.wells[0]
    vol = open_volume(
        src,
        well=well.path,
        field=0,
    )
    assert vol.metadata["well"] == well.path
    assert vol.metadata["field"] == 0
    assert vol.ndim >= 2
    with pytest.raises(InputError, match="well"):
        open_volume(src, well="Z99")


def _make_plate(root, version="0.5", fields=2):
    zf = 3 if version == "0.5" else 2
    g = zarr.open_group(str(root), mode="w", zarr_format=zf)
    wells = [("A", "1"), ("B", "2")]
    plate = {
        "name": "test-plate",
        "rows": [{"name": "A"}, {"name": "B"}],
        "columns": [{"name": "1"}, {"name": "2"}],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": "AB".index(r), "columnIndex": int(c) - 1} for r, c in wells
        ],
        "field_count": fields,
    }
    if version == "0.4":
        plate["version"] = "0.4"
    images = {}
    for r, c in wells:
        wg = g.require_group(f"{r}/{c}")
        well = {"images": [{"path": str(f)} for f in range(fields)]}
        if version == "0.4":
            well["version"] = "0.4"
        wg.attrs.update({"ome": {"version": "0.5", "well": well}} if version == "0.5" else {"well": well})
        for f in range(fields):
            data = np.full((1, 4, 16, 16), ord(r) * 10 + int(c) * 3 + f, np.uint16)
            shutil.rmtree(root / r / c / str(f), ignore_errors=True)
            write_ome_zarr(data, root / r / c / str(f), axes="czyx", spacing=(2, 0.5, 0.5), version=version)
            images[(r, c, f)] = data
    g.attrs.update({"ome": {"version": "0.5", "plate": plate}} if version == "0.5" else {"plate": plate})
    return images


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_plate_wells_and_fields(tmp_path, version):
    root = tmp_path / "plate.ome.zarr"
    images = _make_plate(root, version)
    layout = describe_plate(root)
    assert layout.name == "test-plate"
    assert [w.path for w in layout.wells] == ["A/1", "B/2"]
    assert [w.fields for w in layout.wells] == [("0", "1"), ("0", "1")]
    vol = open_volume(root, well="B2", field=1)
    np.testing.assert_array_equal(vol.data.compute(), images[("B", "2", 1)])
    expected = {"plate": "test-plate", "well": "B/2", "row": "B", "column": "2", "field": 1}
    assert {k: vol.metadata[k] for k in expected} == expected
    # series counts fields in row-major well order
    third = open_volume(root, series=2)
    np.testing.assert_array_equal(third.data.compute(), images[("B", "2", 0)])
    with pytest.raises(InputError, match="field 5"):
        open_volume(root, well="A/1", field=5)


def test_bioformats2raw_layout(tmp_path):
    root = tmp_path / "bf2raw.zarr"
    root.mkdir()
    series = []
    for i in range(2):
        data = np.full((1, 3, 8, 8), i + 1, np.uint8)
        write_ome_zarr(data, root / str(i), axes="czyx", spacing=(1, 1, 1), version="0.4")
        series.append(data)
    (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (root / ".zattrs").write_text(json.dumps({"bioformats2raw.layout": 3}))
    (root / "OME").mkdir()
    (root / "OME" / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (root / "OME" / ".zattrs").write_text(json.dumps({"series": ["0", "1"]}))
    assert int(open_volume(root).data.max().compute()) == 1
    assert int(open_volume(root, series=1).data.max().compute()) == 2
    with pytest.raises(InputError, match="series 2"):
        open_volume(root, series=2)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_an_image_has_one_series_as_a_tiff_does(tmp_path, version):
    """``series=3`` of a single image opened series 0 in silence (a TIFF or HDF5 said so)."""
    store = write_ome_zarr(np.ones((3, 8, 8), np.uint8), tmp_path / "i.ome.zarr", version=version)
    assert open_volume(store, series=0).shape == (3, 8, 8)
    for series in (3, -1):
        with pytest.raises(InputError, match=rf"series {series} does not exist.*one series \(0\.\.0\)"):
            open_volume(store, series=series)


def _virtual_store(path, shape, chunks, shards=None):
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array(
        "0",
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype="uint16",
        dimension_names=("z", "y", "x"),
        fill_value=0,
    )
    g.attrs.update(
        {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [{"type": "scale", "scale": [2.0, 0.5, 0.5]}],
                            }
                        ],
                    }
                ],
            }
        }
    )
    return path


def test_opening_a_huge_store_reads_no_chunk(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(_zarr_chunks._ZarrReader, "__call__", lambda self, key: calls.append(key))
    path = _virtual_store(
        tmp_path / "huge.ome.zarr", (10_000, 10_000, 10_000), (64, 256, 256), (256, 1024, 1024)
    )
    t0 = time.perf_counter()
    vol = open_volume(path)
    elapsed = time.perf_counter() - t0
    assert vol.shape == (10_000, 10_000, 10_000)  # 10^12 voxels, 2 TB
    assert vol.spacing == (2.0, 0.5, 0.5)
    assert elapsed < 1.0
    assert calls == []
    assert not any((path / "0" / "c").exists() for _ in [0])


def test_a_missing_image_chunk_reads_as_the_fill_value_with_a_warning(tmp_path, caplog):
    """zarr-python 3 and ome-zarr-py omit chunks of zeros: such stores open (it was an error)."""
    out = write_ome_zarr(
        np.arange(16 * 32 * 32, dtype=np.uint16).reshape(16, 32, 32),
        tmp_path / "m.ome.zarr",
        chunks=16,
        shards=0,
    )
    victim = out / "0" / "c" / "0" / "1" / "1"
    assert victim.exists()
    victim.unlink()
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        data = open_volume(out).data.compute()
    assert (data[:16, 16:, 16:] == 0).all() and data[0, 0, 1] == 1
    (warning,) = [r.getMessage() for r in caplog.records if "missing from the store" in r.getMessage()]
    assert str(out) in warning and "c/0/1/1" in warning and "fill value 0" in warning
    # the caller can ask for an error
    with pytest.raises(CorruptDataError, match=r"missing.*c/0/1/1") as info:
        zarr_read.open_zarr(out, missing_chunks="error").data.compute()
    assert str(out) in str(info.value)


def test_an_image_array_without_any_chunk_is_an_error(tmp_path):
    """Every chunk missing is a broken copy (or metadata only), not an image of zeros."""
    out = write_ome_zarr(np.ones((16, 32, 32), np.uint16), tmp_path / "e.ome.zarr", chunks=16, shards=0)
    shutil.rmtree(out / "0" / "c")
    with pytest.raises(CorruptDataError, match=r"no chunk of zarr array '0' exists"):
        open_volume(out).data.compute()


def test_an_ome_zarr_py_store_with_omitted_empty_chunks_segments(tmp_path):
    """A store written by ome-zarr-py over an image with an empty half (its chunks are not written)."""
    from ome_zarr.writer import write_image

    from dls_microscopy.sample_data import make_synthetic_nuclei
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    s = make_synthetic_nuclei((16, 64, 64), spacing=(1, 0.5, 0.5), diameter_um=7.0, seed=3)
    image = s.image[0].copy()
    image[:, :, 32:] = 0
    root = zarr.open_group(str(tmp_path / "half.ome.zarr"), mode="w")
    write_image(image, root, axes="zyx", storage_options={"chunks": (16, 32, 32)}, scaler=None)
    assert len(list((tmp_path / "half.ome.zarr" / "0").rglob("c/*/*/*"))) < 4  # chunks omitted
    vol = open_volume(tmp_path / "half.ome.zarr")
    np.testing.assert_array_equal(vol.data.compute(), image)
    res = segment_blockwise(
        vol, get_segmenter("watershed", diameter_um=7.0), output=tmp_path / "lab.ome.zarr"
    )
    assert res.n_objects > 0


def test_corrupt_chunk_gives_our_error(tmp_path):
    out = write_ome_zarr(np.ones((16, 32, 32), np.uint16), tmp_path / "c.ome.zarr", chunks=16)
    shard = next(p for p in (out / "0" / "c").rglob("*") if p.is_file())
    shard.write_bytes(b"garbage" * 10)
    with pytest.raises(CorruptDataError, match="cannot read zarr array '0'"):
        open_volume(out).data.compute()


def test_malformed_json_metadata(tmp_path):
    out = write_ome_zarr(np.ones((4, 8, 8), np.uint8), tmp_path / "j.ome.zarr")
    (out / "zarr.json").write_text("{not json")
    with pytest.raises(MetadataError, match=r"j\.ome\.zarr"):
        open_volume(out)


@pytest.mark.parametrize(("version", "meta"), [("0.5", "zarr.json"), ("0.4", ".zattrs")])
def test_unreadable_labels_metadata_leaves_the_image_readable(tmp_path, caplog, version, meta):
    """A corrupt labels/zarr.json (or .zattrs) failed the whole image with a JSONDecodeError."""
    from dls_microscopy.io import write_labels

    image = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    out = write_ome_zarr(
        image, tmp_path / "l.ome.zarr", version=version, labels={"a": np.ones((4, 8, 8), np.uint8)}
    )
    broken = out / "labels" / meta
    broken.write_text('{"zarr_format": 3, "attributes": {')
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_volume(out)
    assert vol.labels == ()
    np.testing.assert_array_equal(vol.data.compute(), image)
    assert f"labels/{meta}" in caplog.text and "unreadable" in caplog.text and str(out) in caplog.text
    # labels are not added to it: the listing could be neither read nor replaced unasked
    with pytest.raises(MetadataError, match="labels metadata is unreadable") as info:
        write_labels(out, "b", np.ones((4, 8, 8), np.uint8))
    assert str(out) in str(info.value)
    assert broken.read_text() == '{"zarr_format": 3, "attributes": {'
    assert sorted(p.name for p in (out / "labels").iterdir()) == sorted(
        ["a", meta, *([".zgroup"] if version == "0.4" else [])]
    )


def test_metadata_violating_spec(tmp_path):
    out = write_ome_zarr(np.ones((4, 8, 8), np.uint8), tmp_path / "v.ome.zarr")
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["axes"][0]["name"] = "y"  # duplicate axis names
    (out / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(MetadataError):
        open_volume(out)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_space_axes_without_a_unit_are_read_as_um_with_a_warning(tmp_path, caplog, version):
    """NGFF says a unit SHOULD be given: its absence was read as µm in silence."""
    out = write_ome_zarr(
        np.ones((4, 8, 8), np.uint8), tmp_path / "u.ome.zarr", spacing=(2, 0.5, 0.5), version=version
    )
    meta_file = out / ("zarr.json" if version == "0.5" else ".zattrs")
    meta = json.loads(meta_file.read_text())
    ome = meta["attributes"]["ome"] if version == "0.5" else meta
    for axis in ome["multiscales"][0]["axes"]:
        axis.pop("unit")
    meta_file.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_volume(out)
    assert vol.spacing == (2.0, 0.5, 0.5)
    assert "no length unit for axes z, y, x" in caplog.text and "read as µm" in caplog.text
    assert len(caplog.records) == 1


def test_missing_level_array(tmp_path):
    out = write_ome_zarr(np.ones((4, 8, 8), np.uint8), tmp_path / "n.ome.zarr")
    shutil.rmtree(out / "0")
    with pytest.raises(DlsError, match="'0'"):
        open_volume(out)


def test_plain_zarr_without_ngff(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array("a", shape=(4,), dtype="u1")
    with pytest.raises(MetadataError, match="multiscales"):
        open_volume(tmp_path / "plain.zarr")


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_read_backends_agree(tmp_path, monkeypatch, backend, version):
    monkeypatch.setenv("DLS_ZARR_READER", backend)
    img = np.random.default_rng(1).integers(0, 60000, (3, 37, 70, 45)).astype(np.uint16)
    out = write_ome_zarr(img, tmp_path / "b.ome.zarr", axes="czyx", chunks=16, version=version)
    vol = open_volume(out)
    assert vol.data.name.startswith("dls-zarr-")
    np.testing.assert_array_equal(vol.load(), img)
    np.testing.assert_array_equal(vol.data[1, 5:30, 3:61:2, 40].compute(), img[1, 5:30, 3:61:2, 40])
