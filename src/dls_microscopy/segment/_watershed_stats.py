"""Global statistics of the watershed segmenter: Otsu on a smoothed sample of the volume.

:meth:`~dls_microscopy.segment.watershed.WatershedSegmenter.global_stats` smooths the
whole volume, or sub-blocks spread over it by a low-discrepancy sequence
(:func:`_smoothed_sample`), and thresholds their histogram (:func:`_otsu`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.segment._watershed_shared import _TRUNCATE

#: Voxels read by ``global_stats`` (the whole volume when it is smaller).
_SAMPLE_VOXELS = 1 << 21
#: Smoothed voxels (a regular subsample of the sample) that enter the histogram.
_HISTOGRAM_VOXELS = 1 << 18


def _sample_levels(sample: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """The 0.01th, 99.5th and 99.99th percentiles of ``sample`` and a reordered copy of it.

    The values are exactly those of the former separate ``np.percentile`` calls: the
    0.01th and 99.99th asked together (a list ``q``: float64 interpolation), the
    99.5th alone (a scalar ``q``: interpolated in the sample's float32), so they are
    not merged into one call.  Both run on one copy that the first call partitions
    in place, so that the second partitions an almost ordered array (~1 ms less per
    Mvox volume).  Percentiles do not depend on the order of the values, nor does a
    histogram: the copy can stand for ``sample`` in :func:`_otsu`.
    """
    work = np.array(sample, copy=True, order="C")
    lo, hi = (float(v) for v in np.percentile(work, [0.01, 99.99], overwrite_input=True))
    high = float(np.percentile(work, 99.5, overwrite_input=True))
    return lo, high, hi, work


def _otsu(
    values: np.ndarray, bins: int = 1024, *, value_range: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Otsu's threshold and its two class means.

    The histogram spans ``value_range``, by default the 0.01-99.99th percentiles of
    ``values`` (pass them when already known, from :func:`_sample_levels`).
    """
    if value_range is None:
        lo, hi = (float(v) for v in np.percentile(values, [0.01, 99.99]))
    else:
        lo, hi = value_range
    if not hi > lo:
        return lo, lo, lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)[:-1]
    m0 = np.cumsum(hist * centres)[:-1]
    total, mass = hist.sum(), float(np.dot(hist, centres))
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num(w0 * w1 * (m0 / w0 - (mass - m0) / w1) ** 2, nan=-1.0)
    i = int(np.argmax(between))
    return float(centres[i]), float(m0[i] / w0[i]), float((mass - m0[i]) / w1[i])


#: R3 low-discrepancy sequence (Roberts 2018): inverse powers of the plastic number.
_PLASTIC = 1.2207440846057596
_R3 = np.array([1 / _PLASTIC, 1 / _PLASTIC**2, 1 / _PLASTIC**3])


def _smoothed_sample(image: Any, sigma_vox: Sequence[float], budget: int) -> np.ndarray:
    """Smoothed voxels of the whole volume or of sub-blocks spread over it, 1D float32.

    Of the ``n`` voxels smoothed (at most ``budget``), every ``n // 2**18``-th (in
    the order of the sub-blocks) is kept for the histogram; sub-blocks are read and
    smoothed one at a time, so memory stays at the kept voxels plus one sub-block.
    """
    from dls_microscopy.segment._watershed_cpu import _smooth_cpu

    shape = tuple(int(s) for s in image.shape)
    if math.prod(shape) <= budget:
        whole = image.compute(scheduler="synchronous") if hasattr(image, "compute") else image
        sample = _smooth_cpu(np.asarray(whole), sigma_vox).ravel()
        return sample[:: max(1, sample.size // _HISTOGRAM_VOXELS)]
    margin = [int(_TRUNCATE * float(s) + 0.5) if s > 1e-15 else 0 for s in sigma_vox]
    core = [min(n, max(16, 4 * m)) for n, m in zip(shape, margin, strict=True)]
    tiles = np.array([max(1, n // c) for n, c in zip(shape, core, strict=True)])
    per_block = math.prod(c + 2 * m for c, m in zip(core, margin, strict=True))
    n_blocks = max(1, min(int(np.prod(tiles)), budget // per_block))
    u = np.mod(0.5 + np.arange(n_blocks)[:, None] * _R3, 1.0)
    picks = np.unique(np.minimum((u * tiles).astype(np.int64), tiles - 1), axis=0)
    reads, cores = [], []
    for tile in picks:
        start = [int(i) * c for i, c in zip(tile, core, strict=True)]
        stop = [min(n, s + c) for n, s, c in zip(shape, start, core, strict=True)]
        lo = [max(0, s - m) for s, m in zip(start, margin, strict=True)]
        hi = [min(n, e + m) for n, e, m in zip(shape, stop, margin, strict=True)]
        reads.append(tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        cores.append(tuple(slice(s - a, e - a) for s, e, a in zip(start, stop, lo, strict=True)))

    sizes = [math.prod(sl.stop - sl.start for sl in c) for c in cores]
    step = max(1, sum(sizes) // _HISTOGRAM_VOXELS)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def smoothed_core(i: int) -> np.ndarray:
        # one region at a time, read on its own: a single dask compute of all the
        # regions materialised whole dask chunks (measured 80-110 MiB for a 4 MiB sample)
        block = image[reads[i]]
        if hasattr(block, "compute"):
            block = block.compute(scheduler="synchronous")
        core = _smooth_cpu(np.asarray(block), sigma_vox)[cores[i]].ravel()
        return core[(-int(starts[i])) % step :: step].copy()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        return np.concatenate(list(pool.map(smoothed_core, range(len(reads)))))
