"""Per-object partial sums of one block, and their exact merge across blocks (pass 1).

Every statistic kept here merges exactly: counts, coordinate sums and products
(integers), bounding boxes, minima and maxima, and intensity sums.  Intensity
sums are accumulated in ``int64`` for images of 8- and 16-bit integers, so they
are exact and the merged result does not depend on the block plan at all.  For
other dtypes (floats, 32/64-bit integers) they are ``float64`` sums; the merge
then adds block results in block order, which is deterministic for a given
plan and differs from the whole-volume sum by rounding only (relative ~1e-15).

Coordinates are block-local while a block is reduced (small numbers) and are
shifted to volume coordinates with exact integer identities when merged, e.g.
``Σ(x + o)² = Σx² + 2oΣx + o²n``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dls_microscopy.errors import InputError
from dls_microscopy.features.runs import LabelRuns, label_runs

__all__ = ["PAIRS", "PartialStats", "block_partial_stats", "exact_intensity_dtype", "merge_partials"]

#: Axis pairs of the second-order sums, in the column order of ``PartialStats.s2``:
#: ``zz, yy, xx, zy, zx, yx``.
PAIRS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))


def exact_intensity_dtype(dtype: np.dtype) -> bool:
    """Whether intensity sums of ``dtype`` are accumulated exactly (int64)."""
    dt = np.dtype(dtype)
    return dt.kind == "b" or (dt.kind in "iu" and dt.itemsize <= 2)


@dataclasses.dataclass(frozen=True, eq=False)
class PartialStats:
    """Sums over the voxels of each object seen in one block (or merged over many).

    Coordinates are voxel indices of the whole volume; ``K`` objects, ``C`` channels.

    Attributes
    ----------
    ids : (K,) uint64 ndarray
        Sorted object ids.
    count : (K,) int64 ndarray
        Voxels.
    bbox_min, bbox_max : (K, 3) int64 ndarray
        Bounding box, ``max`` exclusive.
    s1 : (K, 3) int64 ndarray
        Sums of z, y, x.
    s2 : (K, 6) int64 ndarray
        Sums of the products in :data:`PAIRS`.
    isum, isq, imin, imax : (K, C) ndarray
        Sum, sum of squares, minimum and maximum of each channel (int64 for
        8/16-bit integer images, float64 otherwise).
    icoord : (K, C, 3) ndarray
        Intensity-weighted sums of z, y, x.
    """

    ids: np.ndarray
    count: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    isum: np.ndarray
    isq: np.ndarray
    imin: np.ndarray
    imax: np.ndarray
    icoord: np.ndarray

    @property
    def n_objects(self) -> int:
        """Number of objects."""
        return len(self.ids)

    @classmethod
    def empty(cls, n_channels: int, acc_dtype: np.dtype) -> PartialStats:
        """Statistics of no object."""
        z = np.zeros
        return cls(
            ids=z(0, np.uint64),
            count=z(0, np.int64),
            bbox_min=z((0, 3), np.int64),
            bbox_max=z((0, 3), np.int64),
            s1=z((0, 3), np.int64),
            s2=z((0, 6), np.int64),
            isum=z((0, n_channels), acc_dtype),
            isq=z((0, n_channels), acc_dtype),
            imin=z((0, n_channels), acc_dtype),
            imax=z((0, n_channels), acc_dtype),
            icoord=z((0, n_channels, 3), acc_dtype),
        )


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    change = np.empty(len(sorted_keys), bool)
    change[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=change[1:])
    return np.flatnonzero(change)


def block_partial_stats(
    labels: np.ndarray,
    channels: np.ndarray | None,
    *,
    offset: Sequence[int] = (0, 0, 0),
    acc_dtype: np.dtype | type | None = None,
) -> PartialStats:
    """Partial statistics of every object in one block.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of integers
        The label block; 0 is background.
    channels : (C, Z, Y, X) ndarray, optional
        The image block, one plane stack per channel (``None``: morphology only).
    offset : tuple of 3 int
        Position of the block's first voxel in the volume.
    acc_dtype : dtype, optional
        Accumulator of intensity sums; default int64 for 8/16-bit integer
        images, float64 otherwise.

    Returns
    -------
    PartialStats
        Objects present in the block, coordinates in volume indices.

    Raises
    ------
    InputError
        Negative labels, or NaN/inf intensities inside an object.
    """
    if labels.ndim != 3:
        raise InputError(f"label block must be 3D, got shape {labels.shape}")
    n_ch = 0 if channels is None else int(channels.shape[0])
    if acc_dtype is None:
        exact = channels is None or exact_intensity_dtype(channels.dtype)
        acc_dtype = np.int64 if exact else np.float64
    acc = np.dtype(acc_dtype)
    runs = label_runs(labels)
    if len(runs.starts) == 0:
        return PartialStats.empty(n_ch, acc)
    order = np.argsort(runs.labels, kind="stable")
    grp = _group_starts(runs.labels[order])
    ids = runs.labels[order][grp]

    m = runs.lengths
    z, y, x0 = runs.coordinates()
    sx = m * x0 + m * (m - 1) // 2
    sxx = m * x0 * x0 + x0 * m * (m - 1) + (m - 1) * m * (2 * m - 1) // 6
    cols = np.stack([m, z * m, y * m, sx, z * z * m, y * y * m, sxx, z * y * m, z * sx, y * sx], axis=1)
    sums = np.add.reduceat(cols[order], grp, axis=0)
    lo = np.minimum.reduceat(np.stack([z, y, x0], axis=1)[order], grp, axis=0)
    hi = np.maximum.reduceat(np.stack([z + 1, y + 1, x0 + m], axis=1)[order], grp, axis=0)

    k = len(ids)
    isum = np.zeros((k, n_ch), acc)
    isq = np.zeros((k, n_ch), acc)
    imin = np.zeros((k, n_ch), acc)
    imax = np.zeros((k, n_ch), acc)
    icoord = np.zeros((k, n_ch, 3), acc)
    if n_ch:
        _intensity_sums(runs, channels, order, grp, (z, y, x0), acc, isum, isq, imin, imax, icoord)

    local = PartialStats(
        ids=ids,
        count=sums[:, 0],
        bbox_min=lo,
        bbox_max=hi,
        s1=sums[:, 1:4],
        s2=sums[:, 4:10],
        isum=isum,
        isq=isq,
        imin=imin,
        imax=imax,
        icoord=icoord,
    )
    return _shift(local, offset)


def _intensity_sums(
    runs: LabelRuns,
    channels: np.ndarray,
    order: np.ndarray,
    grp: np.ndarray,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    acc: np.dtype,
    isum: np.ndarray,
    isq: np.ndarray,
    imin: np.ndarray,
    imax: np.ndarray,
    icoord: np.ndarray,
) -> None:
    z, y, x0 = coords
    offs = runs.offsets()
    fg = runs.voxel_index()
    # x of every foreground voxel (block-local), run by run
    xv = np.repeat(x0 - offs, runs.lengths) + np.arange(len(fg), dtype=np.int64)
    xv = xv.astype(acc, copy=False)
    for c in range(channels.shape[0]):
        values = np.ascontiguousarray(channels[c]).reshape(-1)[fg]
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise InputError(
                f"channel {c} has {bad} NaN/inf value(s) inside objects; "
                "intensity features are undefined there (fix or mask the image first)"
            )
        v = values.astype(acc, copy=False)
        run_sum = np.add.reduceat(v, offs)
        run_sq = np.add.reduceat(v * v, offs)
        run_x = np.add.reduceat(v * xv, offs)
        run_min = np.minimum.reduceat(v, offs)
        run_max = np.maximum.reduceat(v, offs)
        per_run = np.stack([run_sum, run_sq, z * run_sum, y * run_sum, run_x], axis=1)
        obj = np.add.reduceat(per_run[order], grp, axis=0)
        isum[:, c], isq[:, c] = obj[:, 0], obj[:, 1]
        icoord[:, c, :] = obj[:, 2:5]
        imin[:, c] = np.minimum.reduceat(run_min[order], grp)
        imax[:, c] = np.maximum.reduceat(run_max[order], grp)


def _shift(p: PartialStats, offset: Sequence[int]) -> PartialStats:
    """The same statistics with coordinates moved by ``offset`` (exact for integers)."""
    o = np.asarray(offset, np.int64)
    if not o.any():
        return p
    n = p.count
    s1 = p.s1 + n[:, None] * o
    s2 = np.empty_like(p.s2)
    for col, (a, b) in enumerate(PAIRS):
        s2[:, col] = p.s2[:, col] + o[a] * p.s1[:, b] + o[b] * p.s1[:, a] + o[a] * o[b] * n
    icoord = p.icoord + p.isum[:, :, None] * o.astype(p.icoord.dtype)
    return dataclasses.replace(
        p, bbox_min=p.bbox_min + o, bbox_max=p.bbox_max + o, s1=s1, s2=s2, icoord=icoord
    )


def merge_partials(parts: Sequence[PartialStats]) -> PartialStats:
    """Merge the statistics of several blocks into one row per object.

    Parts are combined in the order given (block order): integer sums are
    exact in any order; float sums are deterministic for a fixed order.
    """
    parts = [p for p in parts if p.n_objects]
    if not parts:
        raise ValueError("merge_partials needs at least one non-empty part")  # caller's bug
    if len(parts) == 1:
        return parts[0]
    cat = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(PartialStats)
    }
    order = np.argsort(cat["ids"], kind="stable")
    cat = {k: v[order] for k, v in cat.items()}
    grp = _group_starts(cat["ids"])
    out = {"ids": cat["ids"][grp]}
    for name in ("count", "s1", "s2", "isum", "isq", "icoord"):
        out[name] = np.add.reduceat(cat[name], grp, axis=0)
    for name in ("bbox_min", "imin"):
        out[name] = np.minimum.reduceat(cat[name], grp, axis=0)
    for name in ("bbox_max", "imax"):
        out[name] = np.maximum.reduceat(cat[name], grp, axis=0)
    return PartialStats(**out)


def pair_names(axes: str = "zyx") -> list[str]:
    """Names of the second-order sums, e.g. ``["zz", "yy", "xx", "zy", "zx", "yx"]``."""
    return [axes[a] + axes[b] for a, b in PAIRS]
