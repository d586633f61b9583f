"""Multiscale pyramid planning and block downsampling (mean for images, nearest for labels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["downsample_block", "plan_pyramid"]


def plan_pyramid(
    spatial_shape: Sequence[int],
    spacing: Sequence[float],
    *,
    n_levels: int | None = None,
    min_size: int = 256,
    max_levels: int = 10,
) -> list[tuple[int, ...]]:
    """Per-level downsampling factors (cumulative, per spatial axis).

    An axis is halved when its spacing is finer than the coarsest axis by more
    than 1.5×, or when all axes are within that ratio, so that anisotropic
    volumes first become isotropic before z is reduced.  Levels are added
    while the largest spatial dimension of the last level is at least
    ``min_size`` (or until ``n_levels`` levels exist).

    Parameters
    ----------
    spatial_shape : sequence of int
        Full-resolution shape of the spatial axes, e.g. ``(Z, Y, X)``.
    spacing : sequence of float
        Voxel size of those axes (µm).

    Returns
    -------
    list of tuple of int
        ``factors[k][i]``: how many full-resolution voxels of axis ``i`` one
        voxel of level ``k`` spans; level 0 is all ones.

    Examples
    --------
    >>> plan_pyramid((64, 1024, 1024), (2.0, 0.5, 0.5))
    [(1, 1, 1), (1, 2, 2), (1, 4, 4), (2, 8, 8)]
    """
    factors = [tuple(1 for _ in spatial_shape)]
    while len(factors) < (n_levels or max_levels):
        cur = factors[-1]
        shape = [-(-s // f) for s, f in zip(spatial_shape, cur, strict=True)]
        if n_levels is None and max(shape) < min_size:
            break
        sp = [s * f for s, f in zip(spacing, cur, strict=True)]
        coarse = max(sp)
        halve = [s * 1.5 < coarse and n > 1 for s, n in zip(sp, shape, strict=True)]
        if not any(halve):
            halve = [n > 1 for n in shape]
        if not any(halve):
            break
        factors.append(tuple(f * (2 if h else 1) for f, h in zip(cur, halve, strict=True)))
    return factors


def downsample_block(block: np.ndarray, step: Sequence[int], *, method: str) -> np.ndarray:
    """Downsample ``block`` by integer ``step`` per axis.

    ``"mean"`` averages each ``step`` box (edges padded by replication so the
    output has ``ceil(n / step)`` samples); ``"nearest"`` keeps the first voxel
    of each box (labels keep valid ids).  The result has ``block``'s dtype
    (integer means are rounded).
    """
    if method == "nearest":
        return block[tuple(slice(None, None, s) for s in step)]
    pad = [(0, (-n) % s) for n, s in zip(block.shape, step, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    shape: list[int] = []
    for n, s in zip(block.shape, step, strict=True):
        shape.extend((n // s, s))
    work = block.astype(np.float64 if block.dtype.itemsize > 4 else np.float32, copy=False)
    out = work.reshape(shape).mean(axis=tuple(range(1, 2 * block.ndim, 2)))
    if block.dtype.kind in "iu":
        info = np.iinfo(block.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    elif block.dtype.kind == "b":
        out = out >= 0.5
    return out.astype(block.dtype)
