"""The Meshes widget's logic: mesh every object and describe its shape (:class:`MeshSet`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["MeshSet", "mesh_labels"]


@dataclasses.dataclass(eq=False)
class MeshSet:
    """The meshes of many objects, concatenated for display, and their descriptors.

    Attributes
    ----------
    meshes : list of ObjectMesh
        One per object, in µm.
    vertices : (V, 3) ndarray of float64
        All vertices, ``(z, y, x)`` µm.
    faces : (F, 3) ndarray of int64
        Triangles indexing :attr:`vertices`.
    vertex_object : (V,) ndarray of int64
        Index (into :attr:`ids`) of the object of each vertex.
    ids : (n,) ndarray of uint64
        Object ids.
    descriptors : dict of str to (n,) ndarray
        Shape descriptors per object (:func:`~dls_microscopy.geometry.shape_descriptors`
        columns), empty when not computed.
    units : dict of str to str
        Unit of each descriptor column.
    """

    meshes: list[Any]
    vertices: np.ndarray
    faces: np.ndarray
    vertex_object: np.ndarray
    ids: np.ndarray
    descriptors: dict[str, np.ndarray]
    units: dict[str, str]

    def vertex_values(self, column: str) -> np.ndarray:
        """``(V,)`` value of descriptor ``column`` at every vertex (NaN → column minimum)."""
        if column not in self.descriptors:
            raise InputError(f"no descriptor {column!r} (have: {', '.join(self.descriptors)})")
        values = np.asarray(self.descriptors[column], dtype=np.float64)
        finite = np.isfinite(values)
        fill = float(values[finite].min()) if finite.any() else 0.0
        values = np.where(finite, values, fill)
        return values[self.vertex_object] if len(values) else np.zeros(0)

    def numeric_columns(self) -> list[str]:
        """Descriptor columns that can colour meshes (numbers, not ids or flags)."""
        skip = {"object_id", "watertight", "sh_star_like"}
        return [c for c, v in self.descriptors.items() if c not in skip and np.asarray(v).dtype.kind in "fiu"]


def mesh_labels(
    labels: Volume,
    *,
    smooth: int = 20,
    decimate: float | None = None,
    descriptors: bool = True,
    memory_budget: int | str | None = None,
    progress: ProgressCallback | None = None,
) -> MeshSet:
    """Mesh every object of a 3D label volume in µm and (optionally) describe its shape.

    The labels are read block by block; the meshes are kept (they are what
    a viewer shows), so the memory used grows with the number of faces.
    """
    from dls_microscopy.geometry import descriptor_units, mesh_objects, shape_descriptors
    from dls_microscopy.pipeline.interactive._segment import memory_budget_bytes

    budget = memory_budget_bytes(memory_budget) if memory_budget is not None else None
    meshes = []
    rows: list[dict[str, Any]] = []
    for mesh in mesh_objects(
        labels, smooth=smooth, decimate=decimate, memory_budget=budget, progress=progress
    ):
        meshes.append(mesh)
        if descriptors:  # cancellable: mesh_objects reports progress between objects
            rows.append(shape_descriptors(mesh))
    meshes.sort(key=lambda m: m.id)
    rows.sort(key=lambda r: r["object_id"])
    units = descriptor_units() if descriptors else {}
    columns = {c: np.array([r[c] for r in rows]) for c in units} if rows else {c: np.zeros(0) for c in units}
    return _concatenate(meshes, columns, units)


def _concatenate(meshes: list[Any], columns: dict[str, np.ndarray], units: dict[str, str]) -> MeshSet:
    nv = np.array([m.n_vertices for m in meshes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(nv)])[:-1] if len(meshes) else np.zeros(0, np.int64)
    if meshes:
        vertices = np.concatenate([m.vertices for m in meshes]).astype(np.float64)
        faces = np.concatenate(
            [m.faces.astype(np.int64) + off for m, off in zip(meshes, offsets, strict=True)]
        )
    else:
        vertices, faces = np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return MeshSet(
        meshes=meshes,
        vertices=vertices,
        faces=faces,
        vertex_object=np.repeat(np.arange(len(meshes), dtype=np.int64), nv),
        ids=np.array([m.id for m in meshes], dtype=np.uint64),
        descriptors=columns,
        units=units,
    )
