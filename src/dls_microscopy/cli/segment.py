"""Segmentation commands: ``segment`` (blockwise, to NGFF labels) and ``evaluate`` (accuracy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

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
from dls_microscopy.errors import InputError

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
    diameter: Annotated[
        str | None,
        typer.Option(
            help="Expected object diameter in µm, or 'auto' to estimate it from the image "
            "(watershed; see estimate-diameter)."
        ),
    ] = None,
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
        typer.Option(min=1, help="Blocks processed in parallel (default: CPU count; 1 on GPU)."),
    ] = None,
    label_name: Annotated[str, typer.Option(help="Name of the label image.")] = "nuclei",
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
    time_point: Annotated[
        int | None, typer.Option(help="Time point to segment, for time series (from 0).")
    ] = None,
    spacing: SpacingOption = None,
    level: Annotated[
        int,
        typer.Option(
            min=0,
            help="Resolution level of the image to segment (0: full resolution); above 0 the labels "
            "need an OUTPUT of their own.",
        ),
    ] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing labels of that name.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result summary as JSON.")] = False,
) -> None:
    """Segment a 3D image block by block and write stitched labels as NGFF labels (with pyramid)."""
    from dls_microscopy.io import open_volume
    from dls_microscopy.pipeline._environment import label_provenance
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    params = _parse_params(param)
    for option, key, given in (("--diameter", "diameter_um", diameter), ("--model", "model_path", model)):
        if given is not None and key in params:  # which one wins would be a guess
            raise InputError(f"{option} and --param {key}=... both give {key}: give it once")
    if level and output is None:  # before any work (--diameter auto): it cannot go there
        from dls_microscopy.segment._blockwise_write import level_into_store_error

        raise level_into_store_error(level, source)
    vol = open_volume(source, series=series, spacing=parse_spacing(spacing), level=level)
    ch = channel_arg(channel) if channel is not None else None
    estimated = None
    if diameter is not None and diameter.strip().lower() == "auto":
        if method != "watershed":
            raise InputError(f"--diameter auto estimates for the watershed; give a number for {method!r}")
        from dls_microscopy.segment.diameter import estimate_diameter

        estimated = estimate_diameter(vol, channel=ch, time_point=time_point, params=params)
        params["diameter_um"] = estimated.diameter_um
    elif diameter is not None:
        params["diameter_um"] = _positive_um(diameter, "--diameter")
    if model is not None:
        params["model_path"] = str(model)
    seg = get_segmenter(method, params, device=device)
    with RichProgress(enabled=progress and err.is_terminal) as bar:
        res = segment_blockwise(
            vol,
            seg,
            channel=ch,
            time_point=time_point,
            memory_budget=parse_size(memory_budget),
            output=output,
            label_name=label_name,
            overwrite=overwrite,
            workers=workers,
            progress=bar,
            provenance=label_provenance("dls-microscopy segment", model),
        )
    summary = {
        "labels": str(res.path),
        "objects": res.n_objects,
        "method": method,
        "device": seg.device,
        "blocks": res.plan.n_blocks,
        "block_shape": list(res.plan.block_shape),
        "halo": list(res.plan.halo),
        # voxels the blocks computed per voxel of the image: above 3, halos dominate (a warning)
        "halo_overhead": round(res.plan.halo_overhead, 2),
        "seams": res.seam_qc,
        "seconds": {k: round(v, 3) for k, v in res.timings.items()},
    }
    if estimated is not None:
        summary["diameter_estimated"] = estimated.as_dict()
    # every µm setting hangs on the diameter: say which one was used and where it came from
    used = getattr(getattr(seg, "params", None), "diameter_um", None)
    source = "estimated" if estimated is not None else ("given" if diameter is not None else "default")
    if used is not None:
        summary["diameter_um"] = used
        summary["diameter_source"] = source
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        if used is not None:
            hint = "; give --diameter, or --diameter auto to estimate it" if source == "default" else ""
            out.print(f"diameter {used:g} µm ({source}{hint})", soft_wrap=True)
        out.print(
            f"{res.n_objects} objects → {res.path}  ({res.plan.n_blocks} blocks, "
            f"{res.seam_qc['merged_pairs']} seam merges)",
            soft_wrap=True,
        )


def _positive_um(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{option} takes a number of µm or 'auto', got {text!r}") from None
    if not value > 0:
        raise InputError(f"{option} must be > 0 µm, got {text}")
    return value


@app.command(
    "estimate-diameter",
    epilog="Example: dls-microscopy estimate-diameter image.ome.zarr --channel DAPI",
)
def estimate_diameter_cmd(
    source: Annotated[str, typer.Argument(help="Image (any readable format).")],
    channel: Annotated[
        str | None, typer.Option(help="Channel index or name, for multi-channel images.")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Other watershed parameter KEY=VALUE to segment with; repeatable."),
    ] = None,
    start: Annotated[str, typer.Option(help="First diameter tried, µm; must exceed the nuclei's.")] = "20",
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
    time_point: Annotated[int | None, typer.Option(help="Time point, for time series (from 0).")] = None,
    spacing: SpacingOption = None,
    level: Annotated[
        int, typer.Option(min=0, help="Resolution level of the image to read (0: full resolution).")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Estimate the nucleus diameter (µm) that the image supports, for segment --diameter.

    Segments a central region (about 4 M voxels) with a large diameter, measures the
    median diameter of the whole objects found (of the sphere of their volume), and
    segments again with that, until the two agree. Refuses, and asks for the diameter,
    where the image does not settle on one (nuclei barely above the noise).
    """
    from dls_microscopy.io import open_volume
    from dls_microscopy.segment.diameter import estimate_diameter

    vol = open_volume(source, series=series, spacing=parse_spacing(spacing), level=level)
    ch = channel_arg(channel) if channel is not None else None
    est = estimate_diameter(
        vol,
        channel=ch,
        time_point=time_point,
        params=_parse_params(param),
        start_um=_positive_um(start, "--start"),
    )
    if as_json:
        out.print_json(json.dumps(est.as_dict()))
    else:
        steps = " → ".join(f"{s:.3g}" for s in est.steps_um)
        out.print(
            f"diameter {est.diameter_um:g} µm (median of {est.n_objects} objects; steps {steps} µm)\n"
            f"segment with: --diameter {est.diameter_um:g}",
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
