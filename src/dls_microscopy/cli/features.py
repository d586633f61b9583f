"""Measurement commands: ``mesh``, ``features`` and ``verify`` (outputs against their manifest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from dls_microscopy.cli._common import (
    RichProgress,
    SpacingOption,
    app,
    channel_arg,
    err,
    out,
    parse_size,
    parse_spacing,
)
from dls_microscopy.errors import DlsError, InputError

# -- mesh ----------------------------------------------------------------------


@app.command(
    epilog="Example: dls-microscopy mesh img.ome.zarr meshes/ --label-name nuclei --descriptors shape.parquet"
)
def mesh(
    labels: Annotated[
        str, typer.Argument(help="Label image, or an OME-Zarr image with NGFF labels (see --label-name).")
    ],
    outdir: Annotated[
        Path, typer.Argument(help="New folder for the meshes, their index meshes.json and manifest.json.")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="glb (one file, a node per object), ply, obj or stl (a file per object)."
        ),
    ] = "glb",
    smooth: Annotated[
        int,
        typer.Option(
            help="Taubin smoothing iterations (0: exact voxel surface; 20 gives areas within ~2% "
            "where z steps are at most about 3 lateral voxels; raise it for coarser z: at 2 µm z "
            "and 0.3 µm pixels, 20 leaves areas ~9% too large, 100 about 4%)."
        ),
    ] = 20,
    decimate: Annotated[float | None, typer.Option(help="Fraction of faces to keep, in (0, 1].")] = None,
    descriptors: Annotated[
        Path | None, typer.Option(help="Also write per-object shape descriptors to this .parquet.")
    ] = None,
    label_name: Annotated[str | None, typer.Option(help="NGFF label image inside an OME-Zarr image.")] = None,
    spacing: SpacingOption = None,
    level: Annotated[
        int, typer.Option(min=0, help="Resolution level of the labels' pyramid to mesh (0: full resolution).")
    ] = 0,
    memory_budget: Annotated[str, typer.Option(help="Memory for reading label blocks, e.g. 1GB.")] = "1GB",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTDIR.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
) -> None:
    """Mesh every object in µm (watertight, outward normals) and export meshes and shape descriptors."""
    from dls_microscopy.pipeline.meshes import run_meshes

    with RichProgress(enabled=progress and err.is_terminal) as bar:
        summary = run_meshes(
            labels,
            outdir,
            fmt=fmt,
            smooth=smooth,
            decimate=decimate,
            descriptors_path=descriptors,
            label_name=label_name,
            progress=bar,
            overwrite=overwrite,
            memory_budget=parse_size(memory_budget),
            spacing=parse_spacing(spacing),
            level=level,
        )
    if as_json:
        out.print_json(json.dumps(summary, default=str))
    else:
        out.print(f"{summary.get('n_objects')} meshes → {outdir}", soft_wrap=True)


# -- features / verify ---------------------------------------------------------


@app.command(epilog="Example: dls-microscopy features image.ome.zarr nuclei ./features --plate P1 --well B03")
def features(
    image: Annotated[str, typer.Argument(help="Image (OME-Zarr, OME-TIFF, TIFF, HDF5 file.h5:/dataset).")],
    labels: Annotated[
        str, typer.Argument(help="Label image path, or the name of a label image inside IMAGE.")
    ],
    outdir: Annotated[
        Path, typer.Argument(help="Output folder (objects/images/wells .parquet, manifest.json).")
    ],
    channel: Annotated[
        list[str] | None, typer.Option(help="Channel name or index to measure; repeatable (default: all).")
    ] = None,
    compartment: Annotated[str, typer.Option(help="Feature-name prefix, e.g. Nuclei or Cells.")] = "Nuclei",
    plate: Annotated[str | None, typer.Option(help="Metadata_Plate (default: from an HCS plate).")] = None,
    well: Annotated[str | None, typer.Option(help="Metadata_Well (default: from an HCS plate).")] = None,
    site: Annotated[
        int | None, typer.Option(min=0, help="Metadata_Site (default: the plate field, else 0).")
    ] = None,
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
    time_point: Annotated[
        int | None, typer.Option(help="Time point to measure, for time series (from 0).")
    ] = None,
    spacing: SpacingOption = None,
    level: Annotated[
        int,
        typer.Option(
            min=0, help="Resolution level to measure, of the image and its labels (0: full resolution)."
        ),
    ] = 0,
    percentile: Annotated[
        list[float] | None, typer.Option(help="Intensity percentile; repeatable (default 25, 50, 75).")
    ] = None,
    radial_shells: Annotated[int, typer.Option(help="Radial shells per object (0: none).")] = 4,
    csv: Annotated[bool, typer.Option("--csv", help="Also write CSV copies of the tables.")] = False,
    meshes: Annotated[
        bool,
        typer.Option("--meshes", help="Also mesh objects; adds shape descriptors Nuclei_AreaShape_Mesh*."),
    ] = False,
    embeddings: Annotated[
        list[str] | None,
        typer.Option(help="Embedding model (.pt from 'embed train'); repeatable (image and shape)."),
    ] = None,
    device: Annotated[
        str, typer.Option(help="Device of the embedding models: cpu (reproducible bytes), auto, cuda...")
    ] = "cpu",
    memory_budget: Annotated[str, typer.Option(help="Memory for all workers, e.g. 1GB.")] = "1GB",
    workers: Annotated[
        int | None, typer.Option(min=1, help="Threads (default: usable cores, at most 4).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTDIR.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
) -> None:
    """Measure every labelled object (morphology, intensity) and write Parquet tables with a manifest."""
    from dls_microscopy.pipeline.features import run_features

    with RichProgress(enabled=progress and err.is_terminal) as bar:
        res = run_features(
            image,
            labels,
            outdir,
            channels=[channel_arg(c) for c in channel] if channel else None,
            compartment=compartment,
            plate=plate,
            well=well,
            site=site,
            series=series,
            time_point=time_point,
            spacing=parse_spacing(spacing),
            level=level,
            percentiles=tuple(percentile) if percentile else (25.0, 50.0, 75.0),
            radial_shells=radial_shells,
            csv=csv,
            meshes=meshes,
            embeddings=embeddings or None,
            device=device,
            memory_budget=parse_size(memory_budget),
            workers=workers,
            progress=bar,
            overwrite=overwrite,
        )
    if as_json:
        out.print_json(json.dumps(res, default=str))
    else:
        out.print(f"{res['n_objects']} objects → {res['outdir']} ({', '.join(res['files'])})", soft_wrap=True)


@app.command(
    epilog="Example: dls-microscopy verify ./features --recompute (a run folder: dls-microscopy verify ./run)"
)
def verify(
    outdir: Annotated[
        Path,
        typer.Argument(
            help="Output folder with a manifest.json: features, mesh, a run or one of its fields."
        ),
    ],
    recompute: Annotated[
        bool,
        typer.Option(
            help="Also re-run the recorded command and compare outputs byte for byte (a run folder: "
            "every field, and the run's tables rebuilt from the fields' tables)."
        ),
    ] = False,
    moved: Annotated[
        list[str] | None,
        typer.Option(
            help="OLD=NEW: read the inputs, models and external outputs recorded under OLD under NEW "
            "(data moved since, an archive restored elsewhere); repeatable; not with --recompute."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print mismatches as JSON.")] = False,
) -> None:
    """Check an output folder against its manifest (inputs, outputs, parameters); exit 1 on any mismatch.

    A run's folder is checked whole: its tables, and each field against its own manifest (fields/KEY).
    """
    import dataclasses

    from dls_microscopy.pipeline.provenance import RUN_COMMAND, read_manifest
    from dls_microscopy.pipeline.verify import verify_manifest

    try:
        found = verify_manifest(outdir, recompute=recompute, moved=_moved_pairs(moved or []))
    except DlsError as exc:
        if not as_json:
            raise
        # --json: a program reads stdout; the error is JSON there too (and on stderr as usual)
        out.print_json(json.dumps({"error": str(exc), "path": str(outdir)}))
        raise
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(m) for m in found], default=str))
    elif found:
        for m in found:
            out.print(str(m), highlight=False, soft_wrap=True)
    else:
        manifest = read_manifest(outdir)
        what = "everything matches its manifest" + (" and recomputes to the same bytes" if recompute else "")
        if manifest.get("command") == RUN_COMMAND:
            n_fields = len(manifest.get("fields", []))
            n_tables = sum(not o["path"].endswith(".yaml") for o in manifest.get("outputs", []))
            fields = f"{n_fields} field{'s' if n_fields != 1 else ''}"
            what = f"the run's {n_tables} tables and its {fields} match their manifests"
            if recompute:
                what += " and recompute to the same bytes"
            failed = list(manifest.get("fields_failed", []))
            if failed:  # true to the manifest, and still not the whole input: say so
                what += (
                    f"; {len(failed)} field{'s' if len(failed) != 1 else ''} of the run failed and "
                    f"{'are' if len(failed) != 1 else 'is'} in no table: {', '.join(failed)}"
                )
        out.print(f"{outdir}: {what}", soft_wrap=True)
    if found:
        raise typer.Exit(1)


def _moved_pairs(items: list[str]) -> list[tuple[str, str]]:
    """``--moved OLD=NEW`` values as ``(OLD, NEW)``, each an absolute path."""
    pairs = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise InputError(f"--moved takes OLD=NEW (two paths), got {item!r}")
        pairs.append((os.path.abspath(old), os.path.abspath(new)))
    return pairs
