"""The ``embed`` group: train object encoders (``embed train``) and embed objects (``embed apply``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dls_microscopy.cli._common import LevelOption, SpacingOption, app, channel_arg, out, parse_spacing
from dls_microscopy.errors import InputError

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
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs (default: 30, or more for at least 750 steps).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (initialisation, sampling, augmentations).")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Objects per training step.")] = 64,
    channel: Annotated[
        list[str] | None,
        typer.Option(help="Channel name or index for image models; repeatable (default: all)."),
    ] = None,
    series: Annotated[int, typer.Option(help="Series / plate field of the inputs.")] = 0,
    time_point: Annotated[
        int | None, typer.Option(help="Time point of the inputs, for time series (from 0).")
    ] = None,
    spacing: SpacingOption = None,
    level: LevelOption = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: usable cores, up to 4).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing model at --out (weights and .json record).")
    ] = False,
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
        channels=[channel_arg(c) for c in channel] if channel else None,
        series=series,
        time_point=time_point,
        spacing=parse_spacing(spacing),
        level=level,
        epochs=epochs,
        seed=seed,
        device=device,
        batch_size=batch_size,
        threads=threads,
        overwrite=overwrite,
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
    batch_size: Annotated[int, typer.Option(min=1, help="Objects per forward pass.")] = 64,
    series: Annotated[int, typer.Option(help="Series / plate field of the input.")] = 0,
    time_point: Annotated[
        int | None, typer.Option(help="Time point of the input, for time series (from 0).")
    ] = None,
    spacing: SpacingOption = None,
    level: LevelOption = 0,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: usable cores, up to 4).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUTPUT.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Embed every labelled object with trained models and write the embeddings as Parquet."""
    from dls_microscopy.pipeline.embeddings import apply_embeddings_to_file

    res = apply_embeddings_to_file(
        image,
        labels,
        [model, *(extra_model or [])],
        output,
        channels=[channel_arg(c) for c in channel] if channel else None,
        series=series,
        time_point=time_point,
        spacing=parse_spacing(spacing),
        level=level,
        device=device,
        batch_size=batch_size,
        threads=threads,
        overwrite=overwrite,
    )
    if as_json:
        out.print_json(json.dumps(res, default=str))
    else:
        out.print(
            f"{res['n_objects']} objects × {res['columns']} embedding columns → {res['out']}",
            highlight=False,
            soft_wrap=True,
        )
