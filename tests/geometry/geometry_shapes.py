"""Analytic shapes voxelised at a given spacing, with their exact volume and area."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.spatial.transform import Rotation
from scipy.special import ellipeinc, ellipkinc


@dataclasses.dataclass(frozen=True)
class Shape:
    """An implicit solid ``inside(p) <= 0`` in µm with its exact volume and area."""

    name: str
    inside: Callable[[np.ndarray], np.ndarray]  # (..., 3) local coords -> value (<= 0 inside)
    extent: float  # radius of a ball around the centre that holds the shape, µm
    volume: float
    area: float


def sphere(r: float) -> Shape:
    return Shape(
        "sphere",
        lambda p: np.einsum("...i,...i->...", p, p) - r * r,
        r,
        4 / 3 * math.pi * r**3,
        4 * math.pi * r * r,
    )


def ellipsoid(a: float, b: float, c: float) -> Shape:
    radii = np.array([a, b, c], float)
    return Shape(
        "ellipsoid",
        lambda p: np.sum((p / radii) ** 2, axis=-1) - 1.0,
        float(radii.max()),
        4 / 3 * math.pi * a * b * c,
        ellipsoid_area(a, b, c),
    )


def torus(big: float, small: float) -> Shape:
    """Torus around the first (z) axis."""

    def inside(p: np.ndarray) -> np.ndarray:
        q = np.sqrt(p[..., 1] ** 2 + p[..., 2] ** 2) - big
        return q * q + p[..., 0] ** 2 - small * small

    return Shape("torus", inside, big + small, 2 * math.pi**2 * big * small**2, 4 * math.pi**2 * big * small)


def ellipsoid_area(a: float, b: float, c: float) -> float:
    """Exact surface area of an ellipsoid (Legendre's formula with incomplete elliptic integrals)."""
    a, b, c = sorted((a, b, c), reverse=True)
    if math.isclose(a, c):
        return 4 * math.pi * a * a
    phi = math.acos(c / a)
    m = (a * a * (b * b - c * c)) / (b * b * (a * a - c * c))
    s = math.sin(phi)
    return 2 * math.pi * c * c + 2 * math.pi * a * b / s * (
        ellipeinc(phi, m) * s * s + ellipkinc(phi, m) * math.cos(phi) ** 2
    )


def voxelise(
    shape: Shape,
    spacing: Sequence[float],
    *,
    rotation: Rotation | None = None,
    offset: Sequence[float] = (0.0, 0.0, 0.0),
    margin: int = 2,
    label: int = 1,
    dtype: type = np.uint16,
) -> np.ndarray:
    """Voxels whose centres ``(i dz, j dy, k dx)`` lie inside the (rotated, shifted) shape."""
    sp = np.asarray(spacing, float)
    n = np.ceil(2 * shape.extent / sp).astype(int) + 2 * margin + 1
    centre = (n - 1) / 2 * sp + np.asarray(offset, float)
    grid = (
        np.stack(np.meshgrid(*[np.arange(k) * s for k, s in zip(n, sp, strict=True)], indexing="ij"), axis=-1)
        - centre
    )
    if rotation is not None:
        grid = rotation.inv().apply(grid.reshape(-1, 3)).reshape(grid.shape)
    out = np.zeros(tuple(n), dtype)
    out[shape.inside(grid) <= 0] = label
    return out
