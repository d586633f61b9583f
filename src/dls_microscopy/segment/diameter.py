"""Estimate the nucleus diameter of an image, for users who do not know it.

Every default of the watershed derives from ``diameter_um``; a diameter told 25 % off
costs 0.03–0.14 F1 (``benchmarks/run_segment_robustness.py``).  This finds the
diameter the image itself supports, as a *self-consistent* value: segment a region
with a diameter, measure the median equivalent-sphere diameter of the objects found,
segment again with that, until the two agree.

* It starts large (``start_um``, default 20 µm): a too-large diameter merges
  neighbours, so the objects come out smaller than told and the next step goes
  down; started too small, over-split nuclei confirm a small diameter (12 µm nuclei
  started at 4 µm settled at 5.4 µm in our runs).
* Objects touching a face of the region are not measured (they are cut).
* The size of an object is the diameter of the sphere of its volume, in µm: what
  the segmentation guide and the benchmarks call a nucleus' diameter.
* Where the image does not hold the estimate (it keeps shrinking, e.g. nuclei barely
  above the noise, or it reaches the scale of the voxels, e.g. pure noise), it says
  so and asks for the diameter instead of guessing.
* Where it alternates between two diameters within 25 % of each other (told one, the
  image gives the other, and back: a seed more or less in some nuclei), the fixed
  point lies between them: their geometric mean is the estimate.

Only a region of the image is read (``max_voxels``, a box of equal extent in µm on
every axis as far as the image allows, centred), so the estimate is cheap on images
of any size: about 1–3 s for 4 M voxels on 2 CPU threads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import InputError

__all__ = ["DiameterEstimate", "estimate_diameter", "median_object_diameter"]

log = logging.getLogger(__name__)

#: Fewest objects (away from the region's faces) an estimate is made from.
MIN_OBJECTS = 5
#: Fewest voxels in an object of the estimated diameter: below, the "objects" are
#: noise at the scale of the voxels (pure noise settles at about 7 voxels).
MIN_VOXELS = 64


@dataclasses.dataclass(frozen=True)
class DiameterEstimate:
    """The result of :func:`estimate_diameter`.

    Attributes
    ----------
    diameter_um : float
        Median equivalent-sphere diameter of the objects, µm, at the fixed point.
    n_objects : int
        Objects it was measured on (see :func:`median_object_diameter`).
    steps_um : list of float
        The start, then the median diameter found at each step (the next one told); after
        an alternation between two values, their geometric mean last.
    region : list of [int, int]
        ``[start, stop)`` of the region read, per axis (z, y, x), in voxels of the level read
        (the volume's ``level``).
    """

    diameter_um: float
    n_objects: int
    steps_um: list[float]
    region: list[list[int]]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)


def median_object_diameter(labels: np.ndarray, spacing: Sequence[float]) -> tuple[float, int]:
    """Median equivalent-sphere diameter (µm) of the objects, and how many it was taken over.

    Objects touching a face of ``labels`` are cut, so they are left out, unless fewer
    than :data:`MIN_OBJECTS` objects are inside (a region small for its objects, or a
    step of :func:`estimate_diameter` that merged them): then every object counts.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray
    spacing : sequence of 3 float
        µm per voxel.

    Returns
    -------
    diameter_um : float
        NaN when there is no object.
    n : int
    """
    import fastremap

    ids, counts = fastremap.unique(labels, return_counts=True)
    counts = counts[ids != 0]
    ids = ids[ids != 0]
    if not len(ids):
        return float("nan"), 0
    faces: set[int] = set()
    for axis in range(labels.ndim):
        for index in (0, -1):
            faces.update(int(i) for i in fastremap.unique(np.take(labels, index, axis=axis)))
    inside = ~np.isin(ids, np.fromiter(faces, dtype=ids.dtype, count=len(faces)))
    if inside.sum() >= MIN_OBJECTS:
        counts = counts[inside]
    volume = counts.astype(np.float64) * math.prod(float(s) for s in spacing)
    return float(np.median(np.cbrt(6.0 * volume / math.pi))), len(volume)


def _central_region(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> tuple[slice, ...]:
    """A centred box of at most ``max_voxels``, of equal extent in µm on every axis where it fits."""
    shape = [int(n) for n in shape]

    def voxels(side_um: float) -> int:
        return math.prod(
            min(n, max(1, math.ceil(side_um / float(d)))) for n, d in zip(shape, spacing, strict=True)
        )

    lo, hi = 0.0, max(n * float(d) for n, d in zip(shape, spacing, strict=True))
    if voxels(hi) <= max_voxels:
        return tuple(slice(0, n) for n in shape)
    for _ in range(60):  # bisection on the box's side, µm
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if voxels(mid) <= max_voxels else (lo, mid)
    out = []
    for n, d in zip(shape, spacing, strict=True):
        m = min(n, max(1, math.ceil(lo / float(d))))
        start = (n - m) // 2
        out.append(slice(start, start + m))
    return tuple(out)


def estimate_diameter(
    image: Any,
    *,
    spacing: Sequence[float] | None = None,
    channel: int | str | None = None,
    time_point: int | None = None,
    params: Mapping[str, Any] | None = None,
    start_um: float = 20.0,
    max_voxels: int = 1 << 22,
    tolerance: float = 0.03,
    max_steps: int = 12,
    device: str | None = "cpu",
    progress: ProgressCallback | None = None,
) -> DiameterEstimate:
    """The nucleus diameter an image supports, for the watershed segmenter.

    See the module docstring for the method.

    Parameters
    ----------
    image : Volume or (Z, Y, X) ndarray
        A :class:`~dls_microscopy.volume.Volume` (only a region is read) or an array.
    spacing : sequence of 3 float, optional
        µm per voxel (z, y, x); required for an array, taken from a Volume.
    channel, time_point : optional
        Which 3D image of a multi-channel or timed Volume (as for segmenting).
    params : mapping, optional
        Other watershed parameters to segment with (``threshold_scale``, ...);
        ``diameter_um`` and the parameters derived from it are set at each step.
    start_um : float
        First diameter told; should exceed the nuclei's (see the module docstring).
    max_voxels : int
        Largest region read.
    tolerance : float
        Relative change between steps at which the estimate has settled.
    max_steps : int
        Segmentations at most.
    device : str, optional
        Device of the segmenter.
    progress : callable, optional
        ``progress(description, done, total)``, called before reading the region and
        before each segmentation (``total`` is ``max_steps``); it may raise to stop the
        estimate there (the app's Cancel does).

    Returns
    -------
    DiameterEstimate

    Raises
    ------
    InputError
        Too few objects in the region, or no settled estimate (the message gives the
        steps and asks for the diameter).
    """
    from dls_microscopy.segment.base import get_segmenter
    from dls_microscopy.volume import Volume

    def report(step: int) -> None:
        if progress is not None:  # between rounds: where a caller can stop the estimate
            progress("estimating the diameter", step, int(max_steps))

    report(0)
    if isinstance(image, Volume):
        from dls_microscopy.segment.blockwise import select_image

        vol = select_image(image, channel=channel, time_point=time_point)
        spacing = vol.spacing
        region = _central_region(vol.spatial_shape, spacing, max_voxels)
        data = np.asarray(vol.data[region].compute(scheduler="synchronous"))
        source = vol.source
    else:
        if spacing is None:
            raise InputError("give the voxel size (spacing=) with an array")
        data = np.asarray(image)
        if data.ndim != 3:
            raise InputError(f"need a (Z, Y, X) image, got shape {data.shape}")
        region = _central_region(data.shape, spacing, max_voxels)
        data = data[region]
        source = None
    if not start_um > 0:
        raise InputError(f"start_um must be > 0, got {start_um}")
    fixed = {k: v for k, v in dict(params or {}).items() if k != "diameter_um"}
    told = float(start_um)
    steps = [told]
    for step in range(int(max_steps)):
        report(step)
        seg = get_segmenter("watershed", {**fixed, "diameter_um": told}, device=device)
        labels = seg.segment(data, spacing=spacing)
        found, n = median_object_diameter(labels, spacing)
        log.debug("told %.2f µm: %d objects inside, median diameter %.2f µm", told, n, found)
        if n == 0:
            raise InputError(
                f"no objects found in the region {_describe(region)} read to estimate a diameter "
                f"(segmented with {told:.3g} µm); give the diameter (--diameter)",
                path=source,
            )
        steps.append(round(found, 3))
        voxels = math.pi / 6.0 * found**3 / math.prod(float(d) for d in spacing)
        if voxels < MIN_VOXELS:
            raise InputError(
                f"no nuclei resolved: the objects found are at the scale of the voxels (median "
                f"{found:.3g} µm, {voxels:.0f} voxels; steps {_steps(steps)} µm); the image may be "
                "noise or empty in the region read; give the diameter (--diameter)",
                path=source,
            )
        settled = abs(found - told) <= tolerance * told
        cycle = None if settled else _two_cycle(steps, tolerance)
        if settled or cycle is not None:
            if n < MIN_OBJECTS:
                raise InputError(
                    f"too few objects to estimate a diameter: {n} in the region {_describe(region)} "
                    "read; give the diameter (--diameter)",
                    path=source,
                )
            if cycle is not None:
                found = cycle
                steps.append(round(found, 3))
                log.info("the estimate alternates: %s µm; taking the geometric mean", _steps(steps[-4:-1]))
            return DiameterEstimate(round(found, 2), n, steps, [[s.start, s.stop] for s in region])
        told = found
    raise InputError(
        f"the diameter estimate did not settle ({_steps(steps)} µm): the image does not hold it "
        "(nuclei too dim or too noisy?); give the diameter (--diameter)",
        path=source,
    )


#: Widest ratio of two diameters an estimate alternating between them may settle between.
CYCLE_RATIO = 1.25


def _two_cycle(steps: Sequence[float], tolerance: float) -> float | None:
    """The geometric mean of two diameters the steps alternate between, if they do.

    Told ``a`` the image gives ``b``, told ``b`` it gives ``a`` again: a seed more or less
    in some nuclei flips with the diameter, and the fixed point lies between them.  Both
    are within :data:`CYCLE_RATIO` of each other (a rough diameter is enough: a diameter
    25 % off costs little), so their geometric mean is the estimate; farther apart, the
    image does not hold one.
    """
    if len(steps) < 3:
        return None
    a, b, a2 = steps[-3:]  # told a, found b; told b, found a again
    if abs(a2 - a) > tolerance * a:
        return None
    lo, hi = sorted((a2, b))
    return math.sqrt(lo * hi) if hi <= CYCLE_RATIO * lo else None


def _steps(steps: Sequence[float]) -> str:
    return " → ".join(f"{s:.3g}" for s in steps)


def _describe(region: Sequence[slice]) -> str:
    return " × ".join(str(s.stop - s.start) for s in region) + " (z × y × x)"
