"""Per-object statistics that need every voxel of an object at once (pass 2).

Percentiles cannot be merged from partial sums, and radial shells need the
object's centroid and shape (from pass 1) first.  Pass 2 therefore reads
bounding-box crops, batched: every object is *owned* by the block of the
plan that contains the first corner of its bounding box, and each block
reads one region, the union of its owned objects' bounding boxes, lazily
from the (possibly on-disk) arrays.  Everything an object needs is in that
region, so the results are exact and independent of the block plan:

* **Percentiles** equal ``numpy.percentile(values.astype(float64), q)``
  (``method="linear"``) of the object's voxels, for any dtype: exact order
  statistics (a per-object histogram for integer data of a small range, a
  per-object sort otherwise), interpolated in float64.
* **Radial shells**: voxel ``p`` of an object with centroid ``c`` and
  covariance ``Σ`` (µm², plus ``s²/12`` per axis, the spread of one voxel,
  so that ``Σ`` is never singular) has normalised radius
  ``ρ = sqrt((p - c)ᵀ Σ⁻¹ (p - c) / 5)``: 0 at the centroid and 1 on the
  surface of a solid ellipsoid (whose covariance is ``a²/5`` along a semi-axis
  ``a``).  Shell ``i`` of ``n`` holds ``i/n <= ρ < (i+1)/n``; voxels with
  ``ρ >= 1`` (non-ellipsoidal parts) go to the last shell.  ``FracAtD`` is the
  shell's fraction of the object's integrated intensity, ``MeanFrac`` that
  fraction over the shell's fraction of the object's voxels.  A shell without
  voxels (a small or thin object's inner shell) holds none of the intensity:
  ``FracAtD`` and ``MeanFrac`` are 0 there, as CellProfiler's
  MeasureObjectIntensityDistribution gives them (it divides by the voxel
  fraction plus machine epsilon, so 0 / ε = 0).  ``NaN`` remains only where
  the object's intensity sums to 0 (0 / 0 in every shell, in CellProfiler too).

Memory of one batch: the union of its objects' bounding boxes, i.e. the block
grown by at most one object extent (a single huge object is read whole).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dls_microscopy.blocks import BlockPlan
from dls_microscopy.errors import InputError
from dls_microscopy.features.runs import label_runs

__all__ = ["CropBatch", "CropResults", "crop_statistics", "owner_batches", "percentiles_sorted"]


@dataclasses.dataclass(frozen=True)
class CropBatch:
    """Objects owned by one block and the region that contains all of them.

    Attributes
    ----------
    rows : (k,) int64 ndarray
        Rows (positions in the object table) of the owned objects, ascending.
    region : tuple of slice
        Union of their bounding boxes.
    """

    rows: np.ndarray
    region: tuple[slice, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class CropResults:
    """Pass-2 statistics of ``K`` objects, ``C`` channels.

    Attributes
    ----------
    percentiles : (K, C, Q) float64 ndarray
    frac_at_d, mean_frac : (K, C, S) float64 ndarray
    """

    percentiles: np.ndarray
    frac_at_d: np.ndarray
    mean_frac: np.ndarray


def owner_batches(plan: BlockPlan, bbox_min: np.ndarray, bbox_max: np.ndarray) -> list[CropBatch]:
    """Group objects by the block that contains their bounding box's first corner.

    Returns the non-empty batches in block (C) order.
    """
    if len(bbox_min) == 0:
        return []
    cell = bbox_min // np.asarray(plan.block_shape, np.int64)
    flat = np.ravel_multi_index(tuple(cell.T), plan.grid)
    order = np.argsort(flat, kind="stable")
    flat_sorted = flat[order]
    starts = np.flatnonzero(np.r_[True, flat_sorted[1:] != flat_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    batches = []
    for a, b in zip(starts, ends, strict=True):
        rows = np.sort(order[a:b])
        lo = bbox_min[rows].min(axis=0)
        hi = bbox_max[rows].max(axis=0)
        batches.append(CropBatch(rows, tuple(slice(int(i), int(j)) for i, j in zip(lo, hi, strict=True))))
    return batches


def percentiles_sorted(values: np.ndarray, offsets: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Percentiles of segments of ``values`` that are each sorted ascending.

    Same definition and arithmetic as ``numpy.percentile(..., method="linear")``:
    virtual index ``(n - 1) q / 100`` and numpy's two-sided linear interpolation.

    Parameters
    ----------
    values : (N,) ndarray
        Concatenated sorted segments.
    offsets : (k + 1,) int64 ndarray
        Segment boundaries; every segment is non-empty.
    q : sequence of float
        Percentiles in [0, 100].

    Returns
    -------
    (k, Q) float64 ndarray
    """
    base = offsets[:-1, None]
    return _lerp_percentiles(lambda rank: values[base + rank].astype(np.float64), np.diff(offsets), q)


def crop_statistics(
    batch: CropBatch,
    *,
    read_labels: Callable[[tuple[slice, ...]], np.ndarray],
    read_channels: Callable[[tuple[slice, ...]], np.ndarray],
    ids: np.ndarray,
    counts: np.ndarray,
    centroid_vox: np.ndarray,
    precision_um: np.ndarray,
    spacing: Sequence[float],
    percentiles: Sequence[float],
    radial_shells: int,
) -> CropResults:
    """Percentiles and radial shells of the objects of one batch.

    Parameters
    ----------
    batch : CropBatch
    read_labels, read_channels : callable
        ``region -> (Z, Y, X)`` labels and ``region -> (C, Z, Y, X)`` image.
    ids, counts, centroid_vox, precision_um : ndarray
        For every object of the table: id, voxel count, centroid (voxel
        coordinates, ``(K, 3)``) and the inverse of its regularised covariance
        (µm⁻², ``(K, 3, 3)``).
    spacing : tuple of 3 float
        Voxel size in µm.
    percentiles : sequence of float
    radial_shells : int
        0 to skip radial shells.

    Returns
    -------
    CropResults
        Rows of the owned objects only (in ``batch.rows`` order).
    """
    rows = batch.rows
    k = len(rows)
    own_ids = ids[rows]
    labels = read_labels(batch.region)
    image = read_channels(batch.region)
    n_ch = image.shape[0]
    runs = label_runs(labels)
    rank = np.searchsorted(own_ids, runs.labels)
    rank_c = np.minimum(rank, k - 1)
    keep = own_ids[rank_c] == runs.labels
    sel = np.flatnonzero(keep)
    order = sel[np.argsort(rank_c[sel], kind="stable")]  # object-contiguous, scan order within
    obj_rank = rank_c[order]
    lengths = runs.lengths[order]
    seen = np.bincount(obj_rank, weights=lengths, minlength=k).astype(np.int64)
    if not np.array_equal(seen, counts[rows]):
        raise InputError("the labels changed between the two passes over the data (being rewritten?)")
    offsets = np.zeros(k + 1, np.int64)
    np.cumsum(seen, out=offsets[1:])
    fg = runs.voxel_index(order)

    q = list(percentiles)
    pct = np.full((k, n_ch, len(q)), np.nan)
    s = int(radial_shells)
    frac = np.full((k, n_ch, s), np.nan)
    mean_frac = np.full((k, n_ch, s), np.nan)
    obj = np.repeat(obj_rank, lengths)  # object rank of every voxel
    if s:
        shell_key = obj * s + _voxel_shells(
            runs, order, obj_rank, batch, rows, centroid_vox, precision_um, spacing, s
        )
        shell_n = np.bincount(shell_key, minlength=k * s).reshape(k, s)
        vox_frac = shell_n / seen[:, None]
    for c in range(n_ch):
        values = np.ascontiguousarray(image[c]).reshape(-1)[fg]
        if q:
            pct[:, c, :] = _object_percentiles(values, obj, offsets, q)
        if s:
            shell_i = np.bincount(shell_key, weights=values.astype(np.float64), minlength=k * s).reshape(k, s)
            total = shell_i.sum(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac[:, c, :] = shell_i / total
                # an empty shell: FracAtD itself (0, or NaN for an object without intensity)
                mean_frac[:, c, :] = np.where(shell_n > 0, frac[:, c, :] / vox_frac, frac[:, c, :])
    return CropResults(pct, frac, mean_frac)


def _object_percentiles(
    values: np.ndarray, obj: np.ndarray, offsets: np.ndarray, q: Sequence[float]
) -> np.ndarray:
    """Exact percentiles of each object's values (``values`` grouped by object).

    Integer values of a small range go through one histogram per object (a
    single ``bincount`` and ``cumsum``, vectorised); anything else is sorted
    object by object.  Both give ``numpy.percentile``'s result.
    """
    k = len(offsets) - 1
    if values.dtype.kind in "iub" and values.size:
        lo, hi = int(values.min()), int(values.max())
        span = hi - lo + 1
        if k * span <= max(4 * values.size, 1 << 20):
            key = obj * span + (values.astype(np.int64) - lo)
            cum = np.cumsum(np.bincount(key, minlength=k * span))
            base = np.arange(k, dtype=np.int64)[:, None] * span

            def value_at(rank: np.ndarray) -> np.ndarray:
                pos = np.searchsorted(cum, offsets[:-1, None] + rank, side="right")
                return (pos - base + lo).astype(np.float64)

            return _lerp_percentiles(value_at, np.diff(offsets), q)
    sorted_values = values.copy()
    for a, b in itertools.pairwise(offsets.tolist()):
        sorted_values[a:b].sort()
    return percentiles_sorted(sorted_values, offsets, q)


def _lerp_percentiles(
    value_at: Callable[[np.ndarray], np.ndarray], n: np.ndarray, q: Sequence[float]
) -> np.ndarray:
    """numpy's ``method="linear"`` from ``value_at(rank)``: the ``rank``-th smallest values."""
    qs = np.true_divide(np.asarray(q, np.float64), 100)
    n = n[:, None]
    virtual = (n - 1) * qs[None, :]
    prev = np.floor(virtual)
    gamma = virtual - prev
    prev_i = prev.astype(np.int64)
    next_i = np.minimum(prev_i + 1, n - 1)
    a = value_at(prev_i)
    b = value_at(next_i)
    diff = b - a
    out = a + diff * gamma
    hi = gamma >= 0.5
    out[hi] = (b - diff * (1 - gamma))[hi]
    return out


def _voxel_shells(
    runs: Any,
    order: np.ndarray,
    obj_rank: np.ndarray,
    batch: CropBatch,
    rows: np.ndarray,
    centroid_vox: np.ndarray,
    precision_um: np.ndarray,
    spacing: Sequence[float],
    shells: int,
) -> np.ndarray:
    """Radial shell of every voxel of the batch (grouped by object, scan order within).

    The quadratic form ``q = dᵀPd`` is split into per-run terms (``z``, ``y``
    are constant along a run): ``q = A + dx (B + C dx)``.  An owned object's
    runs do not depend on the batch region, so neither does the result.
    """
    lengths = runs.lengths[order]
    origin = np.array([r.start for r in batch.region], np.int64)
    z, y, x0 = (c[order] for c in runs.coordinates())
    sp = np.asarray(spacing, np.float64)
    cen = centroid_vox[rows][obj_rank]
    p = precision_um[rows][obj_rank]
    dz = (z + origin[0] - cen[:, 0]) * sp[0]
    dy = (y + origin[1] - cen[:, 1]) * sp[1]
    a = p[:, 0, 0] * dz * dz + p[:, 1, 1] * dy * dy + 2 * p[:, 0, 1] * dz * dy
    b = 2 * (p[:, 0, 2] * dz + p[:, 1, 2] * dy)
    first = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    # x - cx of every voxel, from its run's start and its position in the run
    j = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(first, lengths)
    dx = (np.repeat((x0 + origin[2]) - cen[:, 2], lengths) + j) * sp[2]
    q = np.repeat(a, lengths) + dx * (np.repeat(b, lengths) + np.repeat(p[:, 2, 2], lengths) * dx)
    # rho^2 = q / 5; shell i where (i/n)^2 <= rho^2 < ((i+1)/n)^2, the last shell open-ended
    edges = 5.0 * (np.arange(1, shells, dtype=np.float64) / shells) ** 2
    return np.searchsorted(edges, q, side="right")
