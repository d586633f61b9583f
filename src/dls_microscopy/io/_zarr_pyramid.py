"""Multiscale writing: a source and its downsampled levels, block by block, in parallel.

Level 0 is computed from the (lazy) source; every further level is computed
from the level just written, read back block by block, so memory stays near
the block size whatever the volume's size.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable, Sequence
from typing import Literal

import dask.array as da
import numpy as np
import zarr

from dls_microscopy.blocks import ProgressCallback, run_parallel
from dls_microscopy.io._zarr_layout import WriteOptions, block_shape_for, iter_blocks
from dls_microscopy.io.pyramid import downsample_block

__all__ = ["write_multiscale"]


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def write_multiscale(
    group: zarr.Group,
    source: da.Array,
    *,
    axes: str,
    factors: Sequence[Sequence[int]],
    options: WriteOptions,
    method: Literal["mean", "nearest"],
    memory_budget: int,
    progress: ProgressCallback | None,
    label: str,
    workers: int | None = None,
) -> tuple[list[tuple[int, ...]], int]:
    """Write ``source`` and its pyramid as arrays ``"0"``, ``"1"``... of ``group``.

    Returns the shape of every level and the number of non-finite values seen.
    """
    workers = workers or _default_workers()
    # zarr matches a dtype by its numpy class: tifffile's 64-bit integers are longlong ('q'),
    # which on Linux is not the int64 class ('l') zarr knows; the dtype's string names the latter
    dtype = np.dtype(source.dtype.str)
    spatial_idx = [i for i, a in enumerate(axes) if a in "zyx"]
    shapes: list[tuple[int, ...]] = []
    nonfinite = 0
    prev: zarr.Array | None = None
    prev_factor: Sequence[int] | None = None
    for level, fac in enumerate(factors):
        shape = list(source.shape)
        for i, f in zip(spatial_idx, fac, strict=True):
            shape[i] = -(-source.shape[i] // f)
        chunks, shards = options.array_layout(axes, shape)
        arr = group.create_array(
            name=str(level),
            shape=tuple(shape),
            dtype=dtype,
            chunks=chunks,
            shards=shards,
            compressors=options.compressors(),
            fill_value=0,
            dimension_names=tuple(axes) if options.zarr_format == 3 else None,
            chunk_key_encoding=({"name": "v2", "separator": "/"} if options.zarr_format == 2 else None),
            config={"write_empty_chunks": True},
        )
        grid = shards or chunks
        # a region is held ~4 times while written (source chunks, their concatenation,
        # the shard being encoded and its compressed bytes): the budget is split 8 ways
        # per writer, which keeps the write pass near half of it, and with fewer writers
        # where the budget holds few whole shards (a region is at least one shard)
        grid_bytes = math.prod(grid) * dtype.itemsize
        level_workers = max(1, min(workers, memory_budget // (8 * grid_bytes)))
        per_block = max(memory_budget // (level_workers * 8), grid_bytes)
        block = block_shape_for(shape, grid, dtype.itemsize, per_block)
        regions = list(iter_blocks(shape, block))
        if prev is None:
            work = _level0_writer(source, arr)
        else:
            step = [1] * len(shape)
            for i, f, pf in zip(spatial_idx, fac, prev_factor, strict=True):  # type: ignore[arg-type]
                step[i] = f // pf
            work = _downsample_writer(prev, arr, step, method)
        nonfinite += run_parallel(
            regions,
            work,
            workers=level_workers,
            progress=progress,
            description=f"{label} level {level}",
            combine=operator.add,
            initial=0,
        )
        shapes.append(tuple(shape))
        prev, prev_factor = arr, fac
    return shapes, nonfinite


def _count_nonfinite(block: np.ndarray) -> int:
    return int(block.size - np.count_nonzero(np.isfinite(block))) if block.dtype.kind == "f" else 0


def _level0_writer(source: da.Array, target: zarr.Array) -> Callable[[tuple[slice, ...]], int]:
    def work(region: tuple[slice, ...]) -> int:
        block = np.asarray(source[region].compute(scheduler="synchronous"))
        target[region] = block
        return _count_nonfinite(block)

    return work


def _downsample_writer(
    prev: zarr.Array,
    target: zarr.Array,
    step: Sequence[int],
    method: str,
    slab_bytes: int = 16 * 2**20,
) -> Callable[[tuple[slice, ...]], int]:
    """Writer of one output block, computed from ``prev`` in slabs of at most ``slab_bytes`` input.

    The output block is a whole shard (safe to write concurrently), but its
    input is ``prod(step)`` times larger: reading it in slabs along the first
    axis longer than 1 keeps memory near one shard.
    """
    itemsize = prev.dtype.itemsize
    if method == "nearest":
        # the first voxel of each box: a strided read holds only the output block
        def nearest(region: tuple[slice, ...]) -> int:
            src = tuple(
                slice(r.start * s, min(r.stop * s, n), s)
                for r, s, n in zip(region, step, prev.shape, strict=True)
            )
            target[region] = np.asarray(prev[src])
            return 0

        return nearest

    def work(region: tuple[slice, ...]) -> int:
        out = np.empty([r.stop - r.start for r in region], dtype=target.dtype)
        axis = next((i for i, r in enumerate(region) if r.stop - r.start > 1), 0)
        per_plane = (
            math.prod(
                (r.stop - r.start) * s for i, (r, s) in enumerate(zip(region, step, strict=True)) if i != axis
            )
            * itemsize
            * step[axis]
            * 3
        )  # input, float copy, padding
        # slabs a whole number of source chunks thick: each chunk is decoded once
        src_chunk = prev.chunks[axis]  # inner chunk: the unit of decoding, also in shards
        planes_per_chunk = max(1, src_chunk // step[axis])
        thick = max(1, slab_bytes // max(per_plane, 1))
        thick = max(planes_per_chunk, thick // planes_per_chunk * planes_per_chunk)
        for lo in range(region[axis].start, region[axis].stop, thick):
            sub = list(region)
            sub[axis] = slice(lo, min(lo + thick, region[axis].stop))
            src_region = tuple(
                slice(r.start * s, min(r.stop * s, n)) for r, s, n in zip(sub, step, prev.shape, strict=True)
            )
            block = downsample_block(np.asarray(prev[src_region]), step, method=method)
            dst = [slice(None)] * len(region)
            dst[axis] = slice(lo - region[axis].start, sub[axis].stop - region[axis].start)
            out[tuple(dst)] = block
        target[region] = out
        return 0

    return work


def _level_scales(axes: str, spacing: Sequence[float], factors: Sequence[Sequence[int]]) -> list[list[float]]:
    out = []
    for fac in factors:
        it_sp, it_f = iter(spacing), iter(fac)
        out.append([next(it_sp) * next(it_f) if a in "zyx" else 1.0 for a in axes])
    return out


def _factors_from_levels(level_shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    base = level_shapes[0]
    return [tuple(max(1, round(b / s)) for b, s in zip(base, shape, strict=True)) for shape in level_shapes]
