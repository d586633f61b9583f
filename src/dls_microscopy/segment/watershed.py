"""The built-in nuclei segmenter: smoothing, global threshold, seeded watershed. No weights.

Everything derives from the expected object diameter ``diameter_um`` and the voxel
``spacing`` (µm), so one number adapts it to any (anisotropic) sampling:

1. *Smoothing*: Gaussian of ``smoothing_um`` (default ``diameter / 12``) on every axis.
2. *Detection*: smoothed intensity > a global threshold, computed once per volume by
   :meth:`WatershedSegmenter.global_stats` from smoothed voxels (Otsu, then moved
   towards the background class mean by ``threshold_scale`` so that dim objects are
   found), so that every block of a large volume uses the same one.  Where the
   nuclei dim with depth (``depth_correction``), the same statistics fit an
   exponential fall of the brightness above the background, and each plane is
   brought to the brightest depth's level first; a block learns its first plane
   from :meth:`WatershedSegmenter.block_stats`.
3. *Flooding image* ``f`` (dimensionless): the anisotropic Euclidean distance to the
   background in units of the expected radius (``seed_method="distance"``), the
   normalised smoothed intensity (``"intensity"``) or their sum (``"combined"``).
   With ``seed_contrast`` set, the distance is taken from the *cores* of the
   foreground: voxels whose brightness above the background is at least
   ``seed_contrast`` times the mean above the background in a box of 1.5 diameters
   around them.  Nuclei packed against each other along a dim line (tissue, embryos)
   then have one core each, where the distance to the plain foreground has one
   maximum for the whole clump.
4. *Seeded watershed*: each foreground voxel drains to a local maximum of ``f`` along
   the steepest slope (6-neighbourhood, slopes per µm); the basins are merged in
   order of decreasing saddle height (a minimum-spanning-forest watershed on the basin
   graph) unless both sides hold a *seed*: a maximum at least ``seed_prominence``
   above the saddle (an h-maximum) and ``seed_separation_um`` from the other side's
   maximum.  One nucleus thus gets one seed.  Ties go to the later voxel in C order,
   so a plateau drains to one voxel and gives one seed; nothing random and nothing
   that depends on where a block starts enters the result.
5. *Surface*: each object keeps its voxels brighter than ``surface_level`` of the way
   from the background to the object's own brightness (the half-maximum of a blurred
   edge lies on the true surface, for dim and bright nuclei alike); objects smaller
   than ``min_size_um3`` are removed; the rest are numbered 1..N by first voxel in C
   order.

Two implementations compute the same function: scipy/``edt`` and compiled loops
(numba, :mod:`._watershed_kernels`; a numpy formulation with identical results is
the reference and the fallback) on CPU, torch (separable ``conv3d`` Gaussian, an
exact windowed distance transform, tensor drainage with pointer jumping) on CUDA/MPS;
the small basin graph is merged on the host by shared code.  Float rounding differs
between the CPU and torch paths, so voxels exactly at a tie may differ: the tests
require F1 at IoU 0.5 ≥ 0.95 between the two paths and object counts within 3 %
(measured on 11 volumes: identical counts, F1 ≥ 0.99).

This module holds the parameters and their defaults and the segmenter.  The global
statistics are in :mod:`._watershed_stats`; what both backends share (their input,
``_FloodConfig``, their output, the basin graph ``_Basins``, and the host code that
merges it into labels) is in :mod:`._watershed_shared`.  This module loads a backend,
:mod:`._watershed_cpu` or :mod:`._watershed_torch`, only when it is used (and never
imports torch itself).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from dls_microscopy.errors import InputError
from dls_microscopy.segment._watershed_shared import (  # F401: re-exported, they lived here
    _DIRECTIONS,  # noqa: F401
    _INTENSITY_WEIGHT,  # noqa: F401
    _TRUNCATE,
    _Basins,  # noqa: F401
    _contrast_window,
    _FloodConfig,
    _labels_from_objects,
    _merge_basins,
    _unique_edges,  # noqa: F401
)
from dls_microscopy.segment._watershed_stats import (
    _DEPTH_ROUNDS,
    _SAMPLE_VOXELS,
    _depth_fit,
    _depth_gain,
    _otsu,
    _sample_levels,
    _smoothed_sample,
    _subsample,
)
from dls_microscopy.segment.base import BaseSegmenter, EmptyResultWarning, SegmenterParams

__all__ = ["WatershedParams", "WatershedSegmenter"]

log = logging.getLogger(__name__)

#: Distances are clamped at this many diameters (the torch distance is exact below it).
_DISTANCE_CAP = 1.0
#: Within one ``segment(image)`` call without stats, the smoothed image computed for
#: the statistics is reused by the CPU path (per thread; cleared when the call ends).
_REUSE = threading.local()


class WatershedParams(SegmenterParams):
    """Parameters of :class:`WatershedSegmenter`; lengths in µm, volumes in µm³."""

    diameter_um: float = Field(8.0, gt=0)
    """expected object (nucleus) diameter, µm; every default below derives from it"""
    smoothing_um: float | None = Field(None, ge=0)
    """standard deviation of the Gaussian smoothing, µm (default ``diameter_um / 12``)"""
    threshold: float | None = None
    """detection threshold on the smoothed intensity, image units (default automatic)"""
    threshold_scale: float = Field(0.5, gt=0)
    """automatic threshold = ``background + threshold_scale × (otsu - background)``, with
    ``background`` the mean of Otsu's lower class (1 = Otsu; lower finds dimmer objects)
    """
    seed_method: Literal["distance", "intensity", "combined"] = "distance"
    """what the watershed floods: distance to the background, intensity, or both"""
    seed_contrast: float | None = Field(None, ge=0, lt=1, json_schema_extra={"unset": "off"})
    """distance seeds come from foreground voxels whose brightness above the background is at
    least this fraction of the mean above the background in a box of 1.5 diameters around
    them: splits nuclei packed against each other along a dim line (tissue, embryos; 0.7 is
    a good start). None (default): off, seeds from the whole foreground. It widens the
    blocks' halo, so blockwise runs take longer (see the segmentation guide)
    """
    seed_separation_um: float | None = Field(None, ge=0)
    """least distance between two seeds, µm (default ``diameter_um / 2``)"""
    seed_prominence: float = Field(0.05, ge=0)
    """least height of a seed above its saddle, in units of the flooding image: the expected
    radius (``"distance"``), the foreground intensity range (``"intensity"``: threshold to
    99.5th percentile), or both summed (``"combined"``, intensity × 0.5)
    """
    surface_level: float | None = Field(0.5, ge=0, lt=1)
    """where an object's surface lies between background (0) and its brightness (1); None keeps
    every detected voxel
    """
    min_size_um3: float | None = Field(None, ge=0)
    """smaller objects are removed, µm³ (default 10 % of a sphere of ``diameter_um``)"""
    depth_correction: bool = False
    """brighten deeper planes to the brightest depth's level before detection, by an exponential
    fit of how the nuclei's brightness falls with z (thick samples, where one threshold for the
    whole volume misses the dim deep nuclei). Off by default: it finds dim, separate nuclei
    (synthetic stack dimming to 1/4: F1 0.785 -> 0.936) but can merge packed ones (real tissue
    dimming 4x: 0.490 -> 0.474). Nothing changes where the fit says less than 20 % or the stack
    is under three diameters deep
    """
    backend: Literal["auto", "torch", "cpu"] = "auto"
    """``"auto"``: torch on CUDA/MPS, numpy/scipy on CPU; ``"torch"``/``"cpu"`` force one"""


class WatershedSegmenter(BaseSegmenter):
    """Nuclei segmentation by smoothing, a global threshold and a seeded watershed.

    See the module docstring for the algorithm.  :meth:`segment` takes a
    ``(Z, Y, X)`` block of any supported dtype and its spacing (µm) and returns
    ``uint32`` labels.

    Examples
    --------
    >>> from dls_microscopy.sample_data import make_synthetic_nuclei
    >>> s = make_synthetic_nuclei((24, 64, 64), seed=3)
    >>> seg = WatershedSegmenter(diameter_um=7.0, device="cpu")
    >>> labels = seg.segment(s.image[0], spacing=s.spacing)
    >>> labels.dtype.name, labels.shape, int(labels.max()) > 5
    ('uint32', (24, 64, 64), True)
    """

    name: ClassVar[str] = "watershed"
    Params: ClassVar[type[SegmenterParams]] = WatershedParams
    #: peak working memory per voxel of a block, its labels included, bytes (for block
    #: planning): measured 35-40 on the CPU path for 37-47 % foreground, plus a margin
    bytes_per_voxel: ClassVar[float] = 48.0
    #: threads one :meth:`segment` call may use on the CPU path (None: the CPU count, at
    #: most 8); :func:`~dls_microscopy.segment.blockwise.segment_blockwise` sets it
    #: from the number of blocks it runs at once
    threads: int | None = None

    def _cpu_threads(self) -> int:
        return int(self.threads or max(1, min(8, os.cpu_count() or 1)))

    params: WatershedParams

    def _sigma_um(self) -> float:
        p = self.params
        return p.diameter_um / 12.0 if p.smoothing_um is None else float(p.smoothing_um)

    def _sigma_vox(self, spacing: Sequence[float]) -> tuple[float, ...]:
        return tuple(self._sigma_um() / float(d) for d in spacing)

    def halo(self, spacing: Sequence[float]) -> tuple[int, ...]:
        """Voxels per axis: ``ceil(1.5 × diameter_um / spacing + support)``.

        The largest object (1.5 expected diameters) plus the support of what decides
        its voxels: the Gaussian (3 σ) and, with ``seed_contrast``, half the
        contrast box (0.75 diameters, about 30 % more halo at the default
        smoothing), whichever is larger.  Every object touching
        a block's core then lies, with everything that decides its voxels, inside
        the block.
        """
        p = self.params
        reach = _TRUNCATE * self._sigma_um() + 1.5 * p.diameter_um
        halo = [math.ceil(reach / float(d)) for d in spacing]
        if p.seed_contrast is not None and p.seed_method != "intensity":  # intensity: no distance
            window = _contrast_window(p.diameter_um, spacing)
            halo = [
                max(h, math.ceil(1.5 * p.diameter_um / float(d) + (w - 1) // 2))
                for h, d, w in zip(halo, spacing, window, strict=True)
            ]
        return tuple(halo)

    def _use_torch(self) -> bool:
        if self.params.backend == "auto":
            return self.device != "cpu"
        return self.params.backend == "torch"

    def segment(
        self, image: Any, *, spacing: Sequence[float], stats: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Segment one ``(Z, Y, X)`` block (see :meth:`BaseSegmenter.segment`).

        Without ``stats``, they are computed from this block, and the smoothing done
        for them is reused by the segmentation.
        """
        if stats is not None:
            return super().segment(image, spacing=spacing, stats=stats)
        _REUSE.cache = {"owner": self}
        try:
            return super().segment(image, spacing=spacing, stats=None)
        finally:
            _REUSE.cache = None

    def global_stats(self, image: Any, *, spacing: Sequence[float]) -> dict[str, float]:
        """Threshold and intensity levels of the smoothed volume, computed once.

        The threshold applies to *smoothed* intensities, whose histogram is narrower
        than the raw one (smoothing averages noise out), so it is computed on
        smoothed voxels: the whole volume when it has at most ``2**21`` voxels,
        otherwise sub-blocks placed over the volume by a low-discrepancy sequence,
        each smoothed with a margin of the Gaussian support so that its core holds
        exactly the values of the smoothed volume.  Only the sample is read (``image``
        may be a huge dask array); the result is deterministic.

        Parameters
        ----------
        image : (Z, Y, X) array-like
            numpy, dask or any sliceable array.
        spacing : sequence of 3 float
            Voxel size (z, y, x) in µm.

        Returns
        -------
        dict of str to float
            ``threshold`` (detection: smoothed > threshold), ``otsu``, ``background``
            and ``foreground`` (Otsu's class means), ``high`` (99.5th percentile),
            all in image units; with a depth correction, these are of the corrected
            sample, and ``depth_*`` hold the fit (:func:`._watershed_stats._depth_fit`)
            and ``depth_background`` the level the gain scales from.
        """
        from dls_microscopy.segment._watershed_cpu import _smooth_cpu

        if len(image.shape) != 3:
            raise InputError(f"global_stats needs a (Z, Y, X) array, got shape {image.shape}")
        sigma = self._sigma_vox(spacing)
        cache = getattr(_REUSE, "cache", None)
        if (
            cache is not None
            and cache["owner"] is self
            and isinstance(image, np.ndarray)
            and image.size <= _SAMPLE_VOXELS
        ):
            cache["image"], cache["smooth"] = image, _smooth_cpu(image, sigma, threads=self._cpu_threads())
            sample, planes = _subsample(cache["smooth"])
        else:
            sample, planes = _smoothed_sample(image, sigma, _SAMPLE_VOXELS)
        stats = self._levels(sample)
        if self.params.depth_correction:
            stats.update(self._depth_stats(sample, planes * float(spacing[0]), stats, float(spacing[0])))
        return stats

    def _levels(self, sample: np.ndarray) -> dict[str, float]:
        """Threshold and intensity levels of a sample of smoothed voxels."""
        lo, high, hi, sample = _sample_levels(sample)
        otsu, background, foreground = _otsu(sample, value_range=(lo, hi))
        if self.params.threshold is not None:
            threshold = float(self.params.threshold)
        else:
            threshold = background + self.params.threshold_scale * (otsu - background)
        return {
            "threshold": threshold,
            "otsu": otsu,
            "background": background,
            "foreground": foreground,
            "high": high,
        }

    def _depth_stats(
        self, sample: np.ndarray, z_um: np.ndarray, levels: dict[str, float], spacing_z: float
    ) -> dict[str, float]:
        """The depth fit (:func:`._watershed_stats._depth_fit`) and the levels once it is applied.

        The fit is refined ``_DEPTH_ROUNDS`` times: each round picks the foreground
        with the previous round's gain and threshold, so that dim deep nuclei enter it.
        Empty when no correction is needed.
        """
        # the gain scales from the uncorrected background: Otsu's lower class holds the
        # dim deep nuclei too and sits above the true background, so the faintest voxels
        # are scaled less (updating it each round made the fit unstable: each error in
        # the background is multiplied by the gain)
        background = levels["background"]
        out: dict[str, float] = {}
        gain = None
        for _ in range(_DEPTH_ROUNDS):
            fit = _depth_fit(
                sample,
                z_um,
                threshold=levels["threshold"],
                background=background,
                bin_um=max(self.params.diameter_um, spacing_z),
                gain=gain,
            )
            if fit is None:
                break
            gain = _depth_gain(fit, z_um)
            levels = self._levels((sample - np.float32(background)) * gain + np.float32(background))
            out = {**levels, **fit, "depth_background": background}
        if out:
            z0, z1 = out["depth_z0_um"], out["depth_z1_um"]
            log.info(
                "depth correction: gain up to %.2f over %.1f-%.1f µm",
                _depth_gain(out, [z0, z1]).max(),
                z0,
                z1,
            )
        return out

    def block_stats(self, stats: Mapping[str, float], origin: Sequence[int]) -> Mapping[str, float]:
        """``stats`` with the block's first plane, where a depth correction needs it."""
        if "depth_c0" not in stats:
            return stats
        return {**stats, "z_origin": float(origin[0])}

    def _segment(
        self, image: np.ndarray, *, spacing: tuple[float, ...], stats: Mapping[str, float]
    ) -> np.ndarray:
        missing = {"threshold", "background", "high"} - set(stats)
        if missing:
            raise InputError(f"stats lack {sorted(missing)}; compute them with global_stats()")
        p = self.params
        shape = image.shape[-3:]
        if "depth_c0" in stats:
            z = (float(stats.get("z_origin", 0.0)) + np.arange(shape[0])) * spacing[0]
            gain = _depth_gain(stats, z)[:, None, None]
            bg = np.float32(stats["depth_background"])
            image = (image.astype(np.float32) - bg) * gain + bg
            (getattr(_REUSE, "cache", None) or {}).pop("smooth", None)  # of the uncorrected image: freed
        threshold = float(np.float32(stats["threshold"]))
        radius = p.diameter_um / 2.0
        config = _FloodConfig(
            sigma_vox=self._sigma_vox(spacing),
            threshold=threshold,
            spacing=spacing,
            method=p.seed_method,
            inv_radius=float(np.float32(1.0 / radius)),
            cap_um=float(np.float32(_DISTANCE_CAP * p.diameter_um)),
            inv_range=float(np.float32(1.0 / max(float(stats["high"]) - threshold, 1e-12))),
            contrast=p.seed_contrast,
            window_vox=_contrast_window(p.diameter_um, spacing),
            background=float(np.float32(stats["background"])),
        )
        if self._use_torch():
            from dls_microscopy.segment._watershed_torch import _flood_torch

            basins = _flood_torch(image, config, device=self.device)
        else:
            from dls_microscopy.segment._watershed_cpu import _flood_cpu

            cache = getattr(_REUSE, "cache", None) or {}
            # taken out of the cache and held by no local name here, so that the
            # backend frees it as soon as it is done with it
            basins = _flood_cpu(
                image,
                config,
                smooth=cache.pop("smooth", None) if cache.get("image") is image else None,
                threads=self._cpu_threads(),
            )
        if basins is None:
            warnings.warn("no foreground above the threshold: no objects", EmptyResultWarning, stacklevel=4)
            return np.zeros(shape, np.uint32)
        if isinstance(basins, str):
            warnings.warn(
                "the whole block is above the threshold: returned as one object (is the threshold too low?)",
                UserWarning,
                stacklevel=4,
            )
            return np.ones(shape, np.uint32)
        separation = radius if p.seed_separation_um is None else p.seed_separation_um
        objects = _merge_basins(
            basins, shape=shape, spacing=spacing, prominence=p.seed_prominence, separation_um=separation
        )
        min_size = p.min_size_um3
        if min_size is None:
            min_size = 0.1 * math.pi / 6 * p.diameter_um**3
        surface = None if p.surface_level is None else (p.surface_level, float(stats["background"]))
        labels = _labels_from_objects(
            basins, objects, shape=shape, surface=surface, min_voxels=min_size / float(np.prod(spacing))
        )
        if labels.max() == 0:
            warnings.warn("no object above min_size_um3", EmptyResultWarning, stacklevel=4)
        return labels
