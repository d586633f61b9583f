"""Embeddings of every object of an image, streamed in batches (memory bounded)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from dls_microscopy.channels import channel_by_name, select_channels
from dls_microscopy.errors import InputError
from dls_microscopy.features.embeddings.object_crops import CropSpec, iter_object_crops
from dls_microscopy.features.embeddings.point_clouds import iter_object_points
from dls_microscopy.features.embeddings.store import ModelRecord, load_model
from dls_microscopy.features.embeddings.training import deterministic

__all__ = ["apply_embeddings", "embed_batches"]

log = logging.getLogger(__name__)


def _flips(kind: str, x: Any) -> list[Any]:
    """The 8 reflections of a batch: axis flips of crops, coordinate sign flips of point clouds."""
    import itertools

    out = []
    for signs in itertools.product((False, True), repeat=3):
        if kind == "image":
            dims = [2 + i for i in range(3) if signs[i]]
            out.append(x.flip(dims) if dims else x)
        else:
            out.append(x * x.new_tensor([-1.0 if f else 1.0 for f in signs]))
    return out


def _cube48(x: Any) -> list[Any]:
    """The 48 symmetries of the cube (6 axis orders × 8 reflections) of a batch of crops."""
    import itertools

    return [
        v for order in itertools.permutations((2, 3, 4)) for v in _flips("image", x.permute(0, 1, *order))
    ]


def _views(kind: str, tta: str, x: Any) -> list[Any]:
    """The inputs whose embeddings are averaged for ``tta``."""
    if tta == "flips8":
        return _flips(kind, x)
    if tta == "cube48" and kind == "image":
        return _cube48(x)
    if tta == "none":
        return [x]
    raise InputError(f"unknown test-time augmentation {tta!r} for a {kind} model")


def embed_batches(
    net: Any, batches: Any, device: Any, *, kind: str = "image", tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net``'s encoder over ``(ids, inputs)`` batches; ``(ids, (N, dim) float32)`` sorted by id.

    With ``tta="flips8"`` an object's embedding is the mean over its 8 reflections,
    with ``tta="cube48"`` (image models) over the 48 rotations and reflections of the
    cube (6 axis orders × 8 reflections).  The training augmentations include them,
    so the embedding is exactly invariant to them, and orientation noise averages out.
    """
    import torch

    ids, out = [], []
    with torch.inference_mode():
        for batch_ids, x in batches:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            views = _views(kind, tta, t)
            # the mean over the views, with what they share computed once
            e = net.encoder(t) if len(views) == 1 else net.encoder.forward_views(views)
            ids.append(batch_ids)
            out.append(e.float().cpu().numpy())
    if not ids:
        return np.zeros(0, np.uint64), np.zeros((0, net.head[0].in_features), np.float32)
    all_ids = np.concatenate(ids)
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], np.concatenate(out)[order].astype(np.float32)


def apply_embeddings(
    image: Any,
    labels: Any,
    model_paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    spacing: Sequence[float],
    channel_names: Sequence[str] | None = None,
    device: str | None = "auto",
    batch_size: int = 64,
    threads: int | None = None,
    index: Any = None,
    records: list[dict[str, Any]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> pa.Table:
    """Embed every object of a labelled image with one or more trained models.

    Parameters
    ----------
    image : (C, Z, Y, X) ndarray or dask array, or None
        The image (needed by image models; its channels must be those the model
        was trained on).  Read lazily, one batch of crops at a time.
    labels : (Z, Y, X) integer ndarray or dask array
        Objects (0 is background); read block by block.
    model_paths : path or sequence of paths
        Weights files (``.pt``) with their ``.json`` records beside them, from
        :func:`train_embedding_model` / ``dls-microscopy embed train``.
    spacing : tuple of 3 float
        µm per voxel ``(dz, dy, dx)``.
    channel_names : sequence of str, optional
        Names of ``image``'s channels.  An image model takes its own channels by
        name, in the order it was trained on (:func:`~dls_microscopy.channels.channel_by_name`),
        so an image with more channels, or in another order, needs no selection
        first.  Where a name is missing, the image's channels are used in order if
        their number matches (with a warning).
    device : str
        ``"auto"`` (cuda > mps > cpu) or a torch device string.
    batch_size : int
        Objects per forward pass (memory: one batch of crops or clouds).
    threads : int, optional
        CPU threads (fixed, for reproducible results).
    index : ObjectIndex, optional
        Object bounding boxes, if already known.
    records : list, optional
        Receives one provenance dict per model (name, path, kind, sha256...),
        for a manifest's ``models``.
    progress : callable, optional
        ``progress("embeddings", models_done, n_models)``.

    Returns
    -------
    pyarrow.Table
        ``Metadata_ObjectID`` (uint64, ascending: every object of ``labels``),
        then ``Embedding_Image_000``… and/or ``Embedding_Shape_000``… (float32,
        unit ``"1"``) per model, in the order given; the schema metadata
        ``dls_microscopy`` lists the models.  Join it to an object table with
        :func:`~dls_microscopy.features.join_object_columns`.

    Raises
    ------
    ModelNotFoundError
        A model file is missing (the message says how to train one).
    InputError
        Image channels do not match an image model (neither by name nor by number),
        two models of one kind.

    Examples
    --------
    >>> table = apply_embeddings(img, lab, ["image.pt", "shape.pt"], spacing=(1, .3, .3))  # doctest: +SKIP
    >>> table.column_names[:2]  # doctest: +SKIP
    ['Metadata_ObjectID', 'Embedding_Image_000']
    """
    from dls_microscopy.device import resolve_device
    from dls_microscopy.geometry.index import build_object_index

    paths = [model_paths] if isinstance(model_paths, (str, os.PathLike)) else list(model_paths)
    if not paths:
        raise InputError("no embedding model given")
    dev = resolve_device(device)
    sp = tuple(float(s) for s in spacing)
    if index is None:
        index = build_object_index(labels, spacing=sp)
    ids = index.ids.astype(np.uint64)
    fields = [pa.field("Metadata_ObjectID", pa.uint64())]
    arrays: list[pa.Array] = [pa.array(ids)]
    provenance = []
    kinds = set()
    with deterministic(threads if dev.type == "cpu" else None):
        for done, path in enumerate(paths):
            net, record = load_model(path, device=dev)
            if record.kind in kinds:
                raise InputError(f"two {record.kind} models given; use one per kind", path=path)
            kinds.add(record.kind)
            got_ids, emb = embed_batches(
                net,
                _batches(record, image, labels, sp, index, batch_size, channel_names, path),
                dev,
                kind=record.kind,
                tta=str(record.preprocessing.get("tta", "none")),
            )
            if not np.array_equal(got_ids, ids):
                raise InputError("objects seen by the model differ from the object index", path=path)
            for j in range(emb.shape[1]):
                fields.append(pa.field(f"{record.prefix}{j:03d}", pa.float32(), metadata={b"unit": b"1"}))
                arrays.append(pa.array(emb[:, j]))
            provenance.append(record.provenance(path))
            log.info("%s embeddings of %d objects with %s", record.kind, len(ids), path)
            if progress:
                progress("embeddings", done + 1, len(paths))
    if records is not None:
        records.extend(provenance)
    meta = {"models": provenance, "units": {f.name: "1" for f in fields[1:]}}
    schema = pa.schema(fields, metadata={b"dls_microscopy": json.dumps(meta, sort_keys=True).encode()})
    return pa.Table.from_arrays(arrays, schema=schema)


def _batches(
    record: ModelRecord,
    image: Any,
    labels: Any,
    spacing: tuple[float, ...],
    index: Any,
    batch_size: int,
    channel_names: Sequence[str] | None,
    path: Any,
) -> Any:
    pre = record.preprocessing
    if record.kind == "shape":
        return iter_object_points(
            labels,
            spacing=spacing,
            n_points=int(pre["n_points"]),
            seed=int(pre["sample_seed"]),
            scale_um=float(pre["scale_um"]),
            batch_size=batch_size,
            index=index,
        )
    if image is None:
        raise InputError("an image model needs the image", path=path)
    want = list(pre["channels"])
    if channel_names is not None:
        try:  # the model's channels by name (case-insensitively where unique), in its order
            image = select_channels(image, [channel_by_name(n, channel_names) for n in want])
        except InputError:
            if int(image.shape[0]) == len(want):
                warnings.warn(
                    f"channel names {list(channel_names)} differ from the model's {want}; using the "
                    "image's channels in their order",
                    UserWarning,
                    stacklevel=3,
                )
    if int(image.shape[0]) != len(want):
        raise InputError(
            f"the model was trained on {len(want)} channel(s) {want}; the image has {image.shape[0]}"
            + ("" if channel_names is None else f" {list(channel_names)}, not all of the model's"),
            path=path,
        )
    spec = CropSpec(
        size=int(pre["size"]),
        fov_um=float(pre["fov_um"]),
        mask=bool(pre["mask"]),
        mask_channel=bool(pre.get("mask_channel", False)),  # models saved before it existed have none
        frame=str(pre.get("frame", "axes")),  # likewise: axis-aligned crops
    )
    return iter_object_crops(image, labels, spacing=spacing, spec=spec, index=index, batch_size=batch_size)
