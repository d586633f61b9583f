"""Input validation and block planning of :func:`~dls_microscopy.features.measure.measure_objects`.

Checks of the inputs and parameters, the block plan of pass 1 (:func:`_plan`), the
plan of pass 2 that leaves room for the crop regions (:func:`_crop_plan`), and
reading one region of a numpy or dask input (:func:`_read`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.blocks import BlockPlan, plan_blocks
from dls_microscopy.errors import DimensionalityError, InputError
from dls_microscopy.features.reductions import PartialStats
from dls_microscopy.features.runs import check_label_dtype

# the messages belong to measure_objects: keep its logger
log = logging.getLogger("dls_microscopy.features.measure")

#: Working memory per voxel on top of the inputs (run and foreground temporaries).
_WORK_BYTES_PER_VOXEL = 48
#: Default block size (voxels): temporaries stay below glibc's mmap threshold
#: (32 MiB), so they are reused instead of page-faulted in for every block
#: (measured 2-3x faster than 2**24-voxel blocks).  Also far below 2**27, the
#: size up to which every int64 intermediate is safe from overflow.
_TARGET_BLOCK_VOXELS = 2**22


def _as_array(a: Any) -> Any:
    if a is None or isinstance(a, da.Array):
        return a
    return np.asarray(a)


def _check_inputs(image: Any, labels: Any) -> None:
    check_label_dtype(labels.dtype)
    if labels.ndim != 3:
        raise DimensionalityError(f"labels must be 3D (z, y, x), got shape {tuple(labels.shape)}")
    if image is None:
        return
    if image.ndim not in (3, 4):
        raise DimensionalityError(f"image must be (C, Z, Y, X) or (Z, Y, X), got shape {tuple(image.shape)}")
    if tuple(image.shape[-3:]) != tuple(labels.shape):
        raise InputError(
            f"image and labels differ in shape: image {tuple(image.shape)} (spatial "
            f"{tuple(image.shape[-3:])}) vs labels {tuple(labels.shape)}"
        )
    if np.dtype(image.dtype).kind not in "iufb":
        raise InputError(f"unsupported image dtype {image.dtype}")


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or any(not math.isfinite(s) or s <= 0 for s in sp):
        raise InputError(f"spacing must be 3 positive finite values (µm), got {spacing}")
    return sp  # type: ignore[return-value]


def _channel_names(names: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if names is None:
        return tuple(f"channel_{i}" for i in range(n))
    out = tuple(str(s) for s in names)
    if len(out) != n:
        raise InputError(f"{len(out)} channel name(s) given for {n} channel(s)")
    if len(set(out)) != n:
        raise InputError(f"channel names must be distinct, got {out}")
    return out


def _plan(
    labels: Any, image: Any, *, block_shape: Sequence[int] | None, memory_budget: int, workers: int
) -> BlockPlan:
    shape = tuple(int(s) for s in labels.shape)
    n_ch = 0 if image is None else image.shape[0]
    img_bytes = 0 if image is None else n_ch * np.dtype(image.dtype).itemsize
    bpv = np.dtype(labels.dtype).itemsize + img_bytes + _WORK_BYTES_PER_VOXEL
    if block_shape is not None:
        if len(block_shape) != 3 or any(int(b) < 1 for b in block_shape):
            raise InputError(f"block_shape must be 3 positive integers, got {block_shape}")
        return plan_blocks(shape, halo=(0, 0, 0), grid=(1, 1, 1), block_shape=block_shape)
    if isinstance(labels, da.Array):
        grid = labels.chunksize
    else:  # numpy: whole z-slabs are contiguous views, no copy
        plane = shape[1] * shape[2]
        grid = (1, shape[1], shape[2]) if plane * bpv * 4 <= memory_budget / workers else (1, 256, 256)
    budget = min(int(memory_budget), int(workers * _TARGET_BLOCK_VOXELS * bpv))
    try:
        return plan_blocks(
            shape, halo=(0, 0, 0), grid=grid, memory_budget=budget, bytes_per_voxel=bpv, workers=workers
        )
    except InputError:
        return plan_blocks(
            shape, halo=(0, 0, 0), grid=(1, 1, 1), memory_budget=budget, bytes_per_voxel=bpv, workers=workers
        )


def _crop_plan(
    labels: Any, image: Any, stats: PartialStats, *, memory_budget: int, workers: int
) -> BlockPlan:
    """Blocks of pass 2, whose crop regions (not only the blocks) fit the budget.

    A batch reads the union of its objects' bounding boxes: its block grown by up
    to one object extent.  Planning with a halo of half the 99th-percentile extent
    per axis makes ``block + extent`` fit ``memory_budget / workers``; a larger
    object makes its batch's region larger, by at most that object.
    """
    base = _plan(labels, image, block_shape=None, memory_budget=memory_budget, workers=workers)
    extent = np.asarray(stats.bbox_max - stats.bbox_min, np.float64)
    if not len(extent):
        return base
    typical = np.ceil(np.percentile(extent, 99, axis=0)).astype(np.int64)
    shape = tuple(int(s) for s in labels.shape)
    halo = tuple(int(min(-(-e // 2), s)) for e, s in zip(typical, shape, strict=True))
    n_ch = image.shape[0]
    bpv = np.dtype(labels.dtype).itemsize + n_ch * np.dtype(image.dtype).itemsize + _WORK_BYTES_PER_VOXEL
    budget = min(int(memory_budget), int(workers * _TARGET_BLOCK_VOXELS * bpv))
    grid = labels.chunksize if isinstance(labels, da.Array) else (1, 1, 1)
    for g in (grid, (1, 1, 1)):
        try:
            plan = plan_blocks(
                shape, halo=halo, grid=g, memory_budget=budget, bytes_per_voxel=bpv, workers=workers
            )
        except InputError:
            continue
        log.debug("pass 2: blocks of %s (objects up to %s voxels)", plan.block_shape, tuple(typical))
        return plan
    log.debug(
        "pass 2: objects of %s voxels do not fit the budget; crop regions will exceed it", tuple(typical)
    )
    return base


def _read(array: Any, region: tuple[slice, ...]) -> np.ndarray:
    part = array[region]
    if isinstance(part, da.Array):
        return np.asarray(part.compute(scheduler="synchronous"))
    return part
