"""Object index: a table of object id → bounding box, built block by block.

Per-object work (meshes, descriptors) reads each object's bounding-box crop
lazily; this table is what makes that streaming.  It is built in one pass over
blocks of the labels volume: each block yields the ids present and their boxes
(:func:`scipy.ndimage.find_objects` on the block, after renumbering when ids are
large or sparse, so uint64 ids never size an array), and the per-block tables are
merged by id with vectorised minimum/maximum reductions.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dask.array as da
import fastremap
import numpy as np
from scipy import ndimage

from dls_microscopy.blocks import Block, BlockPlan, ProgressCallback, plan_blocks
from dls_microscopy.errors import DimensionalityError, InputError
from dls_microscopy.volume import Volume

__all__ = ["LabelSource", "ObjectIndex", "as_label_source", "build_object_index"]

log = logging.getLogger(__name__)

#: Default memory for one block of labels and its working copies, bytes.
DEFAULT_BLOCK_BUDGET = 256 * 2**20
#: Bytes per voxel assumed for a block: the labels, zmesh's padded copy, its work arrays.
BYTES_PER_VOXEL = 24.0
#: Up to this largest id, the ids present are read from find_objects' list, not a voxel pass.
_LOOP_IDS = 1 << 16
#: Blocks whose largest id is below this fraction of their size use find_objects directly.
_DIRECT_ID_FACTOR = 0.25


@dataclasses.dataclass(frozen=True, eq=False)
class LabelSource:
    """A 3D labels array (lazy or in memory) with its spacing and a block plan.

    Attributes
    ----------
    data : dask.array.Array or ndarray
        ``(Z, Y, X)`` integer labels; 0 is background.  Dask arrays are read
        block by block; an ndarray is sliced without copies where possible.
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in µm.
    plan : BlockPlan
        Blocks (no halo) aligned to the chunks of ``data``.
    """

    data: da.Array | np.ndarray
    spacing: tuple[float, float, float]
    plan: BlockPlan

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def read(self, region: Sequence[slice], *, contiguous: bool = True) -> np.ndarray:
        """Read ``region`` as an unsigned integer array (``bool`` → ``uint8``).

        Parameters
        ----------
        region : sequence of 3 slice
        contiguous : bool
            Return a C-contiguous array; ``False`` lets an in-memory source
            return a view (no copy).

        Raises
        ------
        InputError
            When the region holds negative labels.
        """
        part = self.data[tuple(region)]
        if isinstance(part, da.Array):
            part = part.compute()
        return _as_unsigned(np.ascontiguousarray(part) if contiguous else np.asarray(part))

    def read_padded(self, region: Sequence[slice]) -> np.ndarray:
        """Read ``region`` into a zero-filled array one voxel larger on every side.

        The padded block is what a mesher needs to close surfaces at the block
        faces; reading straight into it saves a copy of the block.

        Returns
        -------
        (Z + 2, Y + 2, X + 2) ndarray of unsigned int
            C-contiguous, ``bool`` labels as ``uint8``.

        Raises
        ------
        InputError
            When the region holds negative labels.
        """
        part = self.read(region, contiguous=False)  # copied once, into the padded block
        out = np.zeros(tuple(s + 2 for s in part.shape), part.dtype)
        out[1:-1, 1:-1, 1:-1] = part
        return out


def _as_unsigned(block: np.ndarray) -> np.ndarray:
    if block.dtype == bool:
        return block.view(np.uint8)
    if block.dtype.kind == "i":
        if block.size and block.min() < 0:
            raise InputError("labels must be non-negative integers (found negative values)")
        return block.view(block.dtype.str.replace("i", "u"))
    return block


def as_label_source(
    labels: Volume | da.Array | np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    block_shape: Sequence[int] | None = None,
    memory_budget: int = DEFAULT_BLOCK_BUDGET,
) -> LabelSource:
    """Check a labels volume and plan its blocks.

    Parameters
    ----------
    labels : Volume, dask array or ndarray
        ``(Z, Y, X)`` integer (or bool) labels.  A :class:`Volume` must have
        spatial axes ``"zyx"`` only (select a channel / time point first).
    spacing : sequence of 3 float, optional
        ``(dz, dy, dx)`` in µm; required for arrays, defaults to the
        volume's spacing for a :class:`Volume`.
    block_shape : sequence of 3 int, optional
        Block core shape (rounded up to whole chunks); default from ``memory_budget``.
    memory_budget : int
        Bytes one block may use (labels plus meshing work arrays).

    Raises
    ------
    InputError
        Non-integer labels, missing or invalid spacing.
    DimensionalityError
        Labels that are not 3D.
    """
    path = None
    if isinstance(labels, Volume):
        path = labels.source
        if labels.axes != "zyx":
            raise DimensionalityError(
                f"labels must have axes 'zyx', got {labels.axes!r}; select a channel/time point",
                path=path,
            )
        spacing = labels.spacing if spacing is None else spacing
        data = labels.data
    else:
        data = labels if isinstance(labels, da.Array) else np.asarray(labels)
    if data.ndim != 3:
        raise DimensionalityError(f"labels must be 3D (Z, Y, X), got shape {data.shape}", path=path)
    if any(s == 0 for s in data.shape):
        raise DimensionalityError(f"labels have an empty axis: shape {data.shape}", path=path)
    if data.dtype != bool and data.dtype.kind not in "ui":
        raise InputError(f"labels must be integer or bool, got dtype {data.dtype}", path=path)
    if spacing is None:
        raise InputError("spacing (dz, dy, dx) in µm is required for array labels")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"spacing must be 3 positive finite numbers (µm), got {tuple(spacing)}")
    if isinstance(data, da.Array):
        grid = tuple(int(c[0]) for c in data.chunks)
    else:  # in memory: no chunks to respect
        grid = (1, 1, 1) if block_shape is not None else _default_chunks(data.shape)
    itemsize = max(np.dtype(data.dtype).itemsize, 1)
    options = {
        "halo": (0, 0, 0),
        "block_shape": block_shape,
        "memory_budget": None if block_shape is not None else memory_budget,
        "bytes_per_voxel": BYTES_PER_VOXEL + 2 * itemsize,
    }
    try:
        plan = plan_blocks(data.shape, grid=grid, **options)
    except InputError:
        if grid == (1, 1, 1):
            raise
        # A dask chunk larger than the budget (readers may group many storage chunks
        # into one, e.g. a whole z-stack of a small image): split it.  Blocks then read
        # parts of a chunk, which dask slices lazily; memory follows the budget.
        log.debug("labels chunks %s exceed the block budget: blocks split them", grid)
        plan = plan_blocks(data.shape, grid=(1, 1, 1), **options)
    return LabelSource(data=data, spacing=sp, plan=plan)  # type: ignore[arg-type]


def _default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(min(int(s), c) for s, c in zip(shape, (16, 64, 64), strict=False))


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectIndex:
    """Bounding boxes of all objects of a labels volume, sorted by id.

    Attributes
    ----------
    ids : (N,) ndarray of uint64
        Object ids, ascending, background (0) excluded.
    lo, hi : (N, 3) ndarray of int64
        Bounding box of each object in voxels, ``lo`` inclusive and ``hi``
        exclusive, axes ``(z, y, x)``.
    shape : tuple of 3 int
        Shape of the labels volume.
    """

    ids: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return int(self.ids.size)

    def bbox(self, object_id: int) -> tuple[slice, slice, slice]:
        """The bounding box of ``object_id`` as slices.

        Raises
        ------
        InputError
            When the id is not in the index.
        """
        i = int(np.searchsorted(self.ids, np.uint64(object_id)))
        if i >= self.ids.size or int(self.ids[i]) != int(object_id):
            raise InputError(f"object {object_id} is not in the labels")
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lo[i], self.hi[i], strict=True))  # type: ignore[return-value]

    def within(self, block: Block) -> np.ndarray:
        """Boolean mask ``(N,)`` of objects whose box lies inside ``block.core``."""
        blo = np.array([s.start for s in block.core])
        bhi = np.array([s.stop for s in block.core])
        return np.all((self.lo >= blo) & (self.hi <= bhi), axis=1)

    def overlapping(self, block: Block) -> np.ndarray:
        """Boolean mask ``(N,)`` of objects whose box intersects ``block.core``."""
        blo = np.array([s.start for s in block.core])
        bhi = np.array([s.stop for s in block.core])
        return np.all((self.lo < bhi) & (self.hi > blo), axis=1)


def block_boxes(block: np.ndarray, origin: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids and bounding boxes of the objects in one block.

    Parameters
    ----------
    block : (Z, Y, X) ndarray of unsigned int
        Labels of the block.
    origin : sequence of 3 int
        Position of the block's first voxel in the volume.

    Returns
    -------
    ids : (n,) ndarray of uint64
    lo, hi : (n, 3) ndarray of int64
        Boxes in volume coordinates (``hi`` exclusive).
    """
    top = int(block.max(initial=0))
    if top == 0:
        empty = np.zeros((0, 3), np.int64)
        return np.zeros(0, np.uint64), empty, empty
    if top <= _DIRECT_ID_FACTOR * block.size:
        boxes = ndimage.find_objects(block, max_label=top)
        if top <= _LOOP_IDS:  # cheaper than a pass over the voxels
            ids = np.array([i for i, b in enumerate(boxes, start=1) if b is not None], np.int64)
        else:
            ids = np.asarray(fastremap.unique(block), dtype=np.int64)
            ids = ids[ids != 0]
        slices = [boxes[i - 1] for i in ids]
    else:  # large or sparse ids: renumber so that no array is sized by an id
        block = np.ascontiguousarray(block)
        renumbered, mapping = fastremap.renumber(block, preserve_zero=True, in_place=False)
        boxes = ndimage.find_objects(renumbered)
        pairs = sorted((int(k), int(v)) for k, v in mapping.items() if int(k) != 0)
        ids = np.array([k for k, _ in pairs], dtype=np.uint64)
        slices = [boxes[v - 1] for _, v in pairs]
    ids = np.asarray(ids, dtype=np.uint64)
    lo = np.array([[s.start for s in sl] for sl in slices], dtype=np.int64) + np.asarray(origin)
    hi = np.array([[s.stop for s in sl] for sl in slices], dtype=np.int64) + np.asarray(origin)
    return ids, lo, hi


def merge_boxes(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: Sequence[int]
) -> ObjectIndex:
    """Merge per-block ``(ids, lo, hi)`` tables into one :class:`ObjectIndex`."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        empty = np.zeros((0, 3), np.int64)
        return ObjectIndex(np.zeros(0, np.uint64), empty, empty.copy(), tuple(shape))  # type: ignore[arg-type]
    ids = np.concatenate([p[0] for p in parts])
    lo = np.concatenate([p[1] for p in parts])
    hi = np.concatenate([p[2] for p in parts])
    uniq, inverse = np.unique(ids, return_inverse=True)
    out_lo = np.full((uniq.size, 3), np.iinfo(np.int64).max, np.int64)
    out_hi = np.full((uniq.size, 3), -1, np.int64)
    np.minimum.at(out_lo, inverse, lo)
    np.maximum.at(out_hi, inverse, hi)
    return ObjectIndex(uniq.astype(np.uint64), out_lo, out_hi, tuple(int(s) for s in shape))  # type: ignore[arg-type]


def iter_blocks(
    source: LabelSource, *, prefetch: int = 1, padded: bool = False, contiguous: bool = True
) -> Iterator[tuple[Block, np.ndarray]]:
    """Yield ``(block, labels)`` in raster order, reading ``prefetch`` blocks ahead in a thread.

    With ``padded`` the labels come zero-padded by one voxel on every side
    (:meth:`LabelSource.read_padded`); ``contiguous=False`` allows views of an
    in-memory source (:meth:`LabelSource.read`).
    """
    import concurrent.futures as cf

    if padded:
        read = source.read_padded
    else:
        read = functools.partial(source.read, contiguous=contiguous)
    blocks = list(source.plan)
    with cf.ThreadPoolExecutor(max_workers=1) as pool:
        pending: list[tuple[Block, cf.Future[np.ndarray]]] = []
        it = iter(blocks)
        for _ in range(prefetch + 1):
            b = next(it, None)
            if b is not None:
                pending.append((b, pool.submit(read, b.core)))
        while pending:
            block, fut = pending.pop(0)
            data = fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read, nxt.core)))
            yield block, data


def build_object_index(
    labels: LabelSource | Volume | da.Array | np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    **plan_options: Any,
) -> ObjectIndex:
    """Find every object's bounding box in one blockwise pass.

    Parameters
    ----------
    labels : LabelSource, Volume, dask array or ndarray
        ``(Z, Y, X)`` integer labels (any size: read block by block).
    spacing : sequence of 3 float, optional
        See :func:`as_label_source` (only checked here).
    progress : callable, optional
        ``progress("index", done, total)`` per block.
    **plan_options
        ``block_shape`` or ``memory_budget`` for :func:`as_label_source`.

    Returns
    -------
    ObjectIndex

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((4, 5, 6), np.uint64); lab[1:3, 2:4, 0] = 2**60
    >>> index = build_object_index(lab, spacing=(1, 1, 1))
    >>> int(index.ids[0]) == 2**60, index.bbox(2**60)
    (True, (slice(1, 3, None), slice(2, 4, None), slice(0, 1, None)))
    """
    source = (
        labels
        if isinstance(labels, LabelSource)
        else as_label_source(
            labels, spacing=spacing if spacing is not None else _unit_spacing(labels), **plan_options
        )
    )
    total = source.plan.n_blocks
    parts = []
    if progress:
        progress("index", 0, total)
    for done, (block, data) in enumerate(iter_blocks(source, contiguous=False), start=1):
        parts.append(block_boxes(data, [s.start for s in block.core]))
        if progress:
            progress("index", done, total)
    index = merge_boxes(parts, source.shape)
    log.info("indexed %d objects in %d blocks of %s", len(index), total, source.plan.block_shape)
    return index


def _unit_spacing(labels: Any) -> tuple[float, ...] | None:
    """Spacing does not matter for the index: arrays get 1 µm, volumes keep theirs."""
    return None if isinstance(labels, Volume) else (1.0, 1.0, 1.0)
