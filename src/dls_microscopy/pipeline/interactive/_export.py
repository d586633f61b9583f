"""The Export widget's logic: write tables (Parquet/CSV) and meshes (GLB/PLY/OBJ/STL)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.pipeline.fields import FieldSpec, image_id_of
from dls_microscopy.pipeline.interactive._meshes import MeshSet

__all__ = [
    "descriptor_table",
    "export_meshes",
    "export_table",
    "mesh_columns",
    "session_field",
    "session_tables",
]


def export_table(table: Any, path: str | os.PathLike[str]) -> Path:
    """Write a pyarrow table as Parquet (``.parquet``) or CSV (``.csv``), by the suffix.

    The file is written under a temporary name beside ``path`` and renamed: it
    appears whole or not at all.

    Raises
    ------
    InputError
        Another suffix.
    OutputError
        The folder does not exist, or the file cannot be written (pyarrow's own
        message said "Failed to open local file").
    """
    from dls_microscopy.pipeline.collect import write_table

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InputError("tables are saved as .parquet or .csv", path=target)
    folder = target.absolute().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"cannot save the table: {folder} {what}; choose an existing folder", path=target)
    write_table(table, target, suffix[1:])
    return target


def descriptor_table(meshes: MeshSet) -> Any:
    """The shape descriptors of ``meshes`` as ``dls-microscopy mesh --descriptors`` writes them.

    ``object_id`` and the descriptors' own names (``volume_um3``), units (``um^3``) in
    the schema.  :func:`mesh_columns` names them as a pipeline run's objects table does.
    """
    import pyarrow as pa

    from dls_microscopy.geometry.table import descriptor_schema

    schema = descriptor_schema(meshes.units)
    return pa.table(
        {c: pa.array(meshes.descriptors[c], type=schema.field(c).type) for c in meshes.units}, schema=schema
    )


def export_meshes(meshes: MeshSet | Iterable[Any], path: str | os.PathLike[str]) -> list[Path]:
    """Write meshes: one ``.glb`` (a node per object) or a folder of ``.ply``/``.obj``/``.stl``.

    ``path`` ending in ``.glb`` writes one file; otherwise ``path`` is a folder
    and ``path``'s name decides nothing: files are ``object_<id>.ply``.
    """
    from dls_microscopy.geometry.export import GlbWriter, object_file_name, write_mesh_file

    items = meshes.meshes if isinstance(meshes, MeshSet) else list(meshes)
    target = Path(path)
    if target.suffix.lower() == ".glb":
        with GlbWriter(target) as glb:
            for m in items:
                glb.add(m)
        return [target]
    fmt = "ply"
    for candidate in ("ply", "obj", "stl"):
        if target.name.lower().endswith("_" + candidate) or target.suffix.lower() == "." + candidate:
            fmt = candidate
    target.mkdir(parents=True, exist_ok=True)
    return [write_mesh_file(m, target / object_file_name(m.id, fmt), fmt) for m in items]


def mesh_columns(meshes: MeshSet, *, compartment: str = "Nuclei") -> Any:
    """The shape descriptors of ``meshes`` as the columns of a pipeline run's objects table.

    ``Metadata_ObjectID``, ``Metadata_Mesh*`` and ``{compartment}_AreaShape_Mesh*``, with
    the run's units (``µm³``) and in its order; built by the functions the run uses
    (:func:`~dls_microscopy.features.mesh_columns.descriptor_columns`, then
    :func:`~dls_microscopy.features.join_object_columns`, which puts ``Metadata_*`` first).
    """
    from dls_microscopy.features import join_object_columns
    from dls_microscopy.features.mesh_columns import descriptor_columns

    columns = descriptor_columns(descriptor_table(meshes), compartment=compartment)
    return join_object_columns(columns.select(["Metadata_ObjectID"]), columns)


def session_field(
    *,
    source: str | os.PathLike[str] | None,
    name: str,
    plate: str | os.PathLike[str] | None = None,
    time_point: int | None = None,
    series: int = 0,
) -> FieldSpec:
    """The field a GUI session works on, named as a pipeline run names it.

    Parameters
    ----------
    source : path-like or None
        The file (or plate field) the layers were read from.
    name : str
        ``Metadata_ImageID`` when there is no ``source`` (the layer's name).
    plate : path-like, optional
        The HCS plate ``source`` is a field of: plate, well, site and image id are then
        those of a run on the plate (:func:`~dls_microscopy.pipeline.fields.plate_field`).
    time_point : int, optional
        The time point of a time series shown (image ids end in ``_tN``, as in a run).
    series : int
        The series of a multi-series file ``source`` is (``_sN``, as in a run).
    """
    suffix = f"_t{time_point}" if time_point is not None else ""
    if plate and source:
        from dls_microscopy.pipeline.fields import plate_field

        spec = plate_field(plate, source)
        if spec is not None:
            return dataclasses.replace(spec, image_id=spec.image_id + suffix, time_point=time_point)
    # an HDF5 dataset (file.h5:/raw) is named by its file, as a run names it: image_id_of
    image_id = (image_id_of(source, series) if source else name) + suffix
    return FieldSpec(
        key=image_id, source=str(source or ""), series=series, image_id=image_id, time_point=time_point
    )


def session_tables(
    features: Any,
    meshes: MeshSet | None,
    *,
    metadata: Mapping[str, Any],
    compartment: str = "Nuclei",
) -> dict[str, Any]:
    """The session's ``objects`` and ``images`` tables, as a pipeline run writes them for its steps.

    Built by the run's own function (:func:`~dls_microscopy.pipeline.field_tables.object_tables`):
    the features table, then the mesh descriptors as :func:`mesh_columns`, then the
    per-image aggregate; with meshes only, the objects table holds the ``Metadata_*``
    columns and the mesh columns, as a run with segment and mesh steps.

    Parameters
    ----------
    features : pyarrow.Table or None
        The Features widget's table (:func:`measure_volumes`).
    meshes : MeshSet or None
        Meshes of the same labels, with or without descriptors.
    metadata : mapping
        The field's ``Metadata_*`` values (``session_field(...).metadata()``).
    compartment : str
        Feature prefix of the features table.

    Returns
    -------
    dict of str to pyarrow.Table
        ``objects`` and ``images``; empty when there is nothing to tabulate.
    """
    from dls_microscopy.pipeline.field_tables import object_tables

    extra = []
    if meshes is not None and meshes.descriptors:
        extra.append(mesh_columns(meshes, compartment=compartment))
    return object_tables(features, extra, metadata=metadata, compartment=compartment)
