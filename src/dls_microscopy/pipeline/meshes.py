"""The ``mesh`` command with provenance: meshes, their index, and ``manifest.json``.

:func:`~dls_microscopy.geometry.command.export_meshes_command` does the work; this adds
the folder's provenance manifest (the labels' digest, the parameters, versions, the
digest of every file written), so ``dls-microscopy verify`` checks a mesh folder as it
checks a features folder, and ``verify --recompute`` remakes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.blocks import ProgressCallback

__all__ = ["ENTRY_POINT", "run_meshes"]

#: Re-creates a mesh folder from its manifest's ``arguments``.
ENTRY_POINT = "dls_microscopy.pipeline.meshes:run_meshes"


def run_meshes(
    labels_path: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    fmt: str = "glb",
    smooth: int = 20,
    decimate: float | None = None,
    label_name: str | None = None,
    memory_budget: int | None = None,
    descriptors_path: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    spacing: Sequence[float] | None = None,
    level: int = 0,
) -> dict[str, Any]:
    """Mesh every object of a labels file into ``outdir``, with a provenance manifest.

    Parameters are those of :func:`~dls_microscopy.geometry.command.export_meshes_command`
    (``smooth`` defaults to 20 here, as in the CLI).  The descriptor table, written
    outside ``outdir``, is recorded in the manifest's ``external_outputs`` (path, size,
    sha256), so verify detects a change to it, and a recompute writes it again elsewhere.
    It is renamed into place after ``outdir``: its digest is read under its temporary name.

    Returns
    -------
    dict
        The summary of ``export_meshes_command``, with ``manifest`` (its path).
    """
    from dls_microscopy.geometry.command import export_meshes_command
    from dls_microscopy.pipeline._environment import execution_record
    from dls_microscopy.pipeline.provenance import MANIFEST_NAME, write_manifest

    labels_path = Path(os.fspath(labels_path)).absolute()  # as recompute sees it, from any folder
    table = Path(os.fspath(descriptors_path)).absolute() if descriptors_path is not None else None
    arguments = {
        "labels_path": str(labels_path),
        "fmt": fmt,
        "smooth": int(smooth),
        "decimate": decimate,
        "label_name": label_name,
        "memory_budget": memory_budget,
        "descriptors_path": str(table) if table is not None else None,
        "spacing": [float(v) for v in spacing] if spacing is not None else None,
        "level": int(level),
    }

    def finish(tmp: Path, pending_table: Path | None) -> None:
        write_manifest(
            tmp,
            command="mesh",
            # a label image inside an image store: that label image, not the store (whose other
            # label images, added later, would fail verify)
            inputs={"labels": _label_input(labels_path, label_name)},
            parameters=arguments,
            entry_point=ENTRY_POINT,
            arguments=arguments,
            # written beside the folder: its path, size and sha256 (the table is complete by now,
            # under its temporary name: it is renamed to its path once the folder is in place)
            external_outputs={"descriptors_path": table} if table is not None else None,
            external_pending={"descriptors_path": pending_table} if pending_table is not None else None,
            execution=execution_record({}, threads=None, memory_budget=memory_budget),
        )

    summary = export_meshes_command(
        labels_path,
        outdir,
        fmt=fmt,
        smooth=smooth,
        decimate=decimate,
        descriptors_path=table,
        label_name=label_name,
        progress=progress,
        overwrite=overwrite,
        memory_budget=memory_budget,
        finish=finish,
        spacing=spacing,
        level=level,
    )
    return {**summary, "manifest": str(Path(outdir) / MANIFEST_NAME)}


def _label_input(labels_path: str | os.PathLike[str], label_name: str | None) -> str:
    """The path of the label image ``label_name`` of the store at ``labels_path``, else ``labels_path``."""
    inner = Path(os.fspath(labels_path)) / "labels" / str(label_name)
    return str(inner) if label_name and inner.is_dir() else os.fspath(labels_path)
