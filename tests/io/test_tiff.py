"""Tests of the lazy TIFF reader: real Bio-Formats and ImageJ files, round trips, laziness,
bad input."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dls_microscopy.errors import (
    CorruptDataError,
    DimensionalityError,
    DlsError,
    InputError,
    InputNotFoundError,
    MetadataError,
    UnsupportedDtypeError,
    UnsupportedFormatError,
)
from dls_microscopy.io import open_volume
from dls_microscopy.io import tiff as tiff_module
from dls_microscopy.io.tiff import open_tiff

ARTIFICIAL = "ometiff_ome_artificial_samples"


def _rng_data(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(42)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, 120, size=shape).astype(dtype)


@pytest.fixture
def page_reads(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Data offsets of the TIFF pages decoded (TiffFrame.asarray goes through TiffPage.asarray)."""
    seen: set[int] = set()
    original = tifffile.TiffPage.asarray

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.add(int(self.dataoffsets[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPage, "asarray", counting)
    return seen


# ------------------------------------------------------------------ real files
# Bio-Formats 5.2.2 "artificial" samples: DimensionOrder XYZCT, 439 x 167 int8 planes and
# no PhysicalSize attributes in their OME-XML (checked), hence 1 µm and calibrated=False.
@pytest.mark.parametrize(
    ("name", "axes", "shape"),
    [
        ("z-series.ome.tiff", "zyx", (5, 167, 439)),
        ("multi-channel-z-series.ome.tiff", "czyx", (3, 5, 167, 439)),
        ("4D-series.ome.tiff", "tzyx", (7, 5, 167, 439)),
        ("multi-channel-time-series.ome.tiff", "tcyx", (7, 3, 167, 439)),
        ("single-channel.ome.tiff", "yx", (167, 439)),
        ("time-series.ome.tif", "tyx", (7, 167, 439)),
        ("multi-channel.ome.tiff", "cyx", (3, 167, 439)),
    ],
)
def test_bioformats_artificial_samples(shared_data: Path, name: str, axes: str, shape: tuple) -> None:
    path = shared_data / ARTIFICIAL / name
    vol = open_volume(path)
    assert vol.format == "ome-tiff"
    assert (vol.axes, vol.shape, vol.dtype) == (axes, shape, np.dtype("int8"))
    n_spatial = sum(a in "zyx" for a in axes)
    assert vol.spacing == (1.0,) * n_spatial
    assert vol.metadata["calibrated"] is False
    assert vol.metadata["series_count"] == 1
    assert len(vol.channel_names) == vol.n_channels
    np.testing.assert_array_equal(vol.data.compute(), tifffile.imread(path))


def test_bioformats_pages_map_to_channel_and_z(shared_data: Path) -> None:
    """Plane (c, z) of multi-channel-z-series is IFD c * 5 + z (TiffData of the OME-XML)."""
    path = shared_data / ARTIFICIAL / "multi-channel-z-series.ome.tiff"
    vol = open_tiff(path)
    with tifffile.TiffFile(path) as tif:
        ifd_7 = tif.pages[7].asarray()
    np.testing.assert_array_equal(vol.data[1, 2].compute(), ifd_7)


def test_aicsimageio_ome_tiff_and_imagej_twin(shared_data: Path) -> None:
    ome = open_volume(shared_data / "ometiff_aicsimageio" / "s_1_t_1_c_1_z_1.ome.tiff")
    assert (ome.format, ome.axes, ome.shape, ome.dtype) == ("ome-tiff", "yx", (325, 475), np.uint16)
    assert ome.spacing == pytest.approx((1.0833333333333333, 1.0833333333333333), rel=1e-12)
    assert ome.channel_names == ("Bright",)
    assert ome.metadata["calibrated"] is True

    twin = open_volume(shared_data / "ometiff_aicsimageio" / "s_1_t_1_c_1_z_1.tiff")
    # The twin is an ImageJ TIFF: XResolution 923076/1000000 px per micron.
    assert (twin.format, twin.axes, twin.shape) == ("imagej-tiff", "yx", (325, 475))
    assert twin.spacing == pytest.approx((1e6 / 923076,) * 2, rel=1e-12)
    assert twin.spacing == pytest.approx(ome.spacing, abs=2e-6)
    np.testing.assert_array_equal(twin.data.compute(), ome.data.compute())


def test_plain_tiff_stack(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = shared_data / "stardist_synthetic3d" / "img3d.tif"
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_volume(path)
    assert (vol.format, vol.axes, vol.shape, vol.dtype) == ("tiff", "zyx", (31, 61, 57), np.uint16)
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.metadata["calibrated"] is False
    assert "no physical calibration" in caplog.text
    np.testing.assert_array_equal(vol.data.compute(), tifffile.imread(path))


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize(
    ("size_x", "unit", "expected_x"),
    [(0.2, "nm", 0.0002), (200.0, "nm", 0.2), (0.25, "µm", 0.25), (0.0004, "mm", 0.4)],
)
def test_ome_roundtrip_units_and_channels(
    tmp_path: Path, dtype: str, size_x: float, unit: str, expected_x: float
) -> None:
    data = _rng_data((2, 3, 24, 20), dtype)
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": size_x,
            "PhysicalSizeXUnit": unit,
            "PhysicalSizeY": size_x,
            "PhysicalSizeYUnit": unit,
            "PhysicalSizeZ": 1.5,
            "Channel": {"Name": ["DAPI", "GFP"]},
        },
    )
    vol = open_volume(path)
    assert (vol.axes, vol.shape, vol.dtype) == ("czyx", data.shape, np.dtype(dtype))
    assert vol.spacing == pytest.approx((1.5, expected_x, expected_x), rel=1e-12)
    assert vol.channel_names == ("DAPI", "GFP")
    assert vol.metadata["calibrated"] is True
    np.testing.assert_array_equal(vol.data.compute(), data)
    np.testing.assert_array_equal(vol.select(c="GFP").data.compute(), data[1])


def test_ome_dimension_order_is_transposed_lazily(tmp_path: Path) -> None:
    """Z outside C in the file (Bio-Formats XYCZT) becomes czyx; the time step is kept."""
    data = _rng_data((4, 3, 2, 16, 12))  # T Z C Y X
    path = tmp_path / "tzc.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TZCYX",
            "TimeIncrement": 0.5,
            "TimeIncrementUnit": "min",
        },
    )
    vol = open_tiff(path)
    assert vol.metadata["tiff_axes"] == "TZCYX"
    assert (vol.axes, vol.shape) == ("tczyx", (4, 2, 3, 16, 12))
    assert vol.metadata["time_increment_s"] == pytest.approx(30.0)
    np.testing.assert_array_equal(vol.data.compute(), data.transpose(0, 2, 1, 3, 4))
    np.testing.assert_array_equal(vol.data[2, 1, 0].compute(), data[2, 0, 1])


def test_ome_rgb_samples_become_channels(tmp_path: Path) -> None:
    data = _rng_data((5, 16, 12, 3), "uint8")
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, data, photometric="rgb", ome=True, metadata={"axes": "ZYXS"})
    vol = open_tiff(path)
    assert (vol.axes, vol.shape) == ("czyx", (3, 5, 16, 12))
    np.testing.assert_array_equal(vol.data.compute(), np.moveaxis(data, -1, 0))


def test_ome_channels_and_rgb_samples_merge(tmp_path: Path) -> None:
    data = _rng_data((2, 4, 16, 12, 3), "uint8")  # 2 RGB channels
    path = tmp_path / "crgb.ome.tif"
    tifffile.imwrite(path, data, photometric="rgb", ome=True, metadata={"axes": "CZYXS"})
    vol = open_tiff(path)
    assert (vol.axes, vol.shape) == ("czyx", (6, 4, 16, 12))
    expected = np.moveaxis(data, -1, 1).reshape(6, 4, 16, 12)  # channel index c * 3 + s
    np.testing.assert_array_equal(vol.data.compute(), expected)


@pytest.mark.parametrize(("unit", "factor"), [("\\u00B5m", 1.0), ("micron", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_imagej_hyperstack(tmp_path: Path, unit: str, factor: float) -> None:
    data = _rng_data((3, 4, 2, 16, 20))  # T Z C Y X, ImageJ's order
    path = tmp_path / "hyper.tif"
    labels = [f"ch{c}" for _t in range(3) for _z in range(4) for c in range(2)]
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.4),
        metadata={
            "axes": "TZCYX",
            "spacing": 1.5,
            "unit": unit,
            "finterval": 2.0,
            "Labels": labels,
        },
    )
    vol = open_volume(path)
    assert vol.format == "imagej-tiff"
    assert (vol.axes, vol.shape) == ("tczyx", (3, 2, 4, 16, 20))
    assert vol.spacing == pytest.approx((1.5 * factor, 0.4 * factor, 0.25 * factor), rel=1e-9)
    assert vol.channel_names == ("ch0", "ch1")
    assert vol.metadata["time_increment_s"] == 2.0
    np.testing.assert_array_equal(vol.data.compute(), data.transpose(0, 2, 1, 3, 4))


@pytest.mark.parametrize(
    ("unit", "per_unit", "expected_yx"),
    [
        ("CENTIMETER", (50000, 25000), (0.4, 0.2)),
        ("INCH", (127000, 127000), (0.2, 0.2)),
        ("MICROMETER", (4, 4), (0.25, 0.25)),
    ],
)
def test_plain_tiff_resolution_tags_give_y_and_x(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unit: str,
    per_unit: tuple[int, int],
    expected_yx: tuple[float, float],
) -> None:
    """ResolutionUnit centimetre, XResolution 50000: 0.2 µm pixels (they were 1 µm, "no calibration")."""
    path = tmp_path / "res.tif"
    tifffile.imwrite(
        path, _rng_data((4, 8, 8)), resolution=per_unit, resolutionunit=unit, metadata={"axes": "ZYX"}
    )
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_tiff(path)
    assert vol.format == "tiff"
    assert vol.spacing == pytest.approx((1.0, *expected_yx), rel=1e-12)
    assert vol.metadata["calibrated"] is True
    assert "no physical size for axes z; using 1 µm" in caplog.text  # the tags hold no z step
    assert "no physical calibration" not in caplog.text


@pytest.mark.parametrize(
    ("unit", "per_unit", "why"),
    [
        ("NONE", (5, 5), "no physical calibration in the file"),
        ("INCH", (72, 72), "72 dpi, is a screen default"),
        ("CENTIMETER", (0.5, 0.5), "pixels of 20000, 20000 µm, outside 0.0001 to 10000 µm"),
    ],
)
def test_plain_tiff_resolution_without_a_length_is_uncalibrated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, unit: str, per_unit: tuple[float, float], why: str
) -> None:
    path = tmp_path / "res.tif"
    tifffile.imwrite(path, _rng_data((8, 8)), resolution=per_unit, resolutionunit=unit)
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_tiff(path)
    assert vol.spacing == (1.0, 1.0)
    assert vol.metadata["calibrated"] is False
    assert why in caplog.text and "using a spacing of 1 µm" in caplog.text


def test_imagej_without_unit_is_uncalibrated(tmp_path: Path) -> None:
    path = tmp_path / "nounit.tif"
    tifffile.imwrite(path, _rng_data((4, 8, 8)), imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX"})
    vol = open_tiff(path)
    assert (vol.format, vol.axes, vol.spacing) == ("imagej-tiff", "zyx", (1.0, 1.0, 1.0))
    assert vol.metadata["calibrated"] is False


def test_a_physical_size_of_zero_says_which_axis_gets_1_um(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """OME-TIFF with PhysicalSizeZ="0": z became 1 µm in silence."""
    path = tmp_path / "z0.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 0}
    tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint16), ome=True, metadata=meta)
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_tiff(path)
    assert vol.spacing == (1.0, 0.5, 0.5)
    assert "PhysicalSizeZ='0' is not a spacing" in caplog.text and "using 1 µm for z" in caplog.text


@pytest.mark.parametrize(
    ("units", "spacing", "calibrated", "why"),
    [
        ({}, (1.0, 1.0, 1.0), False, "unit 'pixel' (z, y, x) is not a length; using a spacing of 1 µm"),
        ({"X": "µm", "Y": "µm"}, (1.0, 0.5, 0.5), True, "unit 'pixel' (z) is not a length; using 1 µm for z"),
    ],
)
def test_an_ome_size_in_pixels_is_no_calibration(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    units: dict[str, str],
    spacing: tuple[float, ...],
    calibrated: bool,
    why: str,
) -> None:
    """PhysicalSizeXUnit="pixel" was read as µm, calibrated (ImageJ's unit=pixel is not)."""
    path = tmp_path / "px.ome.tif"
    meta: dict[str, object] = {"axes": "ZYX"}
    for axis in "ZYX":
        meta[f"PhysicalSize{axis}"] = 0.5
        meta[f"PhysicalSize{axis}Unit"] = units.get(axis, "pixel")
    tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint16), ome=True, metadata=meta)
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_tiff(path)
    assert vol.spacing == spacing
    assert vol.metadata["calibrated"] is calibrated
    assert why in caplog.text


def _write_pyramid(path: Path, base: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
    levels = [base, base[:, ::2, ::2], base[:, ::4, ::4]]
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(levels[0], subifds=2, tile=(32, 32), compression="zlib", metadata=meta)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, tile=(32, 32), compression="zlib")
        tw.write(second, metadata={"axes": "ZYX", "Name": "second"})
    return levels


def test_pyramidal_multiseries_ome(tmp_path: Path) -> None:
    base, second = _rng_data((6, 128, 96)), _rng_data((2, 40, 30), "float32")
    path = tmp_path / "pyramid.ome.tif"
    levels = _write_pyramid(path, base, second)

    vol = open_volume(path)
    assert vol.metadata["series_count"] == 2
    assert [lv.shape for lv in vol.levels] == [(6, 128, 96), (6, 64, 48), (6, 32, 24)]
    assert vol.level_spacings == ((2.0, 0.5, 0.5), (2.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    for lazy, expected in zip(vol.levels, levels, strict=True):
        np.testing.assert_array_equal(lazy.compute(), expected)

    low = open_volume(path, level=2)
    assert (low.level, low.shape, low.spacing) == (2, (6, 32, 24), (2.0, 2.0, 2.0))
    np.testing.assert_array_equal(low.data.compute(), levels[2])
    middle = open_tiff(path, level=-2)
    assert (middle.level, middle.shape, middle.spacing) == (1, (6, 64, 48), (2.0, 1.0, 1.0))

    other = open_volume(path, series=1)
    assert (other.shape, other.dtype) == ((2, 40, 30), np.float32)
    assert other.metadata["calibrated"] is False
    np.testing.assert_array_equal(other.data.compute(), second)

    with pytest.raises(InputError, match="has 2 series"):
        open_volume(path, series=2)
    with pytest.raises(InputError, match="level 3"):
        open_volume(path, level=3)


def test_plain_unknown_axes(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "ey.tif",
        _rng_data((3, 8, 8)),
        photometric="minisblack",
        metadata={"axes": "EYX"},
    )
    assert open_tiff(tmp_path / "ey.tif").axes == "zyx"  # a single stack axis is read as z
    tifffile.imwrite(
        tmp_path / "ez.tif",
        _rng_data((2, 3, 8, 8)),
        photometric="minisblack",
        metadata={"axes": "EZYX"},
    )
    with pytest.raises(MetadataError, match="'E' \\(lambda, length 2\\)"):
        open_tiff(tmp_path / "ez.tif")


def test_malformed_ome_xml_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _rng_data((4, 16, 16), "uint8")
    path = tmp_path / "broken.ome.tif"
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",
        metadata=None,
        description='<?xml version="1.0"?><OME xmlns="x"><Image ID="Image:0"><Pixe',
    )
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_tiff(path)
    assert "malformed OME-XML" in caplog.text
    assert (vol.format, vol.axes, vol.shape) == ("tiff", "zyx", (4, 16, 16))
    np.testing.assert_array_equal(vol.data.compute(), data)


def test_unknown_ome_unit_is_metadata_error(tmp_path: Path) -> None:
    path = tmp_path / "furlong.ome.tif"
    tifffile.imwrite(
        path,
        _rng_data((2, 8, 8)),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 2, "PhysicalSizeXUnit": "furlong"},
    )
    with pytest.raises(MetadataError, match="furlong") as info:
        open_tiff(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------- laziness
def _page_offsets(path: Path) -> list[int]:
    with tifffile.TiffFile(path) as tif:
        return [int(page.dataoffsets[0]) for page in tif.pages]


def test_open_reads_no_pixels_and_a_slice_reads_its_chunk_only(
    tmp_path: Path, page_reads: set[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _rng_data((20, 64, 48))  # 6 KiB planes
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "ZYX"})
    offsets = _page_offsets(path)
    monkeypatch.setattr(tiff_module, "_TARGET_CHUNK_BYTES", 4 * 64 * 48 * 2)  # 4 planes
    vol = open_tiff(path)
    assert page_reads == set()
    assert vol.data.chunks[0] == (4,) * 5
    np.testing.assert_array_equal(vol.data[7, 10:20].compute(), data[7, 10:20])
    # at most the pages of the dask chunk holding plane 7 (dask may fuse the slice)
    assert offsets[7] in page_reads
    assert page_reads <= set(offsets[4:8])


def test_reader_decodes_only_the_indexed_pages(tmp_path: Path, page_reads: set[int]) -> None:
    data = _rng_data((20, 64, 48))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data, compression="zlib", metadata={"axes": "ZYX"})
    offsets = _page_offsets(path)
    vol = open_tiff(path)
    stamp = tiff_module._stamp(path)
    reader = tiff_module._TiffLevelReader(path, stamp, 0, 0, 2, vol.dtype)
    block = reader((slice(7, 8), slice(10, 20), slice(0, 48)))
    np.testing.assert_array_equal(block, data[7:8, 10:20])
    assert page_reads == {offsets[7]}
    block = reader((slice(3, 6), slice(0, 64), slice(5, 9)))
    np.testing.assert_array_equal(block, data[3:6, :, 5:9])
    assert page_reads == {offsets[i] for i in (3, 4, 5, 7)}


def test_contiguous_file_reads_only_needed_planes(
    tmp_path: Path, page_reads: set[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _rng_data((12, 32, 32), "float32")
    path = tmp_path / "contiguous.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX"})
    monkeypatch.setattr(tiff_module, "_TARGET_CHUNK_BYTES", 32 * 32 * 4)  # 1 plane per chunk
    vol = open_volume(path)
    assert page_reads == set()
    np.testing.assert_array_equal(vol.data[-1].compute(), data[-1])
    assert len(page_reads) == 1


def test_chunks_group_planes_to_target_size() -> None:
    chunk_of = tiff_module._chunks
    # 2 MiB planes of uint16: 16 planes make the 32 MiB target.
    assert chunk_of((200, 1024, 1024), (1, 1024, 1024), ["z", "y", "x"], 2) == (16, 1024, 1024)
    # Small planes: all z, then channels, then time points.
    assert chunk_of((3, 4, 10, 64, 64), (1, 1, 1, 64, 64), ["t", "c", "z", "y", "x"], 1) == (
        3,
        4,
        10,
        64,
        64,
    )
    # File order Z, C (Bio-Formats XYCZT): z still grows first.
    assert chunk_of((300, 2, 1024, 1024), (1, 1, 1024, 1024), ["z", "c", "y", "x"], 2) == (
        16,
        1,
        1024,
        1024,
    )
    # Huge tiled plane: whole multiples of the 512-pixel tiles, about 32 MiB.
    assert chunk_of((4, 40000, 40000), (1, 512, 512), ["z", "y", "x"], 2) == (1, 4096, 4096)


def test_huge_tiled_planes_are_read_by_tiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink the limits so that a small tiled file takes the "huge plane" path.
    monkeypatch.setattr(tiff_module, "_MAX_CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(tiff_module, "_TARGET_CHUNK_BYTES", 32 * 1024)
    data = _rng_data((2, 256, 320))
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, data, tile=(64, 64), metadata={"axes": "ZYX"})
    vol = open_tiff(path)
    assert vol.data.chunksize == (1, 128, 128)
    np.testing.assert_array_equal(vol.data.compute(), data)


def test_pickled_array_reopens_the_file(tmp_path: Path) -> None:
    data = _rng_data((5, 16, 16))
    path = tmp_path / "pickle.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX"})
    lazy = pickle.loads(pickle.dumps(open_tiff(path).data))
    tiff_module._CACHE.clear()  # as in a fresh worker process
    np.testing.assert_array_equal(lazy.compute(), data)


# ------------------------------------------------------------------ bad input
def _truncated(src: Path, dst: Path, fraction: float) -> Path:
    content = src.read_bytes()
    dst.write_bytes(content[: int(len(content) * fraction)])
    return dst


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zlib"},
        {"tile": (16, 16)},
        {"ome": True, "metadata": {"axes": "ZYX"}},
        {"imagej": True, "metadata": {"axes": "ZYX"}},
    ],
    ids=["plain", "zlib", "tiled", "ome", "imagej"],
)
def test_truncated_tiff_gives_our_error(tmp_path: Path, options: dict, fraction: float) -> None:
    """Cut files raise CorruptDataError (at open or compute) or, when only trailing
    metadata bytes were lost, still give exactly the original pixels; never a raw error."""
    data = _rng_data((10, 64, 80))
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, data, photometric="minisblack", **options)
    path = _truncated(full, tmp_path / "cut.tif", fraction)
    try:
        pixels = open_volume(path).data.compute()
    except DlsError as exc:
        assert isinstance(exc, CorruptDataError)
        assert str(path) in str(exc)
    else:
        assert fraction > 0.99, "half a file must not open silently"
        np.testing.assert_array_equal(pixels, data)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.999])
def test_truncated_bioformats_file(shared_data: Path, tmp_path: Path, fraction: float) -> None:
    path = _truncated(shared_data / ARTIFICIAL / "4D-series.ome.tiff", tmp_path / "4D.ome.tiff", fraction)
    with pytest.raises(CorruptDataError, match="truncated") as info:
        open_volume(path)
    assert str(path) in str(info.value)


def test_ome_xml_declaring_more_planes_than_pages(tmp_path: Path) -> None:
    """tifffile reads planes the file lacks as zeros: refused, naming both counts."""
    full = tmp_path / "full.ome.tif"
    tifffile.imwrite(full, _rng_data((4, 16, 16), "uint8"), ome=True, metadata={"axes": "ZYX"})
    content = full.read_bytes()
    assert content.count(b'SizeZ="4"') == 1
    path = tmp_path / "more.ome.tif"
    path.write_bytes(content.replace(b'SizeZ="4"', b'SizeZ="9"'))
    with pytest.raises(CorruptDataError, match=r"declares 9 planes.*has 4 pages") as info:
        open_volume(path)
    assert str(path) in str(info.value)


def test_imagej_metadata_declaring_fewer_images_than_pages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tifffile reads only the ``images=`` planes: the pages after them are named in a warning."""
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, _rng_data((6, 16, 16), "uint8"), imagej=True, metadata={"axes": "ZYX"})
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        assert open_volume(full).shape == (6, 16, 16)
    assert "declares" not in caplog.text
    content = full.read_bytes()
    assert content.count(b"images=6") == 1 and content.count(b"slices=6") == 1
    path = tmp_path / "fewer.tif"
    path.write_bytes(content.replace(b"images=6", b"images=3").replace(b"slices=6", b"slices=3"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_volume(path)
    assert vol.shape == (3, 16, 16)
    said = r"fewer\.tif: the ImageJ metadata declares 3 images, but the file has 6 pages"
    assert re.search(said, caplog.text), caplog.text


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "header.tif"
    path.write_bytes(b"II*\x00\x08\x00")
    with pytest.raises(CorruptDataError, match="cannot parse TIFF"):
        open_volume(path)


def test_unreadable_page_at_compute_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Damage inside the compressed data of one page surfaces when that page is computed."""
    data = _rng_data((4, 64, 64))
    path = tmp_path / "damaged.tif"
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack", metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[2].dataoffsets[0]
    content = bytearray(path.read_bytes())
    content[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(content))
    monkeypatch.setattr(tiff_module, "_TARGET_CHUNK_BYTES", 64 * 64 * 2)  # 1 plane per chunk
    vol = open_tiff(path)
    np.testing.assert_array_equal(vol.data[1].compute(), data[1])
    with pytest.raises(CorruptDataError, match="TIFF series 0 level 0") as info:
        vol.data[2].compute()
    assert str(path) in str(info.value)


def test_text_file_named_tif(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("these are not pixels\n")
    with pytest.raises(UnsupportedFormatError, match="not a"):
        open_volume(path)
    with pytest.raises(UnsupportedFormatError, match="not a TIFF"):
        open_tiff(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.tif"
    path.touch()
    with pytest.raises(UnsupportedFormatError, match="empty"):
        open_volume(path)
    with pytest.raises(UnsupportedFormatError, match="empty"):
        open_tiff(path)


def test_complex_dtype(tmp_path: Path) -> None:
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.ones((3, 8, 8), np.complex64), photometric="minisblack")
    with pytest.raises(UnsupportedDtypeError, match="complex64"):
        open_volume(path)


@pytest.mark.filterwarnings("ignore:.*zero-size array:UserWarning")
def test_zero_size_axis(tmp_path: Path) -> None:
    path = tmp_path / "zero.tif"
    tifffile.imwrite(path, np.zeros((0, 16, 16), np.uint8))
    with pytest.raises(DimensionalityError, match="zero-size"):
        open_volume(path)


def test_modified_file_is_detected_at_compute(tmp_path: Path) -> None:
    path = tmp_path / "changing.tif"
    tifffile.imwrite(path, _rng_data((3, 8, 8)), photometric="minisblack", metadata={"axes": "ZYX"})
    vol = open_tiff(path)
    tifffile.imwrite(path, _rng_data((5, 8, 8)), photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(CorruptDataError, match="modified"):
        vol.data.compute()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        open_tiff(tmp_path / "absent.tif")
