"""Results of the object matching of :mod:`dls_microscopy.segment.metrics` and their scores.

:class:`ThresholdMatch` holds the one-to-one matching at one IoU threshold and derives
the scores (precision, recall, F1, AP, mean IoU, panoptic quality) from its counts;
:class:`MatchResult` collects them over the thresholds and formats them (a dict for
JSON, a fixed-width text table).  The definitions are in the docstring of
:mod:`dls_microscopy.segment.metrics`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["MatchResult", "ThresholdMatch"]


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class ThresholdMatch:
    """The one-to-one matching and its scores at one IoU threshold.

    Attributes
    ----------
    threshold : float
        Minimum IoU of a match.
    tp, fp, fn : int
        Matched pairs, unmatched predicted objects, unmatched gt objects.
    n_pred, n_true : int
        Objects counted (``tp + fp`` and ``tp + fn``).
    matched_pred, matched_gt : (tp,) uint64 ndarray
        Ids of the matched pairs, sorted by gt id.
    matched_iou : (tp,) float64 ndarray
        IoU of each matched pair.
    """

    threshold: float
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_true: int
    matched_pred: np.ndarray
    matched_gt: np.ndarray
    matched_iou: np.ndarray

    @property
    def sum_matched_iou(self) -> float:
        """Sum of the IoU of the matched pairs."""
        return float(self.matched_iou.sum())

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)`` (0 when ``tp == 0``)."""
        return _ratio(self.tp, self.tp + self.fp) if self.tp else 0.0

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)`` (0 when ``tp == 0``)."""
        return _ratio(self.tp, self.tp + self.fn) if self.tp else 0.0

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)`` (0 when ``tp == 0``)."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def average_precision(self) -> float:
        """``tp / (tp + fp + fn)``: cellpose's "AP", StarDist's ``accuracy``."""
        return _ratio(self.tp, self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (0 without matches)."""
        return _ratio(self.sum_matched_iou, self.tp)

    @property
    def mean_true_iou(self) -> float:
        """Sum of matched IoU over ``n_true`` (StarDist's ``mean_true_score``)."""
        return _ratio(self.sum_matched_iou, self.n_true)

    @property
    def panoptic_quality(self) -> float:
        """``sum(matched IoU) / (tp + fp/2 + fn/2)``."""
        return _ratio(self.sum_matched_iou, self.tp + self.fp / 2 + self.fn / 2)

    def to_dict(self, *, include_matches: bool = False) -> dict[str, Any]:
        """Plain-Python scores (and, optionally, the matched id pairs and their IoU)."""
        out: dict[str, Any] = {
            "threshold": float(self.threshold),
            "n_pred": int(self.n_pred),
            "n_true": int(self.n_true),
            "tp": int(self.tp),
            "fp": int(self.fp),
            "fn": int(self.fn),
            **{name: getattr(self, name) for name in _SCORES},
        }
        if include_matches:
            out["matches"] = [
                {"pred": int(p), "gt": int(g), "iou": float(s)}
                for p, g, s in zip(self.matched_pred, self.matched_gt, self.matched_iou, strict=True)
            ]
        return out


_SCORES = (
    "precision",
    "recall",
    "f1",
    "average_precision",
    "mean_matched_iou",
    "mean_true_iou",
    "panoptic_quality",
)


@dataclasses.dataclass(frozen=True, eq=False)
class MatchResult:
    """Matching scores at each threshold; see :func:`match_overlaps`.

    Attributes
    ----------
    per_threshold : tuple of ThresholdMatch
        In the order the thresholds were given.
    restrict_to_gt : bool
        Whether predicted objects overlapping no gt object were ignored.
    n_pred_ignored : int
        How many predicted objects were ignored for that reason.
    info : dict
        Where the images came from (:func:`evaluate_paths`), JSON-friendly.
    """

    per_threshold: tuple[ThresholdMatch, ...]
    restrict_to_gt: bool = False
    n_pred_ignored: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The IoU thresholds."""
        return tuple(m.threshold for m in self.per_threshold)

    def __getitem__(self, threshold: float) -> ThresholdMatch:
        """The result at ``threshold``."""
        for m in self.per_threshold:
            if np.isclose(m.threshold, threshold, rtol=0, atol=1e-9):
                return m
        raise KeyError(f"no result at threshold {threshold} (have {self.thresholds})")

    def to_dict(self, *, include_matches: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            **self.info,
            "restrict_to_gt": self.restrict_to_gt,
            "n_pred_ignored": int(self.n_pred_ignored),
            "thresholds": [m.to_dict(include_matches=include_matches) for m in self.per_threshold],
        }

    def table(self) -> str:
        """The scores as a fixed-width text table, one row per threshold."""
        head = (
            "thresh",
            "n_pred",
            "n_true",
            "tp",
            "fp",
            "fn",
            "prec",
            "recall",
            "f1",
            "AP",
            "mIoU",
            "PQ",
        )
        rows = [" ".join(f"{h:>7}" for h in head)]
        for m in self.per_threshold:
            ints = (m.n_pred, m.n_true, m.tp, m.fp, m.fn)
            floats = (
                m.precision,
                m.recall,
                m.f1,
                m.average_precision,
                m.mean_matched_iou,
                m.panoptic_quality,
            )
            rows.append(
                " ".join(
                    [
                        f"{m.threshold:7.3g}",
                        *(f"{v:7d}" for v in ints),
                        *(f"{v:7.4f}" for v in floats),
                    ]
                )
            )
        if self.restrict_to_gt:
            rows.append(f"({self.n_pred_ignored} predicted objects overlapping no gt object ignored)")
        return "\n".join(rows)
