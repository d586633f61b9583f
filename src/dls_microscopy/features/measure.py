"""Morphology and intensity measurements of every object, blockwise, in two passes.

Pass 1 reduces every block of the plan to per-object partial sums (counts,
coordinate moments, bounding boxes, intensity sums, minima and maxima; see
:mod:`.reductions`) and merges them exactly.  Pass 2 (only when percentiles or
radial shells are asked for) reads per-object bounding-box crops, batched by
owning block (see :mod:`.crops`).  Both passes are vectorised over all objects
of a block: no Python loop per object, except the per-object sort that
percentiles need.

Definitions follow :func:`skimage.measure.regionprops` with ``spacing`` where
both define a quantity (volume = ``area``, centroid, ``moments_central`` up to
order 2, ``inertia_tensor_eigvals``, axis lengths, ``intensity_*``,
``centroid_weighted``, ``bbox``, ``extent``, ``equivalent_diameter_area``).

Validation and block planning live in :mod:`._measure_plan`, the second-moment
maths in :mod:`._moments`; this module runs the passes and builds the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dls_microscopy._allocator import bound_allocator, release_memory
from dls_microscopy.blocks import BlockPlan, ProgressCallback, run_parallel
from dls_microscopy.errors import InputError

# Validation and planning live in their own module; the names stay importable from here.
from dls_microscopy.features._measure_plan import (  # noqa: F401 - re-exported
    _TARGET_BLOCK_VOXELS,
    _WORK_BYTES_PER_VOXEL,
    _as_array,
    _channel_names,
    _check_inputs,
    _check_spacing,
    _crop_plan,
    _plan,
    _read,
)
from dls_microscopy.features._moments import _covariance_um2, _matrix
from dls_microscopy.features.crops import CropResults, crop_statistics, owner_batches
from dls_microscopy.features.reductions import (
    PartialStats,
    block_partial_stats,
    exact_intensity_dtype,
    merge_partials,
)

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "NoObjectsWarning",
    "ObjectMeasurements",
    "measure_objects",
]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 1 * 2**30
#: Both passes hand freed heap pages back after every this many blocks: each block
#: leaves small per-object results between its freed temporaries, and the fragmented
#: heap otherwise grows with the number of blocks.  Measured on the scale test's
#: 384 MiB field (338 blocks, 21k objects, 64 MiB budget): peak growth of
#: ``measure_objects`` 57-62 MiB without, 54-57 MiB with 4 (49-52 with 1, ~15 % slower).
_RELEASE_EVERY = 4


class NoObjectsWarning(UserWarning):
    """The label image contains no object: the measurement table is empty."""


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectMeasurements:
    """Measurements of ``K`` objects over ``C`` channels, rows sorted by object id.

    Lengths are in µm, volumes in µm³, second moments in µm²; bounding boxes
    in voxel indices (``max`` exclusive).  Axes are ``z, y, x`` throughout.

    Attributes
    ----------
    ids : (K,) uint64 ndarray
    voxel_count : (K,) int64 ndarray
    volume : (K,) float64 ndarray
        µm³ (regionprops ``area``).
    bbox_min, bbox_max : (K, 3) int64 ndarray
    centroid : (K, 3) float64 ndarray
        µm.
    moments_central : (K, 6) float64 ndarray
        Second-order central moments in µm², columns ``zz, yy, xx, zy, zx, yx``
        (regionprops ``moments_central[2,0,0]``, ``[0,2,0]``, ... ``[0,1,1]``).
    inertia_eigvals : (K, 3) float64 ndarray
        Eigenvalues of the inertia tensor (µm²), descending.
    axis_lengths : (K, 3) float64 ndarray
        Major, intermediate and minor axis lengths of the equivalent ellipsoid (µm).
    intensity_sum, intensity_mean, intensity_std, intensity_min, intensity_max : (K, C) ndarray
    intensity_percentiles : (K, C, Q) float64 ndarray
    centroid_weighted : (K, C, 3) float64 ndarray
        µm; NaN where an object's intensity sums to 0.
    radial_frac_at_d, radial_mean_frac : (K, C, S) float64 ndarray
        Per shell (innermost first): fraction of the object's integrated intensity, and
        that fraction over the shell's fraction of the voxels; both 0 for a shell
        without voxels, NaN where the intensity sums to 0 (see :mod:`.crops`).
    spacing : tuple of 3 float
    channel_names : tuple of str
    percentiles : tuple of float
    radial_shells : int
    """

    ids: np.ndarray
    voxel_count: np.ndarray
    volume: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    centroid: np.ndarray
    moments_central: np.ndarray
    inertia_eigvals: np.ndarray
    axis_lengths: np.ndarray
    intensity_sum: np.ndarray
    intensity_mean: np.ndarray
    intensity_std: np.ndarray
    intensity_min: np.ndarray
    intensity_max: np.ndarray
    intensity_percentiles: np.ndarray
    centroid_weighted: np.ndarray
    radial_frac_at_d: np.ndarray
    radial_mean_frac: np.ndarray
    spacing: tuple[float, float, float]
    channel_names: tuple[str, ...]
    percentiles: tuple[float, ...]
    radial_shells: int

    @property
    def n_objects(self) -> int:
        """Number of objects."""
        return len(self.ids)

    @property
    def bbox_volume(self) -> np.ndarray:
        """Bounding-box volume, µm³."""
        return np.prod(self.bbox_max - self.bbox_min, axis=1) * math.prod(self.spacing)

    @property
    def extent(self) -> np.ndarray:
        """Volume over bounding-box volume."""
        return self.voxel_count / np.prod(self.bbox_max - self.bbox_min, axis=1)

    @property
    def equivalent_diameter(self) -> np.ndarray:
        """Diameter of the sphere of the same volume, µm."""
        return (6 * self.volume / math.pi) ** (1 / 3)

    @property
    def mass_displacement(self) -> np.ndarray:
        """Distance between the intensity-weighted and the plain centroid, ``(K, C)`` µm."""
        return np.sqrt(((self.centroid_weighted - self.centroid[:, None, :]) ** 2).sum(axis=2))


def measure_objects(
    image: Any,
    labels: Any,
    *,
    spacing: Sequence[float],
    channel_names: Sequence[str] | None = None,
    percentiles: Sequence[float] = (25.0, 50.0, 75.0),
    radial_shells: int = 4,
    block_shape: Sequence[int] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> ObjectMeasurements:
    """Measure morphology and per-channel intensity of every labelled object.

    Parameters
    ----------
    image : (C, Z, Y, X) or (Z, Y, X) ndarray or dask array, or None
        Intensities; ``None`` measures morphology only.
    labels : (Z, Y, X) ndarray or dask array of integers
        Object ids; 0 is background.  Ids need not be consecutive.
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in µm.
    channel_names : sequence of str, optional
        One per channel; default ``channel_0``, ``channel_1``...
    percentiles : sequence of float
        Intensity percentiles (0-100) per object and channel; ``()`` to skip.
    radial_shells : int
        Number of radial shells (0 to skip); see :mod:`.crops`.
    block_shape : tuple of 3 int, optional
        Block size; default from ``memory_budget`` (aligned to the chunks of
        dask inputs, whole z-slabs for numpy inputs).
    memory_budget : int
        Bytes for all workers' blocks together.
    workers : int, optional
        Threads; default the number of usable cores (at most 4).
    progress : callable, optional
        ``progress(description, done, total)``.

    Returns
    -------
    ObjectMeasurements
        Rows sorted by object id.  Results do not depend on ``block_shape`` or
        ``workers``: bit-identical for 8/16-bit integer images (exact integer
        sums); for float or 32/64-bit images, intensity sums can differ
        between block plans by float rounding (~1e-15 relative) and are
        deterministic for a fixed plan.

    Raises
    ------
    InputError
        Shapes differ, negative labels, bad spacing or parameters, NaN/inf
        intensities inside objects.
    UnsupportedDtypeError
        Labels that are not integers.
    DimensionalityError
        Labels that are not 3D.

    Warns
    -----
    NoObjectsWarning
        When ``labels`` has no object (the result has zero rows).

    Examples
    --------
    >>> lab = np.zeros((4, 6, 6), np.uint32); lab[1:3, 1:4, 2:5] = 7
    >>> img = np.arange(lab.size, dtype=np.uint16).reshape(lab.shape)
    >>> m = measure_objects(img, lab, spacing=(2.0, 0.5, 0.5), radial_shells=0)
    >>> m.ids.tolist(), m.volume.tolist(), m.centroid[0].tolist()
    ([7], [9.0], [3.0, 1.0, 1.5])
    """
    image, labels = _as_array(image), _as_array(labels)
    _check_inputs(image, labels)
    if image is not None and image.ndim == 3:
        image = image[None]
    n_ch = 0 if image is None else int(image.shape[0])
    names = _channel_names(channel_names, n_ch)
    spacing = _check_spacing(spacing)
    qs = tuple(float(q) for q in percentiles)
    if any(not 0 <= q <= 100 for q in qs) or len(set(qs)) != len(qs):
        raise InputError(f"percentiles must be distinct values in [0, 100], got {qs}")
    if int(radial_shells) != radial_shells or radial_shells < 0:
        raise InputError(f"radial_shells must be an integer >= 0, got {radial_shells}")
    radial_shells = int(radial_shells)
    workers = workers or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    bound_allocator(memory_budget)  # freed block temporaries go back to the system, not to per-thread heaps
    plan = _plan(labels, image, block_shape=block_shape, memory_budget=memory_budget, workers=workers)
    acc = np.int64 if image is None or exact_intensity_dtype(image.dtype) else np.float64
    log.debug("measuring objects: %d blocks of %s, %d channel(s)", plan.n_blocks, plan.block_shape, n_ch)

    def pass1(block: Any) -> PartialStats:
        lab = _read(labels, block.core)
        ch = None if image is None else _read(image, (slice(None), *block.core))
        offset = tuple(s.start for s in block.core)
        return block_partial_stats(lab, ch, offset=offset, acc_dtype=acc)

    parts = run_parallel(
        list(plan),
        pass1,
        workers=workers,
        progress=progress,
        description="measure",
        release_every=_RELEASE_EVERY,
    )
    nonempty = [p for p in parts if p.n_objects]  # type: ignore[union-attr]
    if not nonempty:
        warnings.warn(
            "the label image contains no object: the table is empty", NoObjectsWarning, stacklevel=2
        )
        return _finish(PartialStats.empty(n_ch, np.dtype(acc)), None, spacing, names, qs, radial_shells)
    stats = merge_partials(nonempty)
    del parts, nonempty
    release_memory()
    crops = None
    if n_ch and (qs or radial_shells):
        if block_shape is None:  # crop regions outgrow their blocks by an object: plan for it
            plan = _crop_plan(labels, image, stats, memory_budget=memory_budget, workers=workers)
        crops = _pass2(stats, image, labels, plan, spacing, qs, radial_shells, workers, progress)
        release_memory()
    return _finish(stats, crops, spacing, names, qs, radial_shells)


# -- pass 2 and the final quantities -----------------------------------------------------


def _pass2(
    stats: PartialStats,
    image: Any,
    labels: Any,
    plan: BlockPlan,
    spacing: tuple[float, float, float],
    qs: tuple[float, ...],
    shells: int,
    workers: int,
    progress: ProgressCallback | None,
) -> CropResults:
    n = stats.count
    cov = _matrix(_covariance_um2(stats, spacing)) / n[:, None, None]
    cov[:, range(3), range(3)] += np.asarray(spacing) ** 2 / 12  # spread of one voxel
    precision = np.linalg.inv(cov)
    centroid_vox = stats.s1 / n[:, None]
    batches = owner_batches(plan, stats.bbox_min, stats.bbox_max)
    work: Callable[[Any], CropResults] = lambda b: crop_statistics(  # noqa: E731
        b,
        read_labels=lambda r: _read(labels, r),
        read_channels=lambda r: _read(image, (slice(None), *r)),
        ids=stats.ids,
        counts=stats.count,
        centroid_vox=centroid_vox,
        precision_um=precision,
        spacing=spacing,
        percentiles=qs,
        radial_shells=shells,
    )
    results = run_parallel(
        batches, work, workers=workers, progress=progress, description="crops", release_every=_RELEASE_EVERY
    )
    k, c = stats.n_objects, image.shape[0]
    pct = np.full((k, c, len(qs)), np.nan)
    frac = np.full((k, c, shells), np.nan)
    mfrac = np.full((k, c, shells), np.nan)
    for b, r in zip(batches, results, strict=True):  # type: ignore[arg-type]
        pct[b.rows], frac[b.rows], mfrac[b.rows] = r.percentiles, r.frac_at_d, r.mean_frac
    return CropResults(pct, frac, mfrac)


def _finish(
    stats: PartialStats,
    crops: CropResults | None,
    spacing: tuple[float, float, float],
    names: tuple[str, ...],
    qs: tuple[float, ...],
    shells: int,
) -> ObjectMeasurements:
    k, c = stats.n_objects, stats.isum.shape[1]
    n = stats.count
    sp = np.asarray(spacing)
    nf = n.astype(np.float64)
    mu = _covariance_um2(stats, spacing) if k else np.zeros((0, 6))
    tensor = np.zeros((k, 3, 3))
    if k:  # regionprops inertia_tensor: diag = sum of the *other* axes' second moments
        m = _matrix(mu) / nf[:, None, None]
        trace = np.trace(m, axis1=1, axis2=2)
        tensor = -m
        tensor[:, range(3), range(3)] = trace[:, None] - m[:, range(3), range(3)]
    ev = np.linalg.eigvalsh(tensor)[:, ::-1] if k else np.zeros((0, 3))
    e0, e1, e2 = ev[:, 0], ev[:, 1], ev[:, 2]
    axes = np.sqrt(np.maximum(0, 10 * np.stack([e0 + e1 - e2, e0 - e1 + e2, -e0 + e1 + e2], axis=1)))

    isum = stats.isum
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = isum / nf[:, None]
        # variance about the minimum (exact integers when the sums are), then one rounding
        lo = stats.imin
        s1 = isum - n[:, None] * lo
        s2 = stats.isq - 2 * lo * isum + n[:, None] * lo * lo
        var = (s2 - s1 * (s1 / nf[:, None])) / nf[:, None]
        std = np.sqrt(np.maximum(var, 0))
        wc = stats.icoord / isum[:, :, None] * sp
    if crops is None:
        crops = CropResults(
            np.full((k, c, len(qs)), np.nan), np.full((k, c, shells), np.nan), np.full((k, c, shells), np.nan)
        )
    return ObjectMeasurements(
        ids=stats.ids,
        voxel_count=n,
        volume=nf * math.prod(spacing),
        bbox_min=stats.bbox_min,
        bbox_max=stats.bbox_max,
        centroid=stats.s1 / nf[:, None] * sp,
        moments_central=mu,
        inertia_eigvals=ev,
        axis_lengths=axes,
        intensity_sum=isum.astype(np.float64),
        intensity_mean=mean,
        intensity_std=std,
        intensity_min=stats.imin.astype(np.float64),
        intensity_max=stats.imax.astype(np.float64),
        intensity_percentiles=crops.percentiles,
        centroid_weighted=wc,
        radial_frac_at_d=crops.frac_at_d,
        radial_mean_frac=crops.mean_frac,
        spacing=spacing,
        channel_names=names,
        percentiles=qs,
        radial_shells=shells,
    )
