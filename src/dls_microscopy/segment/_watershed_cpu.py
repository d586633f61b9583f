"""CPU backend of :class:`~dls_microscopy.segment.watershed.WatershedSegmenter`.

Steps 1-4 of the algorithm (see :mod:`dls_microscopy.segment.watershed`) up to the
basin graph, with numpy, ``scipy.ndimage`` and ``edt``: Gaussian smoothing, the
threshold, the flooding image and steepest-ascent drainage.  The graph is merged
into labels by the shared code in :mod:`dls_microscopy.segment.watershed`.  scipy
and ``edt`` are imported when used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dls_microscopy.segment.watershed import (
    _DIRECTIONS,
    _INTENSITY_WEIGHT,
    _TRUNCATE,
    _Basins,
    _FloodConfig,
)


def _smooth_cpu(image: np.ndarray, sigma_vox: Sequence[float]) -> np.ndarray:
    """scipy Gaussian to float32, edges replicated (``mode="nearest"``).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Any real dtype; float64 is cast to float32 first.
    sigma_vox : sequence of 3 float
        Standard deviation per axis, voxels (0: no smoothing along that axis).

    Returns
    -------
    (Z, Y, X) float32 ndarray
    """
    from scipy import ndimage as ndi

    if image.dtype.kind == "f" and image.dtype != np.float32:
        image = image.astype(np.float32)
    return ndi.gaussian_filter(image, sigma_vox, output=np.float32, mode="nearest", truncate=_TRUNCATE)


def _flood_cpu(
    image: np.ndarray, cfg: _FloodConfig, *, smooth: np.ndarray | None = None
) -> _Basins | str | None:
    """Smooth, threshold, build the flooding image and drain it into basins.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The block, any real dtype.
    cfg : _FloodConfig
        Smoothing, threshold, spacing and flooding-image settings.
    smooth : (Z, Y, X) float32 ndarray, optional
        ``image`` already smoothed with ``cfg.sigma_vox`` (reused from the statistics).

    Returns
    -------
    _Basins or "all" or None
        The basin graph; None when no voxel is above the threshold, "all" when
        every voxel is.
    """
    if smooth is None:
        smooth = _smooth_cpu(image, cfg.sigma_vox)
    thr = np.float32(cfg.threshold)
    mask = smooth > thr
    n_fg = int(np.count_nonzero(mask))
    if n_fg == 0:
        return None
    if n_fg == mask.size:
        return "all"
    f = None
    if cfg.method in ("distance", "combined"):
        import edt

        # edt is twice as fast on uint8 as on bool; black_border=False: the array edge
        # is not background (a block's edge is not an object's edge).
        dist = edt.edt(
            mask.view(np.uint8),
            anisotropy=tuple(float(s) for s in cfg.spacing),
            black_border=False,
            parallel=1,
        )
        np.minimum(dist, np.float32(cfg.cap_um), out=dist)
        dist *= np.float32(cfg.inv_radius)
        f = dist
    if cfg.method in ("intensity", "combined"):
        inten = (smooth - thr) * np.float32(cfg.inv_range)
        f = inten if f is None else f + np.float32(_INTENSITY_WEIGHT) * inten
    return _drain_cpu(f, mask, smooth, cfg.spacing)


def _drain_cpu(f: np.ndarray, mask: np.ndarray, smooth: np.ndarray, spacing: Sequence[float]) -> _Basins:
    """Steepest-ascent drainage of ``f`` over ``mask`` and the basin graph, numpy.

    Works on the flattened volume padded by one voxel of background, so that every
    neighbour is a fixed offset and every operation a contiguous slice.

    Parameters
    ----------
    f : (Z, Y, X) float32 ndarray
        The flooding image (read on ``mask`` only).
    mask : (Z, Y, X) bool ndarray
        The foreground.
    smooth : (Z, Y, X) float32 ndarray
        Smoothed intensity, kept per foreground voxel for the surface step.
    spacing : sequence of 3 float
        Voxel size (z, y, x), µm: slopes are per µm.

    Returns
    -------
    _Basins
    """
    shape = mask.shape
    padded = tuple(s + 2 for s in shape)
    size = math.prod(padded)
    itype = np.int32 if size < 2**31 - 1 else np.int64
    fpad = np.full(padded, -np.inf, np.float32)
    np.copyto(fpad[1:-1, 1:-1, 1:-1], f, where=mask)
    fpad = fpad.ravel()
    strides = (padded[1] * padded[2], padded[2], 1)
    lo, hi = strides[0], size - strides[0]  # the inner planes; neighbours stay in range
    cur = fpad[lo:hi]
    best = np.full(hi - lo, -np.inf, np.float32)
    direction = np.zeros(hi - lo, np.int8)
    buf = np.empty(hi - lo, np.float32)
    better = np.empty(hi - lo, bool)
    with np.errstate(invalid="ignore"):  # -inf - -inf off the foreground: never used
        for k, (ax, st) in enumerate(_DIRECTIONS):
            off = st * strides[ax]
            np.subtract(fpad[lo + off : hi + off], cur, out=buf)
            np.multiply(buf, np.float32(1.0 / float(spacing[ax])), out=buf)
            np.greater(buf, best, out=better)  # strict: the first of equal slopes wins
            np.copyto(direction, np.int8(k), where=better)
            np.maximum(best, buf, out=best)
    del buf, better
    ppos = np.flatnonzero(cur > -np.inf).astype(itype, copy=False)  # foreground, C order
    slope = best[ppos]
    offsets = np.array([st * strides[ax] for ax, st in _DIRECTIONS], dtype=itype)
    move = offsets[direction[ppos]]
    del best, direction
    ppos += itype(lo)
    up = (slope > 0) | ((slope == 0) & (move > 0))
    cmap = np.full(size, -1, itype)
    cmap[ppos] = np.arange(len(ppos), dtype=itype)
    parent = cmap[np.where(up, ppos + move, ppos)]
    nxt = np.empty_like(parent)
    while True:  # pointer jumping: every voxel to the maximum it drains to
        np.take(parent, parent, out=nxt)
        if np.array_equal(nxt, parent):
            break
        parent, nxt = nxt, parent
    is_root = ~up
    basin = (np.cumsum(is_root, dtype=itype) - 1)[parent]
    dense = cmap  # reused: basin of each padded voxel, -1 off the foreground
    dense[ppos] = basin
    ea, eb, sd = [], [], []
    for ax in range(3):
        off = strides[ax]
        a, b = dense[lo:hi], dense[lo + off : hi + off]
        at = np.flatnonzero(a != b)
        va, vb = a[at], b[at]
        both = (va >= 0) & (vb >= 0)
        at = at[both] + lo
        ea.append(va[both])
        eb.append(vb[both])
        sd.append(np.minimum(fpad[at], fpad[at + off]))
    pos = np.flatnonzero(mask)
    return _Basins(
        pos,
        basin,
        smooth.ravel()[pos],
        fpad[ppos[is_root]],
        pos[is_root],
        (np.concatenate(ea), np.concatenate(eb), np.concatenate(sd)),
    )
