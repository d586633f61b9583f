"""The Export widget's logic: write tables (Parquet/CSV) and meshes (GLB/PLY/OBJ/STL)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.pipeline.interactive._meshes import MeshSet

__all__ = ["descriptor_table", "export_meshes", "export_table"]


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
    from dls_microscopy.features import write_csv, write_parquet

    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InputError("tables are saved as .parquet or .csv", path=target)
    folder = target.absolute().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"cannot save the table: {folder} {what}; choose an existing folder", path=target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        (write_parquet if suffix == ".parquet" else write_csv)(table, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot save the table: {exc.strerror or exc}", path=target) from exc
    return target


def descriptor_table(meshes: MeshSet) -> Any:
    """The shape descriptors of ``meshes`` as a pyarrow table with units in its schema."""
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
