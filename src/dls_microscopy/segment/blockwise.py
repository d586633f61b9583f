"""Blockwise segmentation of volumes of any size, with seam-correct stitching.

Three passes, memory bounded by the block plan:

1. **Segment** every block grown by the segmenter's halo; keep the core's
   labels (numbered ``1..m`` per block, no cap on objects per block) in a
   scratch zarr and the thin bands on both sides of each face (core and halo
   planes, lz4) on disk.
2. **Stitch**: for every face, objects of the two blocks whose IoU over the
   band around the face reaches ``iou_threshold`` are merged; connected
   components give the final, consecutive ids (see :mod:`.stitch`).  Only the
   bands are read.
3. **Write** the relabelled labels, shard by shard (a uint32 lookup per block,
   no int64 copy), as an NGFF label image with its pyramid (inside the input
   OME-Zarr, or as a separate store).

The plan gives each block running at once ``memory_budget / k`` at the bytes per
voxel of the segmenter plus the engine's arrays; ``k`` (blocks at once, at most
``workers``) is chosen to compute the fewest halo voxels per thread, and spare
threads go inside the blocks (``segmenter.threads``).  When the whole volume is one
block, passes 2-3 reduce to writing its labels (no scratch, no stitching).

This module runs the passes; the planning and each pass live in their own private
modules: :mod:`._blockwise_plan`, :mod:`._blockwise_segment` (pass 1),
:mod:`._blockwise_stitch` (pass 2) and :mod:`._blockwise_write` (pass 3).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from dls_microscopy._allocator import bound_allocator, release_memory
from dls_microscopy.blocks import BlockPlan, ProgressCallback, run_parallel

# Planning and the passes live in their own modules.  The orchestrator calls them through
# this module's names, so patching ``blockwise._stitch`` or ``blockwise._relabelled`` (as
# ``benchmarks/run_segment.py`` does to time the passes) hits the code that runs; the
# names also stay importable from here.
from dls_microscopy.segment._blockwise_inputs import check_diameter_against_the_image, select_image
from dls_microscopy.segment._blockwise_plan import (  # noqa: F401 - re-exported
    ENGINE_BYTES_PER_VOXEL,
    INTRA_BLOCK_EFFICIENCY,
    _outer_voxels,
    _plan,
    _threads_per_block,
    block_bytes_per_voxel,
    plan_segmentation,
    warn_if_halo_dominates,
)
from dls_microscopy.segment._blockwise_segment import (  # noqa: F401 - re-exported
    MAX_BAND,
    _BandStore,
    _fast_compressor,
    _segment_block,
    count_nonfinite,
    warn_nonfinite_pixels,
)
from dls_microscopy.segment._blockwise_stitch import _stitch
from dls_microscopy.segment._blockwise_write import (
    _destination,
    _open_result,
    _relabelled,
    _scratch,
    _write,
    _write_grid,
    label_record,
    segmentation_record,
)
from dls_microscopy.segment.base import BaseSegmenter
from dls_microscopy.volume import Volume

__all__ = [
    "BlockwiseResult",
    "block_bytes_per_voxel",
    "plan_segmentation",
    "segment_blockwise",
    "select_image",
]

log = logging.getLogger(__name__)

#: Warn when more than this fraction of the blocks' objects reach past their halo.
BEYOND_HALO_WARNING = 0.01

DEFAULT_MEMORY_BUDGET = 2 * 2**30


@dataclasses.dataclass
class BlockwiseResult:
    """Outcome of :func:`segment_blockwise`.

    Attributes
    ----------
    path : Path
        The NGFF label image written (``store/labels/NAME`` or a standalone store).
    labels : Volume
        The labels, opened lazily from ``path``.
    n_objects : int
        Number of objects after stitching.
    plan : BlockPlan
        Blocks used.
    seam_qc : dict
        ``faces``, ``merged_pairs``, ``merged_per_axis``, ``objects_touching_faces``,
        ``unmatched_touching`` (objects touching a face that found no partner:
        candidates for a cut), ``min_merge_iou``, ``objects_beyond_halo`` (objects
        of a block that reach its outer face inside the volume: larger than the
        halo covers, so the result may differ from a whole-volume run there;
        logged as a warning).
    timings : dict
        Seconds per pass.
    """

    path: Path
    labels: Volume
    n_objects: int
    plan: BlockPlan
    seam_qc: dict[str, Any]
    timings: dict[str, float]


def segment_blockwise(
    volume: Volume,
    segmenter: BaseSegmenter,
    *,
    channel: int | str | None = None,
    time_point: int | None = None,
    memory_budget: int | None = None,
    block_shape: Sequence[int] | None = None,
    output: str | os.PathLike[str] | None = None,
    label_name: str = "nuclei",
    overwrite: bool = False,
    iou_threshold: float = 0.5,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    stats: dict[str, float] | None = None,
    provenance: Mapping[str, Any] | None = None,
    source_time_point: int | None = None,
) -> BlockwiseResult:
    """Segment ``volume`` block by block and write stitched labels as NGFF labels.

    Memory: the blocks running at once (``workers``) share ``memory_budget``, each
    planned at the segmenter's ``bytes_per_voxel`` plus the engine's own arrays
    (the pixels read and the core's local ids, :data:`ENGINE_BYTES_PER_VOXEL`); the
    write pass works on regions of a quarter of the budget per worker.  glibc's
    allocator is told to give freed memory back (:mod:`dls_microscopy._allocator`).
    Measured peak RSS growth: see ``benchmarks/run_segment.py`` (section 2).

    Parameters
    ----------
    volume : Volume
        Image to segment (lazy; never loaded whole).
    segmenter : BaseSegmenter
        Any registered segmenter.
    channel, time_point : optional
        Which channel / time point to segment when the image has several.
    memory_budget : int, optional
        Bytes for all workers together (default 2 GiB); sets the block size.
    block_shape : sequence of int, optional
        Explicit block core shape (z, y, x), instead of the budget.
    output : path-like, optional
        Where to write: default (None) is the ``labels/`` group of the input
        OME-Zarr; otherwise a new standalone OME-Zarr label image.
    label_name : str
        Name of the label image.
    iou_threshold : float
        Band IoU at which objects of two blocks are the same.
    workers : int, optional
        Parallel blocks (default: CPU count, at most 8; 1 on GPU devices).
    stats : dict, optional
        Global statistics, if already computed; default
        ``segmenter.global_stats`` over the whole image.
    provenance : mapping, optional
        Recorded with the labels, beside what this function records itself: the label
        image's attributes get ``dls_microscopy.segmentation`` (method, parameters,
        channel, time point, device, spacing, memory budget, blocks, halo, object count,
        seam summary) and the keys of ``provenance`` (e.g. ``software``, ``created``).
    source_time_point : int, optional
        For that record: the time point of the source that ``volume`` is, when the
        caller selected it (``time_point`` is then None).

    Returns
    -------
    BlockwiseResult
    """
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    bound_allocator(budget)
    image = select_image(volume, channel=channel, time_point=time_point)
    spacing = image.spacing
    check_diameter_against_the_image(segmenter, image)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if output is not None:
        from dls_microscopy.io.atomic import refuse_output_over_inputs

        refuse_output_over_inputs(output, [volume.source], inside_ok=True)
    dest_store, standalone = _destination(volume, output, label_name, overwrite)
    if workers is None:
        workers = 1 if segmenter.device != "cpu" else max(1, min(8, os.cpu_count() or 1))
    plan, concurrent = plan_segmentation(
        image.spatial_shape, image.dtype, spacing, segmenter, budget, workers, block_shape
    )
    t_record = time_point if time_point is not None else source_time_point
    record = segmentation_record(segmenter, image, volume, t_record, budget, plan, concurrent, provenance)
    log.info(
        "segmenting %s with %s: %d blocks of %s, halo %s (%.2fx the voxels computed), %d at once",
        image.source,
        segmenter.name,
        plan.n_blocks,
        plan.block_shape,
        plan.halo,
        plan.halo_overhead,
        concurrent,
    )
    warn_if_halo_dominates(
        plan,
        budget=budget,
        bytes_per_voxel=block_bytes_per_voxel(segmenter, image.dtype),
        workers=workers,
        explicit_blocks=block_shape is not None,
    )
    with _threads_per_block(segmenter, max(1, workers // concurrent)):
        if plan.n_blocks == 1:
            return _segment_single_block(
                image, volume, segmenter, plan, stats, dest_store, standalone, label_name,
                overwrite, budget, progress, workers, timings, t0, record,
            )  # fmt: skip
        return _segment_blocks(
            image, volume, segmenter, plan, concurrent, stats, dest_store, standalone,
            label_name, overwrite, iou_threshold, budget, progress, workers, timings, t0, record,
        )  # fmt: skip


def _segment_blocks(
    image: Volume,
    volume: Volume,
    segmenter: BaseSegmenter,
    plan: BlockPlan,
    concurrent: int,
    stats: dict[str, float] | None,
    dest_store: Path,
    standalone: bool,
    label_name: str,
    overwrite: bool,
    iou_threshold: float,
    budget: int,
    progress: ProgressCallback | None,
    workers: int,
    timings: dict[str, float],
    t0: float,
    record: dict[str, Any],
) -> BlockwiseResult:
    """Passes 1-3 over several blocks, ``concurrent`` at a time."""
    from dls_microscopy.io.atomic import release_partial

    spacing = image.spacing
    if stats is None:
        stats = segmenter.global_stats(image.data, spacing=spacing)
    release_memory()
    timings["global_stats"] = time.perf_counter() - t0

    scratch = _scratch(dest_store, standalone, label_name)
    try:
        local = zarr.create_array(
            store=str(scratch / "local.zarr"),
            shape=image.spatial_shape,
            dtype=np.uint32,
            chunks=plan.block_shape,
            fill_value=0,
            config={"write_empty_chunks": False},
            compressors=_fast_compressor(),
        )
        bands = _BandStore(scratch / "bands", plan)
        t1 = time.perf_counter()
        results = run_parallel(
            list(plan),
            lambda blk: _segment_block(blk, image, segmenter, spacing, stats, local, bands),
            workers=concurrent,
            progress=progress,
            description="segment blocks",
        )
        counts = [m for m, _, _ in results]
        beyond = sum(b for _, b, _ in results)
        warn_nonfinite_pixels(sum(n for _, _, n in results), image)
        timings["segment"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        table, n_objects, qc = _stitch(plan, local, bands, offsets, iou_threshold, workers)
        qc["objects_beyond_halo"] = beyond
        # a few (merged pairs, elongated nuclei) are common and harmless in practice; many
        # mean objects well past 1.5 diameters (clumps): 219 on the packed blastocyst of
        # idr0062A in 1,224 blocks (30,787 voxels differ from its one-block run); 1-2 on
        # synthetic nuclei of 1,263 objects in 36 blocks
        if beyond > BEYOND_HALO_WARNING * max(1, sum(counts)):
            log.warning(
                "%d block objects reach past their block's halo, which covers objects up to 1.5 "
                "diameters: near block faces the labels may differ from a whole-volume run. If "
                "nuclei are merged into clumps, check the diameter (estimate-diameter) or try "
                "seed_contrast; a larger memory budget gives fewer block faces",
                beyond,
            )
        timings["stitch"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        final = _relabelled(local, plan, offsets, table, budget)
        path = _write(
            final,
            image,
            volume,
            dest_store,
            standalone,
            label_name,
            overwrite,
            budget,
            progress,
            workers,
            label_record(record, n_objects, qc),
        )
        timings["write"] = time.perf_counter() - t3
    finally:
        release_partial(scratch)
        release_memory()
    labels = _open_result(path, dest_store, standalone, label_name)
    log.info("%d objects; seams: %s", n_objects, qc)
    return BlockwiseResult(path, labels, n_objects, plan, qc, timings)


def _segment_single_block(
    image: Volume,
    volume: Volume,
    segmenter: BaseSegmenter,
    plan: BlockPlan,
    stats: dict[str, float] | None,
    dest_store: Path,
    standalone: bool,
    label_name: str,
    overwrite: bool,
    budget: int,
    progress: ProgressCallback | None,
    workers: int,
    timings: dict[str, float],
    t0: float,
    record: dict[str, Any],
) -> BlockwiseResult:
    """The whole volume is one block: no scratch, no seams; labels written directly.

    Without ``stats`` the segmenter computes them from the block, which is the whole
    volume, so they are the global statistics (and a segmenter may reuse the work,
    e.g. the smoothing, as :class:`~.watershed.WatershedSegmenter` does).
    """
    timings["global_stats"] = 0.0
    t1 = time.perf_counter()
    pixels = np.asarray(image.data.compute(scheduler="synchronous"))
    warn_nonfinite_pixels(count_nonfinite(pixels), image)
    labels = segmenter.segment(pixels, spacing=image.spacing, stats=stats)
    del pixels
    n_objects = int(labels.max()) if labels.size else 0
    timings["segment"] = time.perf_counter() - t1
    timings["stitch"] = 0.0
    t3 = time.perf_counter()
    # name=False: no hash of the labels for a dask name (~2 ms per 4 MiB); the graph is
    # computed once, right here, so the name's determinism buys nothing
    final = da.from_array(labels, chunks=_write_grid(labels.shape, budget), name=False)
    qc: dict[str, Any] = {
        "faces": 0,
        "merged_pairs": 0,
        "merged_per_axis": dict.fromkeys("zyx", 0),
        "merged_per_face_max": 0,
        "merged_per_face_mean": 0.0,
        "objects_touching_faces": 0,
        "unmatched_touching": 0,
        "min_merge_iou": None,
        "objects_beyond_halo": 0,
        "objects_before_stitching": n_objects,
        "objects": n_objects,
    }
    path = _write(
        final, image, volume, dest_store, standalone, label_name, overwrite, budget, progress,
        workers, label_record(record, n_objects, qc),
    )  # fmt: skip
    # no release_memory() here: one block's arrays above the mmap threshold were
    # unmapped when freed, and the heap keeps at most its trim threshold (a small
    # fraction of the budget) free; trimming it all would only make the next call
    # fault its pages in again (~2 µs per 4 KiB page)
    del final, labels
    timings["write"] = time.perf_counter() - t3
    labels_vol = _open_result(path, dest_store, standalone, label_name)
    log.info("%d objects (one block)", n_objects)
    return BlockwiseResult(path, labels_vol, n_objects, plan, qc, timings)
