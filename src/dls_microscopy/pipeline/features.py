"""File-to-folder feature extraction: image + labels → Parquet tables + manifest.

This is what ``dls-microscopy features IMAGE LABELS OUTDIR`` calls.  The
folder is built under a temporary name beside ``OUTDIR`` and renamed when
complete (:func:`~dls_microscopy.io.atomic.atomic_directory`), so an
interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.channels import channel_by_name, channel_data, select_channels
from dls_microscopy.errors import InputError
from dls_microscopy.features.measure import DEFAULT_MEMORY_BUDGET, measure_objects
from dls_microscopy.features.tables import (
    TIME_KEY,
    aggregate_table,
    group_keys,
    join_object_columns,
    objects_table,
    with_site_count,
    write_csv,
    write_parquet,
)
from dls_microscopy.io.atomic import atomic_directory
from dls_microscopy.pipeline._feature_inputs import names_label_image, open_feature_inputs
from dls_microscopy.volume import Volume

__all__ = ["embedding_input", "open_feature_inputs", "run_features", "select_channels"]

log = logging.getLogger(__name__)

ENTRY_POINT = "dls_microscopy.pipeline.features:run_features"


def embedding_input(
    image: Volume, data: Any, names: Sequence[str], records: Sequence[Any]
) -> tuple[Any, tuple[str, ...]]:
    """The image and channel names that embedding models get, beside the measured channels.

    Every image model takes its own channels by name
    (:func:`~dls_microscopy.features.embeddings.apply_embeddings`), so it gets all of
    ``image``'s channels when each of its channels is found there: a model trained on
    DAPI embeds DAPI even when only GFP is measured.  Otherwise it gets the measured
    channels ``data`` / ``names`` (a model trained on an unnamed single channel, applied
    to the one channel chosen for measuring).  ``records`` are the models'
    :class:`~dls_microscopy.features.embeddings.ModelRecord` (``read_record``).
    """
    every = image.channel_names
    for record in records:
        if record.kind != "image":
            continue
        try:
            for name in record.preprocessing["channels"]:
                channel_by_name(name, every)
        except InputError:
            return data, tuple(names)
    return channel_data(image)


def run_features(
    image_path: str | os.PathLike[str],
    labels_path_or_name: str | os.PathLike[str],
    outdir: str | os.PathLike[str],
    *,
    channels: Sequence[int | str] | None = None,
    compartment: str = "Nuclei",
    plate: str | None = None,
    well: str | None = None,
    site: int | None = None,
    image_id: str | None = None,
    series: int = 0,
    time_point: int | None = None,
    spacing: Sequence[float] | None = None,
    level: int = 0,
    percentiles: Sequence[float] = (25.0, 50.0, 75.0),
    radial_shells: int = 4,
    csv: bool = False,
    meshes: bool = False,
    embeddings: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    device: str | None = "cpu",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Measure every object of a label image and write the tables and a manifest.

    Writes ``objects.parquet`` (one row per object), ``images.parquet``
    (count, mean and median of every feature for the image), ``wells.parquet``
    (the same per well, when the well is known), ``.csv`` copies with
    ``csv=True``, and ``manifest.json``.

    Parameters
    ----------
    image_path : path
        Image (OME-Zarr, OME-TIFF, TIFF, HDF5 ``file.h5:/dataset``).
    labels_path_or_name : path or str
        Label image path, or the name of a label image inside the OME-Zarr image.
    outdir : path
        Output folder (created; must not exist unless ``overwrite``).
    channels : sequence of int or str, optional
        Channels to measure (default all).
    compartment : str
        Feature-name prefix (``"Nuclei"``, ``"Cells"``...).
    plate, well, site, image_id : optional
        Metadata columns; default from the plate layout of an HCS OME-Zarr,
        else ``""``/0; ``image_id`` defaults to the image's file name.
    series, time_point : int, optional
        Series (or plate field) and time point to use.
    spacing : sequence of float, optional
        Voxel size in µm at full resolution (``(dz, dy, dx)``, or one value for
        all axes) in place of the files'; recorded in the manifest.
    level : int
        Resolution level of the image (and of its labels) to measure; 0 is full
        resolution.  Volumes and µm values are in that level's voxels.
    percentiles, radial_shells
        See :func:`~dls_microscopy.features.measure_objects`.
    csv : bool
        Also write CSV files.
    meshes : bool
        Also mesh every object (Taubin-smoothed, µm) and add its shape
        descriptors as ``{compartment}_AreaShape_Mesh*`` columns with units
        (:func:`~dls_microscopy.features.mesh_columns.mesh_descriptor_table`).
    embeddings : path or sequence of paths, optional
        Trained embedding models (``dls-microscopy embed train``); adds
        ``Embedding_Image_*`` / ``Embedding_Shape_*`` columns after the features,
        and the models' sha256 to the manifest.
    device : str
        Device of the embedding models (default ``"cpu"``: reproducible bytes;
        ``"auto"`` picks cuda > mps > cpu).
    memory_budget, workers, progress
        Resources and progress callback.
    overwrite : bool
        Replace an existing ``outdir`` (only once the new one is complete).

    Returns
    -------
    dict
        ``outdir``, ``n_objects``, ``files`` (names written), ``timings_s``.

    Raises
    ------
    InputError
        Unreadable or mismatched inputs, bad parameters.
    OutputError
        ``outdir`` exists (without ``overwrite``) or cannot be written.
    ModelNotFoundError
        An embedding model (or its ``.json`` record) is missing; raised before any work.
    """
    from dls_microscopy.io.atomic import check_output_dir, refuse_output_over_inputs

    model_paths = _model_paths(embeddings)
    refuse_output_over_inputs(outdir, [image_path, labels_path_or_name, *model_paths])
    check_output_dir(outdir, overwrite=overwrite)  # before measuring: atomic_directory checks again
    records = []
    if model_paths:  # read once; a missing model fails before measuring
        from dls_microscopy.features.embeddings import read_record

        records = [read_record(path) for path in model_paths]
    t0 = time.perf_counter()
    image, _labels, (data, names) = open_feature_inputs(
        image_path,
        labels_path_or_name,
        channels=channels,
        time_point=time_point,
        series=series,
        spacing=spacing,
        level=level,
    )
    meta = image.metadata
    plate = plate if plate is not None else str(meta.get("plate", ""))
    well = well if well is not None else str(meta.get("well", ""))
    site = site if site is not None else int(meta.get("field", 0))
    if image_id is None:  # a time point of a time series: its own image, as in a pipeline run
        image_id = Path(os.fspath(image_path)).name + ("" if time_point is None else f"_t{time_point}")
    t_open = time.perf_counter()
    try:
        m = measure_objects(
            data,
            _labels.data,
            spacing=image.spacing,
            channel_names=names,
            percentiles=percentiles,
            radial_shells=radial_shells,
            memory_budget=memory_budget,
            workers=workers,
            progress=progress,
        )
    except InputError as exc:  # found while reading: name the file (negative ids, NaN in objects)
        if exc.path is None:
            exc.path = _labels.source if exc.reason.startswith("labels") else image.source
        raise
    t_measure = time.perf_counter()
    objects = objects_table(
        m, compartment=compartment, plate=plate, well=well, site=site, image_id=image_id,
        time_point=time_point, level=level,
    )  # fmt: skip
    models: list[dict[str, Any]] = []
    if meshes:
        from dls_microscopy.features.mesh_columns import mesh_descriptor_table

        objects = join_object_columns(
            objects, mesh_descriptor_table(_labels.data, spacing=image.spacing, compartment=compartment)
        )
    t_meshes = time.perf_counter()
    if model_paths:
        from dls_microscopy.features.embeddings import apply_embeddings

        emb_data, emb_names = embedding_input(image, data, names, records)
        emb = apply_embeddings(
            emb_data,
            _labels.data,
            model_paths,
            spacing=image.spacing,
            channel_names=emb_names,
            device=device,
            records=models,
            progress=progress,
        )
        objects = join_object_columns(objects, emb)
    t_embed = time.perf_counter()
    where = {
        "Metadata_Plate": plate,
        "Metadata_Well": well,
        "Metadata_Site": np.int32(site),
        "Metadata_ImageID": image_id,
    }
    timed = time_point is not None
    if timed:
        where[TIME_KEY] = np.int32(time_point)
    tables = {
        "objects": objects,
        "images": aggregate_table(
            objects, group_keys("image", timed=timed), compartment=compartment, empty_group=where
        ),
    }
    if well:
        keys = group_keys("well", timed=timed)
        wells = aggregate_table(objects, keys, compartment=compartment, empty_group=where)
        images = tables["images"]  # one row per image: the well's images
        counts = collections.Counter(zip(*(images.column(k).to_pylist() for k in keys), strict=True))
        tables["wells"] = with_site_count(wells, keys, counts)
    arguments = {
        "image_path": str(Path(os.fspath(image_path)).absolute()),
        "labels_path_or_name": _labels_argument(labels_path_or_name, image),
        "channels": list(channels) if channels is not None else None,
        "compartment": compartment,
        "plate": plate,
        "well": well,
        "site": site,
        "image_id": image_id,
        "series": series,
        "time_point": time_point,
        "spacing": [float(v) for v in spacing] if spacing is not None else None,
        "level": int(level),
        "percentiles": [float(q) for q in percentiles],
        "radial_shells": int(radial_shells),
        "csv": bool(csv),
        "memory_budget": int(memory_budget),
        "workers": workers,
        "meshes": bool(meshes),
        "embeddings": [str(Path(p).absolute()) for p in model_paths],
        "device": device,
    }
    files = []
    with atomic_directory(Path(outdir), overwrite=overwrite) as tmp:
        for name, table in tables.items():
            write_parquet(table, tmp / f"{name}.parquet")
            files.append(f"{name}.parquet")
            if csv:
                write_csv(table, tmp / f"{name}.csv")
                files.append(f"{name}.csv")
        t_write = time.perf_counter()
        from dls_microscopy.device import resolve_device
        from dls_microscopy.io import split_dataset_path
        from dls_microscopy.pipeline._environment import execution_record
        from dls_microscopy.pipeline.provenance import write_manifest

        inputs = {"image": image_path}
        if (
            not names_label_image(labels_path_or_name, image)
            and split_dataset_path(labels_path_or_name)[0].exists()
        ):
            # a file: as given (an HDF5 dataset kept)
            inputs["labels"] = labels_path_or_name
        elif _labels.source is not None and Path(_labels.source) != Path(os.fspath(image_path)):
            inputs["labels"] = _labels.source
        for i, path in enumerate(model_paths):  # verify then detects a replaced model
            inputs[f"embedding_model_{i}"] = path
        timings = {
            "open": t_open - t0,
            "measure": t_measure - t_open,
            "meshes": t_meshes - t_measure,
            "embeddings": t_embed - t_meshes,
            "write": t_write - t_embed,
        }
        write_manifest(
            tmp,
            command="features",
            inputs=inputs,
            parameters=arguments,
            entry_point=ENTRY_POINT,
            arguments=arguments,
            timings=timings,
            models=models,
            seeds={m["name"]: int(m["seed"]) for m in models},
            execution=execution_record(
                {"embeddings": str(resolve_device(device))} if model_paths else {},
                threads=workers,
                memory_budget=memory_budget,
            ),
        )
        files.append("manifest.json")
    log.info("features: %d objects → %s", m.n_objects, outdir)
    return {
        "outdir": str(Path(outdir).absolute()),
        "n_objects": m.n_objects,
        "channels": list(names),
        "files": files,
        "timings_s": {k: round(v, 3) for k, v in {**timings, "total": time.perf_counter() - t0}.items()},
    }


def _model_paths(embeddings: Any) -> list[str]:
    if embeddings is None:
        return []
    if isinstance(embeddings, (str, os.PathLike)):
        return [os.fspath(embeddings)]
    return [os.fspath(p) for p in embeddings]


def _labels_argument(labels: str | os.PathLike[str], image: Volume) -> str:
    from dls_microscopy.io import split_dataset_path

    file_path, internal = split_dataset_path(labels)
    if names_label_image(labels, image) or not file_path.exists():
        return os.fspath(labels)  # a label name inside the image
    return str(file_path.absolute()) + (f":{internal}" if internal else "")
