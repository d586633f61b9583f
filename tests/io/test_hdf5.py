"""Tests of the lazy HDF5 reader: the real nuclei crop, round trips, laziness, bad input."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from dls_microscopy.errors import (
    CorruptDataError,
    DimensionalityError,
    DlsError,
    FormatError,
    InputError,
    InputNotFoundError,
    MetadataError,
    UnsupportedDtypeError,
    UnsupportedFormatError,
)
from dls_microscopy.io import hdf5 as hdf5_module
from dls_microscopy.io import open_volume
from dls_microscopy.io.hdf5 import open_hdf5

CROP = "nuclei_gold_crops/1135_mini.h5"


def _data(shape: tuple[int, ...], dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    return rng.integers(0, 200, size=shape).astype(dtype)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[slice, ...]]:
    """Keys passed to the HDF5 read function."""
    seen: list[tuple[slice, ...]] = []
    original = hdf5_module._Hdf5Reader.__call__

    def counting(self, key):  # type: ignore[no-untyped-def]
        seen.append(key)
        return original(self, key)

    monkeypatch.setattr(hdf5_module._Hdf5Reader, "__call__", counting)
    return seen


# ------------------------------------------------------------------ real file
@pytest.mark.parametrize("name", ["raw", "label"])
def test_nuclei_crop(shared_data: Path, name: str) -> None:
    path = shared_data / CROP
    with h5py.File(path, "r") as f:
        expected = f[name][()]
        size = tuple(float(v) for v in f[name].attrs["element_size_um"])
    assert size == pytest.approx((0.284, 0.127, 0.127), abs=1e-3)
    vol = open_volume(f"{path}:/{name}")
    assert (vol.format, vol.axes, vol.dtype) == ("hdf5", "zyx", np.uint8)
    assert vol.shape == (100, 100, 100)
    assert vol.spacing == size
    assert vol.metadata["calibrated"] is True
    assert vol.metadata["dataset"] == f"/{name}"
    np.testing.assert_array_equal(vol.data.compute(), expected)


def test_nuclei_crop_needs_a_dataset_name(shared_data: Path) -> None:
    path = shared_data / CROP
    with pytest.raises(InputError, match=r"2 datasets.*/label, /raw") as info:
        open_volume(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match=r"no dataset '/nuclei'.*/label, /raw"):
        open_volume(f"{path}:/nuclei")
    assert open_hdf5(path, "raw").shape == (100, 100, 100)  # leading slash optional


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32", "bool"])
def test_chunked_roundtrip_with_group_spacing(tmp_path: Path, dtype: str) -> None:
    data = _data((20, 48, 40), "uint8" if dtype == "bool" else dtype).astype(dtype)
    path = tmp_path / "img.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("volumes")
        group.attrs["element_size_um"] = [2.0, 0.3, 0.25]
        group.create_dataset("raw", data=data, chunks=(5, 16, 16), compression="gzip")
    vol = open_volume(f"{path}:/volumes/raw")
    assert (vol.axes, vol.shape, vol.dtype) == ("zyx", data.shape, np.dtype(dtype))
    assert vol.spacing == (2.0, 0.3, 0.25)
    np.testing.assert_array_equal(vol.data.compute(), data)
    np.testing.assert_array_equal(vol.data[7:13, 5:30, 3].compute(), data[7:13, 5:30, 3])
    # the only dataset of the file is found without a name
    assert open_volume(path).metadata["dataset"] == "/volumes/raw"


def test_dask_chunks_are_multiples_of_hdf5_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data((40, 64, 64))
    path = tmp_path / "chunks.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=data, chunks=(8, 16, 16))
    monkeypatch.setattr(hdf5_module, "_TARGET_CHUNK_BYTES", 16 * 1024)
    vol = open_hdf5(path, None)
    assert vol.data.chunksize == (8, 16, 64)  # 4 HDF5 chunks along x = 16 KiB
    np.testing.assert_array_equal(vol.data.compute(), data)


def test_chunk_sizes_for_large_datasets() -> None:
    chunk_of = hdf5_module._chunks
    # 512 KiB HDF5 chunks grow along x, then y, to 32 MiB.
    assert chunk_of((1000, 2048, 2048), (64, 64, 64), 2) == (64, 128, 2048)
    # Contiguous data: whole rows and planes, 32 MiB of float32.
    assert chunk_of((500, 1024, 1024), None, 4) == (8, 1024, 1024)
    # Small data: one chunk.
    assert chunk_of((10, 100, 100), (5, 25, 25), 1) == (10, 100, 100)


@pytest.mark.parametrize("labels", ["attribute", "dimension_scales"])
def test_axes_from_file_and_transpose(tmp_path: Path, labels: str) -> None:
    data = _data((6, 3, 16, 12))  # z c y x in the file
    path = tmp_path / "zc.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("img", data=data, chunks=(2, 1, 16, 12))
        if labels == "attribute":
            ds.attrs["axes"] = "zcyx"
        else:
            for dim, name in zip(ds.dims, ["z", "channel", "y", "x"], strict=True):
                dim.label = name
        ds.attrs["element_size_um"] = [1.0, 1.0, 0.5, 0.5]  # one value per axis, c included
    vol = open_hdf5(path, "/img")
    assert (vol.axes, vol.shape, vol.spacing) == ("czyx", (3, 6, 16, 12), (1.0, 0.5, 0.5))
    assert vol.metadata["axes_from_file"] is True
    np.testing.assert_array_equal(vol.data.compute(), data.transpose(1, 0, 2, 3))


def test_default_axes_and_missing_calibration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tc.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((2, 3, 4, 8, 8), "float32")
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_hdf5(path, None)
    assert (vol.axes, vol.spacing) == ("tczyx", (1.0, 1.0, 1.0))
    assert vol.metadata["calibrated"] is False
    assert "element_size_um" in caplog.text


def test_spacing_that_does_not_fit_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bad_size.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((4, 8, 8))
        f["img"].attrs["element_size_um"] = [0.5, 0.5]
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_hdf5(path, None)
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.metadata["calibrated"] is False
    assert "has 2 values for the 3 spatial axes 'zyx'" in caplog.text


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_a_spacing_of_zero_replaces_that_axis_only_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: float
) -> None:
    """element_size_um [0, .127, .127]: y and x keep .127 (every axis became 1 µm, blaming the axes)."""
    path = tmp_path / "zero.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((4, 8, 8))
        f["img"].attrs["element_size_um"] = [bad, 0.127, 0.127]
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_hdf5(path, None)
    assert vol.spacing == (1.0, 0.127, 0.127)
    assert vol.metadata["calibrated"] is False
    assert f"z = {bad}" in caplog.text and "using 1 µm for z" in caplog.text


@pytest.mark.parametrize(
    "bad", ["abc", ["0.5", "x", "1"], np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])]
)
def test_a_spacing_that_is_not_numbers_is_uncalibrated_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    """element_size_um 'abc': 1 µm and a warning, as for zeros (it raised numpy's ValueError)."""
    path = tmp_path / "text.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((4, 8, 8))
        f["img"].attrs["element_size_um"] = bad
    with caplog.at_level(logging.WARNING, logger="dls_microscopy"):
        vol = open_hdf5(path, None)
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert vol.metadata["calibrated"] is False
    assert "element_size_um is not numbers" in caplog.text and "tmp" in caplog.text


def test_unusable_axis_labels(tmp_path: Path) -> None:
    path = tmp_path / "labels.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((4, 8, 8))
        f["img"].attrs["axes"] = ["q", "y", "x"]
    with pytest.raises(MetadataError, match="axis labels"):
        open_hdf5(path, None)


# ------------------------------------------------------------------- laziness
def test_open_reads_nothing_and_slices_read_their_chunks(
    tmp_path: Path, reads: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data((32, 32, 32))
    path = tmp_path / "lazy.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=data, chunks=(8, 32, 32))
    monkeypatch.setattr(hdf5_module, "_TARGET_CHUNK_BYTES", 8 * 32 * 32 * 2)
    vol = open_hdf5(path, None)
    assert reads == []
    assert vol.data.chunks[0] == (8, 8, 8, 8)
    np.testing.assert_array_equal(vol.data[9, 3].compute(), data[9, 3])
    assert len(reads) == 1
    assert reads[0][0].start >= 8 and reads[0][0].stop <= 16


def test_pickled_array_reopens_the_file(tmp_path: Path) -> None:
    data = _data((4, 8, 8))
    path = tmp_path / "pickle.h5"
    with h5py.File(path, "w") as f:
        f["img"] = data
    lazy = pickle.loads(pickle.dumps(open_hdf5(path, None).data))
    hdf5_module._CACHE.clear()  # as in a fresh worker process
    np.testing.assert_array_equal(lazy.compute(), data)


# ------------------------------------------------------------------ bad input
def test_group_instead_of_dataset(tmp_path: Path) -> None:
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.create_group("g")["raw"] = _data((2, 4, 4))
    with pytest.raises(InputError, match=r"'/g' is a group.*/g/raw"):
        open_volume(f"{path}:/g")


def test_file_without_datasets(tmp_path: Path) -> None:
    path = tmp_path / "nothing.h5"
    with h5py.File(path, "w") as f:
        f.create_group("empty")
    with pytest.raises(InputError, match="0 datasets"):
        open_volume(path)


@pytest.mark.parametrize(
    ("dtype", "match"),
    [
        (np.complex64, "complex64"),
        (np.dtype([("a", "u1"), ("b", "f4")]), "unsupported pixel data type"),
    ],
)
def test_unsupported_dtype(tmp_path: Path, dtype: np.dtype, match: str) -> None:
    path = tmp_path / "dtype.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", shape=(2, 4, 4), dtype=dtype)
    with pytest.raises(UnsupportedDtypeError, match=match):
        open_volume(path)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda f: f.create_dataset("img", shape=(2, 4, 4), dtype=np.complex64), UnsupportedDtypeError),
        (lambda f: f.create_dataset("img", shape=(0, 4, 4), dtype="u1"), DimensionalityError),
        (lambda f: f.create_dataset("img", data=np.float32(3)), DimensionalityError),
        (lambda f: f.create_dataset("img", data=np.arange(10, dtype="u2")), DimensionalityError),
        (
            lambda f: f.create_dataset("img", shape=(4, 8, 8), dtype="u1").attrs.create(
                "axes", ["q", "y", "x"]
            ),
            MetadataError,
        ),
    ],
    ids=["dtype", "zero-size", "scalar", "1-D", "axes"],
)
def test_dataset_problems_name_file_and_dataset(tmp_path: Path, make, error: type) -> None:
    """Beside other datasets in the file, the message says which one: ``file.h5:/group/img``."""
    path = tmp_path / "several.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = _data((4, 8, 8))
        make(f.create_group("group"))
    with pytest.raises(error) as info:
        open_volume(f"{path}:/group/img")
    assert str(info.value).startswith(f"{path}:/group/img: ")


def test_zero_size_dataset(tmp_path: Path) -> None:
    path = tmp_path / "zero.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", shape=(0, 4, 4), dtype="u1")
    with pytest.raises(DimensionalityError, match="zero-size"):
        open_volume(path)


def test_series_and_level_other_than_zero(tmp_path: Path) -> None:
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        f["img"] = _data((2, 4, 4))
    with pytest.raises(InputError, match="series 1"):
        open_volume(path, series=1)
    with pytest.raises(InputError, match="level 1"):
        open_volume(path, level=1)


def test_truncated_file(tmp_path: Path) -> None:
    full = tmp_path / "full.h5"
    with h5py.File(full, "w") as f:
        f.create_dataset("img", data=_data((16, 64, 64)), chunks=(4, 64, 64))
    path = tmp_path / "cut.h5"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(FormatError) as info:
        open_volume(path).data.compute()
    assert str(path) in str(info.value)


def test_corrupt_chunk_at_compute_time(tmp_path: Path) -> None:
    data = _data((4, 64, 64))
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=data, chunks=(1, 64, 64), compression="gzip")
    with h5py.File(path, "r") as f:
        info = f["img"].id.get_chunk_info(2)
    content = bytearray(path.read_bytes())
    content[info.byte_offset : info.byte_offset + info.size] = b"\x00" * info.size
    path.write_bytes(bytes(content))
    vol = open_volume(path)
    with pytest.raises(CorruptDataError, match="HDF5 dataset '/img'") as err:
        vol.data.compute()
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"plain text, not HDF5\n"], ids=["empty", "text"])
def test_not_hdf5(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.h5"
    path.write_bytes(content)
    with pytest.raises(UnsupportedFormatError):
        open_volume(f"{path}:/img")
    with pytest.raises(UnsupportedFormatError) as info:
        open_hdf5(path, "/img")
    assert isinstance(info.value, DlsError) and str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        open_hdf5(tmp_path / "absent.h5", "/img")
