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
        elif key == "plate_layout":
            value = (
                f"{len(value['wells'])} wells, {value['n_fields']} fields; rows {''.join(value['rows'])}, "
                f"columns {','.join(value['columns'])}"
            )
        table.add_row(key, str(value))
    out.print(table)


# -- convert -------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy convert stack.ome.tif stack.ome.zarr --labels nuclei=masks.tif")
def convert(
    source: Annotated[str, typer.Argument(help="Input image (any readable format).")],
    destination: Annotated[Path, typer.Argument(help="Output .ome.zarr store (appears only when complete).")],
    labels: Annotated[
        list[str] | None,
        typer.Option(
            help="Label image to include, NAME=PATH or PATH (name 'labels'); repeatable. "
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
        if not sep or "/" in name or not name:
            name, p = "labels", item
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
