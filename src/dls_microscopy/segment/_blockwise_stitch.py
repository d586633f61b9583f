"""Pass 2 of :func:`~dls_microscopy.segment.blockwise.segment_blockwise`: stitch the faces.

For every face between two blocks, the bands saved in pass 1
(:class:`~._blockwise_segment._BandStore`) are matched with
:func:`~.stitch.band_matches`; the matches of all faces give the global relabel
table (:func:`~.stitch.global_relabel_table`) and the seam quality-control numbers.
Only the bands are read, never the scratch labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from dls_microscopy.blocks import Block, BlockPlan, run_parallel
from dls_microscopy.segment._blockwise_segment import _BandStore
from dls_microscopy.segment.stitch import band_matches, global_relabel_table


def _stitch(
    plan: BlockPlan,
    local: zarr.Array,
    bands: _BandStore,
    offsets: np.ndarray,
    iou_threshold: float,
    workers: int,
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Match the objects across every face between two blocks and relabel them globally.

    Parameters
    ----------
    plan : BlockPlan
        The blocks.
    local : zarr.Array
        Scratch labels of pass 1 (not read: only ``bands`` are).
    bands : _BandStore
        The bands saved in pass 1.
    offsets : (n_blocks + 1,) int64 ndarray
        Global node id of local id 0 of each block, in plan order; ``offsets[-1]`` is the
        number of objects before stitching.
    iou_threshold : float
        Band IoU at which two objects are the same.
    workers : int
        Faces matched at once.

    Returns
    -------
    table : (offsets[-1] + 1,) ndarray
        Final id of each global node id (0 -> 0).
    n_objects : int
        Objects after stitching.
    qc : dict
        Seam quality control (see :class:`~.blockwise.BlockwiseResult`).
    """
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

    results = run_parallel(faces, match, workers=workers, description="stitch faces", release_every=32)
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
    """Number of distinct non-zero ids in ``plane``."""
    ids = np.unique(plane)
    return int(np.count_nonzero(ids))
