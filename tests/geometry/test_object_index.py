"""The object index: id → bounding box from one blockwise pass equals the whole-volume answer."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from dls_microscopy.errors import DimensionalityError, InputError
from dls_microscopy.geometry import build_object_index
from dls_microscopy.geometry.index import BYTES_PER_VOXEL, as_label_source, block_boxes, merge_boxes
from dls_microscopy.volume import volume_from_array


def _random_labels(shape, n, seed, dtype=np.uint32):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype)
    for i in range(1, n + 1):
        lo = rng.integers(0, np.array(shape) - 1)
        size = rng.integers(1, 12, 3)
        lab[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))] = i
    return lab


def _reference(lab):
    boxes = ndimage.find_objects(lab)
    ids = [i + 1 for i, b in enumerate(boxes) if b is not None]
    return ids, [boxes[i - 1] for i in ids]


@pytest.mark.parametrize("block_shape", [(8, 8, 8), (16, 32, 8), (64, 64, 64)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_blockwise_index_equals_find_objects(block_shape, dtype):
    lab = _random_labels((24, 40, 30), 60, seed=1, dtype=dtype)
    index = build_object_index(lab, spacing=(1, 1, 1), block_shape=block_shape)
    ids, boxes = _reference(lab.astype(np.int64))
    assert index.ids.dtype == np.uint64
    assert index.ids.tolist() == ids
    for i, box in zip(ids, boxes, strict=True):
        assert index.bbox(i) == box


def test_sparse_uint64_ids_do_not_size_arrays():
    lab = np.zeros((10, 12, 14), np.uint64)
    big = [2**63 + 5, 2**40, 7, 2**64 - 1]
    lab[0:2, 0:3, 0:4] = big[0]
    lab[5:10, 6:12, 2:3] = big[1]
    lab[9, 11, 13] = big[2]
    lab[3, 0:12, 7] = big[3]
    index = build_object_index(da.from_array(lab, chunks=(4, 5, 6)), spacing=(1, 1, 1))
    assert index.ids.tolist() == sorted(big)
    assert index.bbox(2**63 + 5) == (slice(0, 2), slice(0, 3), slice(0, 4))
    assert index.bbox(2**64 - 1) == (slice(3, 4), slice(0, 12), slice(7, 8))
    with pytest.raises(InputError, match="not in the labels"):
        index.bbox(8)


def test_block_boxes_renumber_path_matches_direct_path():
    lab = _random_labels((20, 20, 20), 25, seed=3, dtype=np.uint64)
    direct = block_boxes(lab, (0, 0, 0))
    shifted = lab.copy()
    shifted[shifted > 0] += np.uint64(10**15)  # forces renumbering
    sparse = block_boxes(shifted, (0, 0, 0))
    np.testing.assert_array_equal(direct[0] + np.uint64(10**15), sparse[0])
    np.testing.assert_array_equal(direct[1], sparse[1])
    np.testing.assert_array_equal(direct[2], sparse[2])


def test_empty_labels_give_an_empty_index():
    index = build_object_index(np.zeros((5, 6, 7), np.uint16), spacing=(1, 1, 1))
    assert len(index) == 0 and index.lo.shape == (0, 3)
    assert len(merge_boxes([], (1, 2, 3))) == 0


def test_volume_input_keeps_its_spacing_and_checks_axes():
    lab = _random_labels((10, 10, 10), 5, seed=0)
    vol = volume_from_array(lab, axes="zyx", spacing=(2.0, 0.5, 0.5))
    assert as_label_source(vol).spacing == (2.0, 0.5, 0.5)
    assert len(build_object_index(vol)) == len(_reference(lab)[0])
    with pytest.raises(DimensionalityError):
        as_label_source(volume_from_array(lab[None], axes="czyx", spacing=(1, 1, 1)))


@pytest.mark.parametrize(
    ("labels", "spacing", "error"),
    [
        (np.zeros((4, 4), np.uint8), (1, 1, 1), DimensionalityError),
        (np.zeros((4, 4, 4), np.float32), (1, 1, 1), InputError),
        (np.zeros((4, 4, 4), np.uint8), None, InputError),
        (np.zeros((4, 4, 4), np.uint8), (1, 0, 1), InputError),
        (np.zeros((4, 4, 4), np.uint8), (1, 1), InputError),
    ],
)
def test_bad_input_raises_our_errors(labels, spacing, error):
    with pytest.raises(error):
        as_label_source(labels, spacing=spacing)


def test_negative_labels_are_rejected():
    lab = np.zeros((4, 4, 4), np.int16)
    lab[1, 1, 1] = -3
    with pytest.raises(InputError, match="non-negative"):
        build_object_index(lab, spacing=(1, 1, 1))


def test_a_dask_chunk_larger_than_the_budget_is_split():
    # readers may hand over a whole small stack as one dask chunk (the IDR image of
    # ../shared/data: labels as one (236, 275, 271) chunk needed 436 MiB of a 256 MiB budget)
    lab = _random_labels((24, 40, 30), 60, seed=4)
    one_chunk = da.from_array(lab, chunks=lab.shape)
    bpv = BYTES_PER_VOXEL + 2 * lab.itemsize  # what the planner assumes per voxel
    budget = int(lab.size * bpv / 4)
    source = as_label_source(one_chunk, spacing=(1, 1, 1), memory_budget=budget)
    assert source.plan.n_blocks > 1
    assert source.plan.outer_nbytes(bpv) <= budget
    index = build_object_index(one_chunk, spacing=(1, 1, 1), memory_budget=budget)
    ids, boxes = _reference(lab.astype(np.int64))
    assert index.ids.tolist() == ids
    for i, box in zip(ids, boxes, strict=True):
        assert index.bbox(i) == box
    # chunk-aligned blocks when the chunks fit
    aligned = as_label_source(da.from_array(lab, chunks=(8, 20, 30)), spacing=(1, 1, 1))
    assert aligned.plan.block_shape[1] % 20 == 0
