"""Blockwise segmentation of volumes of any size, with seam-correct stitching.

Three passes, memory bounded by the block plan:

1. **Segment** every block grown by the segmenter's halo; keep the core's
   labels (numbered ``1..m`` per block, no cap on objects per block) in a
   scratch zarr and the thin halo bands next to each face on disk.
2. **Stitch**: for every face, objects of the two blocks whose IoU over the
   band around the face reaches ``iou_threshold`` are merged; connected
   components give the final, consecutive ids (see :mod:`.stitch`).
3. **Write** the relabelled labels, chunk by chunk, as an NGFF label image
   with its pyramid (inside the input OME-Zarr, or as a separate store).
"""

from __future__ import annotations

import dataclasses
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

from dls_microscopy.blocks import Block, BlockPlan, ProgressCallback, plan_blocks, run_parallel
from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.segment.base import BaseSegmenter
from dls_microscopy.segment.stitch import band_matches, global_relabel_table
from dls_microscopy.volume import Volume

__all__ = ["BlockwiseResult", "segment_blockwise", "select_image"]

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
    image = select_image(volume, channel=channel, time_point=time_point)
    spacing = image.spacing
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dest_store, standalone = _destination(volume, output, label_name, overwrite)
    if workers is None:
        workers = 1 if segmenter.device != "cpu" else max(1, min(8, os.cpu_count() or 1))
    halo = tuple(int(h) for h in segmenter.halo(spacing))
    plan = plan_blocks(
        image.spatial_shape,
        halo=halo,
        grid=(16, 16, 16),
        memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET,
        bytes_per_voxel=float(getattr(segmenter, "bytes_per_voxel", 40.0)),
        workers=workers,
        block_shape=block_shape,
    )
    log.info(
        "segmenting %s with %s: %d blocks of %s, halo %s",
        image.source,
        segmenter.name,
        plan.n_blocks,
        plan.block_shape,
        halo,
    )
    if stats is None:
        stats = segmenter.global_stats(image.data, spacing=spacing)
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
            workers=workers,
            progress=progress,
            description="segment blocks",
        )
        timings["segment"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        table, n_objects, qc = _stitch(plan, local, bands, offsets, iou_threshold, workers)
        timings["stitch"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        final = _relabelled(local, plan, offsets, table)
        path = _write(
            final,
            image,
            volume,
            dest_store,
            standalone,
            label_name,
            overwrite,
            memory_budget or DEFAULT_MEMORY_BUDGET,
            progress,
            workers,
        )
        timings["write"] = time.perf_counter() - t3
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    from dls_microscopy.io.zarr_read import open_labels, open_zarr

    labels = open_zarr(path) if standalone else open_labels(dest_store, label_name)
    log.info("%d objects; seams: %s", n_objects, qc)
    return BlockwiseResult(path, labels, n_objects, plan, qc, timings)


# -- pass 1 ---------------------------------------------------------------------


def _fast_compressor() -> Any:
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=1),)


class _BandStore:
    """Halo bands next to each face, one compressed .npy per (block, axis, side)."""

    def __init__(self, root: Path, plan: BlockPlan) -> None:
        self.root = root
        root.mkdir()
        self.width = tuple(
            min(h, MAX_BAND, b) for h, b in zip(plan.halo, plan.block_shape, strict=True)
        )

    def _path(self, index: Sequence[int], axis: int, side: int) -> Path:
        return self.root / f"{'_'.join(map(str, index))}-{axis}{'+' if side > 0 else '-'}.npz"

    def save(self, index: Sequence[int], axis: int, side: int, band: np.ndarray) -> None:
        np.savez_compressed(self._path(index, axis, side), band=band)

    def load(self, index: Sequence[int], axis: int, side: int) -> np.ndarray | None:
        p = self._path(index, axis, side)
        if not p.exists():
            return None
        with np.load(p) as f:
            return f["band"]


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
    core = labels[blk.core_in_outer]
    ids = np.unique(core)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    local[blk.core] = lut[core]
    # halo bands beside each face, in this block's local ids (other objects → 0)
    cio = blk.core_in_outer
    for axis, w in enumerate(bands.width):
        if w == 0:
            continue
        for side in (-1, 1):
            if side < 0:
                lo = max(0, cio[axis].start - w)
                hi = cio[axis].start
            else:
                lo = cio[axis].stop
                hi = min(labels.shape[axis], cio[axis].stop + w)
            if hi <= lo:
                continue
            sel = list(cio)
            sel[axis] = slice(lo, hi)
            bands.save(blk.index, axis, side, lut[labels[tuple(sel)]])
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
        w = bands.width[axis]
        lower_halo = bands.load(lower.index, axis, +1)
        upper_halo = bands.load(upper.index, axis, -1)
        if lower_halo is None or upper_halo is None:  # no halo: nothing to match, count cuts
            lo_face, hi_face = list(lower.core), list(upper.core)
            lo_face[axis] = slice(lower.core[axis].stop - 1, lower.core[axis].stop)
            hi_face[axis] = slice(upper.core[axis].start, upper.core[axis].start + 1)
            n_lo = np.count_nonzero(np.unique(local[tuple(lo_face)]))
            n_hi = np.count_nonzero(np.unique(local[tuple(hi_face)]))
            return np.zeros((0, 2), np.int64), np.zeros(0), n_lo, n_hi, axis
        w_lo = min(w, lower.core[axis].stop - lower.core[axis].start, upper_halo.shape[axis])
        w_hi = min(w, upper.core[axis].stop - upper.core[axis].start, lower_halo.shape[axis])
        lo_core = list(lower.core)
        lo_core[axis] = slice(lower.core[axis].stop - w_lo, lower.core[axis].stop)
        hi_core = list(upper.core)
        hi_core[axis] = slice(upper.core[axis].start, upper.core[axis].start + w_hi)
        take_lo = [slice(None)] * lower_halo.ndim
        take_lo[axis] = slice(0, w_hi)
        take_up = [slice(None)] * upper_halo.ndim
        take_up[axis] = slice(upper_halo.shape[axis] - w_lo, upper_halo.shape[axis])
        band_lower = np.concatenate([local[tuple(lo_core)], lower_halo[tuple(take_lo)]], axis=axis)
        band_upper = np.concatenate([upper_halo[tuple(take_up)], local[tuple(hi_core)]], axis=axis)
        m = band_matches(
            band_lower, band_upper, axis=axis, width_lower=w_lo, iou_threshold=iou_threshold
        )
        edges = np.stack(
            [
                m.pairs[:, 0] + offsets[flat[lower.index]],
                m.pairs[:, 1] + offsets[flat[upper.index]],
            ],
            axis=1,
        )
        return edges, m.ious, m.touching_lower, m.touching_upper, axis

    results = run_parallel(faces, match, workers=workers, description="stitch faces")
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


# -- pass 3 ---------------------------------------------------------------------


def _relabelled(
    local: zarr.Array, plan: BlockPlan, offsets: np.ndarray, table: np.ndarray
) -> da.Array:
    src = da.from_zarr(local, chunks=plan.block_shape)
    grid = plan.grid

    def relabel(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        loc = block_info[0]["chunk-location"]  # type: ignore[index]
        flat = int(np.ravel_multi_index(loc, grid))
        out = table[offsets[flat] + block.astype(np.int64)]
        out[block == 0] = 0
        return out

    return src.map_blocks(relabel, dtype=table.dtype)


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
        memory_budget=memory_budget,
        progress=progress,
        workers=workers,
    )
