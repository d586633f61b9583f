"""One field through the configured steps, committed atomically with its manifest.

:func:`run_field` builds ``fields/KEY`` under a temporary name
(:func:`~dls_microscopy.io.atomic.atomic_directory`) and renames it only when
every step and the ``manifest.json`` are written, so a field folder that
exists is complete.  :func:`~dls_microscopy.pipeline.field_resume.committed_field` says whether a
field of an earlier run can be kept.

Layout of a field folder::

    labels.ome.zarr     segment step: NGFF label image "nuclei" (with pyramid)
    meshes/             mesh step: meshes.glb (or a file per object) + manifest
    objects.parquet     one row per object: Metadata_*, features, Mesh_* descriptors
    images.parquet      the field's aggregate (count, means, medians)
    field.json          what ran and what came out (objects, seconds)
    manifest.json       provenance: input digests, parameters, versions, output digests
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dls_microscopy.channels import channel_data
from dls_microscopy.errors import InputError
from dls_microscopy.pipeline.config import PipelineConfig
from dls_microscopy.pipeline.field_resume import (
    FIELD_FILE,
    _input_stat,
    _segment_model,
    config_digest,
)
from dls_microscopy.pipeline.field_tables import object_tables
from dls_microscopy.pipeline.fields import FieldSpec

__all__ = ["FIELD_FILE", "recompute_field", "run_field"]

log = logging.getLogger(__name__)

#: What ``verify --recompute`` calls to run a field again (:func:`recompute_field`).
ENTRY_POINT = "dls_microscopy.pipeline.field:recompute_field"

LABELS_NAME = "labels.ome.zarr"
LABEL_IMAGE = "nuclei"

StepCallback = Callable[[str, str], None]


def run_field(
    spec: FieldSpec,
    cfg: PipelineConfig,
    fields_dir: str | Path,
    *,
    threads: int | None = None,
    memory_budget: int | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Run the configured steps on one field and commit ``fields_dir/KEY``.

    Parameters
    ----------
    spec : FieldSpec
        The field.
    cfg : PipelineConfig
        The run's configuration (paths absolute).
    fields_dir : path
        Folder of the field folders.
    threads : int, optional
        Threads for the blockwise steps of this field (default: the steps' own).
    memory_budget : int, optional
        Bytes this field may use (default ``compute.memory_budget``; a run
        with parallel fields gives each its share).
    on_step : callable, optional
        ``on_step(field_key, step_name)`` when a step starts.

    Returns
    -------
    dict
        ``key``, ``n_objects``, ``timings_s`` (per step).

    Raises
    ------
    DlsError
        Unreadable or corrupt input, failed step, unwritable output.
    """
    from dls_microscopy._allocator import bound_allocator, release_memory
    from dls_microscopy.device import resolve_device
    from dls_microscopy.io import open_volume
    from dls_microscopy.io.atomic import atomic_directory
    from dls_microscopy.pipeline._environment import execution_record
    from dls_microscopy.pipeline.provenance import image_excludes, write_manifest

    steps = cfg.steps
    budget = memory_budget or cfg.compute.memory_budget_bytes
    timings: dict[str, float] = {}
    final = Path(fields_dir) / spec.key

    bound_allocator(budget)  # blockwise temporaries are returned to the system, not kept per thread
    # before reading: an edit during the run shows on resume; label images are inputs of their own
    stamp = _input_stat(Path(spec.source), image_excludes(spec.source))
    label_dir = Path(spec.source) / "labels" / str(cfg.input.labels)
    read_labels = steps.segment is None and label_dir.is_dir()
    label_stamp = _input_stat(label_dir) if read_labels else None

    def step(name: str) -> float:
        release_memory()  # what the previous step freed, before the next one allocates
        if on_step is not None:
            on_step(spec.key, name)
        log.info("%s: %s", spec.key, name)
        return time.perf_counter()

    t0 = step("open")
    image = open_volume(spec.source, series=spec.series, level=cfg.input.level, spacing=cfg.input.spacing)
    image = image.at_time_point(spec.time_point)  # discover_fields gives a time series one field per point
    image.require_spatial_ndim(3)
    timings["open"] = time.perf_counter() - t0
    n_objects: int | None = None
    compartment = steps.features.compartment if steps.features is not None else "Nuclei"
    models: list[dict[str, Any]] = []
    devices: dict[str, str] = {}  # the steps that chose a device: the one they used
    with atomic_directory(final, overwrite=True) as tmp:
        if steps.segment is not None:
            t = step("segment")
            seg_model = _segment_model(cfg)
            if seg_model is not None:
                models.append(seg_model)
            labels, n_objects, devices["segment"] = _segment(
                image, cfg, tmp / LABELS_NAME, threads, budget, spec.time_point
            )
            labels_path, label_name = tmp / LABELS_NAME, None
            timings["segment"] = time.perf_counter() - t
        else:
            from dls_microscopy.io import open_labels

            labels = open_labels(
                spec.source, cfg.input.labels, level=cfg.input.level, spacing=cfg.input.spacing
            )
            labels_path, label_name = Path(spec.source), cfg.input.labels
            if "t" in labels.axes:  # the label image of a time series: the field's time point
                timed = labels.axis_size("t") > 1
                if spec.time_point is not None and not timed and spec.time_point > 0:
                    raise InputError(
                        f"the label image {cfg.input.labels!r} has one time point and the image "
                        "several: give labels for every time point, or add a segment step",
                        path=spec.source,
                    )
                labels = labels.select(t=spec.time_point or 0)
                if timed and steps.mesh is not None:
                    raise InputError(
                        "the mesh step reads its labels from the file and takes no time point: "
                        "add a segment step, or drop the mesh step, for a time series",
                        path=spec.source,
                    )
        extra: list[pa.Table] = []  # mesh descriptors, embeddings: joined to the objects
        if steps.mesh is not None:
            from dls_microscopy.features.mesh_columns import descriptor_columns
            from dls_microscopy.geometry.command import export_meshes_command

            t = step("mesh")
            m = steps.mesh
            desc = tmp / ".shape.parquet" if m.descriptors else None
            own_labels = labels_path == tmp / LABELS_NAME
            res = export_meshes_command(
                labels_path,
                tmp / "meshes",
                fmt=m.format,
                smooth=m.smooth,
                decimate=m.decimate,
                descriptors_path=desc,
                label_name=label_name,
                memory_budget=budget,
                # the field's own labels, relative to the meshes folder: the field folder is
                # built under another name and renamed (verify --recompute builds it elsewhere)
                source=f"../{LABELS_NAME}" if own_labels else None,
                # the field's own labels were written with the given spacing, at input.level (their
                # level 0); labels from the input are meshed at input.level, as the features measure them
                spacing=None if own_labels else cfg.input.spacing,
                level=0 if own_labels else cfg.input.level,
            )
            n_objects = int(res["n_objects"])
            if desc is not None:
                extra.append(descriptor_columns(pq.read_table(desc), compartment=compartment))
                desc.unlink()
            timings["mesh"] = time.perf_counter() - t
        objects = None
        if steps.features is not None:
            t = step("features")
            objects = _measure(spec, image, labels, cfg, budget, threads)
            n_objects = objects.num_rows
            timings["features"] = time.perf_counter() - t
        if steps.embeddings is not None:
            t = step("embeddings")
            extra.append(_embed(image, labels, cfg, threads, models))
            devices["embeddings"] = str(resolve_device(cfg.compute.device))
            timings["embeddings"] = time.perf_counter() - t
        t = step("write")
        tables = object_tables(objects, extra, metadata=spec.metadata(), compartment=compartment)
        for name, table in tables.items():
            from dls_microscopy.features.tables import write_parquet

            write_parquet(table, tmp / f"{name}.parquet")
        if n_objects is None:
            n_objects = int(tables["objects"].num_rows) if "objects" in tables else 0
        timings["write"] = time.perf_counter() - t
        info = {
            "key": spec.key,
            "source": spec.source,
            "metadata": spec.metadata(),
            "time_point": spec.time_point,
            "steps": steps.names(),
            "n_objects": n_objects,
            "config_sha256": config_digest(cfg),
        }
        # field.json is an output (verify --recompute compares its bytes): the inputs' change time,
        # which a copy, a restore or a chmod changes, goes to the manifest's parameters instead
        (tmp / FIELD_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        inputs = {"image": spec.source}
        resume: dict[str, Any] = {"input_changed_ns": stamp[2] if stamp else None}  # as the field began
        if read_labels:
            inputs["labels"] = str(label_dir)
            # a label image edited in place keeps its size: its change time tells (committed_field)
            resume["inputs_changed_ns"] = {"labels": label_stamp[2] if label_stamp else None}
        parameters = {
            "field": info,
            "config": cfg.model_dump(mode="json", exclude={"compute"}),
            "resume": resume,
        }
        write_manifest(
            tmp,
            command="run",
            inputs=inputs,
            parameters=parameters,
            timings=timings,
            models=models,
            seeds={"seed": cfg.seed},
            entry_point=ENTRY_POINT,
            # the compute settings too (block sizes, device), which the parameters leave out
            arguments={"field": dataclasses.asdict(spec), "config": cfg.model_dump(mode="json")},
            execution=execution_record(devices, threads=threads, memory_budget=budget),
        )
    log.info("%s: committed (%d objects)", spec.key, n_objects)
    return {"key": spec.key, "n_objects": n_objects, "timings_s": timings}


def recompute_field(
    field: dict[str, Any], config: dict[str, Any], outdir: str | os.PathLike[str], overwrite: bool = False
) -> dict[str, Any]:
    """Run one field again into ``outdir``, from its manifest's ``arguments``.

    The entry point of a field's ``manifest.json`` (``verify --recompute``): ``field`` is the
    :class:`~dls_microscopy.pipeline.fields.FieldSpec` and ``config`` the run's whole
    configuration, as recorded.  The field is committed under its own key in a scratch
    folder beside ``outdir`` and then renamed, so ``field.json`` is what the run wrote.
    """
    import shutil

    from dls_microscopy.io.atomic import check_output_dir, partial_file, release_partial

    out = check_output_dir(outdir, overwrite=overwrite)  # replaced only if one of our outputs
    spec = FieldSpec(**field)
    cfg = PipelineConfig.model_validate(config)
    scratch = partial_file(out)  # this recompute's own folder beside ``out``
    try:
        result = run_field(spec, cfg, scratch)
        if out.exists():
            shutil.rmtree(out)
        os.replace(scratch / spec.key, out)
    finally:
        release_partial(scratch)
    return result


def _segment(
    image: Any, cfg: PipelineConfig, output: Path, threads: int | None, budget: int, time_point: int | None
) -> tuple[Any, int, str]:
    """The field's labels, their number and the device the segmenter ran on."""
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    s = cfg.steps.segment
    assert s is not None
    params = dict(s.params)
    if s.model is not None:
        params["model_path"] = s.model
    seg = get_segmenter(s.method, params, device=cfg.compute.device)
    channel = s.channel
    if channel is None and "c" in image.axes and image.axis_size("c") > 1:
        channel = 0
    res = segment_blockwise(
        image,
        seg,
        channel=channel,
        memory_budget=budget,
        output=output,
        label_name=LABEL_IMAGE,
        workers=threads,
        source_time_point=time_point,
    )
    return res.labels, int(res.n_objects), seg.device


def _embed(image: Any, labels: Any, cfg: PipelineConfig, threads: int | None, models: list) -> pa.Table:
    from dls_microscopy.features.embeddings import apply_embeddings

    e = cfg.steps.embeddings
    assert e is not None
    if "c" in labels.axes:
        labels = labels.select(c=0)
    data, names = channel_data(image, cfg.input.channels)
    return apply_embeddings(
        data,
        labels.data,
        e.model,
        spacing=image.spacing,
        channel_names=names,
        device=cfg.compute.device,
        threads=threads,
        records=models,
    )


def _measure(
    spec: FieldSpec, image: Any, labels: Any, cfg: PipelineConfig, budget: int, threads: int | None
) -> pa.Table:
    from dls_microscopy.features.measure import measure_objects
    from dls_microscopy.features.tables import objects_table

    f = cfg.steps.features
    assert f is not None
    if "c" in labels.axes:
        labels = labels.select(c=0)
    if labels.spatial_shape != image.spatial_shape:
        raise InputError(
            f"labels {labels.spatial_shape} and image {image.spatial_shape} (zyx) differ in shape",
            path=spec.source,
        )
    data, names = channel_data(image, f.channels if f.channels is not None else cfg.input.channels)
    m = measure_objects(
        data, labels.data, spacing=image.spacing, channel_names=names, memory_budget=budget, workers=threads
    )
    return objects_table(
        m,
        compartment=f.compartment,
        plate=spec.plate,
        well=spec.well,
        site=spec.site,
        image_id=spec.image_id,
        time_point=spec.time_point,
        level=cfg.input.level,
    )
