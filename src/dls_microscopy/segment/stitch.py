"""Stitching of block labels across seams: overlap (IoU) matching in bands, global relabelling.

Each block numbers the objects of its core ``1..m`` ("local ids"); object
``j`` of block ``b`` has the global node id ``offset[b] + j``.  Two blocks
sharing a face both predicted a band of ``w`` voxels on each side of it
(their core on one side, their halo on the other).  Objects whose IoU within
that band reaches a threshold are the same object; connected components of
those matches give the final objects, numbered ``1..K`` in the order of
their smallest node id, so the result does not depend on scheduling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components

__all__ = ["FaceMatch", "band_matches", "global_relabel_table"]


@dataclasses.dataclass(frozen=True)
class FaceMatch:
    """Matches found across one face.

    Attributes
    ----------
    axis : int
        Axis normal to the face.
    pairs : (P, 2) ndarray of int64
        Local ids ``(id_in_lower_block, id_in_upper_block)`` judged the same.
    ious : (P,) ndarray of float64
        Band IoU of each pair.
    touching_lower, touching_upper : int
        Objects of each block's core that touch the face.
    """

    axis: int
    pairs: np.ndarray
    ious: np.ndarray
    touching_lower: int
    touching_upper: int


def _touching(labels_at_face: np.ndarray) -> np.ndarray:
    ids = np.unique(labels_at_face)
    return ids[ids > 0]


def band_matches(
    band_lower: np.ndarray,
    band_upper: np.ndarray,
    *,
    axis: int,
    width_lower: int,
    iou_threshold: float = 0.5,
) -> FaceMatch:
    """Match objects of two blocks from their predictions over the same band.

    Parameters
    ----------
    band_lower, band_upper : ndarray of int, same shape
        Local ids predicted by the lower and the upper block over the band
        around the face (0 = background or an object not in that block's core).
    axis : int
        Axis normal to the face.
    width_lower : int
        Number of band planes on the lower side of the face (the face lies
        between plane ``width_lower - 1`` and ``width_lower``).
    iou_threshold : float
        Pairs whose IoU within the band reaches this value are merged.  The
        greedy rule is exact for thresholds ≥ 0.5 (two pairs sharing an
        object cannot both exceed 0.5); below 0.5 each object keeps only its
        best partner.

    Returns
    -------
    FaceMatch
    """
    if band_lower.shape != band_upper.shape:
        raise ValueError(f"band shapes differ: {band_lower.shape} vs {band_upper.shape}")
    a = band_lower.ravel().astype(np.int64, copy=False)
    b = band_upper.ravel().astype(np.int64, copy=False)
    both = (a > 0) & (b > 0)
    face_lo = np.take(band_lower, width_lower - 1, axis=axis)
    face_hi = (
        np.take(band_upper, width_lower, axis=axis)
        if band_upper.shape[axis] > width_lower
        else np.zeros(0, band_upper.dtype)
    )
    touching_lower = int(_touching(face_lo).size)
    touching_upper = int(_touching(face_hi).size)
    if not both.any():
        return FaceMatch(axis, np.zeros((0, 2), np.int64), np.zeros(0), touching_lower, touching_upper)
    size_a = np.bincount(a)
    size_b = np.bincount(b)
    pa, pb = a[both], b[both]
    key = pa * (int(b.max()) + 1) + pb
    uniq, counts = np.unique(key, return_counts=True)
    ua, ub = np.divmod(uniq, int(b.max()) + 1)
    iou = counts / (size_a[ua] + size_b[ub] - counts)
    keep = iou >= iou_threshold
    ua, ub, iou = ua[keep], ub[keep], iou[keep]
    if iou_threshold < 0.5 and ua.size:
        # keep each object's best partner only (ties: smaller partner id)
        order = np.lexsort((ub, -iou))
        ua, ub, iou = ua[order], ub[order], iou[order]
        _, first_a = np.unique(ua, return_index=True)
        sel = np.zeros(ua.size, bool)
        sel[first_a] = True
        ua, ub, iou = ua[sel], ub[sel], iou[sel]
        order = np.lexsort((ua, -iou))
        ua, ub, iou = ua[order], ub[order], iou[order]
        _, first_b = np.unique(ub, return_index=True)
        ua, ub, iou = ua[first_b], ub[first_b], iou[first_b]
    pairs = np.stack([ua, ub], axis=1).astype(np.int64)
    return FaceMatch(axis, pairs, iou.astype(np.float64), touching_lower, touching_upper)


def global_relabel_table(n_nodes: int, edges: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Final id of every global node: connected components of the merge graph.

    Parameters
    ----------
    n_nodes : int
        Number of nodes; node ids are ``1..n_nodes`` (0 is background).
    edges : sequence of (P, 2) int arrays
        Global node id pairs that are the same object.

    Returns
    -------
    table : (n_nodes + 1,) ndarray
        ``table[node]`` is the final id (``table[0] == 0``); final ids are
        ``1..K`` ordered by each object's smallest node id. uint32 when K
        fits, else uint64.
    K : int
        Number of final objects.
    """
    if n_nodes == 0:
        return np.zeros(1, np.uint32), 0
    all_edges = np.concatenate([e for e in edges if len(e)] or [np.zeros((0, 2), np.int64)])
    graph = scipy.sparse.coo_matrix(
        (np.ones(len(all_edges), np.int8), (all_edges[:, 0] - 1, all_edges[:, 1] - 1)),
        shape=(n_nodes, n_nodes),
    )
    n_comp, comp = connected_components(graph, directed=False)
    # first node (smallest id) of each component decides the order
    first = np.full(n_comp, n_nodes, dtype=np.int64)
    np.minimum.at(first, comp, np.arange(n_nodes))
    rank = np.empty(n_comp, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, n_comp + 1)
    dtype = np.uint32 if n_comp < np.iinfo(np.uint32).max else np.uint64
    table = np.zeros(n_nodes + 1, dtype=dtype)
    table[1:] = rank[comp]
    return table, int(n_comp)
