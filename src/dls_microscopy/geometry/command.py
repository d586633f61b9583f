"""``dls-microscopy mesh``: labels file → mesh files, their index and a descriptor table.

The CLI only parses arguments and shows progress; this function does the work.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import DimensionalityError, InputError, OutputError
from dls_microscopy.geometry.descriptors import descriptor_units, shape_descriptors
from dls_microscopy.geometry.export import (
    FORMATS,
    GlbWriter,
    object_file_name,
    write_manifest,
    write_mesh_file,
)
from dls_microscopy.geometry.index import build_object_index
from dls_microscopy.geometry.mesh import mesh_objects
from dls_microscopy.geometry.table import DescriptorTableWriter
from dls_microscopy.io._output_checks import MESH_INDEX
from dls_microscopy.volume import Volume

__all__ = ["export_meshes_command", "open_label_volume"]

log = logging.getLogger(__name__)

GLB_NAME = "meshes.glb"
#: The index of the meshes (source, units, options, one entry per object with its file and
#: measures).  ``manifest.json`` is the folder's provenance, written by
#: :func:`dls_microscopy.pipeline.meshes.run_meshes` through ``finish``.
INDEX_NAME = MESH_INDEX  # named once, in io, whose --overwrite rule knows a mesh folder by it


def open_label_volume(
    path: str | os.PathLike[str],
    label_name: str | None = None,
    *,
    spacing: Sequence[float] | None = None,
    level: int = 0,
) -> Volume:
    """Open a labels image: a label image itself, or an NGFF image holding label images.

    For an image with NGFF ``labels/``, ``label_name`` picks one (default:
    the only one).  Length-1 ``t``/``c`` axes are dropped.  ``spacing`` (µm at full
    resolution, :meth:`~dls_microscopy.volume.Volume.with_spacing`) replaces the file's.
    ``level`` is the resolution level of the labels' pyramid to open (0: full resolution),
    with that level's voxel size.

    Raises
    ------
    InputError
        Missing or ambiguous label image, non-integer data, a level the labels lack.
    DimensionalityError
        Not 3D.
    """
    from dls_microscopy.io import open_labels, open_volume

    vol = open_volume(path, spacing=spacing)
    if vol.labels:
        vol = open_labels(path, label_name, spacing=spacing, level=level)
    elif label_name is not None:
        raise InputError(f"no label images in this file (asked for {label_name!r})", path=path)
    elif level:
        vol = vol.at_level(level)
    for axis in "tc":
        if axis in vol.axes:
            if vol.axis_size(axis) != 1:
                raise DimensionalityError(
                    f"labels have {vol.axis_size(axis)} {'time points' if axis == 't' else 'channels'}"
                    "; meshing needs a single 3D label image",
                    path=path,
                )
            vol = vol.select(**{axis: 0})
    vol.require_spatial_ndim(3)
    if vol.dtype.kind not in "uib":
        raise InputError(f"labels must be integers, got {vol.dtype}", path=path)
    return vol


def export_meshes_command(
    labels_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    fmt: str = "glb",
    smooth: int = 0,
    decimate: float | None = None,
    descriptors_path: str | os.PathLike[str] | None = None,
    label_name: str | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    memory_budget: int | None = None,
    source: str | None = None,
    finish: Callable[[Path, Path | None], None] | None = None,
    spacing: Sequence[float] | None = None,
    level: int = 0,
) -> dict[str, Any]:
    """Mesh every object of a labels file and write the meshes (and descriptors).

    Parameters
    ----------
    labels_path : path-like
        A label image (OME-Zarr, TIFF, HDF5...) or an OME-Zarr image with NGFF labels.
    outdir : path-like
        New directory for the meshes and their index ``meshes.json``; it appears
        only when complete.
    fmt : {"glb", "ply", "obj", "stl"}
        One GLB for the image (a node per object) or one file per object.
    smooth : int
        Taubin smoothing iterations (0: the exact voxel surface).
    decimate : float, optional
        Fraction of faces to keep, in ``(0, 1]``.
    descriptors_path : path-like, optional
        Write shape descriptors of the written meshes to this Parquet file.  It
        appears only after ``outdir`` (a run stopped between the two leaves the
        meshes without it, never a table without its meshes); with ``overwrite``,
        a table already there is removed just before ``outdir`` is replaced.
    label_name : str, optional
        Which NGFF label image of an image to use.
    progress : callable, optional
        ``progress(description, done, total)``.
    overwrite : bool
        Replace an existing ``outdir``.
    memory_budget : int, optional
        Bytes per block of labels (default 256 MiB).
    source : str, optional
        What the index records as the labels' source (default ``labels_path``;
        the pipeline gives the path the labels will have once its field is done).
    finish : callable, optional
        ``finish(tmp, table)``: called with the temporary folder once every file is
        in it, before it becomes ``outdir`` (the provenance manifest is written
        there), and with the complete descriptor table under its temporary name
        (None without ``descriptors_path``); it becomes ``descriptors_path`` after ``outdir``.
    spacing : sequence of float, optional
        Voxel size in µm at full resolution (``(dz, dy, dx)`` or one value), in
        place of the file's.
    level : int
        Resolution level of the labels to mesh (0: full resolution); the meshes are in
        µm at that level's voxel size, and the index records the level.

    Returns
    -------
    dict
        Summary: ``n_objects``, ``n_faces``, ``n_not_watertight``, paths of the
        index, mesh files and table, ``seconds``.
    """
    from dls_microscopy.io.atomic import (
        atomic_directory,
        check_output_dir,
        check_output_file,
        partial_file,
        refuse_output_over_inputs,
        release_partial,
    )

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown mesh format {fmt!r}; choose one of {', '.join(FORMATS)}")
    refuse_output_over_inputs(outdir, [labels_path])
    check_output_dir(outdir, overwrite=overwrite)  # before meshing: atomic_directory checks again
    if descriptors_path is not None:
        refuse_output_over_inputs(descriptors_path, [labels_path])
        if Path(descriptors_path).resolve().is_relative_to(Path(outdir).resolve()):  # '..', links
            raise InputError(
                "the descriptor table goes outside the mesh folder, which is replaced as a whole "
                "(it holds the meshes, meshes.json and manifest.json): give another path",
                path=Path(descriptors_path),
            )
        if Path(descriptors_path).exists() and not overwrite:
            raise OutputError(
                "descriptors file already exists (use overwrite / --overwrite)", path=Path(descriptors_path)
            )
        check_output_file(descriptors_path, overwrite=True)  # a folder, or under a file: before meshing
    start = time.perf_counter()
    vol = open_label_volume(labels_path, label_name, spacing=spacing, level=level)
    outdir = Path(outdir)
    budget = {"memory_budget": memory_budget} if memory_budget else {}
    try:
        index = build_object_index(vol, progress=progress, **budget)
    except InputError as exc:  # found while reading (negative ids): name the file
        if exc.path is None:
            exc.path = Path(os.fspath(labels_path))
        raise
    options = {"smooth": smooth, "decimate": decimate}
    meshes = mesh_objects(vol, index=index, progress=progress, **budget, **options)
    entries: list[dict[str, Any]] = []
    table_path = Path(descriptors_path) if descriptors_path is not None else None
    table: DescriptorTableWriter | None = None  # closed complete under a temporary name, renamed last
    aside: Path | None = None  # the table of the meshes being replaced, until the new ones are in place
    committed = False
    try:
        with atomic_directory(outdir, overwrite=overwrite) as tmp:
            sinks = _Sinks(tmp, fmt, table_path, vol, options)
            table = sinks.table
            with sinks:
                for mesh in meshes:
                    entries.append(sinks.add(mesh))
            index = {
                "source": str(labels_path) if source is None else source,
                "label_name": vol.metadata.get("label_name", label_name),
                **({"level": int(vol.level)} if vol.level else {}),  # absent at 0: as before levels
                "format": fmt,
                "units": "micrometre",
                "axes": "xyz",
                "spacing_um": dict(zip("zyx", vol.spacing, strict=True)),
                "options": options,
                "n_objects": len(entries),
                "objects": entries,
            }
            write_manifest(tmp / INDEX_NAME, index)
            if finish is not None:
                finish(tmp, table.pending if table is not None else None)
            if table_path is not None and table_path.exists():
                # a table already there describes the meshes being replaced: it goes aside before
                # them, so that no table ever stands beside meshes it was not made from, and comes
                # back if they stay
                aside = partial_file(table_path)
                os.replace(table_path, aside)
        committed = True
        # the meshes are in place: now their table (a run stopped in between leaves none)
        if table is not None:
            table.commit()
    except BaseException:
        if table is not None:
            table.discard()
        if aside is not None and not committed and table_path is not None and not table_path.exists():
            os.replace(aside, table_path)  # the old meshes stayed: so does their table
        raise
    finally:
        if aside is not None:
            release_partial(aside)
    summary = {
        "labels": str(labels_path),
        "outdir": str(outdir),
        "format": fmt,
        "n_objects": len(entries),
        "n_faces": int(sum(e["n_faces"] for e in entries)),
        "n_not_watertight": int(sum(not e["watertight"] for e in entries)),
        "index": str(outdir / INDEX_NAME),
        "meshes": str(outdir / GLB_NAME) if fmt == "glb" else str(outdir),
        "descriptors": str(table_path) if table_path is not None else None,
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info("meshed %d objects from %s into %s", summary["n_objects"], labels_path, outdir)
    return summary


class _Sinks:
    """Where each mesh goes: a GLB node or its own file, and a descriptor row."""

    def __init__(
        self, tmp: Path, fmt: str, table_path: Path | None, vol: Volume, options: dict[str, Any]
    ) -> None:
        self.tmp, self.fmt = tmp, fmt
        self.glb = GlbWriter(tmp / GLB_NAME) if fmt == "glb" else None
        self.table_path = table_path
        self.table: DescriptorTableWriter | None = None
        if table_path is not None:
            meta = {
                "source": str(vol.source) if vol.source else None,
                **({"level": int(vol.level)} if vol.level else {}),  # absent at 0: as before levels
                "spacing_um": list(vol.spacing),
                "mesh_options": options,
            }
            # renamed into place by the caller, after the meshes' folder
            self.table = DescriptorTableWriter(table_path, descriptor_units(), meta, commit_on_close=False)

    def __enter__(self) -> _Sinks:
        if self.glb is not None:
            self.glb.__enter__()
        if self.table is not None:
            self.table.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.glb is not None:
                self.glb.__exit__(*exc)
        finally:
            if self.table is not None:
                self.table.__exit__(*exc)

    def add(self, mesh: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": mesh.id}
        if self.glb is not None:
            entry["file"] = GLB_NAME
            entry["node"] = self.glb.add(mesh)
        else:
            name = object_file_name(mesh.id, self.fmt)
            write_mesh_file(mesh, self.tmp / name, self.fmt)
            entry["file"] = name
        entry.update(
            n_vertices=mesh.n_vertices,
            n_faces=mesh.n_faces,
            volume_um3=round(mesh.volume_um3, 6),
            surface_area_um2=round(mesh.surface_area_um2, 6),
            watertight=mesh.watertight,
        )
        if self.table is not None:
            self.table.write([shape_descriptors(mesh)])
        return entry
