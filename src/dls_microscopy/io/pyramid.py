"""Multiscale pyramid planning and block downsampling (mean for images, nearest for labels)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from dls_microscopy.errors import InputError

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
    if n_levels is not None and n_levels < 1:
        raise InputError(f"the number of pyramid levels must be at least 1, got {n_levels}")
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
    of each box (labels keep valid ids).  The result has ``block``'s dtype;
    integer means are computed exactly and rounded half up.
    """
    if method == "nearest":
        return block[tuple(slice(None, None, s) for s in step)]
    pad = [(0, (-n) % s) for n, s in zip(block.shape, step, strict=True)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    # sum the strided views of each box offset: no reshaped float copy of the block
    if block.dtype.kind in "iub" and block.dtype.itemsize <= 2:
        acc_dtype: type = np.int32 if block.dtype.kind == "i" else np.uint32
    elif block.dtype.kind in "iub":
        acc_dtype = np.float64
    else:
        acc_dtype = np.float64 if block.dtype.itemsize > 4 else np.float32
    out_shape = tuple(n // s for n, s in zip(block.shape, step, strict=True))
    acc = np.zeros(out_shape, dtype=acc_dtype)
    for offset in itertools.product(*(range(s) for s in step)):
        acc += block[tuple(slice(o, None, s) for o, s in zip(offset, step, strict=True))]
    count = math.prod(step)
    if block.dtype.kind in "iu":
        info = np.iinfo(block.dtype)
        if acc.dtype.kind in "iu":  # exact: floor((2 * sum + n) / (2 * n)) = round half up
            out = np.floor_divide(2 * acc.astype(np.int64) + count, 2 * count)
        else:
            out = np.floor(acc / count + 0.5)
        return np.clip(out, info.min, info.max).astype(block.dtype)
    if block.dtype.kind == "b":
        return acc * 2 >= count
    return (acc / count).astype(block.dtype)
