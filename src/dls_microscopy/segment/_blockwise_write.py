"""Pass 3 of :func:`~dls_microscopy.segment.blockwise.segment_blockwise`: relabel and write.

Where the labels go (inside the input OME-Zarr's ``labels/`` group or a standalone
store, and the scratch directory beside it), the relabelled labels as a lazy dask
array chunked like the output shards (a uint32 lookup per block, no int64 copy),
writing them as an NGFF label image with its pyramid, and opening the result.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import zarr

from dls_microscopy.blocks import BlockPlan, ProgressCallback
from dls_microscopy.errors import InputError, OutputError
from dls_microscopy.volume import Volume

if TYPE_CHECKING:
    from dls_microscopy.segment.base import BaseSegmenter


def _label_shards(budget: int) -> int | None:
    """Shard edge of the written labels: the writer's default (128³ voxels, 8 MiB of
    uint32).  Unsharded 64³ chunks were tried for budgets under 256 MiB and did not
    lower the peak of a 24 MiB run measurably, so the layout does not depend on it."""
    return None


def _write_grid(shape: Sequence[int], budget: int) -> tuple[int, ...]:
    """The output shard (or chunk) shape of the labels: the unit of one write."""
    from dls_microscopy.io.zarr_write import WriteOptions

    chunks, shards = WriteOptions(shards=_label_shards(budget)).array_layout("zyx", shape)
    return tuple(shards or chunks)


def _relabelled(
    local: zarr.Array, plan: BlockPlan, offsets: np.ndarray, table: np.ndarray, budget: int
) -> da.Array:
    """The final labels, lazily, chunked like the output shards (uint32 or uint64).

    Each chunk reads the local ids of the blocks it overlaps and maps them through
    that block's slice of ``table`` (a lookup on the uint32 ids: no int64 copy).
    """
    chunks = _write_grid(plan.shape, budget)
    dtype = table.dtype

    def lut(flat: int) -> np.ndarray:
        out = table[offsets[flat] : offsets[flat + 1] + 1].copy()
        out[0] = 0
        return out

    def relabel(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        region = block_info[None]["array-location"]  # type: ignore[index]
        out = np.empty(block.shape, dtype=dtype)
        ranges = [range(lo // b, -(-hi // b)) for (lo, hi), b in zip(region, plan.block_shape, strict=True)]
        for index in itertools.product(*ranges):
            sub = tuple(
                slice(max(lo, i * b), min(hi, (i + 1) * b))
                for (lo, hi), i, b in zip(region, index, plan.block_shape, strict=True)
            )
            dst = tuple(slice(s.start - lo, s.stop - lo) for s, (lo, _) in zip(sub, region, strict=True))
            ids = local[sub]
            out[dst] = lut(int(np.ravel_multi_index(index, plan.grid)))[ids]
        return out

    template = da.empty(plan.shape, dtype=np.uint8, chunks=chunks)
    return template.map_blocks(relabel, dtype=dtype, meta=np.empty((0, 0, 0), dtype))


def _destination(volume: Volume, output: Any, label_name: str, overwrite: bool) -> tuple[Path, bool]:
    """Where the labels go: ``(path, standalone)``, checked for overwriting and writability.

    ``output`` None (or the input store itself) means the input OME-Zarr's ``labels/``
    group (``standalone`` False); otherwise a new standalone label image at ``output``.
    """
    if output is not None:
        out = Path(output)
        if volume.source is not None and out.resolve() == Path(volume.source).resolve():
            output = None
        else:
            from dls_microscopy.io.atomic import check_output_dir

            return check_output_dir(out, overwrite=overwrite), True
    if volume.format != "ome-zarr" or volume.source is None or volume.metadata.get("label"):
        raise InputError(
            "labels can only be written inside an OME-Zarr image; give an output path",
            path=volume.source,
        )
    if volume.level:  # a store's label images are on its full-resolution grid
        raise level_into_store_error(volume.level, volume.source)
    from dls_microscopy.io.atomic import check_store_writable

    store = check_store_writable(volume.source)  # before segmenting; write_labels checks again
    if label_name in volume.labels:
        if not overwrite:
            raise OutputError(
                f"label image {label_name!r} already exists (use overwrite / --overwrite)", path=store
            )
        from dls_microscopy.io.atomic import check_output_dir

        # before segmenting: another tool's label image is not replaced (write_labels checks again)
        check_output_dir(store / "labels" / label_name, overwrite=True)
    return store, False


def level_into_store_error(level: int, path: Any) -> InputError:
    """Labels of a coarser level cannot go into the image's store (its labels are full resolution)."""
    return InputError(
        f"labels of resolution level {level} go to a label image of their own, not into the "
        "store beside its full-resolution image: give an output path",
        path=path,
    )


def _scratch(dest: Path, standalone: bool, label_name: str) -> Path:
    """The run's scratch folder (made), beside the labels it writes: one of their partials.

    Named as the label image's partials (``.NAME.partial-PID-scratch-TOKEN@HOST``), so one
    left by a killed run is removed by the next write of these labels, as its partial label
    image is: only once its process is gone, never a live concurrent run's.  The caller
    removes it with :func:`~dls_microscopy.io.atomic.release_partial`.
    """
    from dls_microscopy.io.atomic import partial_file, release_partial

    final = dest if standalone else dest / "labels" / label_name
    scratch = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = partial_file(final, kind="scratch-")  # stale ones of that name go first
        scratch.mkdir()
    except OSError as exc:
        if scratch is not None:
            release_partial(scratch)
        raise OutputError(
            f"cannot create a scratch folder: {exc.strerror or exc}", path=final.parent
        ) from exc
    return scratch


def _write(
    final: da.Array,
    image: Volume,
    volume: Volume,
    dest: Path,
    standalone: bool,
    name: str,
    overwrite: bool,
    memory_budget: int,
    progress: ProgressCallback | None,
    workers: int,
    attributes: dict[str, Any] | None = None,
) -> Path:
    """Write ``final`` (z, y, x) labels as an NGFF label image with its pyramid; its path.

    ``attributes`` go beside the NGFF metadata (:func:`label_record`).
    """
    from dls_microscopy.io.zarr_write import write_label_image, write_labels

    if standalone:
        source = str(volume.source) if volume.source is not None else None
        return write_label_image(
            final,
            dest,
            spacing=image.spacing,
            source_image=source,
            overwrite=overwrite,
            memory_budget=memory_budget,
            progress=progress,
            workers=workers,
            shards=_label_shards(memory_budget),
            attributes=attributes,
        )
    if "t" in volume.axes:
        # NGFF labels carry the image's non-channel axes
        if volume.axis_size("t") > 1:
            raise InputError(
                "labels of one time point cannot go into a time series store; give an output path",
                path=dest,
            )
        final = final[None]
    return write_labels(
        dest,
        name,
        final,
        overwrite=overwrite,
        shards=_label_shards(memory_budget),
        memory_budget=memory_budget,
        progress=progress,
        workers=workers,
        attributes=attributes,
    )


def segmentation_record(
    segmenter: BaseSegmenter,
    image: Volume,
    volume: Volume,
    time_point: int | None,
    budget: int,
    plan: BlockPlan,
    concurrent: int,
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What the labels' attributes say of how they were made, before the object count is known.

    ``segmentation`` holds what determines the labels (the same in a recompute); with
    ``provenance`` (a command's own record) also ``execution``: the device, memory and
    blocks, which the resources chose, and which a pipeline field's manifest records.
    """
    params = segmenter.params.model_dump(mode="json") if hasattr(segmenter.params, "model_dump") else {}
    seg = {
        "method": segmenter.name,
        "params": params,
        "source": str(volume.source) if volume.source is not None else None,
        "channel": image.channel_names[0] if image.channel_names else None,
        "time_point": time_point,
        # absent at 0: a pipeline field's labels made before levels recompute byte for byte
        **({"level": int(image.level)} if image.level else {}),
        "spacing_um": list(image.spacing),
    }
    if "spacing_from_file_um" in volume.metadata:  # given in place of the file's (full resolution)
        from_file = volume.metadata["spacing_from_file_um"]  # level 0: as it is, never rounded
        if image.level:  # at the level segmented, like spacing_um: each level keeps its factor to level 0
            full = image.level_spacings[0]
            from_file = [
                float(f"{f * s / b:.12g}")  # 0.3 * 0.2 / 0.1 is 0.6, not 0.6000000000000001
                for f, s, b in zip(from_file, image.spacing, full, strict=True)
            ]
        seg["spacing_from_file_um"] = from_file
    if provenance is None:
        return {"segmentation": seg}
    execution = {
        "device": segmenter.device,
        "memory_budget_bytes": int(budget),
        "blocks": plan.n_blocks,
        "block_shape": list(plan.block_shape),
        "halo": list(plan.halo),
        "blocks_at_once": concurrent,
    }
    return {**dict(provenance), "segmentation": seg, "execution": execution}


def label_record(record: dict[str, Any], n_objects: int, qc: dict[str, Any]) -> dict[str, Any]:
    """The attributes that say how a label image was made: ``{"dls_microscopy": ...}``.

    ``record`` holds what was known before segmenting (``segmentation``: method,
    parameters, channel, spacing; ``execution``, where recorded: device, blocks...; and
    what the caller adds, such as software versions).  The object count is added to
    ``segmentation``, and the seam summary, which depends on the blocks, to ``execution``.
    """
    out = {**record, "segmentation": {**record["segmentation"], "n_objects": int(n_objects)}}
    if "execution" in record:
        out["execution"] = {**record["execution"], "seams": qc}
    return {"dls_microscopy": out}


def _open_result(path: Path, dest_store: Path, standalone: bool, label_name: str) -> Volume:
    """The written labels, opened lazily."""
    from dls_microscopy.io.zarr_read import open_labels, open_zarr

    return open_zarr(path) if standalone else open_labels(dest_store, label_name)
