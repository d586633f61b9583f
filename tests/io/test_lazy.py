"""ChunkSource: readers see only contiguous slices; results equal numpy indexing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dls_microscopy.errors import CorruptDataError
from dls_microscopy.io.lazy import ChunkSource, to_dask

A = np.arange(5 * 6 * 7).reshape(5, 6, 7)


def _source(log=None, fail=False):
    def read(key):
        assert all(isinstance(k, slice) and k.step in (None, 1) for k in key)
        if log is not None:
            log.append(key)
        if fail:
            raise ValueError("blosc: decompression error")
        return A[key]

    return ChunkSource(read, shape=A.shape, dtype=A.dtype, path=Path("img.zarr"), what="array '0'")


@pytest.mark.parametrize(
    ("key", "expect"),
    [
        ((1,), A[1]),
        ((slice(None, None, 2), 3, [1, 4, 2]), A[::2, 3][:, [1, 4, 2]]),
        ((Ellipsis, -1), A[..., -1]),
        (
            (slice(4, 0, -2), np.array([True, False, True, False, False, True])),
            A[4:0:-2][:, [0, 2, 5]],
        ),
        ((slice(2, 2),), A[2:2]),
    ],
)
def test_indexing_matches_numpy(key, expect):
    np.testing.assert_array_equal(_source()[key], expect)


def test_dask_slice_reads_only_the_region():
    log = []
    d = to_dask(_source(log), (5, 6, 7))
    np.testing.assert_array_equal(d[1:3, 2:4, 5].compute(), A[1:3, 2:4, 5])
    assert log == [(slice(1, 3), slice(2, 4), slice(5, 6))]


def test_decoder_failure_becomes_corrupt_data_error():
    with pytest.raises(CorruptDataError, match=r"img.zarr: cannot read array '0' at \[0:5, 0:6, 0:7\]"):
        to_dask(_source(fail=True), (5, 6, 7)).compute()
