"""Shape descriptors of closed object meshes, in µm.

Size and form come from the mesh as a solid: volume and centroid from signed
tetrahedra, second moments from the exact polyhedral integrals (so principal
axes do not depend on how vertices are distributed), surface area from cross
products.  Curvature uses the discrete operators of Meyer et al. (cotangent
Laplacian for mean curvature, angle defect for Gaussian curvature) with
barycentric vertex areas; statistics are area-weighted.  The spherical-harmonics
spectrum and ShapeDNA are in :mod:`~dls_microscopy.geometry.spectral`.

Column names carry their units (``_um``, ``_um2``, ``_um3``, ``_per_um``,
``_per_um2``); :data:`UNITS` maps every column to its unit for table schemas.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from dls_microscopy.geometry.mesh import ObjectMesh
from dls_microscopy.geometry.spectral import (
    DEFAULT_SH_DEGREE,
    DEFAULT_SHAPEDNA_K,
    shapedna,
    spherical_harmonics_spectrum,
)

__all__ = ["UNITS", "compute_descriptors", "descriptor_units", "shape_descriptors"]

log = logging.getLogger(__name__)

#: Unit of every fixed column ("1" = dimensionless).
UNITS: dict[str, str] = {
    "object_id": "",
    "n_vertices": "1",
    "n_faces": "1",
    "watertight": "",
    "volume_um3": "um^3",
    "surface_area_um2": "um^2",
    "equivalent_diameter_um": "um",
    "sphericity": "1",
    "centroid_z_um": "um",
    "centroid_y_um": "um",
    "centroid_x_um": "um",
    "major_axis_length_um": "um",
    "intermediate_axis_length_um": "um",
    "minor_axis_length_um": "um",
    "elongation": "1",
    "flatness": "1",
    "convex_hull_volume_um3": "um^3",
    "solidity": "1",
    "mean_curvature_mean_per_um": "1/um",
    "mean_curvature_std_per_um": "1/um",
    "gaussian_curvature_mean_per_um2": "1/um^2",
    "gaussian_curvature_std_per_um2": "1/um^2",
    "integrated_gaussian_curvature": "1",
    "sh_star_like": "",
    "sh_back_facing_fraction": "1",
    "sh_mean_radius_um": "um",
}


def descriptor_units(
    *, sh_degree: int = DEFAULT_SH_DEGREE, shapedna_k: int = DEFAULT_SHAPEDNA_K
) -> dict[str, str]:
    """Every column of :func:`shape_descriptors` with its unit, in column order."""
    units = dict(UNITS)
    units.update({f"sh_power_l{d}": "1" for d in range(1, sh_degree + 1)})
    units.update({f"shapedna_{i}": "1" for i in range(1, shapedna_k + 1)})
    return units


def shape_descriptors(
    mesh: ObjectMesh,
    *,
    sh_degree: int = DEFAULT_SH_DEGREE,
    shapedna_k: int = DEFAULT_SHAPEDNA_K,
) -> dict[str, Any]:
    """All descriptors of one closed mesh.

    BLAS runs single-threaded meanwhile: a multithreaded BLAS sums the spherical-harmonics
    Gram matrix in an order that depends on its thread count, which changed the last bits
    of the spectrum between in-process threads and dask workers. Descriptor tables must be
    byte-identical wherever they are computed.

    Parameters
    ----------
    mesh : ObjectMesh
        Closed, outward-oriented mesh in µm.
    sh_degree : int
        Highest spherical-harmonics degree of the spectrum.
    shapedna_k : int
        Number of non-zero Laplace–Beltrami eigenvalues in ShapeDNA.

    Returns
    -------
    dict
        Keys as in :func:`descriptor_units`; NaN where a descriptor is
        undefined (too few vertices, flat hull).

    Notes
    -----
    Axis lengths are full lengths of the solid ellipsoid with the same second
    moments (``2 sqrt(5 λ)`` for covariance eigenvalues λ); ``elongation`` is
    intermediate / major and ``flatness`` minor / intermediate (both 1 for a
    sphere, smaller for elongated or flat shapes).  Sphericity is
    ``π^(1/3) (6 V)^(2/3) / A`` (1 for a sphere).
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        return _shape_descriptors(mesh, sh_degree=sh_degree, shapedna_k=shapedna_k)


def _shape_descriptors(mesh: ObjectMesh, *, sh_degree: int, shapedna_k: int) -> dict[str, Any]:
    v, f = mesh.vertices, mesh.faces.astype(np.int64)
    out: dict[str, Any] = {
        "object_id": int(mesh.id),
        "n_vertices": mesh.n_vertices,
        "n_faces": mesh.n_faces,
        "watertight": bool(mesh.watertight),
    }
    volume, area = mesh.volume_um3, mesh.surface_area_um2
    out["volume_um3"] = volume
    out["surface_area_um2"] = area
    out["equivalent_diameter_um"] = (6.0 * volume / math.pi) ** (1 / 3) if volume > 0 else 0.0
    out["sphericity"] = (math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area > 0 else math.nan
    centroid, axes = solid_moments(v, f)
    out.update(dict(zip(("centroid_z_um", "centroid_y_um", "centroid_x_um"), centroid.tolist(), strict=True)))
    major, inter, minor = axes.tolist()
    out["major_axis_length_um"] = major
    out["intermediate_axis_length_um"] = inter
    out["minor_axis_length_um"] = minor
    out["elongation"] = inter / major if major > 0 else math.nan
    out["flatness"] = minor / inter if inter > 0 else math.nan
    hull = convex_hull_volume(v)
    out["convex_hull_volume_um3"] = hull
    out["solidity"] = volume / hull if hull > 0 else math.nan
    out.update(curvature_statistics(v, f))
    out.update(spherical_harmonics_spectrum(v, f, centroid, degree=sh_degree))
    out.update(shapedna(v, f, k=shapedna_k, area=area))
    return out


@functools.cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def compute_descriptors(meshes: Iterable[ObjectMesh], **options: Any) -> Iterator[dict[str, Any]]:
    """:func:`shape_descriptors` for every mesh, lazily (one row dict per object)."""
    for mesh in meshes:
        yield shape_descriptors(mesh, **options)


def solid_moments(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and principal axis lengths of the solid bounded by a closed mesh.

    Parameters
    ----------
    vertices : (V, 3) ndarray of float
    faces : (F, 3) ndarray of int
        Outward-oriented triangles.

    Returns
    -------
    centroid : (3,) ndarray
        Centre of mass, same frame as ``vertices``.
    axes : (3,) ndarray
        Full axis lengths of the equal-moment ellipsoid, descending.
    """
    if not len(faces):
        return np.full(3, np.nan), np.full(3, np.nan)
    ref = vertices.mean(axis=0)
    p = vertices - ref
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    vol6 = np.einsum("ij,ij->i", a, np.cross(b, c))  # 6 x signed volume of (0, a, b, c)
    total = vol6.sum()
    if total <= 0:
        return ref, np.zeros(3)
    s = a + b + c
    first = (vol6[:, None] * s).sum(axis=0) / 4.0 / total
    # ∫ x xᵀ over tetra (0, a, b, c) = V/20 (a aᵀ + b bᵀ + c cᵀ + s sᵀ)
    second = (
        np.einsum("i,ij,ik->jk", vol6, a, a)
        + np.einsum("i,ij,ik->jk", vol6, b, b)
        + np.einsum("i,ij,ik->jk", vol6, c, c)
        + np.einsum("i,ij,ik->jk", vol6, s, s)
    )
    second /= 20.0 * total
    cov = second - np.outer(first, first)
    eig = np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None)
    return first + ref, 2.0 * np.sqrt(5.0 * eig)


def convex_hull_volume(vertices: np.ndarray) -> float:
    """Volume of the convex hull of the vertices (NaN when they are coplanar)."""
    from scipy.spatial import ConvexHull, QhullError

    if len(vertices) < 4:
        return math.nan
    try:
        return float(ConvexHull(vertices).volume)
    except QhullError:
        return math.nan


def curvature_statistics(vertices: np.ndarray, faces: np.ndarray) -> dict[str, float]:
    """Area-weighted mean and standard deviation of mean and Gaussian curvature.

    Mean curvature ``H = -½ (Δx · n)`` with the cotangent Laplacian ``Δ``
    (positive on convex parts; ``1/r`` on a sphere of radius r), Gaussian
    curvature ``K = (2π - Σθ) / A_i`` (angle defect; ``1/r²`` on a sphere).
    ``integrated_gaussian_curvature`` is ``Σ K_i A_i / 2π``, the Euler
    characteristic (2 for a sphere-like surface, 0 for a torus).

    Parameters
    ----------
    vertices : (V, 3) ndarray of float
    faces : (F, 3) ndarray of int
        Closed, outward-oriented triangles.
    """
    nan = {
        "mean_curvature_mean_per_um": math.nan,
        "mean_curvature_std_per_um": math.nan,
        "gaussian_curvature_mean_per_um2": math.nan,
        "gaussian_curvature_std_per_um2": math.nan,
        "integrated_gaussian_curvature": math.nan,
    }
    if len(faces) < 4:
        return nan
    n = len(vertices)
    corners = vertices[faces]  # (F, 3, 3)
    # edge opposite corner k: from corner k+1 to k+2
    e = [corners[:, (k + 2) % 3] - corners[:, (k + 1) % 3] for k in range(3)]
    cross = np.cross(e[0], e[1])
    twice_area = np.linalg.norm(cross, axis=1)
    area_v = np.bincount(faces.ravel(), weights=np.repeat(twice_area / 6.0, 3), minlength=n)
    normal_v = np.zeros((n, 3))
    for k in range(3):
        np.add.at(normal_v, faces[:, k], cross)
    lap = np.zeros((n, 3))
    angle_sum = np.zeros(n)
    safe = np.maximum(twice_area, 1e-300)
    for k in range(3):
        u = -e[(k + 2) % 3]  # from corner k to corner k+1
        w = e[(k + 1) % 3]  # from corner k to corner k+2
        cos = np.einsum("ij,ij->i", u, w)
        angle_sum += np.bincount(faces[:, k], weights=np.arctan2(twice_area, cos), minlength=n)
        cot = cos / safe
        i, j = faces[:, (k + 1) % 3], faces[:, (k + 2) % 3]  # the edge opposite corner k
        d = vertices[j] - vertices[i]
        contrib = 0.5 * cot[:, None] * d
        for col in range(3):
            lap[:, col] += np.bincount(i, weights=contrib[:, col], minlength=n)
            lap[:, col] -= np.bincount(j, weights=contrib[:, col], minlength=n)
    ok = area_v > 0
    unit = normal_v / np.maximum(np.linalg.norm(normal_v, axis=1, keepdims=True), 1e-300)
    h = np.where(ok, -0.5 * np.einsum("ij,ij->i", lap, unit) / np.where(ok, area_v, 1), 0.0)
    k_gauss = np.where(ok, (2 * math.pi - angle_sum) / np.where(ok, area_v, 1), 0.0)
    weights = area_v / area_v.sum()
    h_mean = float(weights @ h)
    k_mean = float(weights @ k_gauss)
    return {
        "mean_curvature_mean_per_um": h_mean,
        "mean_curvature_std_per_um": float(np.sqrt(weights @ (h - h_mean) ** 2)),
        "gaussian_curvature_mean_per_um2": k_mean,
        "gaussian_curvature_std_per_um2": float(np.sqrt(weights @ (k_gauss - k_mean) ** 2)),
        "integrated_gaussian_curvature": float((2 * math.pi * n - angle_sum.sum()) / (2 * math.pi)),
    }
