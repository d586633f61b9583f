"""CPU backend of :class:`~dls_microscopy.segment.watershed.WatershedSegmenter`.

Steps 1-4 of the algorithm (see :mod:`dls_microscopy.segment.watershed`) up to the
basin graph, with numpy, ``scipy.ndimage``, ``edt`` and the compiled kernels of
:mod:`._watershed_kernels`: Gaussian smoothing, the threshold, the flooding image
and steepest-ascent drainage.  The graph is merged
into labels by the shared code in :mod:`dls_microscopy.segment._watershed_shared`.  scipy
and ``edt`` are imported when used.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dls_microscopy.segment._watershed_shared import (
    _DIRECTIONS,
    _INTENSITY_WEIGHT,
    _TRUNCATE,
    _Basins,
    _FloodConfig,
    _kernels,
)


def _smooth_cpu(image: np.ndarray, sigma_vox: Sequence[float], *, threads: int = 1) -> np.ndarray:
    """scipy Gaussian to float32, edges replicated (``mode="nearest"``).

    The same separable passes as ``scipy.ndimage.gaussian_filter`` (axis by axis,
    into a float32 output); with ``threads > 1`` each pass runs on slabs cut along
    another axis, in threads (scipy releases the GIL), with identical results.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Any real dtype; float64 is cast to float32 first.
    sigma_vox : sequence of 3 float
        Standard deviation per axis, voxels (0: no smoothing along that axis).
    threads : int
        Threads to use.

    Returns
    -------
    (Z, Y, X) float32 ndarray
    """
    from scipy import ndimage as ndi

    if image.dtype.kind == "f" and image.dtype != np.float32:
        image = image.astype(np.float32)
    if threads <= 1 or image.size < _PARALLEL_MIN_VOXELS:
        return ndi.gaussian_filter(image, sigma_vox, output=np.float32, mode="nearest", truncate=_TRUNCATE)
    out = np.empty(image.shape, np.float32)
    src = image
    passes = [ax for ax, s in enumerate(sigma_vox) if s > 1e-15]
    if not passes:
        np.copyto(out, image, casting="unsafe")
        return out
    for ax in passes:
        cut = 0 if ax != 0 else 1  # slabs along another axis: every line stays whole

        def run(sl: slice, ax: int = ax, cut: int = cut, src: np.ndarray = src) -> None:
            key = [slice(None)] * 3
            key[cut] = sl
            ndi.gaussian_filter1d(
                src[tuple(key)], float(sigma_vox[ax]), axis=ax, output=out[tuple(key)],
                mode="nearest", truncate=_TRUNCATE,
            )  # fmt: skip

        _in_threads(run, image.shape[cut], threads)
        src = out
    return out


#: Arrays smaller than this are not split across threads.
_PARALLEL_MIN_VOXELS = 1 << 18


#: Worker pools kept between calls, by (process id, workers): starting threads for every
#: call cost ~20 ms per ``segment()`` of a 1 Mvox volume (11 calls of ``_in_threads``).
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads (a fresh one after a fork)."""
    key = (os.getpid(), workers)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dls-watershed")
        return pool


def _in_threads(run: Callable[[slice], None], n: int, threads: int) -> None:
    """``run(slice)`` over ``threads`` contiguous parts of ``range(n)``, in threads.

    The first part runs in the calling thread, the others in a kept pool; ``run``
    must not itself wait on this pool.
    """
    edges = np.linspace(0, n, min(threads, n) + 1).astype(int)
    parts = [slice(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]
    if len(parts) == 1:
        run(parts[0])
        return
    pool = _pool(len(parts) - 1)
    futures = [pool.submit(run, p) for p in parts[1:]]
    try:
        run(parts[0])
    finally:
        for f in futures:
            f.result()


def _flood_cpu(
    image: np.ndarray, cfg: _FloodConfig, *, smooth: np.ndarray | None = None, threads: int = 1
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
    threads : int
        Threads for the smoothing, the distance transform and the drainage.

    Returns
    -------
    _Basins or "all" or None
        The basin graph; None when no voxel is above the threshold, "all" when
        every voxel is.
    """
    if smooth is None:
        smooth = _smooth_cpu(image, cfg.sigma_vox, threads=threads)
    thr = np.float32(cfg.threshold)
    mask = smooth > thr
    n_fg = int(np.count_nonzero(mask))
    if n_fg == 0:
        return None
    if n_fg == mask.size:
        return "all"
    value = smooth[mask]  # all that is kept of the smoothed image in the distance method
    core = mask
    if cfg.method in ("distance", "combined") and cfg.contrast is not None:
        core = _contrast_core_cpu(image, smooth, mask, cfg)
    if cfg.method == "distance":
        smooth = None  # freed before the distance transform (the caller may still hold it)
    f = None
    if cfg.method in ("distance", "combined"):
        import edt

        # edt is twice as fast on uint8 as on bool; black_border=False: the array edge
        # is not background (a block's edge is not an object's edge).
        dist = edt.edt(
            core.view(np.uint8),
            anisotropy=tuple(float(s) for s in cfg.spacing),
            black_border=False,
            parallel=max(1, threads),
        )
        del core
        np.minimum(dist, np.float32(cfg.cap_um), out=dist)
        dist *= np.float32(cfg.inv_radius)
        f = dist
        del dist
    if cfg.method in ("intensity", "combined"):
        inten = (smooth - thr) * np.float32(cfg.inv_range)
        f = inten if f is None else f + np.float32(_INTENSITY_WEIGHT) * inten
    del smooth
    fpad = _padded(f, mask)
    del f  # only the padded copy is used from here on
    return _drain_cpu(fpad, mask, value, cfg.spacing, threads=threads)


def _contrast_core_cpu(
    image: np.ndarray, smooth: np.ndarray, mask: np.ndarray, cfg: _FloodConfig
) -> np.ndarray:
    """The foreground voxels bright against their surroundings (``seed_contrast``).

    A voxel is kept when its smoothed brightness above the background is at least
    ``cfg.contrast`` times the mean brightness above the background in the box of
    ``cfg.window_vox`` voxels around it (``scipy.ndimage.uniform_filter``: running
    sums, a cost independent of the box; edges replicated).  Between two nuclei that
    touch along a dim line, the line falls below the mean of the two and is dropped,
    so the distance transform sees two cores; an isolated nucleus, whose box holds
    background too, keeps all but its dimmest rim.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The block, any real dtype.
    smooth : (Z, Y, X) float32 ndarray
        ``image`` smoothed.
    mask : (Z, Y, X) bool ndarray
        The foreground.
    cfg : _FloodConfig
        ``contrast``, ``window_vox`` and ``background`` (image units).

    Returns
    -------
    (Z, Y, X) bool ndarray
    """
    from scipy import ndimage as ndi

    local = ndi.uniform_filter(image, cfg.window_vox, output=np.float32, mode="nearest")
    # smooth - bg > c (local - bg)  <=>  smooth > c local + (1 - c) bg
    c = np.float32(cfg.contrast)
    local *= c
    local += np.float32(1 - c) * np.float32(cfg.background)
    core = np.greater(smooth, local, out=np.empty(mask.shape, bool))
    del local
    core &= mask
    return core


def _padded(f: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``f`` on ``mask``, -inf elsewhere, padded by one voxel of -inf, flattened.

    Parameters
    ----------
    f : (Z, Y, X) float32 ndarray
        The flooding image (read on ``mask`` only).
    mask : (Z, Y, X) bool ndarray
        The foreground.

    Returns
    -------
    ((Z + 2) * (Y + 2) * (X + 2),) float32 ndarray
    """
    fpad = np.full(tuple(s + 2 for s in mask.shape), -np.inf, np.float32)
    np.copyto(fpad[1:-1, 1:-1, 1:-1], f, where=mask)
    return fpad.ravel()


def _drain_cpu(
    fpad: np.ndarray,
    mask: np.ndarray,
    value: np.ndarray,
    spacing: Sequence[float],
    *,
    threads: int = 1,
) -> _Basins:
    """Steepest-ascent drainage of the flooding image over ``mask`` and the basin graph.

    The compiled kernels (:mod:`._watershed_kernels`) when numba imports, else the
    numpy formulation (:func:`._watershed_numpy._drain_numpy`); both give identical
    basins.  Parameters and result as :func:`._watershed_numpy._drain_numpy`.
    """
    if _kernels() is None:
        from dls_microscopy.segment._watershed_numpy import _drain_numpy

        return _drain_numpy(fpad, mask, value, spacing, threads=threads)
    return _drain_compiled(fpad, mask, value, spacing, threads=threads)


def _drain_compiled(
    fpad: np.ndarray,
    mask: np.ndarray,
    value: np.ndarray,
    spacing: Sequence[float],
    *,
    threads: int = 1,
) -> _Basins:
    """:func:`._watershed_numpy._drain_numpy` with the compiled kernels: one pass per step, same result.

    The steepest ascent and the basin edges run in ``threads`` ranges of voxels;
    the other steps are single passes.
    """
    kernels = _kernels()
    shape = mask.shape
    padded = tuple(s + 2 for s in shape)
    size = math.prod(padded)
    itype = np.int32 if size < 2**31 - 1 else np.int64
    strides = np.array((padded[1] * padded[2], padded[2], 1), dtype=np.int64)
    lo, hi = int(strides[0]), size - int(strides[0])
    offsets = np.array([st * strides[ax] for ax, st in _DIRECTIONS], dtype=np.int64)
    scales = np.array([1.0 / float(spacing[ax]) for ax, _ in _DIRECTIONS], dtype=np.float32)
    n_fg = len(value)  # one value per foreground voxel: no second count of the mask
    ppos = np.empty(n_fg, itype)
    cmap = np.empty(size, itype)
    kernels.index_foreground(fpad, lo, hi, ppos, cmap)
    parent = np.empty(n_fg, itype)
    positive = offsets > 0

    # arrays bound as defaults, so that ``del`` below drops the last names of them
    def run(
        part: slice, ppos: np.ndarray = ppos, cmap: np.ndarray = cmap, parent: np.ndarray = parent
    ) -> None:
        kernels.steepest_parent(fpad, ppos, cmap, offsets, scales, positive, parent, part.start, part.stop)

    workers = threads if n_fg >= _PARALLEL_MIN_VOXELS else 1
    _in_threads(run, n_fg, workers)
    basin = np.empty(n_fg, itype)
    roots = kernels.resolve_roots(parent, ppos, basin)
    del run, parent
    parts: dict[int, tuple[np.ndarray, ...]] = {}

    def edges(part: slice, ppos: np.ndarray = ppos, cmap: np.ndarray = cmap) -> None:
        parts[part.start] = kernels.basin_edges(fpad, ppos, basin, cmap, strides, part.start, part.stop)

    _in_threads(edges, n_fg, workers)
    del edges, cmap, ppos
    pieces = [parts[k] for k in sorted(parts)]
    pairs = tuple(np.concatenate([p[i] for p in pieces]) for i in range(3))
    # padded flat index -> (z, y, x) -> flat index of the unpadded volume
    zz, rest = np.divmod(roots, strides[0])
    yy, xx = np.divmod(rest, strides[1])
    peak_pos = ((zz - 1) * shape[1] + (yy - 1)) * shape[2] + (xx - 1)
    return _Basins(mask, basin, value, fpad[roots], peak_pos, pairs)  # type: ignore[arg-type]
