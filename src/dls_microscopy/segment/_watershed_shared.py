"""What both backends of the watershed segmenter share: input, output and the merge.

:class:`~dls_microscopy.segment.watershed.WatershedSegmenter` fills a
:class:`_FloodConfig` and hands it to a backend (:mod:`._watershed_cpu` or
:mod:`._watershed_torch`), which returns the basin graph of the flooding image
(:class:`_Basins`); :func:`_merge_basins` merges the basins into objects (seeded
minimum-spanning-forest watershed on the small basin graph, on the host) and
:func:`_labels_from_objects` turns them into labels.  The constants the backends
need live here too, so that they import nothing from the segmenter module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Gaussian support in standard deviations (both backends; also sets the halo).
_TRUNCATE = 3.0
#: Edge of the box whose mean brightness ``seed_contrast`` compares a voxel with, in
#: expected diameters (an odd number of voxels per axis; both backends; also sets the halo).
_CONTRAST_WINDOW = 1.5
#: Weight of the intensity term in ``seed_method="combined"``.
_INTENSITY_WEIGHT = 0.5
#: Neighbours (axis, step), + directions first: among equal slopes the first wins, so
#: an equal-valued neighbour is uphill only when it comes later in C order.
_DIRECTIONS = ((0, 1), (1, 1), (2, 1), (0, -1), (1, -1), (2, -1))


def _contrast_window(diameter_um: float, spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis of the ``seed_contrast`` box: odd, about ``_CONTRAST_WINDOW`` diameters."""
    return tuple(2 * round(_CONTRAST_WINDOW * float(diameter_um) / 2 / float(sp)) + 1 for sp in spacing)


def _kernels() -> Any:
    """The compiled kernels module, or None where numba cannot be imported (logged once)."""
    global _KERNELS
    if _KERNELS is _UNSET:
        try:
            kernels = importlib.import_module("dls_microscopy.segment._watershed_kernels")
        except Exception as err:  # numba missing, broken, or no writable cache location:
            # the numpy path gives the same labels, only slower
            log.warning("numba kernels unavailable (%s): the watershed runs its numpy path", err)
            kernels = None
        _KERNELS = kernels
    return _KERNELS


_UNSET: Any = object()
_KERNELS: Any = _UNSET


class _FloodConfig:
    """What a backend needs to compute the flooding image and its basins."""

    __slots__ = (
        "background",
        "cap_um",
        "contrast",
        "inv_radius",
        "inv_range",
        "method",
        "sigma_vox",
        "spacing",
        "threshold",
        "window_vox",
    )

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            setattr(self, key, value)


class _Basins:
    """Drainage basins of the flooding image ``f`` over the foreground.

    ``mask`` (Z, Y, X) bool: the foreground, whose M voxels, in C order, the per-voxel
    arrays follow; ``basin`` (M,): basin of each, basins numbered in the C order of their maxima; ``value``
    (M,): smoothed intensity; ``peak``/``peak_pos`` (B,): ``f`` at each basin's
    maximum and its flat index; ``edge_a``, ``edge_b``, ``saddle`` (E,): neighbouring
    basins and the highest ``min(f)`` over their touching voxel pairs, by decreasing
    saddle, ties by pair.
    """

    def __init__(
        self,
        mask: np.ndarray,
        basin: np.ndarray,
        value: np.ndarray,
        peak: np.ndarray,
        peak_pos: np.ndarray,
        pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        self.mask, self.basin, self.value = mask, basin, value
        self.peak, self.peak_pos = peak, peak_pos
        self.edge_a, self.edge_b, self.saddle = _unique_edges(
            *pairs, n_basins=len(peak), table_limit=min(mask.size, _DENSE_TABLE_ENTRIES)
        )


#: The dense pair table of :func:`_unique_edges` is used up to this many entries (4 MiB of
#: uint32, up to 1,024 basins): a fixed bound, so that the table never grows with the
#: block the way a bound of the block's voxels would.
_DENSE_TABLE_ENTRIES = 1 << 20


def _unique_edges(
    a: np.ndarray, b: np.ndarray, saddle: np.ndarray, *, n_basins: int, table_limit: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One edge per basin pair with its highest saddle, by decreasing saddle then pair.

    When ``n_basins**2`` is at most ``table_limit`` (the caller passes the block's
    voxels, capped at ``_DENSE_TABLE_ENTRIES``), the highest saddle of each pair is
    gathered in a dense table indexed by pair
    (``np.maximum.at`` on order-preserving uint32 keys of the saddles), without
    sorting the ``E`` touching voxel pairs.  Otherwise the result is computed
    sparsely: memory and time follow ``E``, never ``n_basins**2``.  With fewer than
    ``2**16`` basins each pair and its saddle are packed into one uint64 (pair in the
    high 32 bits, the saddle's bits mapped to an order-preserving uint32 in the low
    ones), so one in-place sort leaves every pair's highest saddle last in its run;
    otherwise the pairs are argsorted.  All paths give the same result.
    """
    if len(a) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    saddle = np.ascontiguousarray(saddle, dtype=np.float32)
    if n_basins * n_basins <= table_limit:
        key = np.minimum(a, b).astype(np.int64)
        key *= n_basins
        key += np.maximum(a, b)
        table = np.zeros(n_basins * n_basins, np.uint32)  # 0: no pair (no saddle maps to 0)
        np.maximum.at(table, key, _orderable(saddle))
        del key
        key = np.flatnonzero(table)
        high = _from_orderable(table[key])
    elif n_basins < 1 << 16:
        lo = np.minimum(a, b).astype(np.uint64)
        lo *= np.uint64(n_basins)
        lo += np.maximum(a, b).astype(np.uint64)
        packed = lo
        packed <<= np.uint64(32)
        packed |= _orderable(saddle).astype(np.uint64)
        packed.sort()
        key = packed >> np.uint64(32)
        last = np.flatnonzero(np.append(key[1:] != key[:-1], True))
        high = _from_orderable((packed[last] & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        key = key[last].astype(np.int64)
    else:
        key = np.minimum(a, b).astype(np.int64) * n_basins + np.maximum(a, b)
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        high = np.maximum.reduceat(saddle[order], starts)
        key = key[starts]
    final = np.lexsort((key, -high))
    return key[final] // n_basins, key[final] % n_basins, high[final]


def _orderable(values: np.ndarray) -> np.ndarray:
    """float32 → uint32 with the same order (IEEE bits, sign-magnitude made monotone)."""
    bits = values.view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(1 << 31)).astype(np.uint32)


def _from_orderable(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_orderable`."""
    bits = np.where(keys >> np.uint32(31), keys & np.uint32(0x7FFFFFFF), ~keys).astype(np.uint32)
    return bits.view(np.float32)


def _merge_basins(
    basins: _Basins,
    *,
    shape: tuple[int, ...],
    spacing: Sequence[float],
    prominence: float,
    separation_um: float,
) -> np.ndarray:
    """The representative basin of every basin after the seeded merges, (B,) int64.

    Edges are taken by decreasing saddle (Kruskal).  When two components meet, the
    one with the lower maximum (ties: earlier voxel in C order) stays apart only if
    its maximum rises ``prominence`` above the saddle and lies ``separation_um`` or
    more from the other's maximum; otherwise it joins the other.  The compiled
    kernel when numba imports, else :func:`_merge_numpy` (identical).
    """
    kernels = _kernels()
    if kernels is None:
        return _merge_numpy(
            basins, shape=shape, spacing=spacing, prominence=prominence, separation_um=separation_um
        )
    xyz = np.stack(np.unravel_index(basins.peak_pos, shape), axis=1) * np.asarray(spacing, dtype=np.float64)
    return kernels.merge_basins(
        basins.edge_a, basins.edge_b, basins.saddle, basins.peak, basins.peak_pos,
        np.ascontiguousarray(xyz), float(prominence), float(separation_um) ** 2,
    )  # fmt: skip


def _merge_numpy(
    basins: _Basins,
    *,
    shape: tuple[int, ...],
    spacing: Sequence[float],
    prominence: float,
    separation_um: float,
) -> np.ndarray:
    """:func:`_merge_basins` as a Python loop (the reference of the compiled kernel)."""
    n = len(basins.peak)
    parent = list(range(n))
    top = list(range(n))  # the basin holding each component's highest maximum
    peak = basins.peak.tolist()
    ppos = basins.peak_pos.tolist()
    xyz = (
        np.stack(np.unravel_index(basins.peak_pos, shape), axis=1) * np.asarray(spacing, dtype=np.float64)
    ).tolist()
    sep2 = float(separation_um) ** 2
    prom = float(prominence)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, s in zip(basins.edge_a.tolist(), basins.edge_b.tolist(), basins.saddle.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        ta, tb = top[ra], top[rb]
        if (peak[tb], ppos[tb]) > (peak[ta], ppos[ta]):
            ra, rb, ta, tb = rb, ra, tb, ta
        pa, pb = xyz[ta], xyz[tb]
        d2 = (pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2 + (pa[2] - pb[2]) ** 2
        if peak[tb] - s < prom or d2 < sep2:
            parent[rb] = ra
    return np.fromiter((find(i) for i in range(n)), dtype=np.int64, count=n)


def _labels_from_objects(
    basins: _Basins,
    objects: np.ndarray,
    *,
    shape: tuple[int, ...],
    surface: tuple[float, float] | None,
    min_voxels: float,
) -> np.ndarray:
    """``(Z, Y, X)`` uint32 labels 1..N, numbered by first voxel in C order.

    With ``surface = (level, background)``, an object keeps the voxels brighter than
    ``background + level × (top - background)``, ``top`` being the mean of its
    voxels brighter than its mean.  Objects under ``min_voxels`` are dropped.
    The compiled kernel when numba imports, else :func:`_labels_numpy` (identical).
    """
    kernels = _kernels()
    if kernels is None:
        return _labels_numpy(basins, objects, shape=shape, surface=surface, min_voxels=min_voxels)
    out = np.zeros(shape, dtype=np.uint32)
    level, background = surface if surface is not None else (0.0, 0.0)
    kernels.labels_from_objects(
        np.ascontiguousarray(basins.mask).reshape(-1), np.ascontiguousarray(basins.basin),
        np.ascontiguousarray(objects, dtype=np.int64), np.ascontiguousarray(basins.value),
        surface is not None, float(level), float(background), float(min_voxels), out.reshape(-1),
    )  # fmt: skip
    return out


def _labels_numpy(
    basins: _Basins,
    objects: np.ndarray,
    *,
    shape: tuple[int, ...],
    surface: tuple[float, float] | None,
    min_voxels: float,
) -> np.ndarray:
    """:func:`_labels_from_objects` in numpy (the reference of the compiled kernel)."""
    import fastremap

    n = len(objects)
    obj = objects.astype(basins.basin.dtype)[basins.basin]
    values = obj + 1
    if surface is not None:
        level, background = surface
        # float32 kept: a float64 copy held through this step raised the peak (8 bytes per
        # foreground voxel); bincount and the comparisons convert transiently
        v = basins.value
        count = np.maximum(np.bincount(obj, minlength=n), 1)
        bright = v > (np.bincount(obj, weights=v, minlength=n) / count)[obj]
        ob = obj[bright]
        top = np.bincount(ob, weights=v[bright], minlength=n)
        top /= np.maximum(np.bincount(ob, minlength=n), 1)
        values[v <= (background + level * (top - background))[obj]] = 0
    small = np.bincount(values, minlength=n + 1) < min_voxels
    small[0] = False
    values[small[values]] = 0
    # voxels are in C order, so first appearance here is first appearance in C order.
    values, _ = fastremap.renumber(values, preserve_zero=True, in_place=True)
    out = np.zeros(shape, dtype=np.uint32)
    out[basins.mask] = values
    return out
