"""Object-level accuracy of a segmentation against ground truth, computed sparsely.

Two label images are compared through their *contingency table*: the list of
``(pred_id, gt_id, n_voxels)`` for every pair of objects that share voxels.
The table is computed block by block for dask arrays (memory bounded by the
block size) and never as a dense ``n_pred x n_true`` matrix, so volumes with
10^5 objects are fine.  Objects are then matched one-to-one at each IoU
threshold and scored with the definitions of StarDist's ``matching`` (the
"accuracy" there is cellpose's ``average_precision``):

* ``IoU(p, g) = |p ∩ g| / (|p| + |g| - |p ∩ g|)``, sizes counted over the
  whole image (voxels on background included);
* a match needs ``IoU >= threshold``; the matching maximises the number of
  matches, ties broken by the largest total matched IoU.  For thresholds above
  0.5 every object has at most one candidate, so this is the unique greedy
  matching; at or below 0.5 it is an optimal assignment solved separately on
  each connected component of the candidate graph;
* ``precision = tp/(tp+fp)``, ``recall = tp/(tp+fn)``,
  ``f1 = 2tp/(2tp+fp+fn)``, ``average_precision = tp/(tp+fp+fn)``,
  ``panoptic_quality = sum(matched IoU)/(tp + fp/2 + fn/2)``; as in StarDist
  every ratio is 0 when its denominator is 0 (so two empty images score 0,
  not 1) and the rates are 0 when ``tp == 0``.

The result types, :class:`ThresholdMatch` and :class:`MatchResult`, which compute
these scores and format them, are defined in :mod:`._match_result`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

from dls_microscopy.errors import InputError
from dls_microscopy.io import open_labels, open_volume
from dls_microscopy.io.open import split_dataset_path
from dls_microscopy.segment._match_result import (  # _SCORES, _ratio: re-exported, they lived here
    _SCORES,  # noqa: F401
    MatchResult,
    ThresholdMatch,
    _ratio,  # noqa: F401
)
from dls_microscopy.segment.overlaps import Overlaps, contingency
from dls_microscopy.volume import Volume

__all__ = [
    "MatchResult",
    "Overlaps",
    "ThresholdMatch",
    "contingency",
    "evaluate_paths",
    "match_objects",
    "match_overlaps",
]

log = logging.getLogger(__name__)

#: Largest component (n_pred x n_true cells) matched with a dense assignment;
#: bigger ones use the sparse full-matching solver.
DENSE_COMPONENT_LIMIT = 250_000


def match_objects(
    pred: Any,
    gt: Any,
    *,
    thresholds: float | Iterable[float] = (0.5,),
    restrict_to_gt: bool = False,
) -> MatchResult:
    """Match predicted to ground-truth objects and score the segmentation.

    Parameters
    ----------
    pred, gt : ndarray or dask.array.Array of integers
        Label images of the same shape (see :func:`contingency`).
    thresholds, restrict_to_gt
        See :func:`match_overlaps`.

    Returns
    -------
    MatchResult

    Examples
    --------
    >>> gt = np.zeros((8, 8), np.uint16); gt[:4, :4] = 1; gt[4:, 4:] = 2
    >>> pred = np.zeros_like(gt); pred[:4, :3] = 7
    >>> r = match_objects(pred, gt, thresholds=(0.5, 0.8))
    >>> r[0.5].tp, r[0.5].fp, r[0.5].fn, r[0.5].matched_iou.tolist()
    (1, 0, 1, [0.75])
    >>> r[0.8].tp, round(r[0.5].f1, 4)
    (0, 0.6667)
    """
    return match_overlaps(contingency(pred, gt), thresholds=thresholds, restrict_to_gt=restrict_to_gt)


def match_overlaps(
    overlaps: Overlaps,
    *,
    thresholds: float | Iterable[float] = (0.5,),
    restrict_to_gt: bool = False,
) -> MatchResult:
    """One-to-one matching at each IoU threshold from a precomputed contingency table.

    Parameters
    ----------
    overlaps : Overlaps
        From :func:`contingency`.
    thresholds : float or iterable of float
        IoU thresholds in ``(0, 1]``; a pair matches when ``IoU >= threshold``.
        The matching maximises the number of matches, then their total IoU.
    restrict_to_gt : bool
        For sparsely annotated ground truth: predicted objects that share no
        voxel with any gt object are ignored (counted neither in ``n_pred``
        nor as false positives); their number is ``n_pred_ignored``.  A
        prediction touching a gt object by a single voxel still counts, and
        is a false positive unless matched.  Recall is unchanged.

    Returns
    -------
    MatchResult

    Raises
    ------
    InputError
        A threshold outside ``(0, 1]``.

    Notes
    -----
    Counts (``tp``, ``fp``, ``fn``) and the scores made of them equal
    StarDist's ``matching`` at every threshold.  The IoU-based scores
    (``mean_matched_iou``, ``mean_true_iou``, ``panoptic_quality``) equal
    StarDist's above 0.5; at or below 0.5, when several matchings have the
    maximum number of matches, StarDist's tie-break also adds the IoU of the
    below-threshold pairs its assignment happens to pair up, whereas here the
    matching with the largest *matched* IoU is chosen, so these scores can
    only be higher than StarDist's.
    """
    raw = [thresholds] if np.isscalar(thresholds) else list(thresholds)  # type: ignore[arg-type]
    values = tuple(float(t) for t in raw)
    if not values:
        raise InputError("give at least one IoU threshold")
    for t in values:
        if not 0 < t <= 1:
            raise InputError(f"IoU thresholds must be in (0, 1], got {t}")
    n_ignored = 0
    if restrict_to_gt:
        kept = overlaps.only_overlapping_pred()
        n_ignored = overlaps.n_pred - kept.n_pred
        overlaps = kept
    iou = overlaps.iou()
    pi, gi = overlaps.pair_indices()
    results = []
    for t in values:
        chosen = _optimal_matching(iou, pi, gi, t, overlaps.n_pred, overlaps.n_true)
        chosen = chosen[np.argsort(overlaps.gt_ids[chosen], kind="stable")]
        tp = len(chosen)
        results.append(
            ThresholdMatch(
                threshold=t,
                tp=tp,
                fp=overlaps.n_pred - tp,
                fn=overlaps.n_true - tp,
                n_pred=overlaps.n_pred,
                n_true=overlaps.n_true,
                matched_pred=overlaps.pred_ids[chosen],
                matched_gt=overlaps.gt_ids[chosen],
                matched_iou=iou[chosen],
            )
        )
    return MatchResult(per_threshold=tuple(results), restrict_to_gt=restrict_to_gt, n_pred_ignored=n_ignored)


def _optimal_matching(
    iou: np.ndarray, pi: np.ndarray, gi: np.ndarray, threshold: float, n_pred: int, n_true: int
) -> np.ndarray:
    """Indices of the pairs in a maximum matching among pairs with ``iou >= threshold``."""
    cand = np.flatnonzero(iou >= threshold)
    deg_p = np.bincount(pi[cand], minlength=n_pred)
    deg_g = np.bincount(gi[cand], minlength=n_true)
    alone = (deg_p[pi[cand]] == 1) & (deg_g[gi[cand]] == 1)  # a component of one edge
    rest = cand[~alone]
    if rest.size == 0:
        return cand[alone]
    # connected components of the remaining candidate graph, each solved on its own
    up, rp = np.unique(pi[rest], return_inverse=True)
    ug, rg = np.unique(gi[rest], return_inverse=True)
    n_nodes = len(up) + len(ug)
    graph = coo_matrix((np.ones(rest.size, np.int8), (rp, len(up) + rg)), shape=(n_nodes, n_nodes))
    _, component = connected_components(graph, directed=False)
    edge_comp = component[rp]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    chosen = [cand[alone]]
    for edges in np.split(rest[order], bounds):
        chosen.append(edges[_solve_component(pi[edges], gi[edges], iou[edges])])
    return np.concatenate(chosen)


def _solve_component(p: np.ndarray, g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Positions of the chosen edges: most edges, then highest total ``s``."""
    up, rp = np.unique(p, return_inverse=True)
    ug, rg = np.unique(g, return_inverse=True)
    n1, n2 = len(up), len(ug)
    # a match is worth 1 plus a tie-breaker whose sum over any matching is < 1
    weight = 1.0 + s / (2 * min(n1, n2))
    if n1 * n2 <= DENSE_COMPONENT_LIMIT:
        dense = np.zeros((n1, n2))
        dense[rp, rg] = weight
        edge_at = np.full((n1, n2), -1, np.int64)
        edge_at[rp, rg] = np.arange(len(p))
        rows, cols = linear_sum_assignment(dense, maximize=True)
        picked = edge_at[rows, cols]
        return picked[picked >= 0]
    return _solve_component_sparse(rp, rg, weight, n1, n2)


def _solve_component_sparse(
    rp: np.ndarray, rg: np.ndarray, weight: np.ndarray, n1: int, n2: int
) -> np.ndarray:
    """Maximum-weight (not necessarily full) matching with a sparse full-matching solver.

    Rows are the n1 predictions then n2 gt "skips", columns the n2 gt objects
    then n1 prediction "skips": any matching extends to a full one (unmatched
    objects take their skip, and the skips of a matched pair (i, j) meet on
    the mirrored edge), every full matching has n1 + n2 edges, so minimising
    ``2 - weight`` on real edges (2 elsewhere) maximises the matched weight.
    """
    k = len(rp)
    ar1, ar2 = np.arange(n1), np.arange(n2)
    rows = np.concatenate([rp, ar1, n1 + ar2, n1 + rg])
    cols = np.concatenate([rg, n2 + ar1, ar2, n2 + rp])
    cost = np.concatenate([2.0 - weight, np.full(n1 + n2 + k, 2.0)])
    graph = coo_matrix((cost, (rows, cols)), shape=(n1 + n2, n1 + n2)).tocsr()
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < n1) & (col_ind < n2)
    keys = rp.astype(np.int64) * n2 + rg
    order = np.argsort(keys)
    found = row_ind[real].astype(np.int64) * n2 + col_ind[real]
    return order[np.searchsorted(keys, found, sorter=order)]


# -- files -----------------------------------------------------------------------


def evaluate_paths(
    pred_path: str | os.PathLike[str],
    gt_path: str | os.PathLike[str],
    *,
    thresholds: float | Iterable[float] = (0.5,),
    pred_label: str | None = None,
    gt_label: str | None = None,
    restrict_to_gt: bool = False,
) -> MatchResult:
    """Score a segmentation stored on disk against ground truth, out of core.

    Parameters
    ----------
    pred_path, gt_path : path-like
        Each a label image readable by
        :func:`~dls_microscopy.io.open_volume` (TIFF, HDF5 ``file.h5:/ds``, an
        NGFF label image such as ``store.ome.zarr/labels/nuclei``) or, with
        ``pred_label``/``gt_label``, an OME-Zarr image whose label image of
        that name is used.  Length-1 ``t`` and ``c`` axes are dropped.
    thresholds, restrict_to_gt
        See :func:`match_overlaps`.
    pred_label, gt_label : str, optional
        Name of the NGFF label image inside ``pred_path`` / ``gt_path``.

    Returns
    -------
    MatchResult
        ``info`` records both paths, label names and the shape.

    Raises
    ------
    InputError
        Spatial shapes differ, or an image has several channels or time
        points.  A spacing mismatch is only logged as a warning.
    """
    from dls_microscopy.features.runs import check_label_dtype

    pred = _open_label_volume(pred_path, pred_label)
    gt = _open_label_volume(gt_path, gt_label)
    check_label_dtype(pred.dtype, what="predicted labels", path=pred_path)
    check_label_dtype(gt.dtype, what="ground truth labels", path=gt_path)
    if pred.shape != gt.shape:
        raise InputError(
            f"label images differ in shape: prediction {pred_path} has {pred.shape} "
            f"(axes {pred.axes!r}), ground truth {gt_path} has {gt.shape} (axes {gt.axes!r})"
        )
    if not np.allclose(pred.spacing, gt.spacing, rtol=1e-3, atol=0):
        log.warning(
            "prediction %s and ground truth %s have different spacing (%s vs %s µm); "
            "comparing voxel by voxel",
            pred_path,
            gt_path,
            pred.spacing,
            gt.spacing,
        )
    try:
        table = contingency(pred.data, gt.data)
    except InputError as exc:  # found while reading (negative ids): name the file
        if exc.path is None:
            exc.path = Path(os.fspath(pred_path if exc.reason.startswith("pred") else gt_path))
        raise
    result = match_overlaps(table, thresholds=thresholds, restrict_to_gt=restrict_to_gt)
    info = {
        "pred": os.fspath(pred_path),
        "gt": os.fspath(gt_path),
        "pred_label": pred_label,
        "gt_label": gt_label,
        "shape": list(pred.shape),
        "axes": pred.axes,
    }
    return dataclasses.replace(result, info=info)


def _open_label_volume(path: str | os.PathLike[str], name: str | None) -> Volume:
    file_path, internal = split_dataset_path(path)
    file_path = Path(file_path).resolve()  # tensorstore rejects '..' in paths
    if name is not None:
        vol = open_labels(file_path, name)
    else:
        vol = open_volume(f"{file_path}:{internal}" if internal else file_path)
    for axis in ("t", "c"):
        if axis in vol.axes and vol.axis_size(axis) == 1:
            vol = vol.select(**{axis: 0})
        elif axis in vol.axes:
            hint = f"; it has the label images {', '.join(vol.labels)}: name one" if vol.labels else ""
            raise InputError(
                f"a label image must have one {'channel' if axis == 'c' else 'time point'}, "
                f"this one has {vol.axis_size(axis)} (axes {vol.axes!r}){hint}",
                path=path,
            )
    return vol
