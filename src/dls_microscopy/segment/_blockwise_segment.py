"""Pass 1 of :func:`~dls_microscopy.segment.blockwise.segment_blockwise`: one block.

Each block, grown by the segmenter's halo, is segmented; the objects present in its
core are numbered ``1..m`` ("local ids", no cap on objects per block) and the core's
labels go to a scratch zarr.  The thin bands on both sides of each face (core and
halo planes) are kept, lz4-compressed on disk, in a :class:`_BandStore`: stitching
(:mod:`._blockwise_stitch`) reads only them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from dls_microscopy._allocator import release_memory
from dls_microscopy.blocks import Block, BlockPlan
from dls_microscopy.pixels import warn_nonfinite
from dls_microscopy.segment.base import BaseSegmenter
from dls_microscopy.volume import Volume

#: largest band (voxels on each side of a face) used to match objects
MAX_BAND = 8


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

    def save(self, index: tuple[int, ...], axis: int, side: int, band: np.ndarray, n_halo: int) -> None:
        """Store ``band`` (uint32) with ``n_halo`` halo planes (first or last by ``side``)."""
        band = np.ascontiguousarray(band, dtype=np.uint32)
        self._path(index, axis, side).write_bytes(self._codec.encode(band))
        self._meta[(index, axis, side)] = (band.shape, n_halo, band.shape[axis] - n_halo)

    def load(self, index: tuple[int, ...], axis: int, side: int) -> tuple[np.ndarray, int, int] | None:
        """The band, its number of halo planes and of core planes; None if not saved."""
        meta = self._meta.get((index, axis, side))
        if meta is None:
            return None
        shape, n_halo, n_core = meta
        raw = self._codec.decode(self._path(index, axis, side).read_bytes())
        return np.frombuffer(raw, dtype=np.uint32).reshape(shape), n_halo, n_core


def count_nonfinite(pixels: np.ndarray) -> int:
    """The number of NaN/inf values of ``pixels`` (0 for integer data)."""
    return 0 if pixels.dtype.kind != "f" else int(pixels.size - np.count_nonzero(np.isfinite(pixels)))


def warn_nonfinite_pixels(count: int, image: Volume) -> None:
    """Say, once per run, that ``count`` NaN/inf values were segmented as background."""
    if count:
        warn_nonfinite(count, path=image.source, handling="segmented as background (NaN as the lowest value)")


def _segment_block(
    blk: Block,
    image: Volume,
    segmenter: BaseSegmenter,
    spacing: tuple[float, ...],
    stats: dict[str, float],
    local: zarr.Array,
    bands: _BandStore,
) -> tuple[int, int, int]:
    """Segment one block; write its core's local ids to ``local`` and its bands to ``bands``.

    Parameters
    ----------
    blk : Block
        The block: its outer region (core grown by the halo) is read from ``image``.
    image : Volume
        The (z, y, x) image being segmented.
    segmenter : BaseSegmenter
        Segments the outer region, shape ``blk.outer`` -> labels of the same shape.
    spacing : tuple of float
        Voxel size (z, y, x) in µm.
    stats : dict
        Global statistics passed to the segmenter.
    local : zarr.Array
        Scratch uint32 labels of the whole volume, chunked by block; the core is written.
    bands : _BandStore
        Receives the two bands of each axis.

    Returns
    -------
    m : int
        The number of objects in the core (local ids ``1..m``).
    beyond : int
        Of those, how many reach the block's outer face inside the volume: they are
        larger than the halo covers, so their voxels may differ from a whole-volume
        run (the halo is sized for objects up to 1.5 diameters).
    nonfinite : int
        NaN/inf values in the core, which the segmenter takes as background.
    """
    pixels = np.asarray(image.data[blk.outer].compute(scheduler="synchronous"))
    here: Mapping[str, float] = stats
    # a segmenter written before block_stats joined the contract may lack it
    block_stats = getattr(segmenter, "block_stats", None)
    if block_stats is not None:
        here = block_stats(stats, tuple(sl.start for sl in blk.outer))
    cio = blk.core_in_outer
    nonfinite = count_nonfinite(pixels[cio])  # the core's: halos overlap
    labels = segmenter.segment(pixels, spacing=spacing, stats=here)
    del pixels
    # local ids 1..m of the objects present in the core, in order of their ids
    present = np.zeros(int(labels.max()) + 1, dtype=bool)
    present[labels[cio]] = True
    present[0] = False
    ids = np.flatnonzero(present)
    lut = np.zeros(present.size, dtype=np.uint32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    del present
    local[blk.core] = lut[labels[cio]]
    outer_faces = []
    for axis, (sl, n) in enumerate(zip(blk.outer, image.spatial_shape, strict=True)):
        if sl.start > 0:
            outer_faces.append(np.take(labels, 0, axis=axis).ravel())
        if sl.stop < n:
            outer_faces.append(np.take(labels, -1, axis=axis).ravel())
    beyond = 0
    if outer_faces:
        reached = np.unique(np.concatenate(outer_faces))
        beyond = int(np.count_nonzero(lut[reached]))
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
    return int(ids.size), beyond, nonfinite
