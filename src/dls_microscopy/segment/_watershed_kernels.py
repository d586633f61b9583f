"""Compiled (numba) kernels of the CPU watershed: drainage, basin edges, merge and labels.

Why hand-written loops rather than a library: no maintained package offers
steepest-ascent drainage into basins with a basin adjacency graph (scikit-image's
``watershed`` floods from markers, which is the 5x slower baseline we measure
against).  The numpy formulation of the same steps
(:func:`~dls_microscopy.segment._watershed_numpy._drain_numpy`,
:func:`~dls_microscopy.segment._watershed_shared._merge_numpy` and
:func:`~dls_microscopy.segment._watershed_shared._labels_numpy`) makes a dozen
full-volume passes and temporaries, and the merge is a Python loop over the edges;
these loops make one or two passes each and give **identical** results (the same
float operations in the same order; tested in
``tests/segment/test_watershed_kernels.py``).  On the 1 Mvox real crop of the
benchmark, drainage, merge and labels take ~19 ms instead of ~40 ms.

Kernels are compiled on first use and cached on disk (``cache=True``: numba keeps
the machine code next to this file, or in its per-user cache directory when that
is read-only), so only the first call on a machine pays the ~3 s of compilation.
They release the GIL (``nogil=True``), so that :func:`_in_threads
<dls_microscopy.segment._watershed_cpu._in_threads>` can run ranges in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "basin_edges",
    "index_foreground",
    "labels_from_objects",
    "merge_basins",
    "resolve_roots",
    "steepest_parent",
]

_jit = numba.njit(cache=True, nogil=True)


@_jit
def index_foreground(fpad, lo, hi, ppos, cmap):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Fill ``ppos`` (M,) with the flat indices of the foreground voxels (``fpad > -inf``)
    in ``[lo, hi)``, in C order, and ``cmap`` (len(fpad),) with each voxel's rank among
    them, -1 elsewhere.  ``ppos`` must have exactly M entries."""
    cmap[:lo] = -1
    cmap[hi:] = -1
    m = 0
    for p in range(lo, hi):
        if fpad[p] > -np.inf:
            cmap[p] = m
            ppos[m] = p
            m += 1
        else:
            cmap[p] = -1


@_jit
def steepest_parent(fpad, ppos, cmap, offsets, scales, positive, parent, start, stop):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``parent[i]`` for ``i`` in ``[start, stop)``: the rank of the neighbour of steepest
    ascent of foreground voxel ``i``, or ``i`` itself at a maximum.

    The slope towards neighbour ``k`` is ``(f[n] - f[p]) * scales[k]`` in float32;
    the first of equal slopes wins; a zero slope goes uphill only towards a later
    voxel in C order (``positive[k]``), which makes plateaus drain to one end.
    """
    for i in range(start, stop):
        p = ppos[i]
        c = fpad[p]
        best = (fpad[p + offsets[0]] - c) * scales[0]
        d = 0
        for k in range(1, offsets.shape[0]):
            s = (fpad[p + offsets[k]] - c) * scales[k]
            if s > best:
                best = s
                d = k
        if best > 0 or (best == 0 and positive[d]):
            parent[i] = cmap[p + offsets[d]]
        else:
            parent[i] = i


@_jit
def resolve_roots(parent, ppos, basin):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Basin of every foreground voxel; returns the roots' flat indices (B,) int64.

    ``parent`` (M,) is overwritten with each voxel's root (union-find with path
    compression); basins are numbered in the C order of their roots into ``basin``.
    """
    m = parent.shape[0]
    for i in range(m):
        r = i
        while parent[r] != r:
            r = parent[r]
        j = i
        while parent[j] != r:
            nxt = parent[j]
            parent[j] = r
            j = nxt
    n_roots = 0
    for i in range(m):
        if parent[i] == i:
            n_roots += 1
    roots = np.empty(n_roots, np.int64)
    k = 0
    for i in range(m):
        if parent[i] == i:
            basin[i] = k  # a root's number, read below through parent[] by its members
            roots[k] = ppos[i]
            k += 1
    for i in range(m):
        basin[i] = basin[parent[i]]
    return roots


@_jit
def basin_edges(fpad, ppos, basin, cmap, strides, start, stop):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The pairs of face-neighbouring foreground voxels in different basins, from the
    voxels ``[start, stop)`` (ranks) towards their neighbours at ``+strides[ax]``.

    Returns ``(a, b, saddle)`` (E,) each: the two basins and the lower of the two
    voxels' ``f``.  Counted first, so that the outputs are allocated once.  The
    order of the pairs does not matter to the caller (:func:`_unique_edges
    <dls_microscopy.segment._watershed_shared._unique_edges>` gives one order).
    """
    n = 0
    for ax in range(strides.shape[0]):
        off = strides[ax]
        for i in range(start, stop):
            j = cmap[ppos[i] + off]
            if j >= 0 and basin[j] != basin[i]:
                n += 1
    ea = np.empty(n, basin.dtype)
    eb = np.empty(n, basin.dtype)
    sd = np.empty(n, fpad.dtype)
    n = 0
    for ax in range(strides.shape[0]):
        off = strides[ax]
        for i in range(start, stop):
            p = ppos[i]
            j = cmap[p + off]
            if j >= 0 and basin[j] != basin[i]:
                ea[n] = basin[i]
                eb[n] = basin[j]
                sd[n] = min(fpad[p], fpad[p + off])
                n += 1
    return ea, eb, sd


@_jit
def labels_from_objects(mask, basin, objects, value, use_surface, level, background, min_voxels, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Labels 1..N into ``out`` (zeros, flat like ``mask``), numbered by first voxel in C order.

    ``mask`` (V,) bool: the flattened foreground, whose M voxels ``basin`` and
    ``value`` follow.

    ``objects`` (B,): the object (a basin index) of every basin; foreground voxel
    ``i`` belongs to ``objects[basin[i]]``.  With ``use_surface``, an object keeps
    the voxels whose ``value`` (float32) exceeds ``background + level * (top -
    background)``, ``top`` being the mean value of its voxels above its mean (float64
    sums in voxel order).  Objects with fewer than ``min_voxels`` voxels are dropped.
    """
    m = basin.shape[0]
    n = objects.shape[0]
    obj = np.empty(m, basin.dtype)  # object of each voxel, -1 once dropped by the surface cut
    size = np.zeros(n, np.int64)
    if use_surface:
        total = np.zeros(n, np.float64)
        for i in range(m):
            o = objects[basin[i]]
            obj[i] = o
            size[o] += 1
            total[o] += np.float64(value[i])
        mean = np.empty(n, np.float64)
        for o in range(n):
            mean[o] = total[o] / max(size[o], 1)
        size[:] = 0
        total[:] = 0.0
        for i in range(m):
            o = obj[i]
            v = np.float64(value[i])
            if v > mean[o]:
                size[o] += 1
                total[o] += v
        for o in range(n):
            top = total[o] / max(size[o], 1)
            mean[o] = background + level * (top - background)  # the cut, reusing the array
        size[:] = 0
        for i in range(m):
            o = obj[i]
            if np.float64(value[i]) <= mean[o]:
                obj[i] = -1
            else:
                size[o] += 1
    else:
        for i in range(m):
            o = objects[basin[i]]
            obj[i] = o
            size[o] += 1
    new_id = np.zeros(n, np.uint32)
    next_id = np.uint32(1)
    i = 0
    for p in range(mask.shape[0]):
        if mask[p]:
            o = obj[i]
            if o >= 0 and size[o] >= min_voxels:
                if new_id[o] == 0:
                    new_id[o] = next_id
                    next_id += np.uint32(1)
                out[p] = new_id[o]
            i += 1


@_jit
def _find(parent, i):  # type: ignore[no-untyped-def]  # pragma: no cover
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@_jit
def merge_basins(edge_a, edge_b, saddle, peak, peak_pos, xyz, prominence, separation2):  # type: ignore[no-untyped-def]  # pragma: no cover
    """Seeded Kruskal merge of the basin graph; the representative basin of each, (B,) int64.

    Edges are taken in the given order (decreasing saddle).  When two components
    meet, the one whose highest maximum is lower (ties: earlier ``peak_pos``) stays
    apart only if that maximum rises ``prominence`` or more above the saddle and
    lies at least ``sqrt(separation2)`` µm (``xyz`` (B, 3), float64 µm) from the
    other's; otherwise it joins.  Differences in float64, as the Python loop of
    :func:`~dls_microscopy.segment._watershed_shared._merge_numpy` computes them.
    """
    n = peak.shape[0]
    parent = np.arange(n)
    top = np.arange(n)  # the basin holding each component's highest maximum
    for e in range(edge_a.shape[0]):
        ra = _find(parent, edge_a[e])
        rb = _find(parent, edge_b[e])
        if ra == rb:
            continue
        ta = top[ra]
        tb = top[rb]
        if peak[tb] > peak[ta] or (peak[tb] == peak[ta] and peak_pos[tb] > peak_pos[ta]):
            ra, rb, ta, tb = rb, ra, tb, ta
        d0 = xyz[ta, 0] - xyz[tb, 0]
        d1 = xyz[ta, 1] - xyz[tb, 1]
        d2 = xyz[ta, 2] - xyz[tb, 2]
        dist2 = d0**2 + d1**2 + d2**2
        if np.float64(peak[tb]) - np.float64(saddle[e]) < prominence or dist2 < separation2:
            parent[rb] = ra
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = _find(parent, i)
    return out
