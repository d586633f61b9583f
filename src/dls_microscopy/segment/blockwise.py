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
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from dls_microscopy._allocator import bound_allocator, release_memory
from dls_microscopy.blocks import Block, BlockPlan, ProgressCallback, plan_blocks, run_parallel
from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.segment.base import BaseSegmenter
from dls_microscopy.segment.stitch import band_matches, global_relabel_table
from dls_microscopy.volume import Volume

__all__ = ["BlockwiseResult", "block_bytes_per_voxel", "segment_blockwise", "select_image"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 2 * 2**30
#: largest band (voxels on each side of a face) used to match objects
MAX_BAND = 8


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
        candidates for a cut), ``min_merge_iou``.
    timings : dict
        Seconds per pass.
    """

    path: Path
    labels: Volume
    n_objects: int
    plan: BlockPlan
    seam_qc: dict[str, Any]
    timings: dict[str, float]


def select_image(
    volume: Volume, *, channel: int | str | None = None, time_point: int | None = None
) -> Volume:
    """The single 3D (z, y, x) image to segment from a possibly multi-channel, timed volume."""
    vol = volume
    if "t" in vol.axes:
        if time_point is None and vol.axis_size("t") > 1:
            raise InputError(
                f"the image has {vol.axis_size('t')} time points; choose one", path=vol.source
            )
        vol = vol.select(t=time_point or 0)
    if "c" in vol.axes:
        if channel is None and vol.n_channels > 1:
            raise InputError(
                f"the image has {vol.n_channels} channels ({', '.join(vol.channel_names)}); "
                "choose one with channel=/--channel",
                path=vol.source,
            )
        vol = vol.select(c=channel if channel is not None else 0)
    elif channel not in (None, 0, vol.channel_names[0]):
        raise InputError(
            f"the image has a single channel; channel {channel!r} does not exist", path=vol.source
        )
    return vol.require_spatial_ndim(3)


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

    Returns
    -------
    BlockwiseResult
    """
    budget = memory_budget or DEFAULT_MEMORY_BUDGET
    bound_allocator(budget)
    image = select_image(volume, channel=channel, time_point=time_point)
    spacing = image.spacing
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dest_store, standalone = _destination(volume, output, label_name, overwrite)
    if workers is None:
        workers = 1 if segmenter.device != "cpu" else max(1, min(8, os.cpu_count() or 1))
    halo = tuple(int(h) for h in segmenter.halo(spacing))
    plan, concurrent = _plan(
        image.spatial_shape,
        halo,
        budget,
        block_bytes_per_voxel(segmenter, image.dtype),
        workers,
        block_shape,
    )
    log.info(
        "segmenting %s with %s: %d blocks of %s, halo %s, %d at once",
        image.source,
        segmenter.name,
        plan.n_blocks,
        plan.block_shape,
        halo,
        concurrent,
    )
    with _threads_per_block(segmenter, max(1, workers // concurrent)):
        if plan.n_blocks == 1:
            return _segment_single_block(
                image, volume, segmenter, plan, stats, dest_store, standalone, label_name,
                overwrite, budget, progress, workers, timings, t0,
            )  # fmt: skip
        return _segment_blocks(
            image, volume, segmenter, plan, concurrent, stats, dest_store, standalone,
            label_name, overwrite, iou_threshold, budget, progress, workers, timings, t0,
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
) -> BlockwiseResult:
    """Passes 1-3 over several blocks, ``concurrent`` at a time."""
    spacing = image.spacing
    if stats is None:
        stats = segmenter.global_stats(image.data, spacing=spacing)
    release_memory()
    timings["global_stats"] = time.perf_counter() - t0

    scratch = Path(
        tempfile.mkdtemp(
            prefix=f".{label_name}.scratch-", dir=_scratch_parent(dest_store, standalone)
        )
    )
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
        counts = run_parallel(
            list(plan),
            lambda blk: _segment_block(blk, image, segmenter, spacing, stats, local, bands),
            workers=concurrent,
            progress=progress,
            description="segment blocks",
        )
        timings["segment"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        table, n_objects, qc = _stitch(plan, local, bands, offsets, iou_threshold, workers)
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
        )
        timings["write"] = time.perf_counter() - t3
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        release_memory()
    labels = _open_result(path, dest_store, standalone, label_name)
    log.info("%d objects; seams: %s", n_objects, qc)
    return BlockwiseResult(path, labels, n_objects, plan, qc, timings)


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


def _open_result(path: Path, dest_store: Path, standalone: bool, label_name: str) -> Volume:
    from dls_microscopy.io.zarr_read import open_labels, open_zarr

    return open_zarr(path) if standalone else open_labels(dest_store, label_name)


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
) -> BlockwiseResult:
    """The whole volume is one block: no scratch, no seams; labels written directly.

    Without ``stats`` the segmenter computes them from the block, which is the whole
    volume, so they are the global statistics (and a segmenter may reuse the work,
    e.g. the smoothing, as :class:`~.watershed.WatershedSegmenter` does).
    """
    timings["global_stats"] = 0.0
    t1 = time.perf_counter()
    pixels = np.asarray(image.data.compute(scheduler="synchronous"))
    labels = segmenter.segment(pixels, spacing=image.spacing, stats=stats)
    del pixels
    n_objects = int(labels.max()) if labels.size else 0
    timings["segment"] = time.perf_counter() - t1
    timings["stitch"] = 0.0
    t3 = time.perf_counter()
    final = da.from_array(labels, chunks=_write_grid(labels.shape, budget))
    path = _write(
        final, image, volume, dest_store, standalone, label_name, overwrite, budget, progress,
        workers,
    )  # fmt: skip
    del final, labels
    release_memory()
    timings["write"] = time.perf_counter() - t3
    qc: dict[str, Any] = {
        "faces": 0,
        "merged_pairs": 0,
        "merged_per_axis": dict.fromkeys("zyx", 0),
        "merged_per_face_max": 0,
        "merged_per_face_mean": 0.0,
        "objects_touching_faces": 0,
        "unmatched_touching": 0,
        "min_merge_iou": None,
        "objects_before_stitching": n_objects,
        "objects": n_objects,
    }
    labels_vol = _open_result(path, dest_store, standalone, label_name)
    log.info("%d objects (one block)", n_objects)
    return BlockwiseResult(path, labels_vol, n_objects, plan, qc, timings)


# -- pass 1 ---------------------------------------------------------------------


def _fast_compressor() -> Any:
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=1),)


class _BandStore:
    """Planes next to each face of each block, in the block's local ids, lz4 on disk.

    The band of side ``-1`` of axis ``a`` holds ``halo`` planes before the core then
    ``core`` planes of it; side ``+1`` holds ``core`` planes then ``halo`` planes
    after it.  Stitching reads only these (never the scratch labels).  Shapes and
    plane counts stay in memory: a few numbers per band.
    """

    def __init__(self, root: Path, plan: BlockPlan) -> None:
        import numcodecs

        self.root = root
        root.mkdir()
        self.halo_width = tuple(min(h, MAX_BAND) for h in plan.halo)
        self.core_width = tuple(max(1, w) for w in self.halo_width)
        self._codec = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.BITSHUFFLE)
        self._meta: dict[tuple[tuple[int, ...], int, int], tuple[tuple[int, ...], int, int]] = {}

    def _path(self, index: Sequence[int], axis: int, side: int) -> Path:
        return self.root / f"{'_'.join(map(str, index))}-{axis}{'+' if side > 0 else '-'}.lz4"

    def save(
        self, index: tuple[int, ...], axis: int, side: int, band: np.ndarray, n_halo: int
    ) -> None:
        """Store ``band`` (uint32) with ``n_halo`` halo planes (first or last by ``side``)."""
        band = np.ascontiguousarray(band, dtype=np.uint32)
        self._path(index, axis, side).write_bytes(self._codec.encode(band))
        self._meta[(index, axis, side)] = (band.shape, n_halo, band.shape[axis] - n_halo)

    def load(
        self, index: tuple[int, ...], axis: int, side: int
    ) -> tuple[np.ndarray, int, int] | None:
        """The band, its number of halo planes and of core planes; None if not saved."""
        meta = self._meta.get((index, axis, side))
        if meta is None:
            return None
        shape, n_halo, n_core = meta
        raw = self._codec.decode(self._path(index, axis, side).read_bytes())
        return np.frombuffer(raw, dtype=np.uint32).reshape(shape), n_halo, n_core


def _segment_block(
    blk: Block,
    image: Volume,
    segmenter: BaseSegmenter,
    spacing: tuple[float, ...],
    stats: dict[str, float],
    local: zarr.Array,
    bands: _BandStore,
) -> int:
    pixels = np.asarray(image.data[blk.outer].compute(scheduler="synchronous"))
    labels = segmenter.segment(pixels, spacing=spacing, stats=stats)
    del pixels
    cio = blk.core_in_outer
    # local ids 1..m of the objects present in the core, in order of their ids
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels[cio]] = True
    present[0] = False
    ids = np.flatnonzero(present)
    lut = np.zeros(present.size, dtype=np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    del present
    local[blk.core] = lut[labels[cio]]
    # planes beside each face, in this block's local ids (other objects -> 0)
    for axis in range(labels.ndim):
        wc = min(bands.core_width[axis], cio[axis].stop - cio[axis].start)
        for side in (-1, 1):
            if side < 0:
                n_halo = min(bands.halo_width[axis], cio[axis].start)
                lo, hi = cio[axis].start - n_halo, cio[axis].start + wc
            else:
                n_halo = min(bands.halo_width[axis], labels.shape[axis] - cio[axis].stop)
                lo, hi = cio[axis].stop - wc, cio[axis].stop + n_halo
            sel = list(cio)
            sel[axis] = slice(lo, hi)
            bands.save(blk.index, axis, side, lut[labels[tuple(sel)]], n_halo)
    del labels
    release_memory()
    return int(ids.size)


# -- pass 2 ---------------------------------------------------------------------


def _stitch(
    plan: BlockPlan,
    local: zarr.Array,
    bands: _BandStore,
    offsets: np.ndarray,
    iou_threshold: float,
    workers: int,
) -> tuple[np.ndarray, int, dict[str, Any]]:
    flat = {idx: i for i, idx in enumerate(blk.index for blk in plan)}
    faces = []
    for blk in plan:
        for axis in range(len(plan.grid)):
            if blk.index[axis] + 1 < plan.grid[axis]:
                up = list(blk.index)
                up[axis] += 1
                faces.append((blk, plan.block(up), axis))

    def match(face: tuple[Block, Block, int]) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        lower, upper, axis = face
        got_lo = bands.load(lower.index, axis, +1)
        got_up = bands.load(upper.index, axis, -1)
        assert got_lo is not None and got_up is not None  # every block saves every band
        band_lo, lo_halo, lo_core = got_lo  # [core planes | halo planes] of the lower block
        band_up, up_halo, up_core = got_up  # [halo planes | core planes] of the upper block
        below = min(lo_core, up_halo)  # planes below the face seen by both blocks
        above = min(lo_halo, up_core)
        if below == 0 or above == 0:  # no halo: nothing to match, count the cuts
            n_lo = _count_ids(np.take(band_lo, lo_core - 1, axis=axis))
            n_hi = _count_ids(np.take(band_up, up_halo, axis=axis))
            return np.zeros((0, 2), np.int64), np.zeros(0), n_lo, n_hi, axis
        take_lo = [slice(None)] * band_lo.ndim
        take_lo[axis] = slice(lo_core - below, lo_core + above)
        take_up = [slice(None)] * band_up.ndim
        take_up[axis] = slice(up_halo - below, up_halo + above)
        m = band_matches(
            band_lo[tuple(take_lo)],
            band_up[tuple(take_up)],
            axis=axis,
            width_lower=below,
            iou_threshold=iou_threshold,
        )
        edges = np.stack(
            [
                m.pairs[:, 0] + offsets[flat[lower.index]],
                m.pairs[:, 1] + offsets[flat[upper.index]],
            ],
            axis=1,
        )
        return edges, m.ious, m.touching_lower, m.touching_upper, axis

    results = run_parallel(
        faces, match, workers=workers, description="stitch faces", release_every=32
    )
    edges = [r[0] for r in results]  # type: ignore[index]
    table, n_objects = global_relabel_table(int(offsets[-1]), edges)
    merged_per_axis = [0] * len(plan.grid)
    for r in results:  # type: ignore[union-attr]
        merged_per_axis[r[4]] += len(r[0])
    touching = sum(r[2] + r[3] for r in results)  # type: ignore[union-attr]
    merged = sum(merged_per_axis)
    ious = np.concatenate([r[1] for r in results] or [np.zeros(0)])  # type: ignore[index]
    qc = {
        "faces": len(faces),
        "merged_pairs": merged,
        "merged_per_axis": dict(zip("zyx", merged_per_axis, strict=False)),
        "merged_per_face_max": max((len(r[0]) for r in results), default=0),  # type: ignore[union-attr]
        "merged_per_face_mean": float(merged / len(faces)) if faces else 0.0,
        "objects_touching_faces": int(touching),
        "unmatched_touching": int(max(0, touching - 2 * merged)),
        "min_merge_iou": float(ious.min()) if ious.size else None,
        "objects_before_stitching": int(offsets[-1]),
        "objects": n_objects,
    }
    return table, n_objects, qc


def _count_ids(plane: np.ndarray) -> int:
    ids = np.unique(plane)
    return int(np.count_nonzero(ids))


# -- pass 3 ---------------------------------------------------------------------


def _label_shards(budget: int) -> int | None:
    """Shard edge of the written labels: the writer's default (128³ voxels, 8 MiB of
    uint32).  Unsharded 64³ chunks were tried for budgets under 256 MiB and did not
    lower the peak of a 24 MiB run measurably, so the layout does not depend on it."""
    return None


def _write_grid(shape: Sequence[int], budget: int) -> tuple[int, ...]:
    """The output shard (or chunk) shape of the labels: the unit of one write."""
    from dls_microscopy.io.zarr_write import WriteOptions

    chunks, shards = WriteOptions(shards=_label_shards(budget)).array_layout("zyx", shape)
    return tuple(shards or chunks)


def _relabelled(
    local: zarr.Array, plan: BlockPlan, offsets: np.ndarray, table: np.ndarray, budget: int
) -> da.Array:
    """The final labels, lazily, chunked like the output shards (uint32 or uint64).

    Each chunk reads the local ids of the blocks it overlaps and maps them through
    that block's slice of ``table`` (a lookup on the uint32 ids: no int64 copy).
    """
    chunks = _write_grid(plan.shape, budget)
    dtype = table.dtype

    def lut(flat: int) -> np.ndarray:
        out = table[offsets[flat] : offsets[flat + 1] + 1].copy()
        out[0] = 0
        return out

    def relabel(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        region = block_info[None]["array-location"]  # type: ignore[index]
        out = np.empty(block.shape, dtype=dtype)
        ranges = [
            range(lo // b, -(-hi // b))
            for (lo, hi), b in zip(region, plan.block_shape, strict=True)
        ]
        for index in itertools.product(*ranges):
            sub = tuple(
                slice(max(lo, i * b), min(hi, (i + 1) * b))
                for (lo, hi), i, b in zip(region, index, plan.block_shape, strict=True)
            )
            dst = tuple(
                slice(s.start - lo, s.stop - lo) for s, (lo, _) in zip(sub, region, strict=True)
            )
            ids = local[sub]
            out[dst] = lut(int(np.ravel_multi_index(index, plan.grid)))[ids]
        return out

    template = da.empty(plan.shape, dtype=np.uint8, chunks=chunks)
    return template.map_blocks(relabel, dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def _destination(
    volume: Volume, output: Any, label_name: str, overwrite: bool
) -> tuple[Path, bool]:
    if output is not None:
        out = Path(output)
        if volume.source is not None and out.resolve() == Path(volume.source).resolve():
            output = None
        else:
            if out.exists() and not overwrite:
                raise OutputError("output already exists (use overwrite / --overwrite)", path=out)
            return out, True
    if volume.format != "ome-zarr" or volume.source is None or volume.metadata.get("label"):
        raise InputError(
            "labels can only be written inside an OME-Zarr image; give an output path",
            path=volume.source,
        )
    store = Path(volume.source)
    if not os.access(store, os.W_OK):
        raise OutputError("the OME-Zarr store is not writable; give an output path", path=store)
    if label_name in volume.labels and not overwrite:
        raise OutputError(
            f"label image {label_name!r} already exists (use overwrite / --overwrite)", path=store
        )
    return store, False


def _scratch_parent(dest: Path, standalone: bool) -> Path:
    parent = dest.parent if standalone else dest / "labels"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _write(
    final: da.Array,
    image: Volume,
    volume: Volume,
    dest: Path,
    standalone: bool,
    name: str,
    overwrite: bool,
    memory_budget: int,
    progress: ProgressCallback | None,
    workers: int,
) -> Path:
    from dls_microscopy.io.zarr_write import write_label_image, write_labels

    if standalone:
        source = str(volume.source) if volume.source is not None else None
        return write_label_image(
            final,
            dest,
            spacing=image.spacing,
            source_image=source,
            overwrite=overwrite,
            memory_budget=memory_budget,
            progress=progress,
            workers=workers,
            shards=_label_shards(memory_budget),
        )
    if "t" in volume.axes:
        # NGFF labels carry the image's non-channel axes
        if volume.axis_size("t") > 1:
            raise InputError(
                "labels of one time point cannot go into a time series store; give an output path",
                path=dest,
            )
        final = final[None]
    return write_labels(
        dest,
        name,
        final,
        overwrite=overwrite,
        shards=_label_shards(memory_budget),
        memory_budget=memory_budget,
        progress=progress,
        workers=workers,
    )
