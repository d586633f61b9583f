"""Command line interface: ``dls-microscopy COMMAND``.

Parsing, progress bars and exit codes only; all work is done by the library.
Exit codes: 0 success, 2 bad input or configuration, or unwritable output (one
line naming the file and the reason), 3 ``run`` finished but some fields failed
(listed with their reasons), 1 internal error.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dls_microscopy import __version__
from dls_microscopy.errors import DlsError, InputError, ModelNotFoundError, OutputError

app = typer.Typer(
    name="dls-microscopy",
    help="Out-of-core 3D microscopy analysis: inspect, convert and analyse huge images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
out = Console()
err = Console(stderr=True)
log = logging.getLogger("dls_microscopy")


def parse_size(text: str) -> int:
    """Parse ``"2GB"``, ``"512MiB"``, ``"1e9"`` into bytes (the pipeline config's rules)."""
    from dls_microscopy.pipeline.config import parse_size as parse_config_size

    try:
        return parse_config_size(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None


class RichProgress:
    """A :data:`~dls_microscopy.io.zarr_write.ProgressCallback` drawing rich bars on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, description: str, done: int, total: int) -> None:
        if description not in self.tasks:
            self.tasks[description] = self.progress.add_task(description, total=total)
        self.progress.update(self.tasks[description], completed=done, total=total)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"dls-microscopy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv for debug).")
    ] = 0,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """DLS Microscopy command line."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    # before worker threads exist: fixed glibc mmap threshold and 2 malloc arenas keep
    # RSS near the memory budget (DLS_MALLOC_TUNING=0 turns this off)
    from dls_microscopy._allocator import bound_allocator

    bound_allocator()


# -- info ----------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy info image.ome.zarr --json")
def info(
    path: Annotated[str, typer.Argument(help="Image: OME-Zarr, OME-TIFF/TIFF, or HDF5 as file.h5:/dataset.")],
    series: Annotated[int, typer.Option(help="Series (multi-series files) or n-th plate field.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show shape, axes, dtype, spacing (µm), resolution levels, channels, labels and plate layout."""
    from dls_microscopy.io import describe_plate, detect_format, open_volume, split_dataset_path

    vol = open_volume(path, series=series)
    summary: dict[str, Any] = vol.describe()
    file_path, _ = split_dataset_path(path)
    if detect_format(file_path) == "zarr" and "well" in vol.metadata:
        summary["plate_layout"] = describe_plate(file_path).describe()
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=str(path), show_header=False)
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
        typer.Option(help="Label image to include, NAME=PATH or PATH (name 'labels'); repeatable."),
    ] = None,
    series: Annotated[int, typer.Option(help="Series of a multi-series input.")] = 0,
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


# -- segment -------------------------------------------------------------------


def _method_help() -> str:
    from dls_microscopy.segment import segmenter_names

    return "Segmenter (installed: " + ", ".join(segmenter_names()) + ")."


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    import yaml

    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--param needs KEY=VALUE, got {item!r}")
        params[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return params


@app.command(
    epilog="Example: dls-microscopy segment image.ome.zarr --channel DAPI --diameter 8 --memory-budget 2GB"
)
def segment(
    source: Annotated[str, typer.Argument(help="Image to segment (any readable format).")],
    output: Annotated[
        Path | None,
        typer.Argument(
            help="Output .ome.zarr label image; default: into IN's labels/ (IN must be a writable OME-Zarr)."
        ),
    ] = None,
    method: Annotated[str, typer.Option(help=_method_help())] = "watershed",
    channel: Annotated[
        str | None, typer.Option(help="Channel index or name, for multi-channel images.")
    ] = None,
    diameter: Annotated[float | None, typer.Option(help="Expected object diameter in µm.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Segmenter parameter KEY=VALUE; repeatable.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="Model weights file, for segmenters that take one (sets model_path)."),
    ] = None,
    memory_budget: Annotated[
        str, typer.Option(help="Memory for all workers, e.g. 2GB; sets the block size.")
    ] = "2GB",
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    workers: Annotated[
        int | None,
        typer.Option(help="Blocks processed in parallel (default: CPU count; 1 on GPU)."),
    ] = None,
    label_name: Annotated[str, typer.Option(help="Name of the label image.")] = "nuclei",
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing labels of that name.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
) -> None:
    """Segment a 3D image block by block and write stitched labels as NGFF labels (with pyramid)."""
    from dls_microscopy.io import open_volume
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    params = _parse_params(param)
    if diameter is not None:
        params["diameter_um"] = diameter
    if model is not None:
        params["model_path"] = str(model)
    seg = get_segmenter(method, params, device=device)
    vol = open_volume(source, series=series)
    ch: int | str | None = int(channel) if channel is not None and channel.isdigit() else channel
    with RichProgress(enabled=progress and err.is_terminal) as bar:
        res = segment_blockwise(
            vol,
            seg,
            channel=ch,
            memory_budget=parse_size(memory_budget),
            output=output,
            label_name=label_name,
            overwrite=overwrite,
            workers=workers,
            progress=bar,
        )
    summary = {
        "labels": str(res.path),
        "objects": res.n_objects,
        "method": method,
        "device": seg.device,
        "blocks": res.plan.n_blocks,
        "block_shape": list(res.plan.block_shape),
        "halo": list(res.plan.halo),
        "seams": res.seam_qc,
        "seconds": {k: round(v, 3) for k, v in res.timings.items()},
    }
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(
            f"{res.n_objects} objects → {res.path}  ({res.plan.n_blocks} blocks, "
            f"{res.seam_qc['merged_pairs']} seam merges)",
            soft_wrap=True,
        )


# -- evaluate ------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy evaluate pred.ome.zarr/labels/nuclei gt_labels.tif --json")
def evaluate(
    pred: Annotated[
        str,
        typer.Argument(help="Predicted labels: a label image, or an OME-Zarr image with --pred-label."),
    ],
    gt: Annotated[str, typer.Argument(help="Ground-truth labels (same shape).")],
    pred_label: Annotated[str | None, typer.Option(help="Name of the NGFF label image inside PRED.")] = None,
    gt_label: Annotated[str | None, typer.Option(help="Name of the NGFF label image inside GT.")] = None,
    thresholds: Annotated[str, typer.Option(help="IoU thresholds, comma-separated.")] = "0.5,0.75,0.9",
    restrict_to_gt: Annotated[
        bool, typer.Option(help="Sparse ground truth: ignore predictions overlapping no GT object.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Object-level accuracy: precision, recall, F1, AP and mean matched IoU at IoU thresholds."""
    from dls_microscopy.segment.metrics import evaluate_paths

    try:
        ts = tuple(float(t) for t in thresholds.split(","))
    except ValueError as exc:
        raise InputError(f"--thresholds must be numbers separated by commas, got {thresholds!r}") from exc
    result = evaluate_paths(
        pred,
        gt,
        thresholds=ts,
        pred_label=pred_label,
        gt_label=gt_label,
        restrict_to_gt=restrict_to_gt,
    )
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
    else:
        out.print(result.table(), soft_wrap=True, highlight=False)


# -- mesh ----------------------------------------------------------------------


@app.command(
    epilog="Example: dls-microscopy mesh img.ome.zarr meshes/ --label-name nuclei --descriptors shape.parquet"
)
def mesh(
    labels: Annotated[
        str, typer.Argument(help="Label image, or an OME-Zarr image with NGFF labels (see --label-name).")
    ],
    outdir: Annotated[Path, typer.Argument(help="New folder for the meshes and manifest.json.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="glb (one file, a node per object), ply, obj or stl (a file per object)."
        ),
    ] = "glb",
    smooth: Annotated[
        int,
        typer.Option(help="Taubin smoothing iterations (0: exact voxel surface; 20 gives areas within ~2%)."),
    ] = 20,
    decimate: Annotated[float | None, typer.Option(help="Fraction of faces to keep, in (0, 1].")] = None,
    descriptors: Annotated[
        Path | None, typer.Option(help="Also write per-object shape descriptors to this .parquet.")
    ] = None,
    label_name: Annotated[str | None, typer.Option(help="NGFF label image inside an OME-Zarr image.")] = None,
    memory_budget: Annotated[str, typer.Option(help="Memory for reading label blocks, e.g. 1GB.")] = "1GB",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTDIR.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
) -> None:
    """Mesh every object in µm (watertight, outward normals) and export meshes and shape descriptors."""
    from dls_microscopy.geometry.command import export_meshes_command

    with RichProgress(enabled=progress and err.is_terminal) as bar:
        summary = export_meshes_command(
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
        int | None, typer.Option(help="Metadata_Site (default: the plate field, else 0).")
    ] = None,
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
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
    workers: Annotated[int | None, typer.Option(help="Threads (default: usable cores, at most 4).")] = None,
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
            channels=[int(c) if c.isdigit() else c for c in channel] if channel else None,
            compartment=compartment,
            plate=plate,
            well=well,
            site=site,
            series=series,
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


@app.command(epilog="Example: dls-microscopy verify ./features --recompute")
def verify(
    outdir: Annotated[Path, typer.Argument(help="Output folder with a manifest.json.")],
    recompute: Annotated[
        bool, typer.Option(help="Also re-run the recorded command and compare outputs byte for byte.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print mismatches as JSON.")] = False,
) -> None:
    """Check an output folder against its manifest (inputs, outputs, parameters); exit 1 on any mismatch."""
    import dataclasses

    from dls_microscopy.pipeline.provenance import verify_manifest

    found = verify_manifest(outdir, recompute=recompute)
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(m) for m in found], default=str))
    elif found:
        for m in found:
            out.print(str(m), highlight=False, soft_wrap=True)
    else:
        out.print(f"{outdir}: everything matches its manifest")
    if found:
        raise typer.Exit(1)


# -- run / config --------------------------------------------------------------

#: Exit code of ``run`` when the run finished but some fields failed.
EXIT_FIELDS_FAILED = 3


@app.command(
    "run",
    epilog="Example: dls-microscopy run pipeline.yaml --workers 2   (exit 3: some fields failed)",
)
def run_command(
    config: Annotated[Path, typer.Argument(help="Pipeline configuration (YAML; see 'config schema').")],
    workers: Annotated[
        int | None, typer.Option(help="Fields in parallel (a local Dask cluster of N workers).")
    ] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Compute backend: local, slurm or pbs (overrides the config).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Redo every field, even those already committed.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run a pipeline over every field of its input: resumable; failed fields are listed (exit 3)."""
    from dls_microscopy.pipeline.run import run_pipeline

    if cluster is not None and cluster not in ("local", "slurm", "pbs"):
        raise InputError(f"--cluster must be local, slurm or pbs, got {cluster!r}")
    summary = run_pipeline(
        config, workers=workers, cluster=cluster, force=force, progress=progress and err.is_terminal
    )
    if as_json:
        out.print_json(json.dumps(summary.to_dict(), default=str))
    else:
        table = Table(title=f"run: {summary.count('done')} done, {summary.count('skipped')} skipped, "
                      f"{summary.count('failed')} failed in {summary.seconds:.1f} s")
        table.add_column("field", no_wrap=True)
        for column in ("well", "site", "status", "objects", "seconds"):
            table.add_column(column, no_wrap=True)
        table.add_column("reason", overflow="fold")
        shown = [f for f in summary.fields if f.status == "failed"]
        shown += [f for f in summary.fields if f.status != "failed"][: max(0, 20 - len(shown))]
        for f in sorted(shown, key=summary.fields.index):
            md = f.metadata
            objects = "" if f.n_objects is None else str(f.n_objects)
            well, site = md.get("Metadata_Well", ""), str(md.get("Metadata_Site", ""))
            table.add_row(f.key, well, site, f.status, objects, f"{f.seconds:.1f}", f.reason)
        if len(shown) < len(summary.fields):
            table.caption = f"{len(summary.fields) - len(shown)} more fields in run_summary.json"
        out.print(table)
        for name, p in summary.tables.items():
            out.print(f"{name}: {p}", highlight=False, soft_wrap=True)
        out.print(f"outputs, run.log and pipeline.resolved.yaml: {summary.output}", highlight=False,
                  soft_wrap=True)
    if not summary.ok:
        err.print(f"[red]{summary.count('failed')} field(s) failed[/red] (see run_summary.json)")
        raise typer.Exit(EXIT_FIELDS_FAILED)


config_app = typer.Typer(help="Pipeline configuration: JSON schema and validation.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("schema", epilog="Example: dls-microscopy config schema > pipeline.schema.json")
def config_schema() -> None:
    """Print the JSON schema of pipeline.yaml."""
    from dls_microscopy.pipeline.config import config_json_schema

    sys.stdout.write(json.dumps(config_json_schema(), indent=2, sort_keys=True) + "\n")


@config_app.command("validate", epilog="Example: dls-microscopy config validate pipeline.yaml --resolved")
def config_validate(
    path: Annotated[Path, typer.Argument(help="Pipeline configuration (YAML).")],
    resolved: Annotated[
        bool, typer.Option(help="Print the configuration with every default and absolute paths.")
    ] = False,
) -> None:
    """Check a pipeline.yaml; exit 2 naming the key and line of every problem."""
    from dls_microscopy.pipeline.config import load_config

    cfg = load_config(path)
    if resolved:
        sys.stdout.write(cfg.to_yaml())
    else:
        out.print(f"{path}: valid (steps: {', '.join(cfg.steps.names())})", highlight=False, soft_wrap=True)


# -- embed -------------------------------------------------------------------

embed_app = typer.Typer(
    help="Learned object embeddings: train an encoder on your own data, then embed objects.",
    no_args_is_help=True,
)
app.add_typer(embed_app, name="embed")


@embed_app.command(
    "train",
    epilog="Example: dls-microscopy embed train a.ome.zarr nuclei b.ome.zarr nuclei --kind shape --out s.pt",
)
def embed_train(
    inputs: Annotated[
        list[str], typer.Argument(help="IMAGE LABELS pairs (LABELS: a path, or a label image name in IMAGE).")
    ],
    kind: Annotated[str, typer.Option(help="image (3D CNN on object crops) or shape (PointNet on meshes).")],
    model_out: Annotated[
        Path, typer.Option("--out", help="Weights file to write (.pt); its .json record goes beside it.")
    ],
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, sampling, augmentations).")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Objects per training step.")] = 64,
    channel: Annotated[
        list[str] | None,
        typer.Option(help="Channel name or index for image models; repeatable (default: all)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: usable cores, up to 4).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the model record as JSON.")] = False,
) -> None:
    """Train an image or shape encoder self-supervised (SimCLR) on the objects of labelled images."""
    from dls_microscopy.pipeline.embeddings import train_from_files

    if len(inputs) % 2:
        raise InputError(f"give IMAGE LABELS pairs; got {len(inputs)} argument(s)")
    pairs = list(zip(inputs[::2], inputs[1::2], strict=True))
    res = train_from_files(
        pairs,
        kind=kind,
        out=model_out,
        channels=[int(c) if c.isdigit() else c for c in channel] if channel else None,
        epochs=epochs,
        seed=seed,
        device=device,
        batch_size=batch_size,
        threads=threads,
    )
    rec = res["record"]
    if as_json:
        out.print_json(json.dumps(res, default=str))
    else:
        losses = rec["training"]["loss_history"]
        out.print(
            f"{kind} model on {rec['training']['n_objects']} objects, "
            f"loss {losses[0]:.3f} → {losses[-1]:.3f}: "
            f"{res['model']} (sha256 {rec['weights_sha256'][:12]}…)",
            highlight=False,
            soft_wrap=True,
        )


@embed_app.command("apply", epilog="Example: dls-microscopy embed apply img.ome.zarr nuclei s.pt emb.parquet")
def embed_apply(
    image: Annotated[str, typer.Argument(help="Image (OME-Zarr, OME-TIFF, TIFF, HDF5 file.h5:/dataset).")],
    labels: Annotated[str, typer.Argument(help="Label image path, or the name of a label image in IMAGE.")],
    model: Annotated[Path, typer.Argument(help="Model weights (.pt) from 'embed train'.")],
    output: Annotated[Path, typer.Argument(help="Parquet file: Metadata_ObjectID and Embedding_* columns.")],
    extra_model: Annotated[
        list[Path] | None, typer.Option("--model", help="A further model (e.g. the other kind); repeatable.")
    ] = None,
    channel: Annotated[list[str] | None, typer.Option(help="Channel name or index; repeatable.")] = None,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Objects per forward pass.")] = 64,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: usable cores, up to 4).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed every labelled object with trained models and write the embeddings as Parquet."""
    from dls_microscopy.pipeline.embeddings import apply_embeddings_to_file

    res = apply_embeddings_to_file(
        image,
        labels,
        [model, *(extra_model or [])],
        output,
        channels=[int(c) if c.isdigit() else c for c in channel] if channel else None,
        device=device,
        batch_size=batch_size,
        threads=threads,
    )
    if as_json:
        out.print_json(json.dumps(res, default=str))
    else:
        out.print(
            f"{res['n_objects']} objects × {res['columns']} embedding columns → {res['out']}",
            highlight=False,
            soft_wrap=True,
        )


# -- sample --------------------------------------------------------------------


@app.command(epilog="Example: dls-microscopy sample ./sample_data")
def sample(
    outdir: Annotated[Path, typer.Argument(help="Folder to write the sample data into.")],
    seed: Annotated[int, typer.Option(help="Seed of the synthetic volume.")] = 0,
    plate: Annotated[
        bool, typer.Option(help="Also write a synthetic HCS plate and pipeline configs for 'run'.")
    ] = False,
) -> None:
    """Write the bundled sample data: a synthetic 2-channel nuclei volume with labels, and a real one."""
    from dls_microscopy.sample_data import write_sample_data

    written = write_sample_data(outdir, seed=seed)
    if plate:
        from dls_microscopy.sample_data.plate import write_pipeline_samples

        written.update(write_pipeline_samples(outdir, seed=seed))
    for name, p in written.items():
        out.print(f"{name}: {p}")


# -- gui -----------------------------------------------------------------------


def _missing_gui_packages() -> list[str]:
    """Packages of the ``gui`` extra that are not installed (checked without importing them)."""
    import importlib.util

    missing = [m for m in ("napari", "qtpy", "magicgui") if importlib.util.find_spec(m) is None]
    if not any(importlib.util.find_spec(q) is not None for q in ("PyQt5", "PyQt6", "PySide2", "PySide6")):
        missing.append("PyQt5")
    return missing


@app.command(epilog="Example: dls-microscopy gui image.ome.zarr")
def gui(
    path: Annotated[
        str | None, typer.Argument(help="Image to open: OME-Zarr (image or plate), OME-TIFF, TIFF, HDF5.")
    ] = None,
) -> None:
    """Start the desktop app: napari with the DLS Microscopy widgets docked."""
    import os

    missing = _missing_gui_packages()
    if missing:
        from rich.markup import escape

        err.print(
            "[red]error:[/red] "
            + escape(
                f"the desktop app needs the 'gui' extra (missing: {', '.join(missing)}); "
                "install it with: pip install 'dls-microscopy[gui]'"
            ),
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if path is not None:
        from dls_microscopy.io import detect_format, split_dataset_path

        detect_format(split_dataset_path(path)[0])  # a clear error before any window opens
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        err.print(
            "[red]error:[/red] no display: the desktop app needs a graphical session "
            "(or run it under xvfb-run)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    from dls_microscopy.napari.app import main as gui_main

    raise typer.Exit(gui_main(path))


# -- entry point ---------------------------------------------------------------


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map our errors to exit code 2 and anything unexpected to 1."""
    import warnings

    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        return _run(argv)
    finally:
        warnings.showwarning = previous


def _run(argv: list[str] | None) -> int:
    try:
        # without standalone mode, click returns the code of a typer.Exit instead of raising it
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc:
            return rc
    except (InputError, OutputError, ModelNotFoundError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except DlsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err.print("aborted")
        return 130
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error from the argument parser (click/typer): exit code 2
            return int(exc.exit_code)
        log.debug("internal error", exc_info=True)
        err.print(
            f"[red]internal error:[/red] {type(exc).__name__}: {exc} (run with -vv for details)",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
