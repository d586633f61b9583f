"""Streaming writer of OME-Zarr images and labels (NGFF 0.5 on zarr v3 by default, 0.4 on v2).

Data is written block by block: every block is a multiple of the output shard
(or chunk) shape, so parallel writers never share a shard file, and at most
``workers`` blocks are in memory at once.  Pyramid levels are computed from the
level just written, read back block by block.  Metadata is built with
ome-zarr-models, written last, and the finished store is validated before it
is moved to its final name.

The parts live in private modules: ``_zarr_layout`` (options, chunk/shard
layout, block grid), ``_zarr_pyramid`` (the multiscale writer),
``_zarr_contrast`` (display window) and ``_zarr_labels`` (label images in an
image store); the public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr
import zarr.errors

from dls_microscopy.blocks import ProgressCallback
from dls_microscopy.errors import DlsError, InputError, MetadataError
from dls_microscopy.io._validation_cache import validate_once
from dls_microscopy.io._zarr_contrast import _contrast_limits, _dtype_range
from dls_microscopy.io._zarr_labels import (
    _label_source,
    _write_label_images,
    labels_group_listing,
    write_label_pyramid,
)
from dls_microscopy.io._zarr_layout import Compression as Compression
from dls_microscopy.io._zarr_layout import WriteOptions as WriteOptions
from dls_microscopy.io._zarr_layout import block_shape_for as block_shape_for
from dls_microscopy.io._zarr_layout import iter_blocks as iter_blocks
from dls_microscopy.io._zarr_pyramid import _factors_from_levels, _level_scales
from dls_microscopy.io._zarr_pyramid import write_multiscale as write_multiscale
from dls_microscopy.io.atomic import atomic_directory, check_store_writable
from dls_microscopy.io.ngff_build import NgffVersion, image_attrs
from dls_microscopy.io.pyramid import plan_pyramid
from dls_microscopy.volume import Volume, volume_from_array, volume_where, warn_nonfinite

__all__ = ["ProgressCallback", "WriteOptions", "write_ome_zarr"]

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 1 << 30


def _as_volume(
    image: Volume | np.ndarray | da.Array,
    axes: str | None,
    spacing: Sequence[float] | None,
    channel_names: Sequence[str] | None,
) -> Volume:
    if isinstance(image, Volume):
        vol = image
        if axes is not None or spacing is not None or channel_names is not None:
            vol = volume_from_array(
                vol.data,
                axes=axes or vol.axes,
                spacing=spacing if spacing is not None else vol.spacing,
                channel_names=channel_names if channel_names is not None else vol.channel_names,
            )
        return vol
    return volume_from_array(image, axes=axes, spacing=spacing, channel_names=channel_names or ())


def write_ome_zarr(
    image: Volume | np.ndarray | da.Array,
    path: str | os.PathLike[str],
    *,
    axes: str | None = None,
    spacing: Sequence[float] | None = None,
    channel_names: Sequence[str] | None = None,
    labels: Mapping[str, Volume | np.ndarray | da.Array] | None = None,
    version: NgffVersion = "0.5",
    chunks: int | Sequence[int] | None = None,
    shards: int | Sequence[int] | None = None,
    compression: Compression = "zstd",
    clevel: int = 1,
    n_levels: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    overwrite: bool = False,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> Path:
    """Write an image (and optional label images) as an OME-Zarr store, atomically.

    Parameters
    ----------
    image : Volume or array
        A :class:`Volume` (any reader's output) or an array whose axes are
        given by ``axes`` (default: the last ``ndim`` of ``"tczyx"``).
    path : path-like
        Destination ``.ome.zarr`` directory.
    axes, spacing, channel_names : optional
        Override or supply the image's axes, spacing (µm per spatial axis) and
        channel names.
    labels : mapping of str to Volume or array, optional
        Label images, shape of the image without its ``c`` axis, written as
        NGFF labels with a pyramid matching the image (nearest sampling).
    version : {"0.5", "0.4"}
        NGFF version.
    chunks, shards, compression, clevel
        See :class:`WriteOptions`.
    n_levels : int, optional
        Number of resolution levels (default: until the largest spatial
        dimension is below 256).
    memory_budget : int
        Bytes of pixel data held at once (over all writer threads).
    overwrite : bool
        Replace an existing store (only once the new one is complete).
    progress : callable, optional
        ``progress(description, done, total)`` after each block.

    Returns
    -------
    Path
        The written store.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "x.ome.zarr"
    >>> write_ome_zarr(np.zeros((8, 32, 32), np.uint16), out, spacing=(2.0, 0.5, 0.5)).name
    'x.ome.zarr'
    """
    vol = _as_volume(image, axes, spacing, channel_names)
    options = WriteOptions(
        version=version, chunks=chunks, shards=shards, compression=compression, clevel=clevel
    )
    label_sources = {n: _label_source(lab, vol, n) for n, lab in (labels or {}).items()}
    factors = plan_pyramid(vol.spatial_shape, vol.spacing, n_levels=n_levels)
    final = Path(path)
    with atomic_directory(final, overwrite=overwrite) as tmp:
        root = zarr.open_group(store=str(tmp), mode="w", zarr_format=options.zarr_format)
        _, nonfinite = write_multiscale(
            root,
            vol.data,
            axes=vol.axes,
            factors=factors,
            options=options,
            method="mean",
            memory_budget=memory_budget,
            progress=progress,
            label="image",
            workers=workers,
        )
        scales = _level_scales(vol.axes, vol.spacing, factors)
        limits = _contrast_limits(root, len(factors) - 1, vol.axes)
        root.attrs.update(
            image_attrs(
                options.version,
                vol.axes,
                scales,
                channel_names=vol.channel_names,
                contrast=limits,
                dtype_range=_dtype_range(vol.dtype, limits),
                name=name,
                time_unit=vol.metadata.get("time_unit"),
            )
        )
        if label_sources:
            _write_label_images(root, vol, label_sources, factors, options, memory_budget, progress, workers)
        validate_written_store(tmp, options.version)
    if nonfinite:
        warn_nonfinite(
            nonfinite,
            path=vol.source or final,
            handling="they were written unchanged; analysis steps treat NaN as background "
            "(minimum finite value) and clip ±inf to the finite range",
        )
    log.info("wrote %s (%d levels)", final, len(factors))
    return final


def validate_written_store(path: Path, version: NgffVersion) -> None:
    """Validate a store we wrote with ome-zarr-models (image, labels and their arrays).

    Raises
    ------
    DlsError
        If validation fails: that is a bug in our writer, not a user error.
    """
    problem = _store_problem(path, version)
    if problem is not None:
        raise DlsError(f"internal error: the written OME-Zarr failed validation ({problem})", path=path)


def _store_problem(path: Path, version: NgffVersion) -> str | None:
    """Why the OME-Zarr image at ``path`` (with its labels) is not valid NGFF, or None."""
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
    try:
        validate_once(
            path, f"image {version}", lambda: Image.from_zarr(zarr.open_group(store=str(path), mode="r"))
        )
    except Exception as exc:  # pydantic's message: several lines, with a link per error
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return "; ".join(ln for ln in lines if not ln.startswith("For further information"))
    return None


def write_labels(
    image_path: str | os.PathLike[str],
    name: str,
    labels: Volume | np.ndarray | da.Array,
    *,
    overwrite: bool = False,
    chunks: int | Sequence[int] | None = None,
    shards: int | Sequence[int] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Add (or replace) the NGFF label image ``name`` in an existing OME-Zarr image.

    The label pyramid gets as many levels as the image's.  The label image is
    written under a temporary name inside ``labels/``, validated on its own, and
    renamed when complete; only then is it listed in the ``labels`` group
    metadata.  The whole store is validated after that, and the listing undone
    if it fails, unless the store was not valid NGFF before (real stores can
    carry, e.g., a label image with more levels than the image): then a warning
    says so, and the new label image's own validation stands.  ``attributes`` go
    into the label image's attributes beside NGFF's (how the labels were made).

    Returns
    -------
    Path
        ``image_path / "labels" / name``.
    """
    from dls_microscopy.io.zarr_read import open_zarr

    image_path = Path(image_path)
    image = open_zarr(image_path)
    check_store_writable(image_path)  # also one marked read-only (mode 444), which root could write
    version: NgffVersion = image.metadata.get("ngff_version", "0.5")
    if version not in ("0.4", "0.5"):
        raise InputError(f"cannot add labels to an NGFF {version} store", path=image_path)
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid label name {name!r}", path=image_path)
    source = _label_source(labels, image, name)
    spatial_idx = [i for i, a in enumerate(image.axes) if a in "zyx"]
    level_shapes = [[int(lv.shape[i]) for i in spatial_idx] for lv in image.levels]
    factors = _factors_from_levels(level_shapes)
    options = WriteOptions(version=version, chunks=chunks, shards=shards)
    label_axes = image.axes.replace("c", "")
    labels_dir = image_path / "labels"
    zarr_format = options.zarr_format
    before = _store_problem(image_path, version)
    if before is not None:
        log.warning(
            "%s is not valid NGFF %s as it is (%s); adding labels %r, validated on their own",
            image_path, version, before, name,
        )  # fmt: skip
    # The labels group is made (or listed in) only once the label image is committed: made first,
    # a write stopped midway (Ctrl-C) left a store whose empty labels group failed validation.
    had_group = labels_dir.is_dir() and any((labels_dir / f).is_file() for f in ("zarr.json", ".zgroup"))
    try:
        old_attrs = dict(zarr.open_group(store=str(labels_dir), mode="r").attrs) if had_group else {}
    except (ValueError, TypeError, UnicodeDecodeError, zarr.errors.BaseZarrError) as exc:
        # JSONDecodeError is a ValueError; the listing cannot be added to, nor replaced unasked
        raise MetadataError(
            f"cannot add labels {name!r}: the labels metadata is unreadable ({type(exc).__name__}: "
            f"{exc}); repair or remove {labels_dir.name}/{'zarr.json' if zarr_format == 3 else '.zattrs'}, "
            "or give an output path",
            path=image_path,
        ) from exc
    made_dir = not labels_dir.exists()
    labels_dir.mkdir(exist_ok=True)  # a plain folder for the partial label image: no zarr group yet
    final = labels_dir / name
    try:
        with atomic_directory(final, overwrite=overwrite) as tmp:
            write_label_pyramid(
                zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format), source,
                axes=label_axes, spacing=image.spacing, factors=factors, options=options, name=name,
                memory_budget=memory_budget, progress=progress, workers=workers, label=f"labels {name}",
                attributes=attributes,
            )  # fmt: skip
            _validate_label_root(tmp, version)
    except BaseException:
        if made_dir:
            with contextlib.suppress(OSError):
                labels_dir.rmdir()  # only if the partial label image went with the failure
        raise
    labels_group = zarr.open_group(store=str(labels_dir), mode="a", zarr_format=zarr_format)
    # only the name is added: the other names keep their order, the group's other keys
    # (another tool's, the NGFF version) their values
    listed = list(image.labels) if name in image.labels else [*image.labels, name]
    labels_group.attrs.update(labels_group_listing(old_attrs, version, listed))
    if before is None:
        try:
            validate_written_store(image_path, version)
        except DlsError:
            labels_group.attrs.clear()
            labels_group.attrs.update(old_attrs)
            raise
    log.info("wrote labels %s into %s", name, image_path)
    return final


def write_label_image(
    labels: Volume | np.ndarray | da.Array,
    path: str | os.PathLike[str],
    *,
    spacing: Sequence[float] | None = None,
    source_image: str | None = None,
    version: NgffVersion = "0.5",
    n_levels: int | None = None,
    overwrite: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    shards: int | Sequence[int] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Write labels as a standalone OME-Zarr whose root is an NGFF label image.

    ``shards`` as in :class:`WriteOptions` (``0``: unsharded chunks).  ``attributes``
    go into the root's attributes beside NGFF's (how the labels were made).

    Used when the labels cannot go inside the image's own store (a TIFF input,
    or a read-only store).  ``source_image`` is recorded in
    ``image-label.source.image``; without it, there is no ``source`` (NGFF's default,
    ``../../``, would point at no image).
    """
    vol = labels if isinstance(labels, Volume) else volume_from_array(labels, spacing=spacing)
    if spacing is not None and isinstance(labels, Volume):
        vol = volume_from_array(labels.data, axes=labels.axes, spacing=spacing)
    if vol.dtype.kind not in "iub":
        where = volume_where(labels) if isinstance(labels, Volume) else None
        raise InputError(f"labels must be integers, got {vol.dtype}", path=where)
    data = vol.data.astype(np.uint8) if vol.dtype.kind == "b" else vol.data
    options = WriteOptions(version=version, shards=shards)
    factors = plan_pyramid(vol.spatial_shape, vol.spacing, n_levels=n_levels)
    final = Path(path)
    with atomic_directory(final, overwrite=overwrite) as tmp:
        write_label_pyramid(
            zarr.open_group(store=str(tmp), mode="w", zarr_format=options.zarr_format), data,
            axes=vol.axes, spacing=vol.spacing, factors=factors, options=options, name=final.name,
            memory_budget=memory_budget, progress=progress, workers=workers, label="labels",
            source_image=source_image or "", attributes=attributes,
        )  # fmt: skip
        _validate_label_root(tmp, version)
    return final


def _validate_label_root(path: Path, version: NgffVersion) -> None:
    if version == "0.5":
        from ome_zarr_models.v05.image_label import ImageLabel
    else:
        from ome_zarr_models.v04.image_label import ImageLabel
    try:
        validate_once(
            path,
            f"image-label {version}",
            lambda: ImageLabel.from_zarr(zarr.open_group(store=str(path), mode="r")),
        )
    except Exception as exc:
        raise DlsError(f"internal error: written label image failed validation ({exc})", path=path) from exc
