"""Image commands: ``info`` (describe an image or plate) and ``convert`` (to OME-Zarr)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dls_microscopy.cli._common import (
    RichProgress,
    SpacingOption,
    app,
    err,
    out,
    parse_size,
    parse_spacing,
)
from dls_microscopy.errors import InputError

# -- info ----------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy info image.ome.zarr --json")
def info(
    path: Annotated[str, typer.Argument(help="Image: OME-Zarr, OME-TIFF/TIFF, or HDF5 as file.h5:/dataset.")],
    series: Annotated[int, typer.Option(help="Series (multi-series files) or n-th plate field.")] = 0,
    spacing: SpacingOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show shape, axes, dtype, spacing (µm), resolution levels, channels, labels and plate layout."""
    from dls_microscopy.io import describe_plate, detect_format, open_volume, split_dataset_path

    vol = open_volume(path, series=series, spacing=parse_spacing(spacing))
    summary: dict[str, Any] = vol.describe()
    file_path, _ = split_dataset_path(path)
    if detect_format(file_path) == "zarr" and "well" in vol.metadata:
        summary["plate_layout"] = describe_plate(file_path).describe()
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")  # a long path breaks across lines, never cut to "…"
    for key, value in summary.items():
        if key == "levels":
            value = "\n".join(f"{i}: {lv['shape']}  spacing {lv['spacing_um']}" for i, lv in enumerate(value))
        elif key == "dls_microscopy" and isinstance(value, dict):
            value = _made_by(value)
        elif key == "plate_layout":
            value = (
                f"{len(value['wells'])} wells, {value['n_fields']} fields; rows {''.join(value['rows'])}, "
                f"columns {','.join(value['columns'])}"
            )
        table.add_row(key, str(value))
    out.print(table)


def _made_by(record: dict[str, Any]) -> str:
    """A label image's record of how it was made, in a few lines (``--json`` has all of it).

    Tolerant of records of other versions: a part that is missing or of another shape
    is left out, never an error.
    """
    lines: list[str] = []
    seg = record.get("segmentation")
    if isinstance(seg, dict):
        what = str(seg.get("method", "?"))
        if seg.get("channel") is not None:
            what += f" of channel {seg['channel']}"
        if seg.get("time_point") is not None:
            what += f", time point {seg['time_point']}"
        if seg.get("source"):
            what += f" in {seg['source']}"
        lines.append(what)
        if seg.get("n_objects") is not None:
            lines.append(f"{seg['n_objects']} objects")
        if isinstance(seg.get("spacing_um"), list):
            voxel = f"voxel {_by(seg['spacing_um'])} µm"
            if seg.get("level"):
                voxel += f" at resolution level {seg['level']}"
            if isinstance(seg.get("spacing_from_file_um"), list):
                voxel += f" (given; the file's: {_by(seg['spacing_from_file_um'])})"
            lines.append(voxel)
        params = seg.get("params") if isinstance(seg.get("params"), dict) else {}
        set_ = ", ".join(f"{k}={v}" for k, v in params.items() if v is not None)
        if set_:
            lines.append(f"parameters: {set_}")
    model = record.get("model")
    if isinstance(model, dict) and (model.get("path") or model.get("name")):
        digest = f" (sha256 {str(model['sha256'])[:12]}…)" if model.get("sha256") else ""
        lines.append(f"model: {model.get('path') or model.get('name')}{digest}")
    ex = record.get("execution")
    if isinstance(ex, dict):
        run = str(ex.get("device", "?"))
        if ex.get("blocks") is not None:
            run += f", {ex['blocks']} block(s)"
        seams = ex.get("seams")
        if isinstance(seams, dict) and seams.get("merged_pairs") is not None:
            run += f", {seams['merged_pairs']} seam merges"
        lines.append(f"ran on {run}")
    made = [str(record["command"])] if record.get("command") else []
    created = record.get("created")
    if isinstance(created, dict) and created.get("utc"):
        made.append(str(created["utc"]))
    software = record.get("software")
    if isinstance(software, dict) and isinstance(software.get("packages"), dict):
        version = software["packages"].get("dls-microscopy")
        if version:
            made.append(f"dls-microscopy {version}")
    if made:
        lines.append("by " + ", ".join(made))
    return "\n".join([*lines, "(all of it: --json)"]) if lines else str(record)


def _by(values: list[Any]) -> str:
    """``[1, 0.3, 0.3]`` as ``1 × 0.3 × 0.3`` (an entry that is not a number as it is)."""
    return " × ".join(f"{v:.6g}" if isinstance(v, int | float) else str(v) for v in values)


# -- convert -------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy convert stack.ome.tif stack.ome.zarr --labels nuclei=masks.tif")
def convert(
    source: Annotated[str, typer.Argument(help="Input image (any readable format).")],
    destination: Annotated[Path, typer.Argument(help="Output .ome.zarr store (appears only when complete).")],
    labels: Annotated[
        list[str] | None,
        typer.Option(
            help="Label image to include, NAME=PATH or PATH (name 'labels'); repeatable, each name once. "
            "An OME-Zarr input's own label images are carried over (NAME=PATH replaces one)."
        ),
    ] = None,
    series: Annotated[int, typer.Option(help="Series of a multi-series input.")] = 0,
    spacing: Annotated[
        str | None,
        typer.Option(
            "--spacing",
            metavar="<z,y,x>",
            help="Voxel size in µm to write in place of the input's (mends missing or wrong "
            "metadata): Z,Y,X or one value for all axes.",
        ),
    ] = None,
    ngff_version: Annotated[
        str, typer.Option("--ngff-version", help="0.5 (zarr v3, sharded) or 0.4 (zarr v2).")
    ] = "0.5",
    chunks: Annotated[int | None, typer.Option(help="Chunk edge in voxels (default 64 for 3D).")] = None,
    shards: Annotated[
        int | None,
        typer.Option(help="Shard edge in voxels (default 2 chunks; 0 = no sharding)."),
    ] = None,
    compression: Annotated[str, typer.Option(help="zstd, lz4 or none (blosc).")] = "zstd",
    clevel: Annotated[int, typer.Option(help="Compression level.")] = 1,
    levels: Annotated[int | None, typer.Option(help="Number of pyramid levels (default: automatic).")] = None,
    memory_budget: Annotated[str, typer.Option(help="Pixel memory to use at once, e.g. 2GB.")] = "1GB",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Convert an image (and label images) to OME-Zarr, streaming block by block."""
    from dls_microscopy.io import convert as do_convert

    label_paths: dict[str, str] = {}
    for item in labels or []:
        name, sep, p = item.partition("=")
        if sep and name and "/" in name and not Path(item).exists():  # not a path holding '='
            raise InputError(f"invalid label name {name!r} in --labels {item}: a name cannot hold '/'")
        if not sep or "/" in name or not name:
            name, p = "labels", item
        if name in label_paths:  # one would silently replace the other
            raise InputError(
                f"label name {name!r} given twice in --labels ({label_paths[name]} and {p}): "
                "give each label image its own name (--labels NAME=PATH)"
            )
        label_paths[name] = p
    with RichProgress(enabled=progress and err.is_terminal) as bar:
        written = do_convert(
            source,
            destination,
            series=series,
            labels=label_paths,
            spacing=parse_spacing(spacing),
            version=ngff_version,  # type: ignore[arg-type]
            chunks=chunks,
            shards=shards,
            compression=compression,
            clevel=clevel,  # type: ignore[arg-type]
            n_levels=levels,
            memory_budget=parse_size(memory_budget),
            overwrite=overwrite,
            progress=bar,
        )
    out.print(f"wrote {written}")
