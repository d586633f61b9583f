"""The Segment widget's logic: a segmenter's parameters, and blockwise segmentation."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import InputError
from dls_microscopy.volume import Volume

__all__ = ["memory_budget_bytes", "segment_volume", "segmenter_parameters"]


def segmenter_parameters(method: str) -> dict[str, dict[str, Any]]:
    """Parameters of a registered segmenter: name → ``{"default", "annotation", "description", ...}``.

    Taken from the segmenter's pydantic ``Params`` model, so a GUI can build
    one input per parameter: ``description`` is the field's docstring, ``unset``
    what ``None`` means ("automatic" unless the field's ``json_schema_extra`` says).
    """
    from dls_microscopy.segment.base import segmenters

    params_model = segmenters().get(method).Params
    out: dict[str, dict[str, Any]] = {}
    for name, field in params_model.model_fields.items():
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        out[name] = {
            "default": default,
            "annotation": field.annotation,
            "description": field.description or "",
            "required": field.is_required(),
            "unset": str(extra.get("unset", "automatic")),
        }
    return out


def memory_budget_bytes(text: int | str) -> int:
    """The bytes of a memory budget (``"2GB"``, ``"512MiB"``), refused as the CLI refuses it.

    Raises
    ------
    InputError
        Not a memory size, or not positive (``"0"``: the saved pipeline's
        ``compute.memory_budget`` would then be invalid).
    """
    from dls_microscopy.pipeline.config import parse_size

    try:
        size = parse_size(text)
    except ValueError as exc:
        raise InputError(f"memory budget: {exc}") from None
    if size <= 0:  # the rule of positive_size, worded for the app's field
        raise InputError(f"memory budget {text!r}: a memory size must be positive (e.g. 2GB, 512MB)")
    return size


def segment_volume(
    image: Volume,
    *,
    method: str,
    params: Mapping[str, Any] | None = None,
    device: str = "auto",
    memory_budget: int | str = "2GB",
    output: str | os.PathLike[str],
    label_name: str = "nuclei",
    channel: int | str | None = None,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    source_time_point: int | None = None,
    spacing_from_file: Sequence[float] | None = None,
) -> Any:
    """Segment ``image`` blockwise and write the labels as a standalone NGFF label image.

    The labels record how they were made (``dls_microscopy.segmentation`` in their
    attributes, as the ``segment`` command's do); ``source_time_point`` and
    ``spacing_from_file`` complete that record for a volume cut out of a layer,
    which no longer knows its time point or its file's voxel size.

    Parameters
    ----------
    image : Volume
        ``(Z, Y, X)`` or multi-channel (then ``channel`` picks one).
    method, params, device
        Segmenter name in the registry, its parameters, torch device.
    memory_budget : int or str
        Bytes (or ``"2GB"``) for all workers; sets the block size.
    output : path-like
        The ``.ome.zarr`` label image to (over)write.
    progress : callable, optional
        ``progress(description, done, total)``.
    source_time_point : int, optional
        The time point of the time series that ``image`` is (the one shown); recorded.
    spacing_from_file : sequence of float, optional
        The file's voxel size ``(dz, dy, dx)`` in µm at full resolution, where the
        app's (``image.spacing``) is another; recorded as ``spacing_from_file_um``,
        as with ``--spacing``.

    Returns
    -------
    BlockwiseResult
        ``.labels`` is the lazy label :class:`Volume` with all pyramid levels.
    """
    from dls_microscopy.pipeline._environment import label_provenance
    from dls_microscopy.segment import get_segmenter, segment_blockwise

    seg = get_segmenter(method, dict(params or {}), device=device)
    if spacing_from_file is not None:  # as Volume.with_spacing notes it; the record takes it from there
        from_file = [float(s) for s in spacing_from_file]
        image = dataclasses.replace(image, metadata={**image.metadata, "spacing_from_file_um": from_file})
    return segment_blockwise(
        image,
        seg,
        channel=channel,
        memory_budget=memory_budget_bytes(memory_budget),
        output=output,
        label_name=label_name,
        overwrite=True,
        workers=workers,
        progress=progress,
        source_time_point=source_time_point,
        provenance=label_provenance("dls-microscopy app: Segment", dict(params or {}).get("model_path")),
    )
