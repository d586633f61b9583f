"""Second-order moments of objects from their merged partial sums (:mod:`.reductions`).

Central second moments in µm² (:func:`_covariance_um2`) and the symmetric
``(K, 3, 3)`` matrices they form (:func:`_matrix`), used by
:func:`~dls_microscopy.features.measure.measure_objects` for the inertia tensor,
the axis lengths and the radial shells of pass 2.
"""

from __future__ import annotations

import numpy as np

from dls_microscopy.features.reductions import PAIRS, PartialStats


def _covariance_um2(stats: PartialStats, spacing: tuple[float, ...]) -> np.ndarray:
    """Central second moments (µm², summed over voxels), ``(K, 6)`` in PAIRS order.

    Sums are moved to the bounding-box corner first (exact integers), which
    keeps the float cancellation of ``Σx² - (Σx)²/n`` small.
    """
    n = stats.count
    o = stats.bbox_min
    s1 = stats.s1 - n[:, None] * o  # exact
    mu = np.empty(stats.s2.shape, np.float64)
    sp = np.asarray(spacing)
    for col, (a, b) in enumerate(PAIRS):
        s2 = stats.s2[:, col] - o[:, a] * stats.s1[:, b] - o[:, b] * stats.s1[:, a] + o[:, a] * o[:, b] * n
        mu[:, col] = (s2 - s1[:, a] * (s1[:, b] / n)) * (sp[a] * sp[b])
    return mu


def _matrix(mu6: np.ndarray) -> np.ndarray:
    """``(K, 3, 3)`` symmetric matrices from ``(K, 6)`` columns in PAIRS order."""
    m = np.empty((len(mu6), 3, 3), np.float64)
    for col, (a, b) in enumerate(PAIRS):
        m[:, a, b] = mu6[:, col]
        m[:, b, a] = mu6[:, col]
    return m
