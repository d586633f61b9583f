"""The Features widget's measurement: the per-object table, with optional embedding columns."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.channels import channel_data
from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["measure_volumes"]


def measure_volumes(
    image: Volume,
    labels: Volume,
    *,
    channels: Sequence[int | str] | None = None,
    compartment: str = "Nuclei",
    image_id: str = "",
    plate: str = "",
    well: str = "",
    site: int = 0,
    time_point: int | None = None,
    memory_budget: int | str = "1GB",
    workers: int | None = None,
    embedding_models: Sequence[str | os.PathLike[str]] = (),
    device: str = "cpu",
    progress: ProgressCallback | None = None,
) -> Any:
    """The per-object table (one row per object) of ``labels`` measured on ``image``.

    Same columns and values as ``objects.parquet`` of ``dls-microscopy features``
    (with ``--embeddings`` for each of ``embedding_models``: ``Embedding_*`` columns
    after the features, from models trained with ``dls-microscopy embed train``).

    Parameters
    ----------
    image : Volume
        ``(C, Z, Y, X)`` or ``(Z, Y, X)``; the channels to measure are picked by
        ``channels`` (names or indices, default all).
    labels : Volume
        ``(Z, Y, X)`` integer labels with the image's spatial shape.
    time_point : int, optional
        The time point of a time series that ``image`` is (``Metadata_TimePoint``).

    Returns
    -------
    pyarrow.Table
    """
    from dls_microscopy.features import measure_objects, objects_table
    from dls_microscopy.pipeline.interactive._segment import memory_budget_bytes

    lab = labels.select(c=0) if "c" in labels.axes else labels
    if image.spatial_shape != lab.spatial_shape:
        raise InputError(
            f"image and labels differ in shape: image {image.spatial_shape} vs labels "
            f"{lab.spatial_shape} (zyx)"
        )
    data, names = channel_data(image, channels)  # as `dls-microscopy features` selects
    m = measure_objects(
        data,
        lab.data,
        spacing=image.spacing,
        channel_names=names,
        memory_budget=memory_budget_bytes(memory_budget),
        workers=workers,
        progress=progress,
    )
    table = objects_table(
        m, compartment=compartment, plate=plate, well=well, site=site, image_id=image_id,
        time_point=time_point,
    )  # fmt: skip
    if embedding_models:
        from dls_microscopy.features import join_object_columns
        from dls_microscopy.features.embeddings import apply_embeddings, read_record
        from dls_microscopy.pipeline.features import embedding_input

        paths = [os.fspath(p) for p in embedding_models]
        emb_data, emb_names = embedding_input(image, data, names, [read_record(p) for p in paths])
        emb = apply_embeddings(
            emb_data,
            lab.data,
            paths,
            spacing=image.spacing,
            channel_names=emb_names,
            device=device,
            progress=progress,
        )
        table = join_object_columns(table, emb)
    return table
