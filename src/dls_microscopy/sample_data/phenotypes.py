"""A seeded synthetic phenotype set: treatments that change nuclei in known ways, replicate wells.

Used to *measure* how well features separate treatments (see
``benchmarks/run_embeddings.py``).  Every well is one 3D field of well-separated
nuclei (no touching, none cut by the volume's faces), so the labels are exact
and any difference between treatments comes from the phenotype alone.

Treatments (:data:`TREATMENTS`), all relative to ``control``:

``control``
    Ellipsoids, equivalent diameter 7 µm (± 12 %), longest/shortest axis 1.0–1.3,
    smooth chromatin texture.
``enlarged``
    Same shapes and texture, diameter 8.6 µm (+23 %, about 1.9× the volume).
``elongated``
    Same volume as control, prolate, longest/shortest axis 1.9–2.5.
``lobed``
    Control size, surface radius modulated by 3–5 equatorial lobes
    (``r(θ, φ) = r₀ (1 + 0.28 sin²θ cos(m (φ - φ₀)))``).
``granular``
    Control shape and size, a third of the DNA signal in 12–20 bright granules of
    0.45 µm (σ), the rest dimmer: same mean intensity, coarse texture.

``strength`` (:meth:`Treatment.at_strength`) scales every change from control:
at 1 (default) most treatments are told apart object by object, at 0.5 (a half
dose) the set is hard for any feature set, which keeps scores off their ceiling.

Wells differ by a multiplicative brightness (± 10 %) and a size factor (± 4 %)
(plate-like batch effects), nuclei by brightness (± 15 %), size and orientation
(uniform in 3D).  The image is blurred with an anisotropic Gaussian PSF, given a
background and Poisson + read noise, and stored as ``uint16``; voxels are
anisotropic (``spacing`` default ``(0.6, 0.25, 0.25)`` µm).

Everything random comes from ``numpy.random.default_rng([seed, well_index])``,
so a seed always gives the same plate, and one well does not depend on the others.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from dls_microscopy.errors import InputError, OutputError

__all__ = [
    "TREATMENTS",
    "PhenotypeWell",
    "Treatment",
    "make_phenotype_plate",
    "make_phenotype_well",
    "write_phenotype_plate",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Treatment:
    """How a treatment changes nuclei.

    Attributes
    ----------
    diameter_um : float
        Mean equivalent (same-volume sphere) diameter, µm.
    aspect : tuple of 2 float
        Range of the longest/shortest axis ratio (uniform).
    lobe_amplitude : float
        Relative amplitude of equatorial lobes (0: none).
    granule_fraction : float
        Fraction of the DNA signal in bright granules (0: none).
    """

    diameter_um: float = 7.0
    aspect: tuple[float, float] = (1.0, 1.3)
    lobe_amplitude: float = 0.0
    granule_fraction: float = 0.0

    def at_strength(self, strength: float) -> Treatment:
        """This treatment with its change from control scaled by ``strength``.

        0 gives control's parameters, 1 this treatment, 0.5 half of each change
        (diameter, both aspect bounds, lobe amplitude, granule fraction are
        interpolated linearly): a weaker dose of the same phenotype.

        Raises
        ------
        InputError
            ``strength`` is negative or gives impossible parameters (aspect < 1,
            lobes >= 1, granule fraction > 1, diameter <= 0).
        """
        s = float(strength)
        if s == 1.0:
            return self  # exactly the stated parameters, not a rounded interpolation
        c = Treatment()
        t = Treatment(
            diameter_um=c.diameter_um + s * (self.diameter_um - c.diameter_um),
            aspect=(
                c.aspect[0] + s * (self.aspect[0] - c.aspect[0]),
                c.aspect[1] + s * (self.aspect[1] - c.aspect[1]),
            ),
            lobe_amplitude=s * self.lobe_amplitude,
            granule_fraction=s * self.granule_fraction,
        )
        if not (
            s >= 0
            and t.diameter_um > 0
            and 1 <= t.aspect[0] <= t.aspect[1]
            and t.lobe_amplitude < 1
            and t.granule_fraction <= 1
        ):
            raise InputError(f"treatment strength {strength} gives impossible nuclei: {t}")
        return t


#: The treatments of the set, in plate-column order.
TREATMENTS: dict[str, Treatment] = {
    "control": Treatment(),
    "enlarged": Treatment(diameter_um=8.6),
    "elongated": Treatment(aspect=(1.9, 2.5)),
    "lobed": Treatment(lobe_amplitude=0.28),
    "granular": Treatment(granule_fraction=0.33),
}

_SIZE_CV = 0.12
_WELL_BRIGHTNESS = 0.10
_WELL_SIZE = 0.04
_NUCLEUS_BRIGHTNESS = 0.15
_CHROMATIN_SIGMA_UM = 0.4
_CHROMATIN_AMPLITUDE = 0.18
_GRANULE_SIGMA_UM = 0.45
_GAP_UM = 1.5
_PHOTONS = 120.0
_BACKGROUND = 10.0
_OFFSET = 100.0
_READ_NOISE = 2.0


@dataclasses.dataclass(frozen=True, eq=False)
class PhenotypeWell:
    """One synthetic well (one field).

    Attributes
    ----------
    image : (1, Z, Y, X) uint16 ndarray
        DNA stain, axes ``czyx``, channel ``"DAPI"``.
    labels : (Z, Y, X) uint32 ndarray
        Nuclei numbered from 1; 0 is background.
    spacing : tuple of 3 float
        Voxel size ``(dz, dy, dx)`` in µm.
    treatment, well : str
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    treatment: str
    well: str

    @property
    def n_nuclei(self) -> int:
        """Number of nuclei."""
        return int(self.labels.max())


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_phenotype_well(
    treatment: str,
    *,
    seed: int = 0,
    well_index: int = 0,
    well: str = "",
    shape: Sequence[int] = (44, 160, 160),
    spacing: Sequence[float] = (0.6, 0.25, 0.25),
    n_nuclei: int = 20,
    psf_sigma_um: Sequence[float] = (0.6, 0.15, 0.15),
    strength: float = 1.0,
) -> PhenotypeWell:
    """Generate one well of a treatment.

    Parameters
    ----------
    treatment : str
        A key of :data:`TREATMENTS`.
    seed, well_index : int
        The well's random stream is ``default_rng([seed, well_index])``.
    well : str
        Well name stored with the result.
    shape : tuple of 3 int
        ``(Z, Y, X)`` voxels.
    spacing : tuple of 3 float
        µm per voxel.
    n_nuclei : int
        Nuclei to place (fewer when they do not fit; logged).
    psf_sigma_um : tuple of 3 float
        Gaussian PSF standard deviation per axis, µm.
    strength : float
        Size of the treatment's effect (:meth:`Treatment.at_strength`): 1 as
        stated in :data:`TREATMENTS`, 0.5 a half dose.  A well at strength 0
        is exactly the control well of the same seed and index.

    Returns
    -------
    PhenotypeWell
    """
    if treatment not in TREATMENTS:
        raise InputError(f"unknown treatment {treatment!r} (known: {', '.join(TREATMENTS)})")
    t = TREATMENTS[treatment].at_strength(strength)
    rng = np.random.default_rng([int(seed), int(well_index)])
    sp = np.asarray(spacing, np.float64)
    shp = np.asarray(shape, np.int64)
    extent = shp * sp
    well_gain = 1.0 + _WELL_BRIGHTNESS * rng.uniform(-1, 1)
    well_size = 1.0 + _WELL_SIZE * rng.uniform(-1, 1)
    labels = np.zeros(tuple(shp), np.uint32)
    signal = np.zeros(tuple(shp), np.float32)
    placed = 0
    inner: list[tuple[np.ndarray, float]] = []  # centres and inscribed radii, for a quick rejection
    failures = 0
    while placed < n_nuclei and failures < 400:
        d = t.diameter_um * well_size * (1 + _SIZE_CV * rng.uniform(-1, 1))
        aspect = rng.uniform(*t.aspect)
        # prolate ellipsoid with the given equivalent diameter: a = r aspect^(2/3), b = c = r aspect^(-1/3)
        r = d / 2
        semi = np.array([r * aspect ** (2 / 3), r * aspect ** (-1 / 3), r * aspect ** (-1 / 3)])
        reach = semi.max() * (1 + t.lobe_amplitude) + 2 * _GRANULE_SIGMA_UM
        if np.any(2 * (reach + _GAP_UM) >= extent):
            raise InputError(f"the volume ({extent} µm) is too small for nuclei of {2 * reach:.1f} µm")
        centre = rng.uniform(reach + 0.5, extent - reach - 0.5)
        r_in = semi.min() * (1 - t.lobe_amplitude)
        if any(np.linalg.norm(centre - c) < r_in + rc + _GAP_UM for c, rc in inner):
            failures += 1
            continue
        if _draw_nucleus(labels, signal, placed + 1, centre, semi, reach, t, rng, sp):
            placed += 1
            inner.append((centre, r_in))
        else:
            failures += 1
    if placed < n_nuclei:
        log.info("placed %d of %d nuclei (volume full)", placed, n_nuclei)
    sigma_vox = np.asarray(psf_sigma_um, np.float64) / sp
    blurred = ndimage.gaussian_filter(signal, sigma_vox, mode="constant")
    photons = (_PHOTONS * well_gain) * blurred + _BACKGROUND
    counts = rng.poisson(photons).astype(np.float32) + rng.normal(0, _READ_NOISE, photons.shape)
    image = np.clip(np.rint(counts + _OFFSET), 0, 65535).astype(np.uint16)[None]
    return PhenotypeWell(image, labels, (float(sp[0]), float(sp[1]), float(sp[2])), treatment, well)


def _draw_nucleus(
    labels: np.ndarray,
    signal: np.ndarray,
    label: int,
    centre: np.ndarray,
    semi: np.ndarray,
    reach: float,
    t: Treatment,
    rng: np.random.Generator,
    sp: np.ndarray,
) -> bool:
    """Rasterise one nucleus (mask and DNA signal) in its bounding box.

    Returns False (and draws nothing) when it would come within ``_GAP_UM`` of a
    nucleus already drawn.
    """
    rot = _rotation(rng)
    brightness = 1.0 + _NUCLEUS_BRIGHTNESS * rng.uniform(-1, 1)
    m = int(rng.integers(3, 6))
    phase = rng.uniform(0, 2 * math.pi)
    lo = np.maximum(np.floor((centre - reach) / sp).astype(np.int64), 0)
    hi = np.minimum(np.ceil((centre + reach) / sp).astype(np.int64) + 1, labels.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    grids = np.meshgrid(*(np.arange(a, b) * s for a, b, s in zip(lo, hi, sp, strict=True)), indexing="ij")
    p = np.stack([g - c for g, c in zip(grids, centre, strict=True)], axis=-1)  # µm, volume frame
    q = p @ rot  # nucleus frame: q_i = p . rot[:, i]
    rho = np.sqrt(np.sum((q / semi) ** 2, axis=-1))
    bound = np.ones_like(rho)
    if t.lobe_amplitude:
        n = np.linalg.norm(q, axis=-1) + 1e-9
        sin2 = 1 - (q[..., 0] / n) ** 2  # lobes around the long (first) axis
        phi = np.arctan2(q[..., 2], q[..., 1])
        bound = 1 + t.lobe_amplitude * sin2 * np.cos(m * (phi - phase))
    inside = rho < bound
    sub = labels[box]
    near = rho < bound * (1 + _GAP_UM / semi.min())
    if np.any(sub[near]):
        return False
    sub[inside] = label
    field = ndimage.gaussian_filter(
        rng.standard_normal(rho.shape).astype(np.float32), _CHROMATIN_SIGMA_UM / sp, mode="reflect"
    )
    field /= field.std() + 1e-9
    value = 1.0 + _CHROMATIN_AMPLITUDE * field
    if t.granule_fraction:
        k = int(rng.integers(12, 21))
        idx = np.flatnonzero(inside)
        centres = p.reshape(-1, 3)[rng.choice(idx, size=k, replace=False)]
        gran = np.zeros(rho.shape, np.float32)
        for c in centres:
            d2 = np.sum((p - c) ** 2, axis=-1)
            gran += np.exp(-d2 / (2 * _GRANULE_SIGMA_UM**2)).astype(np.float32)
        mean_g = float(gran[inside].mean())
        value = (1 - t.granule_fraction) * value + t.granule_fraction * gran / max(mean_g, 1e-9)
    signal[box] = np.where(inside, brightness * value, signal[box])
    return True


def make_phenotype_plate(
    *,
    seed: int = 0,
    replicates: int = 4,
    treatments: Sequence[str] | None = None,
    **well_options: object,
) -> list[PhenotypeWell]:
    """All wells of a plate: every treatment in ``replicates`` wells.

    Wells are named ``{row}{column:02d}``: row ``A``, ``B``... is the replicate,
    the column the treatment (1-based, in :data:`TREATMENTS` order).

    Returns
    -------
    list of PhenotypeWell
        Ordered by treatment, then replicate.
    """
    names = list(treatments or TREATMENTS)
    if replicates < 1:
        raise InputError(f"replicates must be >= 1, got {replicates}")
    wells = []
    for j, name in enumerate(names):
        for r in range(replicates):
            well = f"{chr(ord('A') + r)}{j + 1:02d}"
            wells.append(
                make_phenotype_well(
                    name,
                    seed=seed,
                    well_index=j * 1000 + r,
                    well=well,
                    **well_options,  # type: ignore[arg-type]
                )
            )
    return wells


def write_phenotype_plate(
    outdir: str | os.PathLike[str],
    *,
    plate: str = "P1",
    seed: int = 0,
    replicates: int = 4,
    treatments: Sequence[str] | None = None,
    **well_options: object,
) -> dict[str, dict[str, str]]:
    """Write a phenotype plate as one OME-Zarr per well, labels inside as ``labels/nuclei``.

    Also writes ``layout.json``: ``{well: {"treatment", "path", "plate"}}``.

    Returns
    -------
    dict
        The layout.
    """
    from dls_microscopy.io import write_ome_zarr

    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder: {exc.strerror or exc}", path=out) from exc
    layout = {}
    for w in make_phenotype_plate(seed=seed, replicates=replicates, treatments=treatments, **well_options):
        path = out / f"{plate}_{w.well}.ome.zarr"
        write_ome_zarr(
            w.image,
            path,
            axes="czyx",
            spacing=w.spacing,
            channel_names=("DAPI",),
            labels={"nuclei": w.labels},
            n_levels=1,
            overwrite=True,
        )
        layout[w.well] = {"treatment": w.treatment, "path": path.name, "plate": plate}
    (out / "layout.json").write_text(json.dumps(layout, indent=1, sort_keys=True), encoding="utf-8")
    log.info("wrote %d wells of plate %s to %s", len(layout), plate, out)
    return layout
