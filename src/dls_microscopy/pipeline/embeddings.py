"""File-level embedding commands: ``dls-microscopy embed train`` and ``embed apply``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dls_microscopy.errors import InputError
from dls_microscopy.features.tables import write_parquet
from dls_microscopy.io.atomic import check_output_file, partial_file, release_partial
from dls_microscopy.pipeline.features import open_feature_inputs

__all__ = ["apply_embeddings_to_file", "train_from_files"]

log = logging.getLogger(__name__)


def train_from_files(
    pairs: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    *,
    kind: str,
    out: str | os.PathLike[str],
    channels: Sequence[int | str] | None = None,
    series: int = 0,
    time_point: int | None = None,
    spacing: Sequence[float] | None = None,
    level: int = 0,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Train an embedding model on ``(image, labels)`` file pairs.

    ``labels`` is a label-image path or the name of a label image inside an
    OME-Zarr image.  ``spacing`` (µm at full resolution) replaces the voxel size of
    every pair's files; ``level`` is the resolution level read of each (and of its labels,
    as :func:`~dls_microscopy.pipeline.features.open_feature_inputs` finds it).  ``options`` go to
    :func:`~dls_microscopy.features.embeddings.train_embedding_model`
    (``epochs``, ``seed``, ``device``...).  An existing model at ``out`` is refused (before
    anything is read) unless ``overwrite``.

    Returns
    -------
    dict
        ``model`` (path), ``record`` (the JSON record as a dict).
    """
    import dataclasses

    from dls_microscopy.features.embeddings import TrainingSample, train_embedding_model
    from dls_microscopy.features.embeddings.store import check_model_output

    if not pairs:
        raise InputError("give at least one IMAGE LABELS pair")
    check_model_output(out, overwrite=overwrite)
    samples = []
    for image_path, labels in pairs:
        image, lab, (data, names) = open_feature_inputs(
            image_path, labels, channels=channels, time_point=time_point, series=series, spacing=spacing,
            level=level,
        )  # fmt: skip
        samples.append(TrainingSample(data, lab.data, tuple(image.spacing), tuple(names)))
    record = train_embedding_model(samples, kind, out, overwrite=overwrite, **options)
    return {"model": str(Path(out).absolute()), "record": dataclasses.asdict(record)}


def apply_embeddings_to_file(
    image_path: str | os.PathLike[str],
    labels: str | os.PathLike[str],
    models: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    channels: Sequence[int | str] | None = None,
    series: int = 0,
    time_point: int | None = None,
    spacing: Sequence[float] | None = None,
    level: int = 0,
    device: str | None = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Embed every object of an image and write ``Metadata_ObjectID`` + embeddings as Parquet.

    The schema metadata (``dls_microscopy``) records the models (path, kind,
    sha256), the image and the spacing (``spacing``, µm at full resolution, replaces
    the files' voxel size), and a ``level`` above 0, the resolution level read.
    An existing ``out`` is refused (before anything is read) unless ``overwrite``.

    Returns
    -------
    dict
        ``out``, ``n_objects``, ``columns``, ``models``.
    """
    from dls_microscopy.features.embeddings import apply_embeddings

    out = Path(out)
    if out.suffix != ".parquet":
        raise InputError("the output must be a .parquet file", path=out)
    check_output_file(out, overwrite=overwrite)
    image, lab, (data, names) = open_feature_inputs(
        image_path, labels, channels=channels, time_point=time_point, series=series, spacing=spacing,
        level=level,
    )  # fmt: skip
    records: list[dict[str, Any]] = []
    table = apply_embeddings(
        data,
        lab.data,
        models,
        spacing=image.spacing,
        channel_names=names,
        device=device,
        batch_size=batch_size,
        threads=threads,
        records=records,
    )
    meta = json.loads(table.schema.metadata[b"dls_microscopy"])
    meta.update(image=str(Path(os.fspath(image_path)).absolute()), spacing_um=list(image.spacing))
    if level:
        meta["level"] = int(level)
    table = table.replace_schema_metadata({b"dls_microscopy": json.dumps(meta, sort_keys=True).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_file(out)
    try:
        write_parquet(table, tmp)
        os.replace(tmp, out)
    finally:
        release_partial(tmp)  # gone after the rename; a failed write leaves nothing
    return {
        "out": str(out.absolute()),
        "n_objects": table.num_rows,
        "columns": table.num_columns - 1,
        "models": records,
    }
