"""Quadric edge-collapse decimation of closed meshes (zmesh's fqmr), to a face budget or error.

Decimation works in µm (the quadric error is metric), object by object; an object
whose decimated mesh is no longer watertight keeps its full mesh.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from dls_microscopy.geometry.batch import MeshBatch

__all__ = ["decimate_arrays", "decimate_batch"]

log = logging.getLogger(__name__)

#: fqmr threshold schedule for the error-bounded decimation (threshold = alpha (it + K)^aggr).
_FQMR_ITERATIONS, _FQMR_K, _FQMR_AGGRESSIVENESS = 100, 3, 7.0


def decimate_arrays(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    fraction: float | None = None,
    max_faces: int | None = None,
    max_error_um: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decimate one closed mesh to a fraction of its faces, a face budget and/or an error bound.

    Parameters
    ----------
    vertices : (V, 3) ndarray of float
        Positions in µm.
    faces : (F, 3) ndarray of int
    fraction : float, optional
        Keep about this fraction of the faces.
    max_faces : int, optional
        Keep at most this many faces.
    max_error_um : float, optional
        Collapse edges only while the summed squared distances of the new vertex
        to the original planes around it stay below ``max_error_um²`` (the fqmr
        threshold rises to that value over its iterations).  Alone, it decimates
        as far as the bound allows.

    Returns
    -------
    vertices : (V', 3) ndarray of float64
    faces : (F', 3) ndarray of int32
        The input itself when nothing is to be removed.
    """
    import zmesh

    n = len(faces)
    target = n
    if fraction is not None:
        target = min(target, max(4, round(fraction * n)))
    if max_faces is not None:
        target = min(target, max_faces)
    kwargs: dict[str, Any] = {}
    if max_error_um is not None:
        top = (_FQMR_ITERATIONS - 1 + _FQMR_K) ** _FQMR_AGGRESSIVENESS
        kwargs = {
            "alpha": max_error_um**2 / top,
            "max_iterations": _FQMR_ITERATIONS,
            "K": _FQMR_K,
            "aggressiveness": _FQMR_AGGRESSIVENESS,
        }
        if target == n:
            target = 4
    if target >= n:
        return vertices, faces
    mesh = zmesh.Mesh(np.asarray(vertices, np.float32), np.asarray(faces, np.uint32), None)
    out = zmesh.simplify_fqmr(mesh, int(target), **kwargs)
    return out.vertices.astype(np.float64), out.faces.astype(np.int32)


def decimate_batch(batch: MeshBatch, **options: Any) -> MeshBatch:
    """Decimate every object of a batch (see :func:`decimate_arrays` for ``options``).

    Objects whose decimated mesh fails the exact watertightness test keep their
    full mesh (logged).
    """
    originals = [batch.object_um(k) for k in range(len(batch))]
    reduced = [decimate_arrays(v, f, **options) for v, f in originals]

    def rebuild(arrays: list[tuple[np.ndarray, np.ndarray]]) -> MeshBatch:
        return MeshBatch.from_meshes(
            batch.ids, batch.lo, batch.spacing, [v / batch.spacing for v, _ in arrays], [f for _, f in arrays]
        )

    out = rebuild(reduced)
    out.clean()
    ok = out.measure(orient=False, exact=True).watertight
    if ok.all():
        return out
    log.warning("decimation broke %d mesh(es); they keep their full resolution", int((~ok).sum()))
    return rebuild([reduced[k] if ok[k] else originals[k] for k in range(len(batch))])
