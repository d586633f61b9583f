"""Block planning of :func:`~dls_microscopy.segment.blockwise.segment_blockwise`.

The memory a block in flight needs (:func:`block_bytes_per_voxel`), the choice of the
block plan and of how many blocks run at once (:func:`_plan`), the warning when the blocks
are so small that their halos dominate (:func:`warn_if_halo_dominates`), and the threads
each block's segmenter may use meanwhile (:class:`_threads_per_block`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from dls_microscopy.blocks import BlockPlan, plan_blocks
from dls_microscopy.errors import InputError
from dls_microscopy.segment.base import BaseSegmenter

log = logging.getLogger(__name__)

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
    """Voxels read by all blocks, halos included (:attr:`BlockPlan.outer_voxels`)."""
    return plan.outer_voxels


#: Warn when the blocks compute more than this many voxels per voxel of the image: their
#: halos, read again as their neighbours' cores.  At the default budget (2 GiB, 1-16
#: workers) the watershed's plans of typical data stay below 2.5: the IDR blastocyst
#: 6001240 at 8 µm is one block (1.0); 200 x 2048² confocal (0.36 µm) and 1000 x 2048²
#: light-sheet (0.4 µm) stacks with 8-10 µm nuclei plan 1.5-2.4.  Nuclei of 12 µm on the
#: light-sheet plan 2.3-3.0, of 14 µm 2.8-3.7.  The 300 MB run of 6001240 that took 21
#: times as long as the default one planned 3.6 (on its level 1, 2.9 made the segment
#: pass 3x as long as one block, 4.3 6x).
HALO_OVERHEAD_WARNING = 3.0
#: The overhead the budget suggested by the warning aims at: at most half of what the blocks
#: compute is halo.
HALO_OVERHEAD_TARGET = 2.0

#: Plans warned about in this process (shape, block, halo, budget, workers): the fields of
#: one shape in a pipeline run warn once, not once per field.
_warned: set[tuple[Any, ...]] = set()
_warned_lock = threading.Lock()


def suggested_budget(
    plan: BlockPlan,
    budget: int,
    bytes_per_voxel: float,
    workers: int,
    *,
    target: float = HALO_OVERHEAD_TARGET,
) -> int:
    """The smallest memory budget, in steps of √2 above ``budget``, whose plan's overhead is ``target``.

    Parameters
    ----------
    plan : BlockPlan
        The plan made at ``budget`` (its shape and halo are kept).
    budget : int
        Bytes the plan was made for.
    bytes_per_voxel : float
        Peak bytes per voxel of a block in flight (:func:`block_bytes_per_voxel`).
    workers : int
        Blocks that may run at once.
    target : float
        Voxels computed per voxel of the image to reach (:attr:`BlockPlan.halo_overhead`).

    Returns
    -------
    int
        Bytes; the budget of a single block (overhead 1) at most.
    """
    candidate = float(budget)
    for _ in range(128):  # 2**64 times the budget: one block long before
        candidate *= math.sqrt(2.0)
        bigger, _ = _plan(plan.shape, plan.halo, int(candidate), bytes_per_voxel, workers, None)
        if bigger.halo_overhead <= target:
            break
    return int(candidate)


def _size_text(nbytes: int) -> str:
    """``nbytes`` rounded up, as ``--memory-budget`` and ``compute.memory_budget`` read it."""
    if nbytes >= 10**9:
        return f"{math.ceil(nbytes / 10**8) / 10:g}GB"
    return f"{math.ceil(nbytes / 10**7) * 10}MB"


def warn_if_halo_dominates(
    plan: BlockPlan,
    *,
    budget: int,
    bytes_per_voxel: float,
    workers: int,
    explicit_blocks: bool = False,
) -> bool:
    """Log a warning, once per plan in this process, when the halos dominate the work.

    Blocks that are small next to their halo (a small budget, a large diameter, fine
    voxels) compute most voxels several times: each block reads its halo, which its
    neighbours compute as their cores.  Above :data:`HALO_OVERHEAD_WARNING` voxels computed
    per voxel of the image, the warning names the ratio, the block and halo shapes and
    the budget that brings the ratio to :data:`HALO_OVERHEAD_TARGET`.

    Parameters
    ----------
    plan : BlockPlan
        The segmentation's plan.
    budget : int
        Bytes it was planned for.
    bytes_per_voxel : float
        Peak bytes per voxel of a block in flight (:func:`block_bytes_per_voxel`).
    workers : int
        Blocks that may run at once.
    explicit_blocks : bool
        The block shape was given rather than planned from the budget.

    Returns
    -------
    bool
        Whether the plan's overhead is above the threshold (warned now or before).
    """
    overhead = plan.halo_overhead
    if overhead <= HALO_OVERHEAD_WARNING:
        return False
    key = (plan.shape, plan.block_shape, plan.halo, int(budget), int(workers), explicit_blocks)
    with _warned_lock:
        if key in _warned:
            return True
        _warned.add(key)
    if explicit_blocks:
        remedy = "Give a larger block_shape"
    else:
        better = suggested_budget(plan, budget, bytes_per_voxel, workers)
        bigger, _ = _plan(plan.shape, plan.halo, better, bytes_per_voxel, workers, None)
        remedy = (
            f"Raise the memory budget (segment --memory-budget; compute.memory_budget in a "
            f"pipeline, shared by the fields run at once) to about {_size_text(better)} for "
            f"{bigger.halo_overhead:.1f}×"
        )
    log.warning(
        "the blocks compute %.1f× the image's voxels: blocks of %s (z, y, x) with a halo of %s on "
        "each side, which neighbouring blocks compute again; segmentation takes several times "
        "as long as with larger blocks. %s, or check the diameter, which the halo grows with",
        overhead,
        " × ".join(map(str, plan.block_shape)),
        " × ".join(map(str, plan.halo)),
        remedy,
    )
    return True


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
