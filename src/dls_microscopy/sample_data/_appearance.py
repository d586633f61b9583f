"""The appearance model of the synthetic nuclei: stains, optics and camera.

Split from :mod:`.synthetic` (geometry and placement stay there).  Given labels and
the ellipsoids behind them, :func:`render` draws a DNA stain and a nuclear-envelope
stain, attenuates them with depth, blurs them with a Gaussian PSF, adds a smooth
background and records them with shot and read noise as ``uint16``.  Random numbers
come from the caller's generator, consumed in a fixed order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["normalised_distance2", "render"]

#: Physical length scales of the appearance model, µm.
_CHROMATIN_SIGMA_UM = 0.35
_ENVELOPE_WIDTH_UM = 0.25
_FACE_WIDTH_UM = 0.3
_ATTENUATION_LENGTH_UM = 200.0
#: Camera model: background photons per channel, offset, gain and read noise.
_BACKGROUND_PHOTONS = (12.0, 8.0)
_CAMERA_OFFSET_ADU = 100.0
_GAIN_ADU_PER_PHOTON = 2.0
_READ_NOISE_PHOTONS = 2.0
_NOISE_SLAB_VOXELS = 1 << 22


def normalised_distance2(
    m: np.ndarray, centre: np.ndarray, lo: np.ndarray, hi: np.ndarray, sp: np.ndarray
) -> np.ndarray:
    """``uᵀ M u`` on the voxel grid ``[lo, hi)`` (offsets ``u`` in µm), as float32.

    Shared by the rasteriser of :mod:`.synthetic` and the nucleoli here.
    """
    uz, uy, ux = (np.arange(lo[k], hi[k]) * sp[k] - centre[k] for k in range(3))
    plane = (m[0, 0] * uz**2)[:, None] + 2 * m[0, 1] * np.outer(uz, uy) + m[1, 1] * uy**2
    slope = 2 * (m[0, 2] * uz[:, None] + m[1, 2] * uy[None, :])
    d2 = plane[:, :, None] + slope[:, :, None] * ux + m[2, 2] * ux**2
    return d2.astype(np.float32, copy=False)


def render(
    rng: np.random.Generator,
    labels: np.ndarray,
    best: np.ndarray,
    second: np.ndarray,
    ellipsoids: tuple[np.ndarray, np.ndarray, np.ndarray],
    sp: np.ndarray,
    psf_sigma_um: tuple,
    photons: tuple,
    noise: float,
    attenuation_length_um: float = _ATTENUATION_LENGTH_UM,
) -> np.ndarray:
    """The recorded ``(2, Z, Y, X)`` uint16 image of the labelled nuclei.

    ``ellipsoids`` holds the centres, semi-axes and rotations of nuclei ``1..N``; the
    signal falls by ``e`` every ``attenuation_length_um`` of depth (z).
    """
    shape = labels.shape
    n = int(labels.max(initial=0))
    semi = ellipsoids[1]
    # Per-nucleus properties, index 0 for the background.
    brightness = np.concatenate([[0.0], rng.lognormal(0.0, 0.3, n)]).astype(np.float32)
    contrast = np.concatenate([[0.0], rng.uniform(0.2, 0.45, n)]).astype(np.float32)
    envelope = np.concatenate([[0.0], rng.lognormal(0.0, 0.25, n)]).astype(np.float32)
    radius = np.concatenate([[1.0], np.cbrt(semi.prod(axis=1))]).astype(np.float32)

    chromatin = rng.standard_normal(shape, dtype=np.float32)
    chromatin = ndimage.gaussian_filter(chromatin, _CHROMATIN_SIGMA_UM / sp, truncate=3.0)
    chromatin /= max(float(chromatin.std()), 1e-12)

    d1 = np.sqrt(best)
    r = radius[labels]
    to_surface = (1 - d1) * r
    to_face = np.where(second < 1, (np.sqrt(second) - d1) * r / 2, np.inf).astype(np.float32)
    shell = np.exp(-((np.minimum(to_surface, to_face) / _ENVELOPE_WIDTH_UM) ** 2))
    face_dip = 1 - 0.5 * np.exp(-((to_face / _FACE_WIDTH_UM) ** 2))

    stain = brightness[labels] * np.clip(1 + contrast[labels] * chromatin, 0.1, None)
    stain *= (0.85 + 0.3 * best) * face_dip
    _darken_nucleoli(rng, stain, labels, ellipsoids, sp)
    lamina = np.roll(chromatin, shift=tuple(s // 2 for s in shape), axis=(0, 1, 2))
    rim = envelope[labels] * (0.12 + 0.88 * shell * np.clip(1 + 0.35 * lamina, 0.2, None))
    del chromatin, lamina, d1, r, to_surface, to_face, shell, face_dip

    depth = np.exp(-np.arange(shape[0]) * sp[0] / attenuation_length_um).astype(np.float32)
    sigma_vox = np.asarray(psf_sigma_um) / sp
    background = _background_field(rng, shape)
    expected = np.empty((2, *shape), dtype=np.float32)
    for c, signal in enumerate((stain, rim)):
        signal *= photons[c] * depth[:, None, None] * (labels > 0)
        if sigma_vox.any():
            signal = ndimage.gaussian_filter(signal, sigma_vox, truncate=3.0)
        expected[c] = signal + _BACKGROUND_PHOTONS[c] * background
    return _record(rng, expected, noise)


def _darken_nucleoli(
    rng: np.random.Generator,
    stain: np.ndarray,
    labels: np.ndarray,
    ellipsoids: tuple[np.ndarray, np.ndarray, np.ndarray],
    sp: np.ndarray,
) -> None:
    """Multiply ``stain`` in place by 1 or 2 dark, spherical, soft-edged nucleoli per nucleus."""
    centres, semi, rot = ellipsoids
    owner = np.repeat(np.arange(len(centres)), rng.integers(1, 3, len(centres)))
    k = len(owner)
    # Positions: inside the inner 45 % of the owner's ellipsoid, uniform in a ball.
    direction = rng.standard_normal((k, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    local = direction * (0.45 * np.cbrt(rng.random(k)))[:, None] * semi[owner]
    where = centres[owner] + np.einsum("nij,nj->ni", rot[owner], local)
    radius = rng.uniform(0.25, 0.4, k) * np.cbrt(semi[owner].prod(axis=1))
    depth = rng.uniform(0.5, 0.8, k)
    lo = np.clip(np.ceil((where - radius[:, None]) / sp), 0, labels.shape).astype(np.intp)
    hi = np.clip(np.floor((where + radius[:, None]) / sp) + 1, 0, labels.shape).astype(np.intp)
    for i in np.flatnonzero(np.all(hi > lo, axis=1)):
        box = tuple(slice(a, b) for a, b in zip(lo[i], hi[i], strict=True))
        form = np.eye(3) / radius[i] ** 2
        d2 = normalised_distance2(form, where[i], lo[i], hi[i], sp)
        inside = (labels[box] == owner[i] + 1) & (d2 < 1)
        profile = np.clip(2 * (1 - d2), 0, 1)  # flat core, soft rim
        stain[box] *= np.where(inside, 1 - depth[i] * profile, 1).astype(np.float32)


def _background_field(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """A smooth ``(Z, Y, X)`` float32 field around 1: random tilt, vignetting, slow z drift."""
    zz, yy, xx = (np.linspace(-0.5, 0.5, s, dtype=np.float32) for s in shape)
    tilt_z, tilt_y, tilt_x = rng.uniform(-0.4, 0.4, 3).astype(np.float32)
    plane = 1 + tilt_y * yy[:, None] + tilt_x * xx[None, :]
    plane -= 0.8 * (yy[:, None] ** 2 + xx[None, :] ** 2)
    return (1 + tilt_z * zz)[:, None, None] * plane[None]


def _record(rng: np.random.Generator, expected: np.ndarray, noise: float) -> np.ndarray:
    """Shot noise, read noise, gain and offset, saturating cast to uint16 (slab by slab)."""
    out = np.empty(expected.shape, dtype=np.uint16)
    flat_in = expected.reshape(-1)
    flat_out = out.reshape(-1)
    scale = noise * noise
    for start in range(0, flat_in.size, _NOISE_SLAB_VOXELS):
        lam = np.clip(flat_in[start : start + _NOISE_SLAB_VOXELS], 0, None)
        if scale > 0:
            counts = rng.poisson(lam / scale).astype(np.float32) * np.float32(scale)
            counts += rng.standard_normal(lam.size, dtype=np.float32) * np.float32(
                _READ_NOISE_PHOTONS * noise
            )
        else:
            counts = lam
        adu = np.rint(counts * _GAIN_ADU_PER_PHOTON + _CAMERA_OFFSET_ADU)
        flat_out[start : start + _NOISE_SLAB_VOXELS] = np.clip(adu, 0, np.iinfo(np.uint16).max)
    return out
