"""Per-object surface meshes in µm, shape descriptors and mesh export.

Objects are meshed from their bounding boxes, read block by block from a labels
volume of any size (:func:`mesh_objects`); descriptors are computed per mesh
(:func:`compute_descriptors`) and meshes are written as PLY/OBJ/STL per object
or one GLB per image (:mod:`~dls_microscopy.geometry.export`).
"""

from __future__ import annotations

from dls_microscopy.geometry.command import export_meshes_command
from dls_microscopy.geometry.descriptors import (
    compute_descriptors,
    descriptor_units,
    shape_descriptors,
)
from dls_microscopy.geometry.export import GlbWriter, write_mesh_file
from dls_microscopy.geometry.index import ObjectIndex, build_object_index
from dls_microscopy.geometry.mesh import MeshOptions, ObjectMesh, mesh_objects

__all__ = [
    "GlbWriter",
    "MeshOptions",
    "ObjectIndex",
    "ObjectMesh",
    "build_object_index",
    "compute_descriptors",
    "descriptor_units",
    "export_meshes_command",
    "mesh_objects",
    "shape_descriptors",
    "write_mesh_file",
]
