"""Many object meshes in concatenated arrays, processed with one vectorised call each.

Per-object Python overhead, not arithmetic, dominates meshing thousands of small
objects (trimesh spends about 6 ms per mesh on volume, area and watertightness).
A :class:`MeshBatch` holds the meshes of many objects end to end, and smoothing,
cleaning and measurement run once over the whole batch; per-object sums come
from ``np.add.reduceat`` over face ranges.

Vertices are kept in *voxel units* (float32) and *object-local*: relative to the
first voxel of each object's bounding box.  The umbrella operator of Taubin
smoothing commutes with per-axis scaling, areas and volumes scale with known
factors of the spacing, and µm are applied once on output.  Every step sees the
same numbers for an object whether it was meshed from a block or from its own
crop, so the results are bit-identical in both cases.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["Measures", "MeshBatch", "taubin_weights"]

log = logging.getLogger(__name__)

#: Taubin's low-pass filter: a shrinking step then an inflating one (pass band
#: k_PB = 1/λ + 1/μ ≈ 0.04); chosen on voxelised spheres, ellipsoids and tori.
TAUBIN_LAMBDA = 0.5
TAUBIN_MU = -0.51


@dataclasses.dataclass(frozen=True)
class Measures:
    """Per-object measures of a batch, each of shape ``(n,)``.

    Attributes
    ----------
    volume : ndarray of float64
        Enclosed volume in µm³ (signed-tetrahedra sum; positive for outward faces).
    area : ndarray of float64
        Surface area in µm².
    watertight : ndarray of bool
        Closed and consistently oriented: every directed edge has its reverse
        (see :func:`_open_objects_hashed` and :func:`_bad_vertices_exact`).
    n_degenerate : int
        Faces of zero area or with a repeated vertex in the whole batch.
    """

    volume: np.ndarray
    area: np.ndarray
    watertight: np.ndarray
    n_degenerate: int = 0


@dataclasses.dataclass(eq=False)
class MeshBatch:
    """Meshes of ``n`` objects in concatenated arrays.

    Attributes
    ----------
    ids : (n,) ndarray of uint64
        Object ids.
    lo : (n, 3) ndarray of int64
        First voxel of each object's bounding box, ``(z, y, x)``: the object-local origin.
    spacing : (3,) ndarray of float64
        Voxel size in µm.
    vertices : (V, 3) ndarray of float32
        Object-local positions in voxels, ``(z, y, x)``.
    faces : (F, 3) ndarray of int32
        Triangles indexing :attr:`vertices` of the whole batch.
    v_off, f_off : (n + 1,) ndarray of int64
        Vertex and face ranges of each object.
    """

    ids: np.ndarray
    lo: np.ndarray
    spacing: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    v_off: np.ndarray
    f_off: np.ndarray

    @classmethod
    def from_meshes(
        cls,
        ids: Sequence[int] | np.ndarray,
        lo: np.ndarray,
        spacing: Sequence[float],
        vertices: Sequence[np.ndarray],
        faces: Sequence[np.ndarray],
        shift: np.ndarray | None = None,
    ) -> MeshBatch:
        """Build a batch from per-object meshes in voxel units.

        Parameters
        ----------
        ids : (n,) sequence of int
        lo : (n, 3) ndarray of int
            Bounding-box corners (object-local origins), voxels.
        spacing : sequence of 3 float
            µm per voxel.
        vertices : sequence of n (V_i, 3) float arrays
            Positions in voxels (half-integers for marching cubes).
        faces : sequence of n (F_i, 3) integer arrays
            Indices into each object's own vertices.
        shift : (n, 3) ndarray of int, optional
            Added to each object's vertices to make them object-local.
        """
        n = len(vertices)
        nv = np.fromiter((len(v) for v in vertices), np.int64, n)
        nf = np.fromiter((len(f) for f in faces), np.int64, n)
        v_off = np.concatenate([[0], np.cumsum(nv)])
        f_off = np.concatenate([[0], np.cumsum(nf)])
        if n and v_off[-1] >= 2**31:
            raise ValueError("a mesh batch holds at most 2**31 vertices")
        if n:
            verts = np.concatenate(vertices, dtype=np.float32, casting="same_kind")
            tris = np.concatenate(faces, dtype=np.int32, casting="unsafe")
        else:
            verts, tris = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
        tris = tris.reshape(-1, 3)
        tris += np.repeat(v_off[:-1].astype(np.int32), nf)[:, None]
        if shift is not None:
            verts += np.repeat(np.asarray(shift, np.float32).reshape(-1, 3), nv, axis=0)
        return cls(
            ids=np.asarray(ids, np.uint64),
            lo=np.asarray(lo, np.int64).reshape(-1, 3),
            spacing=np.asarray(spacing, np.float64),
            vertices=verts.reshape(-1, 3),
            faces=tris,
            v_off=v_off,
            f_off=f_off,
        )

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def n_vertices(self) -> np.ndarray:
        """Vertices per object ``(n,)``."""
        return np.diff(self.v_off)

    @property
    def n_faces(self) -> np.ndarray:
        """Faces per object ``(n,)``."""
        return np.diff(self.f_off)

    def object_um(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Object ``k`` as ``(vertices, faces)``: object-local µm (float64) and own indices."""
        a, b = self.v_off[k], self.v_off[k + 1]
        faces = self.faces[self.f_off[k] : self.f_off[k + 1]] - np.int32(a)
        return self.vertices[a:b].astype(np.float64) * self.spacing, faces

    # -- processing -----------------------------------------------------
    def smooth(
        self,
        iterations: int,
        *,
        lam: float = TAUBIN_LAMBDA,
        mu: float = TAUBIN_MU,
        preserve_volume: bool = True,
    ) -> None:
        """Taubin λ|μ smoothing in place: ``iterations`` pairs of umbrella steps.

        Low-pass filtering without the shrinkage of plain Laplacian smoothing;
        removes the voxel staircase, which otherwise inflates surface area by
        9–20 %.  Features near the voxel size still shrink (a single-voxel
        octahedron collapses), so by default each object is then scaled about
        its vertex mean back to its volume before smoothing.
        """
        if iterations <= 0 or not len(self.faces):
            return
        before = self._six_volumes() if preserve_volume else None
        w = taubin_weights(self.faces, len(self.vertices))
        v = self.vertices
        for _ in range(int(iterations)):
            for factor in (np.float32(lam), np.float32(mu)):
                step = w @ v
                step -= v
                step *= factor
                v += step
        if before is not None:
            after = self._six_volumes()
            ratio = np.divide(before, after, out=np.ones_like(before), where=after > 0)
            scale = np.cbrt(np.where(ratio > 0, ratio, 1.0)).astype(np.float32)
            nv = self.n_vertices
            centre = (_segment_sums(v, self.v_off) / np.maximum(nv, 1)[:, None]).astype(np.float32)
            rep_c = np.repeat(centre, nv, axis=0)
            v -= rep_c
            v *= np.repeat(scale, nv)[:, None]
            v += rep_c

    def _six_volumes(self) -> np.ndarray:
        """Six times the signed volume of every object ``(n,)``, voxel units."""
        v = self.vertices
        a, b, c = v[self.faces[:, 0]], v[self.faces[:, 1]], v[self.faces[:, 2]]
        return _segment_sums(np.einsum("ij,ij->i", a, np.cross(b, c)), self.f_off)

    def clean(self) -> int:
        """Remove degenerate faces (repeated index or zero area) and unreferenced vertices.

        Returns
        -------
        int
            Number of faces removed.
        """
        f = self.faces
        bad = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
        if len(f):
            v = self.vertices
            cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            bad |= ~np.any(cross != 0, axis=1)
        referenced = np.zeros(len(self.vertices), bool)
        referenced[f[~bad].ravel()] = True
        n_bad = int(bad.sum())
        if n_bad == 0 and referenced.all():
            return 0
        keep = ~bad
        new_index = (np.cumsum(referenced) - 1).astype(np.int32)
        nv = np.bincount(np.repeat(np.arange(len(self)), self.n_vertices)[referenced], minlength=len(self))
        nf = np.bincount(np.repeat(np.arange(len(self)), self.n_faces)[keep], minlength=len(self))
        self.v_off = np.concatenate([[0], np.cumsum(nv)])
        self.f_off = np.concatenate([[0], np.cumsum(nf)])
        self.vertices = self.vertices[referenced]
        self.faces = new_index[f[keep]]
        log.debug("removed %d degenerate faces", n_bad)
        return n_bad

    def measure(self, *, orient: bool = True, exact: bool = False) -> Measures:
        """Volume, area and watertightness of every object, vectorised.

        Parameters
        ----------
        orient : bool
            Flip the faces of objects with negative volume so that all
            normals point outwards (volume becomes positive).
        exact : bool
            Test watertightness with exact edge counts (sparse matrices, about
            5x slower, also catches non-manifold edges) instead of the hash
            test of :func:`_open_objects_hashed`.
        """
        n = len(self)
        if not len(self.faces):
            return Measures(np.zeros(n), np.zeros(n), np.zeros(n, bool))
        gf = self.faces.T.copy()  # (3, F): one contiguous row per corner
        i, j, k = gf
        x, y, z = self.vertices.T.copy()
        ax, ay, az = x[i], y[i], z[i]
        e1x, e1y, e1z = x[j], y[j], z[j]
        e1x -= ax
        e1y -= ay
        e1z -= az
        e2x, e2y, e2z = x[k], y[k], z[k]
        e2x -= ax
        e2y -= ay
        e2z -= az
        cx = e1y * e2z
        cx -= e1z * e2y
        cy = e1z * e2x
        cy -= e1x * e2z
        cz = e1x * e2y
        cz -= e1y * e2x
        six_vol = ax * cx
        six_vol += ay * cy
        six_vol += az * cz
        # (S e1) x (S e2) = det(S) S^-1 (e1 x e2) for S = diag(spacing)
        s0, s1, s2 = (float(s) for s in self.spacing)
        cx *= np.float32(s1 * s2)
        cy *= np.float32(s0 * s2)
        cz *= np.float32(s0 * s1)
        cx *= cx
        cy *= cy
        cx += cy
        cz *= cz
        cx += cz
        twice_area = np.sqrt(cx, out=cx)
        volume = _segment_sums(six_vol, self.f_off) * (s0 * s1 * s2 / 6.0)
        area = _segment_sums(twice_area, self.f_off) / 2.0
        if exact:
            watertight = np.ones(n, bool)
            bad_vertices = _bad_vertices_exact(gf, len(x))
            watertight[np.searchsorted(self.v_off, bad_vertices, side="right") - 1] = False
        else:
            watertight = ~_open_objects_hashed(gf, len(x), self.f_off)
        watertight[self.n_faces == 0] = False
        if orient and (volume < 0).any():
            flip = np.repeat(volume < 0, self.n_faces)
            self.faces[flip] = self.faces[flip][:, ::-1]
            volume = np.abs(volume)
        repeated = (i == j) | (j == k) | (i == k)
        n_degenerate = int(np.count_nonzero(repeated | (twice_area <= 0)))
        return Measures(volume, area, watertight, n_degenerate)


def _open_objects_hashed(gf: np.ndarray, n_vertices: int, f_off: np.ndarray) -> np.ndarray:
    """Objects ``(n,)`` with a directed edge that lacks its reverse (hash test; ``gf`` (3, F)).

    Each vertex gets two pseudo-random 32-bit values ``h1, h2`` (splitmix64),
    and each directed edge ``a -> b`` the antisymmetric value
    ``h1(a) h2(b) - h1(b) h2(a)``; the three edges of a face sum to
    ``h1(i)(h2(j) - h2(k)) + h1(j)(h2(k) - h2(i)) + h1(k)(h2(i) - h2(j))``.  When
    every directed edge of an object has its reverse the terms cancel exactly
    (integer arithmetic modulo 2**32), so a non-zero sum proves a hole or a
    flipped face; a defective object passes by chance with probability about
    2**-31.  Six 32-bit gathers per face and no per-vertex accumulation: about
    5x cheaper than counting edges.  Repeated edges matched by repeated reverse
    edges (non-manifold edges) cancel too; marching cubes does not produce
    them, and decimated meshes are checked with :func:`_bad_vertices_exact`.
    """
    mixed = _splitmix64(np.arange(n_vertices, dtype=np.uint64))
    h1 = (mixed >> np.uint64(32)).astype(np.uint32)
    h2 = mixed.astype(np.uint32)  # the low half: independent bits of the same mix
    i, j, k = gf
    a2, b2, c2 = h2[i], h2[j], h2[k]
    t = h1[i] * (b2 - c2)
    t += h1[j] * (c2 - a2)
    t += h1[k] * (a2 - b2)
    sums = np.zeros(len(f_off) - 1, np.uint32)
    nonempty = f_off[1:] > f_off[:-1]
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(t, f_off[:-1][nonempty])
    return sums != 0


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a non-linear 64-bit mix (no linear relations survive)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _bad_vertices_exact(gf: np.ndarray, n_vertices: int) -> np.ndarray:
    """Vertices with an unmatched or repeated directed edge (exact sparse counts; ``gf`` (3, F))."""
    origin = gf.ravel()
    dest = np.concatenate((gf[1], gf[2], gf[0]))
    counts = sp.csr_matrix((np.ones(origin.size, np.int32), (origin, dest)), shape=(n_vertices, n_vertices))
    diff = (counts - counts.T).tocsr()
    diff.eliminate_zeros()
    rows = np.arange(n_vertices)
    return np.concatenate(
        [
            np.repeat(rows, np.diff(counts.indptr))[counts.data > 1],
            np.repeat(rows, np.diff(diff.indptr)),
        ]
    )


def taubin_weights(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Umbrella operator ``(V, V)`` float32: each row averages the vertex's edge neighbours.

    Built from face corners without deduplicating edges; in a closed manifold
    every edge is counted twice, which the row normalisation cancels.
    """
    f = faces.T
    rows = np.concatenate([f[0], f[1], f[2], f[1], f[2], f[0]])
    cols = np.concatenate([f[1], f[2], f[0], f[0], f[1], f[2]])
    w = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n_vertices, n_vertices))
    deg = np.diff(w.indptr)
    sums = np.add.reduceat(w.data, w.indptr[:-1][deg > 0]) if w.nnz else np.zeros(0, np.float32)
    row_sum = np.ones(n_vertices, np.float32)
    row_sum[deg > 0] = sums
    w.data /= np.repeat(row_sum, deg)
    return w


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Float64 sums of ``values[offsets[k]:offsets[k+1]]`` for every k (empty ranges give 0).

    Each range is reduced on its own (``np.add.reduceat``), so an object's sum does not
    depend on the other objects of the batch.
    """
    out = np.zeros((len(offsets) - 1, *values.shape[1:]))
    nonempty = offsets[1:] > offsets[:-1]
    if nonempty.any():
        out[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty], axis=0, dtype=np.float64)
    return out
