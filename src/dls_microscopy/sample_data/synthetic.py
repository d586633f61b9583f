"""Seeded synthetic 3D nuclei: ellipsoids in physical units seen through a model microscope.

The generator works in two stages.

*Geometry.*  Nuclei are ellipsoids with equivalent diameters drawn uniformly within
``±size_variation`` of ``diameter_um``, a random ratio of longest to shortest axis and a
uniformly random 3D orientation.  Centres are placed by batched random sequential
addition with a soft exclusion (two centres may come as close as
``_CENTRE_SEPARATION × (r_i + r_j)``), so neighbouring ellipsoids overlap.  Every voxel
covered by at least one ellipsoid goes to the nucleus with the smallest
ellipsoid-normalised distance ``d = |A_i (x - c_i)|`` (a multiplicatively weighted
Voronoi partition restricted to the ellipsoids): touching nuclei share a face and never
overlap.  Each nucleus is rasterised on the bounding box of its ellipsoid only.

*Appearance* (:mod:`._appearance`).  Channel 0 is a DNA stain (DAPI-like): per-nucleus brightness,
chromatin-like smoothed noise, brighter periphery, darker nucleoli and a slight dip
along faces shared with a neighbour.  Channel 1 is a nuclear-envelope stain
(LaminB1-like): a bright shell at the nucleus surface and along shared faces over a
dim nucleoplasm.  Both are attenuated with depth, blurred by an anisotropic Gaussian
PSF given in µm, put on a smooth background gradient, and recorded with Poisson shot
noise plus Gaussian read noise by a camera with an offset, then cast to ``uint16``
with saturation.

Everything random comes from one ``numpy.random.Generator(PCG64(seed))`` consumed in a
fixed order, so a seed always yields the same arrays for the same parameters.  PCG64
streams do not depend on the platform; only a last-bit difference in a vectorised
``sin``/``exp`` between CPUs could, in principle, move a voxel lying exactly on a boundary.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from dls_microscopy.errors import InputError
from dls_microscopy.sample_data._appearance import normalised_distance2, render

if TYPE_CHECKING:
    from dls_microscopy.volume import Volume

__all__ = ["NucleiSample", "SyntheticNuclei", "make_synthetic_nuclei"]

logger = logging.getLogger(__name__)

#: Closest allowed centre distance, as a fraction of the sum of the two equivalent radii.
_CENTRE_SEPARATION = 0.8
#: Placement gives up after this many batches of candidate centres.
_MAX_PLACEMENT_ROUNDS = 60


@dataclasses.dataclass(frozen=True, eq=False)
class NucleiSample:
    """An in-memory nuclei image with its ground-truth labels.

    Attributes
    ----------
    image : (C, Z, Y, X) ndarray
        The image, axes ``"czyx"``.
    labels : (Z, Y, X) ndarray
        Ground truth: 0 is background, nuclei are numbered consecutively from 1.
    spacing : tuple of float
        Voxel size ``(dz, dy, dx)`` in µm.
    channel_names : tuple of str
        One name per channel.
    axes : str
        Axis names of ``image``, always ``"czyx"``.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    channel_names: tuple[str, ...]
    axes: str = "czyx"

    @property
    def n_nuclei(self) -> int:
        """Number of labelled nuclei."""
        return int(self.labels.max(initial=0))

    def as_volume(self, *, labels: bool = False) -> Volume:
        """The image (or, with ``labels=True``, the labels) as an in-memory :class:`Volume`."""
        from dls_microscopy.volume import volume_from_array

        if labels:
            return volume_from_array(self.labels, axes="zyx", spacing=self.spacing)
        return volume_from_array(
            self.image, axes=self.axes, spacing=self.spacing, channel_names=self.channel_names
        )


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticNuclei(NucleiSample):
    """A synthetic nuclei image (``uint16``) with ``uint32`` labels and the seed that made it."""

    seed: int = 0


def make_synthetic_nuclei(
    shape: Sequence[int] = (48, 160, 160),
    *,
    spacing: Sequence[float] = (1.0, 0.3, 0.3),
    diameter_um: float = 7.0,
    density: float = 0.5,
    seed: int = 0,
    noise: float = 1.0,
    size_variation: float = 0.25,
    max_aspect: float = 1.5,
    psf_sigma_um: Sequence[float] = (0.7, 0.15, 0.15),
    photons: Sequence[float] = (150.0, 100.0),
    channel_names: Sequence[str] = ("DAPI", "LaminB1"),
    attenuation_length_um: float = 200.0,
) -> SyntheticNuclei:
    """Generate a synthetic two-channel 3D image of densely packed nuclei with ground truth.

    Parameters
    ----------
    shape : tuple of 3 int
        ``(Z, Y, X)`` size of the volume in voxels.
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in µm; a larger ``dz`` gives anisotropic voxels.
    diameter_um : float
        Mean equivalent (same-volume sphere) diameter of the nuclei, µm.
    density : float
        Nominal packing: summed ellipsoid volume over box volume, in ``(0, 1]``.  Overlaps
        are split between neighbours, so the labelled fraction is lower (about 0.38 at
        the default 0.5, with over 90 % of nuclei touching a neighbour); above about 0.9
        placement saturates and fewer nuclei are made (logged).
    seed : int
        Seed of the random generator; the output depends only on it and the parameters.
    noise : float
        Scale of the noise standard deviation (shot and read noise); 1 is the default
        camera model, 0 gives a noiseless image.  Mean intensities do not change.
    size_variation : float
        Equivalent diameters are uniform in ``diameter_um × [1 - v, 1 + v]``.
    max_aspect : float
        Largest ratio of longest to shortest ellipsoid axis (uniform in ``[1, max_aspect]``).
    psf_sigma_um : tuple of 3 float
        Standard deviation of the Gaussian PSF ``(z, y, x)`` in µm.
    photons : tuple of 2 float
        Mean photon count of a nucleus in channel 0 and of the envelope in channel 1.
    channel_names : tuple of 2 str
        Names of the nuclear stain and the envelope channels.
    attenuation_length_um : float
        Depth over which the signal falls by a factor ``e`` (scattering and absorption in
        the sample): 200 µm is a thin, clear sample; 35 µm dims a 48 µm stack to a quarter.

    Returns
    -------
    SyntheticNuclei
        ``image`` ``(2, Z, Y, X)`` ``uint16``, axes ``"czyx"``; ``labels`` ``(Z, Y, X)``
        ``uint32`` with nuclei ``1..N`` (every nucleus with at least one voxel in the
        volume, including those cut by its faces); ``spacing``; ``channel_names``; ``seed``.

    Raises
    ------
    InputError
        For a parameter out of range.

    Examples
    --------
    >>> sample = make_synthetic_nuclei((16, 48, 48), seed=1)
    >>> sample.image.shape, sample.image.dtype.name, sample.labels.dtype.name
    ((2, 16, 48, 48), 'uint16', 'uint32')
    >>> int(sample.labels.max()) == len(np.unique(sample.labels)) - 1
    True
    """
    shape_zyx, spacing_zyx = _check_geometry(shape, spacing)
    psf = _positive_triple(psf_sigma_um, "psf_sigma_um", allow_zero=True)
    names = tuple(str(n) for n in channel_names)
    photon_levels = tuple(float(p) for p in photons)
    if len(names) != 2 or len(photon_levels) != 2:
        raise InputError("channel_names and photons need exactly two entries (stain, envelope)")
    if not diameter_um > 0 or not 0 < density <= 1 or not noise >= 0:
        raise InputError(
            f"need diameter_um > 0, 0 < density <= 1 and noise >= 0, got {diameter_um}, {density}, {noise}"
        )
    if not 0 <= size_variation < 1 or not max_aspect >= 1 or min(photon_levels) < 0:
        raise InputError("need 0 <= size_variation < 1, max_aspect >= 1 and photons >= 0")
    if not attenuation_length_um > 0:
        raise InputError(f"attenuation_length_um must be > 0, got {attenuation_length_um}")

    rng = np.random.Generator(np.random.PCG64(seed))
    sp = np.asarray(spacing_zyx)
    extent = (np.asarray(shape_zyx) - 1) * sp
    r_lo, r_hi = 0.5 * diameter_um * (1 - size_variation), 0.5 * diameter_um * (1 + size_variation)
    # Mean ellipsoid volume, 4/3 π E[r³] with r uniform in [r_lo, r_hi].
    mean_volume = math.pi / 3 * (r_lo + r_hi) * (r_lo**2 + r_hi**2)
    box_volume = float(np.prod(np.maximum(extent, sp)))
    n_target = max(1, round(density * box_volume / mean_volume))
    centres, radii = _place_centres(rng, extent, n_target, r_lo, r_hi)
    semi, rot = _sample_shapes(rng, radii, max_aspect)

    labels, best, second = _rasterise(centres, semi, rot, shape_zyx, sp)
    labels, kept = _relabel_consecutive(labels)
    ellipsoids = (centres[kept], semi[kept], rot[kept])
    image = render(
        rng, labels, best, second, ellipsoids, sp, psf, photon_levels, noise, float(attenuation_length_um)
    )
    logger.debug(
        "synthetic nuclei: %d placed (target %d), %d in the volume, shape %s",
        len(centres),
        n_target,
        int(labels.max(initial=0)),
        shape_zyx,
    )
    return SyntheticNuclei(
        image=image, labels=labels, spacing=spacing_zyx, channel_names=names, seed=int(seed)
    )


# -- validation --------------------------------------------------------------------------
def _positive_triple(values: Sequence[float], name: str, *, allow_zero: bool = False) -> tuple:
    out = tuple(float(v) for v in values)
    ok = all(math.isfinite(v) and (v >= 0 if allow_zero else v > 0) for v in out)
    if len(out) != 3 or not ok:
        raise InputError(
            f"{name} must be three {'non-negative' if allow_zero else 'positive'} "
            f"finite numbers (z, y, x), got {values!r}"
        )
    return out


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple, tuple]:
    shape_zyx = tuple(int(s) for s in shape)
    if len(shape_zyx) != 3 or min(shape_zyx) < 1:
        raise InputError(f"shape must be three positive sizes (Z, Y, X), got {shape!r}")
    return shape_zyx, _positive_triple(spacing, "spacing")


# -- geometry ------------------------------------------------------------------------------
def _place_centres(
    rng: np.random.Generator, extent: np.ndarray, n_target: int, r_lo: float, r_hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Random sequential addition with soft exclusion, in batches; ``(n, 3)`` µm and ``(n,)``."""
    centres = np.empty((0, 3))
    radii = np.empty(0)
    batch = max(64, n_target)
    reach = _CENTRE_SEPARATION * 2 * r_hi  # no pair farther apart than this can conflict
    for _ in range(_MAX_PLACEMENT_ROUNDS):
        need = n_target - len(radii)
        if need <= 0:
            break
        cand = rng.random((batch, 3)) * extent
        cand_r = rng.uniform(r_lo, r_hi, batch)
        keep = np.ones(batch, dtype=bool)
        cand_tree = cKDTree(cand)
        if len(radii):
            near = cand_tree.sparse_distance_matrix(cKDTree(centres), reach, output_type="ndarray")
            clash = near["v"] < _CENTRE_SEPARATION * (cand_r[near["i"]] + radii[near["j"]])
            keep[near["i"][clash]] = False
        pairs = cand_tree.query_pairs(reach, output_type="ndarray")
        if len(pairs):
            i, j = pairs[:, 0], pairs[:, 1]
            dist = np.linalg.norm(cand[i] - cand[j], axis=1)
            keep[np.maximum(i, j)[dist < _CENTRE_SEPARATION * (cand_r[i] + cand_r[j])]] = False
        new = np.flatnonzero(keep)[:need]
        centres = np.concatenate([centres, cand[new]])
        radii = np.concatenate([radii, cand_r[new]])
    if len(radii) < n_target:
        logger.info("placement saturated: %d of %d nuclei placed", len(radii), n_target)
    return centres, radii


def _sample_shapes(
    rng: np.random.Generator, radii: np.ndarray, max_aspect: float
) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes ``(n, 3)`` with the volumes of spheres of ``radii``; rotations ``(n, 3, 3)``."""
    n = len(radii)
    longest = rng.uniform(1.0, max_aspect, n)
    middle = longest ** rng.random(n)
    rel = np.stack([longest, middle, np.ones(n)], axis=1)
    rel /= np.cbrt(rel.prod(axis=1))[:, None]
    # Uniform random rotations from uniform unit quaternions (Shoemake's method).
    u1, u2, u3 = rng.random((3, n))
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    w, x = a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2)
    y, z = b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=-1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=-1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1),
        ],
        axis=1,
    )
    return radii[:, None] * rel, rot


def _quadratic_forms(semi: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """``M_i = R_i diag(1 / s_i²) R_iᵀ`` so that ``uᵀ M_i u < 1`` inside ellipsoid ``i``."""
    return np.einsum("nik,nk,njk->nij", rot, 1.0 / semi**2, rot)


def _bounding_boxes(
    centres: np.ndarray, semi: np.ndarray, rot: np.ndarray, shape: tuple, sp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index ranges ``[lo, hi)`` ``(n, 3)`` covering each ellipsoid, clipped to ``shape``."""
    half = np.sqrt(np.einsum("nik,nk->ni", rot**2, semi**2))
    lo = np.clip(np.ceil((centres - half) / sp), 0, shape).astype(np.intp)
    hi = np.clip(np.floor((centres + half) / sp) + 1, 0, shape).astype(np.intp)
    return lo, hi


def _rasterise(
    centres: np.ndarray, semi: np.ndarray, rot: np.ndarray, shape: tuple, sp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``1..n`` by placement order, smallest and second-smallest ``d²`` (1 = none)."""
    labels = np.zeros(shape, dtype=np.uint32)
    best = np.ones(shape, dtype=np.float32)
    second = np.ones(shape, dtype=np.float32)
    forms = _quadratic_forms(semi, rot)
    lo, hi = _bounding_boxes(centres, semi, rot, shape, sp)
    for i in np.flatnonzero(np.all(hi > lo, axis=1)):
        box = tuple(slice(a, b) for a, b in zip(lo[i], hi[i], strict=True))
        d2 = normalised_distance2(forms[i], centres[i], lo[i], hi[i], sp)
        b1, b2, lab = best[box], second[box], labels[box]
        closer = d2 < b1
        b2[...] = np.where(closer, b1, np.minimum(b2, d2))
        b1[closer] = d2[closer]
        lab[closer] = i + 1
    return labels, best, second


def _relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered ``1..N`` in placement order, and the placement index of each."""
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return lut[labels], present - 1
