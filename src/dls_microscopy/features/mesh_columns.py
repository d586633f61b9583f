"""Mesh shape descriptors as object-table columns (``Nuclei_AreaShape_Mesh*``), with units.

The descriptors of :func:`~dls_microscopy.geometry.shape_descriptors` (surface
area, sphericity, axis lengths, convex-hull solidity, curvature statistics,
spherical-harmonics spectrum, ShapeDNA), computed on Taubin-smoothed meshes in
µm, renamed in the CellProfiler/pycytominer style:
``surface_area_um2`` → ``Nuclei_AreaShape_MeshSurfaceArea`` (unit ``µm²``),
``sh_power_l3`` → ``Nuclei_AreaShape_MeshShPowerL3``, ``shapedna_2`` →
``Nuclei_AreaShape_MeshShapeDNA2``.  Mesh bookkeeping (vertex and face counts,
watertightness, centroids) becomes ``Metadata_Mesh*`` columns: it indexes the
mesh but is not a phenotype.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from dls_microscopy.features.schema import check_compartment

__all__ = ["MESH_SMOOTH", "descriptor_column", "descriptor_columns", "mesh_descriptor_table"]

log = logging.getLogger(__name__)

#: Taubin iterations of the meshes measured (surface areas within about 2 %).
MESH_SMOOTH = 20
_UNIT_SUFFIX = {
    "_um3": "µm³",
    "_um2": "µm²",
    "_um": "µm",
    "_per_um2": "1/µm²",
    "_per_um": "1/µm",
}
_METADATA = (
    "n_vertices",
    "n_faces",
    "watertight",
    "sh_star_like",
    "centroid_z_um",
    "centroid_y_um",
    "centroid_x_um",
)


def _split_unit(name: str, unit: str) -> tuple[str, str]:
    for suffix in sorted(_UNIT_SUFFIX, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)], _UNIT_SUFFIX[suffix]
    return name, "1" if unit in ("1", "") else unit


def _camel(stem: str) -> str:
    special = {"shapedna": "ShapeDNA", "sh": "Sh"}
    return "".join(special.get(p, p[:1].upper() + p[1:]) for p in stem.split("_"))


def descriptor_column(name: str, unit: str, compartment: str) -> tuple[str, str]:
    """Table column name and unit of a descriptor key.

    Examples
    --------
    >>> descriptor_column("surface_area_um2", "um^2", "Nuclei")
    ('Nuclei_AreaShape_MeshSurfaceArea', 'µm²')
    >>> descriptor_column("watertight", "", "Nuclei")
    ('Metadata_MeshWatertight', '')
    """
    stem, unit = _split_unit(name, unit)
    if name in _METADATA:
        flag = name in ("watertight", "sh_star_like")
        return f"Metadata_Mesh{_camel(stem)}", "" if flag else unit
    return f"{compartment}_AreaShape_Mesh{_camel(stem)}", unit


def mesh_descriptor_table(
    labels: Any,
    *,
    spacing: Sequence[float],
    compartment: str = "Nuclei",
    smooth: int = MESH_SMOOTH,
    index: Any = None,
    progress: Any = None,
) -> pa.Table:
    """Mesh every object (streamed, block by block) and tabulate its descriptors.

    Parameters
    ----------
    labels : (Z, Y, X) integer ndarray, dask array or Volume
    spacing : tuple of 3 float
        µm per voxel.
    compartment : str
        Prefix of the feature names.
    smooth : int
        Taubin smoothing iterations.
    index : ObjectIndex, optional
    progress : callable, optional
        Passed to :func:`~dls_microscopy.geometry.mesh_objects`.

    Returns
    -------
    pyarrow.Table
        ``Metadata_ObjectID`` (ascending), ``Metadata_Mesh*`` and
        ``{compartment}_AreaShape_Mesh*`` columns; units in the fields' ``unit``
        metadata.  Join with :func:`~dls_microscopy.features.join_object_columns`.
    """
    from dls_microscopy.geometry import compute_descriptors, descriptor_units, mesh_objects
    from dls_microscopy.geometry.table import descriptor_schema

    check_compartment(compartment)
    units = descriptor_units()
    rows = list(
        compute_descriptors(
            mesh_objects(labels, spacing=spacing, smooth=smooth, index=index, progress=progress)
        )
    )
    schema = descriptor_schema(units)
    columns = {}
    for f in schema:
        values = [r.get(f.name) for r in rows]
        if pa.types.is_floating(f.type):
            values = [np.nan if v is None else v for v in values]
        columns[f.name] = pa.array(values, type=f.type)
    log.info("mesh descriptors of %d objects", len(rows))
    # named and ordered as ``mesh --descriptors`` tables are when a run joins them
    return descriptor_columns(pa.table(columns, schema=schema), compartment=compartment)


def descriptor_columns(descriptors: pa.Table, *, compartment: str = "Nuclei") -> pa.Table:
    """A descriptor table as object-table columns (``{compartment}_AreaShape_Mesh*``, ``Metadata_Mesh*``).

    Parameters
    ----------
    descriptors : pyarrow.Table
        As :func:`~dls_microscopy.geometry.command.export_meshes_command` writes it
        (``dls-microscopy mesh --descriptors``): ``object_id`` and the columns of
        :func:`~dls_microscopy.geometry.shape_descriptors`, units (``um^3``...) in
        the fields' metadata.
    compartment : str
        Prefix of the feature names.

    Returns
    -------
    pyarrow.Table
        ``Metadata_ObjectID`` (ascending) and the descriptors named and with units as
        :func:`descriptor_column` gives them (as in a pipeline run's ``objects.parquet``).
        Join with :func:`~dls_microscopy.features.join_object_columns`.
    """
    from dls_microscopy.features.tables import units_of

    check_compartment(compartment)
    units = units_of(descriptors)
    fields, arrays = [], []
    for f, col in zip(descriptors.schema, descriptors.columns, strict=True):
        if f.name == "object_id":
            fields.append(pa.field("Metadata_ObjectID", pa.uint64()))
            arrays.append(col.cast(pa.uint64()))
            continue
        name, unit = descriptor_column(f.name, units.get(f.name, ""), compartment)
        fields.append(pa.field(name, f.type, metadata={b"unit": unit.encode()} if unit else None))
        arrays.append(col)
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    order = np.argsort(table.column("Metadata_ObjectID").to_numpy(), kind="stable")
    return table.take(pa.array(order))
