"""Sparse overlap (contingency) tables of two label images, blockwise for dask arrays.

The table lists ``(pred_id, gt_id, n_voxels)`` for every pair of objects that
share voxels, plus each object's size; it is what object matching
(:mod:`dls_microscopy.segment.metrics`) and label comparisons are built on.
Memory is bounded by the block size; no dense ``n_pred x n_true`` matrix is
ever built.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any

import dask
import dask.array as da
import numpy as np

from dls_microscopy.errors import InputError, UnsupportedDtypeError

__all__ = ["Overlaps", "contingency"]

log = logging.getLogger(__name__)

#: Numpy inputs with more voxels are processed in blocks of about this size.
EAGER_BLOCK_VOXELS = 2**23
_MERGE_FANIN = 8

_PairTable = tuple[np.ndarray, np.ndarray, np.ndarray]  # pred ids, gt ids, counts


@dataclasses.dataclass(frozen=True, eq=False)
class Overlaps:
    """Sparse contingency table of two label images.

    Attributes
    ----------
    pred_ids, gt_ids : (K,) uint64 ndarray
        The object pairs sharing voxels (both ids > 0), sorted by
        ``(pred_id, gt_id)``.
    counts : (K,) int64 ndarray
        Number of shared voxels of each pair.
    pred_labels, gt_labels : (N,) and (M,) uint64 ndarray
        Sorted ids of all objects present (0, background, excluded).
    pred_sizes, gt_sizes : (N,) and (M,) int64 ndarray
        Voxel count of each object, voxels over background included.
    """

    pred_ids: np.ndarray
    gt_ids: np.ndarray
    counts: np.ndarray
    pred_labels: np.ndarray
    pred_sizes: np.ndarray
    gt_labels: np.ndarray
    gt_sizes: np.ndarray

    @property
    def n_pred(self) -> int:
        """Number of predicted objects."""
        return len(self.pred_labels)

    @property
    def n_true(self) -> int:
        """Number of ground-truth objects."""
        return len(self.gt_labels)

    def pair_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``pred_ids`` in ``pred_labels`` and of ``gt_ids`` in ``gt_labels``."""
        return (
            np.searchsorted(self.pred_labels, self.pred_ids),
            np.searchsorted(self.gt_labels, self.gt_ids),
        )

    def iou(self) -> np.ndarray:
        """IoU of each pair, ``(K,) float64``."""
        pi, gi = self.pair_indices()
        union = self.pred_sizes[pi] + self.gt_sizes[gi] - self.counts
        return self.counts / np.maximum(union, 1)

    def only_overlapping_pred(self) -> Overlaps:
        """The same table without the predicted objects that share no voxel with any gt object."""
        keep = np.isin(self.pred_labels, self.pred_ids)
        return dataclasses.replace(self, pred_labels=self.pred_labels[keep], pred_sizes=self.pred_sizes[keep])


# -- contingency table -------------------------------------------------------


def contingency(pred: Any, gt: Any) -> Overlaps:
    """Count the voxels shared by every pair of objects of two label images.

    Parameters
    ----------
    pred, gt : (..., M, N) ndarray or dask.array.Array of integers
        Label images of the same shape; 0 is background, ids need not be
        consecutive (any non-negative integer up to ``2**64 - 1``).  Dask
        arrays are counted block by block, ``gt`` rechunked like ``pred``;
        large numpy arrays are processed in blocks too.

    Returns
    -------
    Overlaps
        The sparse table and the per-object sizes.

    Raises
    ------
    InputError
        Different shapes, or a negative id.
    UnsupportedDtypeError
        Non-integer labels (bool is accepted as one object).

    Examples
    --------
    >>> a = np.array([[1, 1, 0], [2, 2, 2]])
    >>> b = np.array([[5, 0, 0], [5, 5, 0]])
    >>> ov = contingency(a, b)
    >>> ov.pred_ids.tolist(), ov.gt_ids.tolist(), ov.counts.tolist()
    ([1, 2], [5, 5], [1, 2])
    >>> ov.pred_sizes.tolist(), ov.gt_sizes.tolist()
    ([2, 3], [3])
    """
    pred = pred if isinstance(pred, da.Array) else np.asarray(pred)
    gt = gt if isinstance(gt, da.Array) else np.asarray(gt)
    for name, arr in (("pred", pred), ("gt", gt)):
        kind = np.dtype(arr.dtype).kind
        if kind not in "iub":
            raise UnsupportedDtypeError(f"{name} labels must be integers, got dtype {arr.dtype}")
    if tuple(pred.shape) != tuple(gt.shape):
        raise InputError(
            f"pred and gt label images differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}"
        )
    lazy = isinstance(pred, da.Array) or isinstance(gt, da.Array)
    if not lazy and pred.size <= EAGER_BLOCK_VOXELS:
        table = _pair_counts(pred, gt)
    else:
        table = _blockwise_pair_counts(pred, gt)
    return _overlaps_from_table(table)


def _blockwise_pair_counts(pred: Any, gt: Any) -> _PairTable:
    """Pair table of two arrays (numpy or dask), counted per block and tree-merged."""
    if isinstance(pred, da.Array):
        chunks = pred.chunks
    elif isinstance(gt, da.Array):
        chunks = gt.chunks
    else:  # contiguous slabs along the first axis: views, no copies
        plane = int(np.prod(pred.shape[1:], dtype=np.int64))
        step = max(1, EAGER_BLOCK_VOXELS // max(plane, 1))
        chunks = da.core.normalize_chunks((step, *pred.shape[1:]), pred.shape)
    count = dask.delayed(_pair_counts, pure=False)
    merge = dask.delayed(_merge_tables, pure=False)
    parts = [count(p, g) for p, g in zip(_blocks(pred, chunks), _blocks(gt, chunks), strict=True)]
    while len(parts) > 1:  # tree reduction: peak memory ~ fan-in x one block's table
        parts = [merge(*parts[i : i + _MERGE_FANIN]) for i in range(0, len(parts), _MERGE_FANIN)]
    (table,) = dask.compute(parts[0])
    return table


def _blocks(array: Any, chunks: tuple[tuple[int, ...], ...]) -> list[Any]:
    """The blocks of ``array`` on the grid ``chunks``, in C order (delayed or numpy views)."""
    if isinstance(array, da.Array):
        if array.chunks != chunks:
            array = array.rechunk(chunks)
        return list(array.to_delayed().ravel())
    edges = [np.cumsum((0, *sizes)) for sizes in chunks]
    per_axis = [[slice(int(a), int(b)) for a, b in itertools.pairwise(e)] for e in edges]
    return [array[region] for region in itertools.product(*per_axis)]


def _pair_counts(pred: np.ndarray, gt: np.ndarray) -> _PairTable:
    """Pair table of one block: all ``(p, g, n)`` with ``p > 0`` or ``g > 0``, sorted."""
    p, g = pred.ravel(), gt.ravel()
    foreground = (p != 0) | (g != 0)
    p, g = p[foreground], g[foreground]
    for name, ids in (("pred", p), ("gt", g)):
        if ids.dtype.kind == "i" and ids.size and ids.min() < 0:
            raise InputError(f"{name} labels contain negative ids (min {ids.min()})")
    p, g = p.astype(np.uint64), g.astype(np.uint64)
    if p.size == 0:
        return _empty_table()
    p_max, g_max = int(p.max()), int(g.max())
    span = (p_max + 1) * (g_max + 1)
    if span < 2**64:  # one uint64 key per voxel: p * (g_max + 1) + g
        key = p * np.uint64(g_max + 1) + g
        if span <= max(4 * key.size, 2**16):
            hist = np.bincount(key.astype(np.intp), minlength=span)
            keys = np.flatnonzero(hist).astype(np.uint64)
            counts = hist[keys.astype(np.intp)]
        else:
            keys, counts = np.unique(key, return_counts=True)
        base = np.uint64(g_max + 1)
        return keys // base, keys % base, counts.astype(np.int64)
    # ids too large to combine: rank them first (ranks keep the sort order)
    p_ids, p_rank = np.unique(p, return_inverse=True)
    g_ids, g_rank = np.unique(g, return_inverse=True)
    base = np.uint64(len(g_ids))
    keys, counts = np.unique(p_rank.astype(np.uint64) * base + g_rank.astype(np.uint64), return_counts=True)
    return p_ids[keys // base], g_ids[keys % base], counts.astype(np.int64)


def _empty_table() -> _PairTable:
    return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)


def _merge_tables(*tables: _PairTable) -> _PairTable:
    """Sum the counts of identical pairs over several sorted tables."""
    tables = tuple(t for t in tables if len(t[0]))
    if len(tables) <= 1:
        return tables[0] if tables else _empty_table()
    p, g, n = (np.concatenate(col) for col in zip(*tables, strict=True))
    order = np.lexsort((g, p))
    p, g, n = p[order], g[order], n[order]
    starts = _run_starts(p, g)
    return p[starts], g[starts], np.add.reduceat(n, starts)


def _run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal rows in lexicographically sorted columns."""
    change = np.zeros(len(sorted_keys[0]), bool)
    change[:1] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _sizes(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ids > 0
    ids, counts = ids[keep], counts[keep]
    order = np.argsort(ids, kind="stable")
    ids, counts = ids[order], counts[order]
    if ids.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    starts = _run_starts(ids)
    return ids[starts], np.add.reduceat(counts, starts)


def _overlaps_from_table(table: _PairTable) -> Overlaps:
    p, g, n = table
    pred_labels, pred_sizes = _sizes(p, n)
    gt_labels, gt_sizes = _sizes(g, n)
    both = (p > 0) & (g > 0)
    return Overlaps(
        pred_ids=p[both],
        gt_ids=g[both],
        counts=n[both],
        pred_labels=pred_labels,
        pred_sizes=pred_sizes,
        gt_labels=gt_labels,
        gt_sizes=gt_sizes,
    )


# -- matching ------------------------------------------------------------------
