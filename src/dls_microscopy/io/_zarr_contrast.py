"""Display metadata of written images: contrast window sampled from the smallest level."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zarr


def _contrast_limits(
    group: zarr.Group, level: int, axes: str, max_regions: int = 16
) -> list[tuple[float, float]]:
    """Per-channel 0.1–99.9 percentile window from a few whole chunks of the smallest level.

    Reading whole chunks (spread evenly over the chunk grid) decodes each at
    most once; a strided read would decode every chunk of the level.
    """
    arr = group[str(level)]
    grid = [-(-n // c) for n, c in zip(arr.shape, arr.chunks, strict=True)]
    n_chunks = math.prod(grid)
    picks = np.unique(np.linspace(0, n_chunks - 1, num=min(n_chunks, max_regions)).astype(int))
    samples = []
    for flat in picks:
        pos = np.unravel_index(int(flat), grid)
        region = tuple(
            slice(None) if a == "c" else slice(p * c, min((p + 1) * c, n))
            for a, p, c, n in zip(axes, pos, arr.chunks, arr.shape, strict=True)
        )
        block = np.asarray(arr[region])
        block = np.moveaxis(block, axes.index("c"), 0) if "c" in axes else block[None]
        samples.append(block.reshape(block.shape[0], -1))
    values_all = np.concatenate(samples, axis=1)
    limits = []
    for ch in values_all:
        if ch.dtype.kind == "b":  # numpy's percentile cannot subtract booleans
            ch = ch.view(np.uint8)
        values = ch[np.isfinite(ch)] if ch.dtype.kind == "f" else ch
        if values.size == 0:
            limits.append((0.0, 1.0))
            continue
        lo, hi = np.percentile(values, [0.1, 99.9])
        limits.append((float(lo), float(hi if hi > lo else lo + 1)))
    return limits


def _dtype_range(dtype: np.dtype[Any], limits: list[tuple[float, float]]) -> tuple[float, float]:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "b":
        return 0.0, 1.0
    return min(lo for lo, _ in limits), max(hi for _, hi in limits)
