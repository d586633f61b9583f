"""Block planning of :func:`~dls_microscopy.segment.blockwise.segment_blockwise`.

The memory a block in flight needs (:func:`block_bytes_per_voxel`), the choice of the
block plan and of how many blocks run at once (:func:`_plan`), and the threads each
block's segmenter may use meanwhile (:class:`_threads_per_block`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.blocks import BlockPlan, plan_blocks
from dls_microscopy.errors import InputError
from dls_microscopy.segment.base import BaseSegmenter

#: Efficiency of the threads inside one block (smoothing, distance transform and
#: steepest-ascent search are threaded; the rest is not) relative to a thread per block.
INTRA_BLOCK_EFFICIENCY = 0.5


def _plan(
    shape: tuple[int, ...],
    halo: tuple[int, ...],
    budget: int,
    bytes_per_voxel: float,
    workers: int,
    block_shape: Sequence[int] | None,
) -> tuple[BlockPlan, int]:
    """The block plan and the number of blocks run at once that should finish first.

    Running ``k`` blocks at once gives each ``budget / k``: fewer, larger blocks
    compute less halo.  Each ``k`` from ``workers`` down to 1 is planned and scored
    by voxels computed (outer regions, halos included) over the parallelism it gets:
    ``min(k, blocks)`` blocks plus the spare threads used inside blocks at
    :data:`INTRA_BLOCK_EFFICIENCY`.  With an explicit ``block_shape``, ``k = workers``.
    """
    grid = (16, 16, 16)
    if block_shape is not None:
        plan = plan_blocks(shape, halo=halo, grid=grid, block_shape=block_shape)
        return plan, max(1, min(workers, plan.n_blocks))
    best: tuple[float, int, BlockPlan] | None = None
    error: InputError | None = None
    for k in range(max(1, workers), 0, -1):
        try:
            plan = plan_blocks(
                shape, halo=halo, grid=grid, memory_budget=budget,
                bytes_per_voxel=bytes_per_voxel, workers=k,
            )  # fmt: skip
        except InputError as exc:  # too small a budget for k blocks at once
            error = exc
            continue
        at_once = min(k, plan.n_blocks)
        parallel = at_once + (workers - at_once) * INTRA_BLOCK_EFFICIENCY
        score = _outer_voxels(plan) / parallel
        if best is None or score < best[0]:
            best = (score, at_once, plan)
    if best is None:
        assert error is not None
        raise error
    return best[2], best[1]


def plan_segmentation(
    shape: Sequence[int],
    dtype: Any,
    spacing: Sequence[float],
    segmenter: BaseSegmenter,
    memory_budget: int,
    workers: int = 1,
    block_shape: Sequence[int] | None = None,
) -> tuple[BlockPlan, int]:
    """The blocks :func:`~dls_microscopy.segment.blockwise.segment_blockwise` would run, without data.

    Parameters
    ----------
    shape : (3,) ints
        The image's spatial shape ``(z, y, x)``.
    dtype
        Its pixel type.
    spacing : (3,) floats
        Voxel size in µm (the segmenter's halo depends on it).
    segmenter : BaseSegmenter
    memory_budget : int
        Bytes all ``workers`` may use together.
    workers : int
        Blocks that may run at once.
    block_shape : (3,) ints, optional
        An explicit core shape instead of the budget.

    Returns
    -------
    plan : BlockPlan
    at_once : int
        Blocks run at once.

    Raises
    ------
    InputError
        When even one block with its halo does not fit ``memory_budget``.
    """
    halo = tuple(int(h) for h in segmenter.halo(spacing))
    return _plan(
        tuple(int(n) for n in shape),
        halo,
        int(memory_budget),
        block_bytes_per_voxel(segmenter, dtype),
        workers,
        block_shape,
    )


def _outer_voxels(plan: BlockPlan) -> int:
    """Voxels read by all blocks, halos included (a product of per-axis sums)."""
    total = 1
    for n, b, h, g in zip(plan.shape, plan.block_shape, plan.halo, plan.grid, strict=True):
        total *= sum(min(n, (i + 1) * b + h) - max(0, i * b - h) for i in range(g))
    return total


class _threads_per_block:
    """Set ``segmenter.threads`` (when it has the attribute) while blocks run."""

    def __init__(self, segmenter: BaseSegmenter, threads: int) -> None:
        self.segmenter, self.threads = segmenter, threads
        self.has = hasattr(segmenter, "threads")
        self.old = getattr(segmenter, "threads", None)

    def __enter__(self) -> None:
        if self.has:
            self.segmenter.threads = self.threads  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        if self.has:
            self.segmenter.threads = self.old  # type: ignore[attr-defined]


#: Bytes per voxel of a block that the engine holds besides the segmenter's working
#: memory: the local ids of the core (uint32), the copy zarr compresses from and its
#: output, and the bands.
ENGINE_BYTES_PER_VOXEL = 10.0


def block_bytes_per_voxel(segmenter: BaseSegmenter, dtype: Any) -> float:
    """Peak bytes per voxel of one block in flight: pixels, segmenter, engine arrays.

    ``segmenter.bytes_per_voxel`` (default 40) is the segmenter's peak working memory
    per voxel of its input, its output labels included; the engine adds the pixels
    it reads (``dtype``'s size) and :data:`ENGINE_BYTES_PER_VOXEL`.
    """
    own = float(getattr(segmenter, "bytes_per_voxel", 40.0))
    return own + np.dtype(dtype).itemsize + ENGINE_BYTES_PER_VOXEL
