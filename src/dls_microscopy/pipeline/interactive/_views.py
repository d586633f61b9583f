"""The Features widget's views: plottable columns, a 2D projection, box selection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PROJECTION_COLUMNS", "feature_projection", "ids_in_box", "numeric_feature_columns", "plot_values"]

#: pseudo-columns of a 2D projection of the features (or of ``Embedding_*`` columns)
PROJECTION_COLUMNS = ("PCA 1", "PCA 2")


def numeric_feature_columns(table: Any) -> list[str]:
    """Columns of an objects table that can be plotted: numbers that are not ``Metadata_*``."""
    import pyarrow as pa

    return [
        f.name
        for f in table.schema
        if not f.name.startswith("Metadata_")
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]


def feature_projection(table: Any, columns: Sequence[str] | None = None) -> np.ndarray:
    """``(n, 2)`` principal-component projection of standardised feature columns.

    ``Embedding_*`` columns are used when the table has them, else every
    numeric feature.  Missing values become the column mean; constant columns
    are dropped; signs are fixed so that each component's largest loading is
    positive (deterministic).
    """
    if columns is None:
        numeric = numeric_feature_columns(table)
        emb = [c for c in numeric if c.startswith("Embedding_")]
        columns = emb or numeric
    n = table.num_rows
    if n == 0 or not columns:
        return np.zeros((n, 2))
    x = np.column_stack(
        [np.asarray(table.column(c).to_numpy(zero_copy_only=False), np.float64) for c in columns]
    )
    x[~np.isfinite(x)] = np.nan
    mean = np.nanmean(x, axis=0) if n else np.zeros(x.shape[1])
    x = np.where(np.isnan(x), mean, x)
    std = x.std(axis=0)
    keep = std > 0
    if not keep.any():
        return np.zeros((n, 2))
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / std[keep]
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    proj = z @ (vt * signs[:, None]).T
    if proj.shape[1] < 2:
        proj = np.column_stack([proj, np.zeros(n)])
    return proj


def plot_values(table: Any, column: str) -> np.ndarray:
    """``(n,)`` float values of ``column`` (or of a :data:`PROJECTION_COLUMNS` entry) for a scatter plot."""
    if column in PROJECTION_COLUMNS:
        return feature_projection(table)[:, PROJECTION_COLUMNS.index(column)]
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def ids_in_box(
    ids: np.ndarray, x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]
) -> np.ndarray:
    """Ids of the points inside ``box = (x0, x1, y0, y1)`` (bounds in any order, inclusive)."""
    x0, x1, y0, y1 = box
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return np.asarray(ids)[inside]
