"""Selecting a channel or time point reads only that channel's region on later slices.

dask (2026.8) does not fuse two successive ``getitem`` calls, so ``select(c)``
followed by a plane slice used to read whole dask chunks of every channel.
The readers now record how each level is built (:class:`SourceLevel`) and
``Volume.select`` applies the index at the source.  These tests count what the
readers are asked for (keys and voxels) and compare values with numpy.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile

from dls_microscopy.channels import channel_by_name, channel_data, channel_index
from dls_microscopy.errors import InputError
from dls_microscopy.io import open_volume, open_zarr, write_ome_zarr
from dls_microscopy.io._zarr_chunks import _ZarrReader
from dls_microscopy.io.hdf5 import _Hdf5Reader
from dls_microscopy.io.lazy import ChunkSource, SourceLevel
from dls_microscopy.io.tiff import _TiffLevelReader
from dls_microscopy.io.zarr_read import open_labels
from dls_microscopy.volume import Volume

SHAPE = (2, 24, 40, 36)  # c, z, y, x


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A (c, z, y, x) uint16 ramp where every voxel has its own value."""
    return np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)


class ReadLog:
    """Every key a file reader was asked for (after all views were applied)."""

    def __init__(self) -> None:
        self.keys: list[tuple[slice, ...]] = []
        self.backends: set[str] = set()  # zarr readers: "tensorstore" or "zarr"

    @property
    def voxels(self) -> int:
        return sum(int(np.prod([s.stop - s.start for s in key])) for key in self.keys)

    def clear(self) -> None:
        self.keys.clear()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> ReadLog:
    log = ReadLog()
    for cls in (_ZarrReader, _TiffLevelReader, _Hdf5Reader):
        original = cls.__call__

        def counted(self: Any, key: tuple[slice, ...], _original: Any = original) -> np.ndarray:
            # readers only ever see contiguous bounding slices
            assert all(isinstance(k, slice) and k.step in (None, 1) for k in key), key
            log.keys.append(key)
            if isinstance(self, _ZarrReader):
                log.backends.add(self.backend)
            return _original(self, key)

        monkeypatch.setattr(cls, "__call__", counted)
    return log


def _zarr(tmp_path: Path, image: np.ndarray, version: str) -> Path:
    return write_ome_zarr(
        image,
        tmp_path / f"img{version}.ome.zarr",
        axes="czyx",
        spacing=(1.0, 0.5, 0.5),
        chunks=(8, 8, 8),
        version=version,  # type: ignore[arg-type]
        n_levels=2,
        workers=1,
    )


def _ometiff(tmp_path: Path, image: np.ndarray) -> Path:
    path = tmp_path / "img.ome.tif"
    tifffile.imwrite(path, image, ome=True, metadata={"axes": "CZYX"})
    return path


def _hdf5(tmp_path: Path, image: np.ndarray) -> str:
    """Stored as (z, c, y, x) so that the reader reorders the axes as well."""
    path = tmp_path / "img.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("raw", data=image.transpose(1, 0, 2, 3), chunks=(4, 1, 8, 8))
        ds.attrs["axes"] = "zcyx"
    return f"{path}:/raw"


CASES = ["zarr-0.5-tensorstore", "zarr-0.5-zarr", "zarr-0.4-zarr", "ome-tiff", "hdf5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, image: np.ndarray) -> dict[str, str]:
    """The test image written once per format (read-only afterwards)."""
    tmp = tmp_path_factory.mktemp("select_reads")
    return {
        "zarr-0.5": str(_zarr(tmp, image, "0.5")),
        "zarr-0.4": str(_zarr(tmp, image, "0.4")),
        "ome-tiff": str(_ometiff(tmp, image)),
        "hdf5": _hdf5(tmp, image),
    }


@pytest.fixture(params=CASES)
def opened(request: pytest.FixtureRequest, files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Volume:
    case = request.param
    if case.startswith("zarr"):
        _, version, backend = case.split("-")
        if backend == "tensorstore":
            pytest.importorskip("tensorstore")
        monkeypatch.setenv("DLS_ZARR_READER", backend)
        vol = open_volume(files[f"zarr-{version}"])
        assert vol.format == "ome-zarr"
        return vol
    return open_volume(files[case])


def test_opening_and_selecting_read_nothing(opened: Volume, reads: ReadLog) -> None:
    vol = opened.select(c=1)
    assert vol.axes == "zyx" and vol.shape == SHAPE[1:]
    assert all(src is not None for src in vol.level_sources)
    assert reads.keys == []


def test_select_channel_then_plane_reads_only_that_plane(
    opened: Volume, reads: ReadLog, image: np.ndarray
) -> None:
    vol = opened.select(c=1)
    plane = vol.data[5].compute()
    np.testing.assert_array_equal(plane, image[1, 5])
    if opened.format == "ome-zarr":  # the reader chosen by DLS_ZARR_READER did the reading
        assert reads.backends == {os.environ["DLS_ZARR_READER"]}
    # exactly plane 5 of channel 1 in file coordinates, nothing else
    assert reads.voxels == SHAPE[2] * SHAPE[3]
    order = "zcyx" if opened.format == "hdf5" else "czyx"  # axis order in the file
    for key in reads.keys:
        file_key = dict(zip(order, key, strict=True))
        assert (file_key["c"].start, file_key["c"].stop) == (1, 2)
        assert (file_key["z"].start, file_key["z"].stop) == (5, 6)


def test_select_channel_then_block_reads_only_the_block(
    opened: Volume, reads: ReadLog, image: np.ndarray
) -> None:
    block = opened.select(c="channel_0" if opened.format == "hdf5" else 0).data[3:9, 10:21, 4:30]
    np.testing.assert_array_equal(block.compute(), image[0, 3:9, 10:21, 4:30])
    assert reads.voxels == 6 * 11 * 26


def test_select_matches_numpy_on_every_level(opened: Volume, image: np.ndarray) -> None:
    for c in range(SHAPE[0]):
        vol = opened.select(c=c)
        for lv_full, lv in zip(opened.levels, vol.levels, strict=True):
            expect = np.asarray(lv_full)[c]
            np.testing.assert_array_equal(lv.compute(), expect)
            np.testing.assert_array_equal(lv[1::2, -3:, ::-1].compute(), expect[1::2, -3:, ::-1])
        if len(opened.levels) > 1:
            np.testing.assert_array_equal(
                opened.at_level(1).select(c=c).data.compute(), np.asarray(opened.levels[1])[c]
            )


def test_selected_volume_pickles(opened: Volume, image: np.ndarray) -> None:
    data = pickle.loads(pickle.dumps(opened.select(c=1).data))
    np.testing.assert_array_equal(data[2:4].compute(), image[1, 2:4])


def test_time_and_channel_select_compose(tmp_path: Path, reads: ReadLog) -> None:
    tczyx = np.arange(3 * 2 * 8 * 16 * 16, dtype=np.uint16).reshape(3, 2, 8, 16, 16)
    path = write_ome_zarr(tczyx, tmp_path / "t.ome.zarr", axes="tczyx", chunks=(4, 8, 8), n_levels=1)
    vol = open_zarr(path).select(t=2, c=1)
    reads.clear()
    np.testing.assert_array_equal(vol.data[6, 3:5].compute(), tczyx[2, 1, 6, 3:5])
    assert reads.voxels == 2 * 16
    assert {(k[0].start, k[1].start, k[2].start) for k in reads.keys} == {(2, 1, 6)}


def test_levels_not_from_the_source_fall_back_to_dask(opened: Volume, image: np.ndarray) -> None:
    """A level replaced after opening (here: doubled) must not be rebuilt from the file."""
    changed = tuple(lv * 2 for lv in opened.levels)
    vol = Volume(
        data=changed[0],
        axes=opened.axes,
        spacing=opened.spacing,
        levels=changed,
        level_spacings=opened.level_spacings,
        level_sources=opened.level_sources,
    )
    np.testing.assert_array_equal(vol.select(c=1).data[5].compute(), image[1, 5] * 2)
    assert vol.select(c=1).level_sources == (None,) * len(changed)


def test_plain_arrays_still_select() -> None:
    arr = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    vol = Volume(data=da.from_array(arr, chunks=2), axes="czyx", spacing=(1, 1, 1))
    np.testing.assert_array_equal(vol.select(c=-1).data.compute(), arr[-1])


def _named_channels(*names: str) -> tuple[np.ndarray, Volume]:
    """A small ``(C, 2, 2, 2)`` array and its lazy Volume with these channel names."""
    arr = np.arange(len(names) * 8, dtype=np.float32).reshape(len(names), 2, 2, 2)
    vol = Volume(data=da.from_array(arr, chunks=2), axes="czyx", spacing=(1, 1, 1), channel_names=names)
    return arr, vol


def test_channel_names_match_exactly_else_uniquely_ignoring_case() -> None:
    arr, vol = _named_channels("LaminB1", "Dapi", "dapi2")
    np.testing.assert_array_equal(vol.select(c="DAPI").data.compute(), arr[1])
    assert vol.select(c="DAPI").channel_names == ("Dapi",)
    assert channel_by_name("dapi2", vol.channel_names) == 2
    twins = ("dapi", "DAPI")
    assert channel_by_name("DAPI", twins) == 1  # an exact match wins
    with pytest.raises(InputError, match=r"no channel named 'Dapi' \(channels: dapi, DAPI\)"):
        channel_by_name("Dapi", twins)  # two case-insensitive matches: ambiguous
    with pytest.raises(InputError, match="no channel named 'GFP'"):
        vol.select(c="GFP")


def test_a_channel_may_be_named_as_the_feature_columns_spell_it() -> None:
    """``channel0`` (from ``Nuclei_Intensity_MeanIntensity_channel0``) names ``channel_0``."""
    names = ("channel_0", "Lamin B1", "ch-2")
    assert [channel_by_name(n, names) for n in ("channel0", "LaminB1", "laminb1", "ch2")] == [0, 1, 1, 2]
    with pytest.raises(InputError, match="no channel named 'ab'"):
        channel_by_name("ab", ("a_b", "a-b"))  # two channels spelled alike: ambiguous
    with pytest.raises(InputError, match="no channel named '__'"):
        channel_by_name("__", ("x", "y"))  # nothing left of the name: no match by spelling


def test_channel_data_picks_by_name_or_index_once_each() -> None:
    arr, vol = _named_channels("LaminB1", "Dapi", "GFP")
    data, names = channel_data(vol, ["gfp", "0"])
    assert names == ("GFP", "LaminB1")
    np.testing.assert_array_equal(data.compute(), arr[[2, 0]])
    assert channel_data(vol)[1] == ("LaminB1", "Dapi", "GFP")
    assert channel_index(-1, vol.channel_names) == 2
    with pytest.raises(InputError, match="listed twice"):
        channel_data(vol, ["Dapi", 1])
    with pytest.raises(InputError, match=r"channel 3 out of range \(0..2\)"):
        channel_data(vol, [3])
    single = Volume(data=da.from_array(arr[0], chunks=2), axes="zyx", spacing=(1, 1, 1))
    assert channel_data(single)[0].shape == (1, 2, 2, 2)


def test_channels_of_the_same_name_are_chosen_by_index_never_guessed() -> None:
    """Two channels named DAPI: segment took the first silently; features named no file."""
    arr, vol = _named_channels("DAPI", "DAPI", "GFP")
    vol = dataclasses.replace(vol, source=Path("dup.ome.tif"))
    with pytest.raises(InputError, match=r"dup.ome.tif: 2 channels are named 'DAPI' \(channels 0, 1\)"):
        vol.select(c="DAPI")
    np.testing.assert_array_equal(vol.select(c=1).data.compute(), arr[1])
    with pytest.raises(
        InputError, match=r"dup.ome.tif: channels 0, 1 have the same name \('DAPI'\).*by index"
    ):
        channel_data(vol)
    assert channel_data(vol, [1, "GFP"])[1] == ("DAPI", "GFP")


def test_select_takes_a_channel_as_channel_data_does() -> None:
    # Volume.select and channel_data read "2" alike (an index), and fail alike
    arr, vol = _named_channels("LaminB1", "Dapi", "GFP")
    np.testing.assert_array_equal(vol.select(c="2").data.compute(), arr[2])
    assert vol.select(c=-1).channel_names == channel_data(vol, ["2"])[1] == ("GFP",)
    with pytest.raises(InputError, match=r"channel 3 out of range \(0..2\)"):
        vol.select(c=3)


def test_chunk_source_views_compose() -> None:
    arr = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    keys: list[tuple[slice, ...]] = []

    def read(key: tuple[slice, ...]) -> np.ndarray:
        keys.append(key)
        return arr[key]

    src = ChunkSource(read, shape=arr.shape, dtype=arr.dtype, path=Path("x"), what="test")
    view = src.transpose((1, 0, 3, 2)).take(1, 1).take(0, -1)  # (y, x) of arr[1, -1].T
    assert view.shape == (5, 4)
    np.testing.assert_array_equal(view[1:4, ::2], arr[1, -1].T[1:4, ::2])
    assert keys == [(slice(1, 2), slice(2, 3), slice(0, 4), slice(1, 4))]
    level = SourceLevel(src, (1, 3, 2, 5), "lvl").transpose((1, 0, 3, 2)).take(1, 1)
    assert level.chunks == (3, 5, 2)
    assert level.matches(level.to_dask()) and not level.matches(level.to_dask() + 1)
    with pytest.raises(IndexError):
        src.take(0, 2)


def test_open_labels_with_channel_axis_reads_one_plane(shared_data: Path, reads: ReadLog) -> None:
    store = shared_data / "omezarr_idr0062A_6001240" / "6001240_labels.zarr"
    raw = open_zarr(store / "labels" / "0")
    labels = open_labels(store)
    assert "c" in raw.axes and "c" not in labels.axes
    reads.clear()
    plane = labels.data[100].compute()
    assert reads.voxels == plane.size
    np.testing.assert_array_equal(plane, raw.data[(0,) * (raw.axes.index("c") + 1)][100])


def test_at_time_point_is_the_one_rule_for_time_series(tmp_path: Path) -> None:
    """Several time points need a choice; data without a time axis takes none other than 0."""
    tzyx = np.arange(3 * 4 * 8 * 8, dtype=np.uint16).reshape(3, 4, 8, 8)
    movie = open_zarr(write_ome_zarr(tzyx, tmp_path / "m.ome.zarr", axes="tzyx", n_levels=1))
    with pytest.raises(InputError, match="3 time points; choose one"):
        movie.at_time_point(None)
    np.testing.assert_array_equal(movie.at_time_point(2).load(), tzyx[2])
    with pytest.raises(InputError, match="out of range"):
        movie.at_time_point(3)
    still = open_zarr(write_ome_zarr(tzyx[0], tmp_path / "s.ome.zarr", axes="zyx", n_levels=1))
    assert still.at_time_point(None) is still and still.at_time_point(0) is still
    with pytest.raises(InputError, match="no time axis"):
        still.at_time_point(1)
    assert still.at_time_point(1, strict=False) is still  # labels of one time point serve any
    one = open_zarr(write_ome_zarr(tzyx[:1], tmp_path / "one.ome.zarr", axes="tzyx", n_levels=1))
    np.testing.assert_array_equal(one.at_time_point(2, strict=False).load(), tzyx[0])
    with pytest.raises(InputError, match="the image has one time point"):
        one.at_time_point(2)
