"""Surface point clouds of objects for the shape encoder, sampled from their meshes.

Each object is meshed in µm (:func:`~dls_microscopy.geometry.mesh_objects`,
Taubin-smoothed so that the voxel staircase does not dominate), and
``n_pool`` points are drawn on its surface, uniformly by area: a triangle is
chosen with probability proportional to its area, a point in it with uniform
barycentric coordinates.  The generator is seeded with ``(seed, object id)``,
so an object's points do not depend on which other objects are in the volume
or in which order they are meshed.

The cloud is then put in a *canonical frame*: centred on its mean and rotated
onto its principal axes (largest variance first), each axis signed so that the
third moment along it is positive.  Pose then no longer carries information,
so the encoder spends its capacity on form; the remaining ambiguities (signs
of near-symmetric axes, swaps of near-equal axes) are what the training
augmentations (flips, small rotations) cover.

The cloud is **not** scaled to unit size: size is biologically informative
(enlarged nuclei), so coordinates are µm divided by one fixed ``scale_um``
(stored with the model) to keep numbers near 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["MESH_SMOOTH", "canonical_frame", "iter_object_points", "principal_axes", "sample_surface"]

log = logging.getLogger(__name__)

#: Taubin smoothing iterations of the meshes that points are sampled from.
MESH_SMOOTH = 10


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly distributed (by area) on a triangle mesh.

    Parameters
    ----------
    vertices : (V, 3) float ndarray
    faces : (F, 3) int ndarray
    n : int
    rng : numpy.random.Generator

    Returns
    -------
    (n, 3) float64 ndarray
        Points; all at the vertex mean when the mesh has no area.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    if len(f) == 0:
        return np.repeat(v.mean(axis=0, keepdims=True) if len(v) else np.zeros((1, 3)), n, axis=0)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = area.sum()
    if not total > 0:
        return np.repeat(v.mean(axis=0, keepdims=True), n, axis=0)
    tri = np.searchsorted(np.cumsum(area) / total, rng.random(n), side="right")
    tri = np.minimum(tri, len(f) - 1)
    u, w = rng.random(n), rng.random(n)
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    return a[tri] + u[:, None] * (b[tri] - a[tri]) + w[:, None] * (c[tri] - a[tri])


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, principal axes and canonical coordinates of a point set.

    Parameters
    ----------
    points : (N, 3) float ndarray

    Returns
    -------
    mean : (3,) float64 ndarray
    axes : (3, 3) float64 ndarray
        Columns are the principal axes in the input's coordinates, by decreasing
        variance, each signed so that the third moment along it is ``>= 0``.
    canonical : (N, 3) float64 ndarray
        ``(points - mean) @ axes``.
    """
    p = np.asarray(points, np.float64)
    mean = p.mean(axis=0)
    p = p - mean
    cov = p.T @ p / max(len(p), 1)
    _, vecs = np.linalg.eigh(cov)
    vecs = vecs[:, ::-1]
    q = p @ vecs
    sign = np.where(np.sum(q**3, axis=0) < 0, -1.0, 1.0)
    return mean, vecs * sign, q * sign


def canonical_frame(points: np.ndarray) -> np.ndarray:
    """Centre ``points`` and rotate them onto their principal axes (:func:`principal_axes`).

    Parameters
    ----------
    points : (N, 3) float ndarray

    Returns
    -------
    (N, 3) float64 ndarray
        Columns ordered by decreasing variance; each column's third moment is
        ``>= 0``; a proper rotation (determinant +1) unless a sign had to be
        set by the skewness of all three axes.
    """
    return principal_axes(points)[2]


def iter_object_points(
    labels: Any,
    *,
    spacing: Sequence[float],
    n_points: int,
    seed: int,
    scale_um: float,
    batch_size: int = 64,
    index: Any = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids, points)`` batches of canonical surface clouds, one per object.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray, dask array or Volume
        Read block by block by the mesher.
    spacing : tuple of 3 float
        µm per voxel.
    n_points : int
        Points per object.
    seed : int
        Sampling seed (combined with each object id).
    scale_um : float
        Coordinates are divided by this.
    batch_size : int
    index : ObjectIndex, optional

    Yields
    ------
    ids : (B,) uint64 ndarray
        In the mesher's order (block raster order), not sorted.
    points : (B, n_points, 3) float32 ndarray
    """
    from dls_microscopy.geometry.mesh import mesh_objects

    ids: list[int] = []
    clouds: list[np.ndarray] = []
    for mesh in mesh_objects(labels, spacing=spacing, smooth=MESH_SMOOTH, measure=False, index=index):
        rng = np.random.default_rng([int(seed), int(mesh.id)])
        pts = canonical_frame(sample_surface(mesh.vertices, mesh.faces, int(n_points), rng))
        ids.append(int(mesh.id))
        clouds.append((pts / scale_um).astype(np.float32))
        if len(ids) == batch_size:
            yield np.asarray(ids, np.uint64), np.stack(clouds)
            ids, clouds = [], []
    if ids:
        yield np.asarray(ids, np.uint64), np.stack(clouds)
