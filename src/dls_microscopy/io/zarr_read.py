"""Lazy reading of OME-Zarr (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3, sharded).

Handles plain multiscale images, their ``labels/`` groups, the
``bioformats2raw`` layout (series) and HCS plates (plate → well → field).
Only JSON metadata is read on open; pixels are read chunk by chunk when the
dask array is computed (:mod:`._zarr_chunks`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import zarr
import zarr.errors

from dls_microscopy.errors import (
    FormatError,
    InputError,
    InputNotFoundError,
    MetadataError,
)
from dls_microscopy.io._zarr_chunks import MissingChunks, source_level
from dls_microscopy.io.ngff_metadata import detect_ngff_version, validate_ngff_attrs
from dls_microscopy.io.plate import PlateLayout, read_plate_layout, resolve_field
from dls_microscopy.io.units import is_length_unit, to_micrometres
from dls_microscopy.spacing import warn_spacing_fallback
from dls_microscopy.volume import AXES_ORDER, Volume, check_spacing

__all__ = ["MissingChunks", "ome_attrs", "open_group", "open_labels", "open_zarr"]

log = logging.getLogger(__name__)


def open_group(path: Path) -> zarr.Group:
    """Open a zarr group read-only, turning zarr's errors into ours."""
    try:
        return zarr.open_group(store=str(path), mode="r")
    except FileNotFoundError as exc:
        raise InputNotFoundError("no zarr group here", path=path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MetadataError(f"zarr metadata is not valid JSON: {exc}", path=path) from exc
    except (zarr.errors.ContainsArrayError, zarr.errors.NodeTypeValidationError) as exc:
        raise FormatError("this is a zarr array, not an OME-Zarr group (open its parent)", path=path) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MetadataError(f"invalid zarr metadata: {exc}", path=path) from exc


def ome_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The OME part of a group's attributes (under ``"ome"`` in 0.5, top level in 0.4)."""
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, Mapping) else dict(attrs)


def open_zarr(
    path: Path,
    *,
    level: int = 0,
    series: int = 0,
    well: str | None = None,
    field: int | None = None,
    missing_chunks: MissingChunks | None = None,
) -> Volume:
    """Open an OME-Zarr image, bioformats2raw series or plate field as a :class:`Volume`.

    Parameters
    ----------
    path : Path
        The store (or a group inside it).
    level : int
        Resolution level for ``Volume.data``.
    series : int
        Series of a ``bioformats2raw`` store, or the n-th field of a plate.
    well, field : optional
        Plate well (``"B/3"``) and field index.
    missing_chunks : {"error", "warn", "fill"}, optional
        What to do when a chunk (or shard) file is absent, which zarr reads as the
        array's fill value.  Default: ``"warn"`` for images (read as the fill value,
        with one warning per array naming the first one: zarr-python 3 and
        ome-zarr-py omit chunks that hold only the fill value, and an incomplete
        copy loses data the same way), ``"fill"`` for labels (empty label chunks are
        omitted as a rule).  ``"error"`` raises :class:`CorruptDataError`.
    """
    group = open_group(path)
    attrs = dict(group.attrs)
    ome = ome_attrs(attrs)
    version = _version(group, attrs)
    sub = ""
    extra: dict[str, Any] = {}
    if "bioformats2raw.layout" in ome:
        validate_ngff_attrs(attrs, kind="bioformats2raw", version=version, path=path)
        sub = _bf2raw_series_path(group, path, series)
        extra["series"] = series
    elif "plate" in ome:
        layout = read_plate_layout(group, path)
        sub, info = resolve_field(layout, well=well, field=field, series=series)
        extra.update(info)
    elif "well" in ome:
        validate_ngff_attrs(attrs, kind="well", version=version, path=path)
        images = ome["well"].get("images", [])
        idx = series if field is None else field
        if not 0 <= idx < len(images):
            raise InputError(f"field {idx} does not exist (the well has {len(images)})", path=path)
        sub = images[idx]["path"]
        extra["field"] = idx
    elif series != 0:  # one image: any other series was silently this one (exit 0, wrong data)
        raise InputError(
            f"series {series} does not exist: an OME-Zarr image (not a plate or bioformats2raw "
            "store) has one series (0..0)",
            path=path,
        )
    if sub:
        path = path / sub
        group = open_group(path)
        attrs = dict(group.attrs)
        version = _version(group, attrs)
    return _open_multiscale(
        group, path, attrs, version, level=level, extra=extra, missing_chunks=missing_chunks
    )


def open_labels(
    path: Path | str,
    name: str | None = None,
    *,
    level: int = 0,
    missing_chunks: MissingChunks | None = None,
    spacing: Sequence[float] | float | None = None,
) -> Volume:
    """Open the NGFF label image ``name`` stored in the image at ``path``.

    When ``name`` is omitted and the image has exactly one label image, that
    one is opened.  ``spacing`` (µm at full resolution, as for
    :func:`~dls_microscopy.io.open_volume`) replaces the file's voxel size.
    """
    path = Path(path)
    image = open_zarr(path)
    if not image.labels:
        raise InputError("this image has no labels", path=path)
    if name is None:
        if len(image.labels) > 1:
            raise InputError(
                f"the image has several label images ({', '.join(image.labels)}); choose one",
                path=path,
            )
        name = image.labels[0]
    if name not in image.labels:
        raise InputError(f"no label image {name!r} (available: {', '.join(image.labels)})", path=path)
    label_path = path / "labels" / name
    group = open_group(label_path)
    attrs = dict(group.attrs)
    vol = _open_multiscale(
        group,
        label_path,
        attrs,
        _version(group, attrs),
        level=0,
        extra={"label_name": name},
        missing_chunks=missing_chunks,
    )
    if spacing is not None:
        # ``spacing`` is the image's voxel: a label image on another grid (NGFF allows one)
        # keeps its factor to the image's
        given = check_spacing(spacing, image.spatial_axes, source=path)
        own = dict(zip(vol.spatial_axes, vol.level_spacings[0], strict=True))
        img = dict(zip(image.spatial_axes, image.level_spacings[0], strict=True))
        vol = vol.with_spacing(
            [g * own[a] / img[a] for a, g in zip(image.spatial_axes, given, strict=True) if a in own]
        )
    vol = vol.at_level(level) if level else vol
    # some writers keep a length-1 channel axis on label images: labels are per voxel
    return vol.select(c=0) if "c" in vol.axes and vol.n_channels == 1 else vol


# -- internals ---------------------------------------------------------------


def _version(group: zarr.Group, attrs: Mapping[str, Any]) -> str:
    """Declared NGFF version, else the one implied by the zarr format (v2: 0.4, v3: 0.5)."""
    return detect_ngff_version(attrs) or ("0.5" if group.metadata.zarr_format == 3 else "0.4")


def _bf2raw_series_path(group: zarr.Group, path: Path, series: int) -> str:
    series_paths: list[str] = []
    try:
        ome_group = group["OME"]
        listed = ome_attrs(dict(ome_group.attrs)).get("series")
        if isinstance(listed, list):
            series_paths = [str(s) for s in listed]
    except KeyError:
        pass
    if not series_paths:
        series_paths = sorted((k for k in group.group_keys() if k.isdigit()), key=int)
    if not series_paths:
        raise MetadataError("bioformats2raw layout without any series", path=path)
    if not 0 <= series < len(series_paths):
        raise InputError(
            f"series {series} does not exist (the file has {len(series_paths)} series)", path=path
        )
    return series_paths[series]


def _open_multiscale(
    group: zarr.Group,
    path: Path,
    attrs: dict[str, Any],
    version: str | None,
    *,
    level: int,
    extra: dict[str, Any],
    missing_chunks: MissingChunks | None,
) -> Volume:
    ome = ome_attrs(attrs)
    if "multiscales" not in ome:
        raise MetadataError(
            "not an OME-Zarr image: no 'multiscales' metadata (is this a plain zarr store, "
            "or a plate/collection that needs a well/series?)",
            path=path,
        )
    is_label = "image-label" in ome
    validate_ngff_attrs(attrs, kind="label" if is_label else "image", version=version, path=path)
    ms = ome["multiscales"][0]
    axes_meta = ms.get("axes") or [{"name": a} for a in AXES_ORDER[-5:]]
    names, units = _axis_names_units(axes_meta, path)
    global_scale = _scale_of(ms.get("coordinateTransformations"), len(names))
    policy: MissingChunks = missing_chunks or ("fill" if is_label else "warn")

    levels = []
    scales = []
    for ds in ms["datasets"]:
        arr = _open_array(group, ds["path"], path)
        if arr.ndim != len(names):
            raise MetadataError(
                f"array {ds['path']!r} has {arr.ndim} dimensions but the metadata names {len(names)} axes",
                path=path,
            )
        scale = _scale_of(ds.get("coordinateTransformations"), len(names))
        scales.append([s * g for s, g in zip(scale, global_scale, strict=True)])
        levels.append(source_level(arr, path, ds["path"], policy))

    order = sorted(range(len(names)), key=lambda i: AXES_ORDER.index(names[i]))
    axes = "".join(names[i] for i in order)
    # reordered at the source, so that each level is one dask ``from_array``
    level_sources = tuple(lv.transpose(tuple(order)) for lv in levels)
    spatial = [i for i in order if names[i] in "zyx"]
    unitless = [
        f"{names[i]} ({units[i]!r})" if units[i] else names[i]
        for i in spatial
        if not is_length_unit(units[i])
    ]
    if unitless:  # NGFF: a space axis SHOULD have a unit; the scale is read as µm, but say so
        warn_spacing_fallback(
            log, "%s: no length unit for axes %s (NGFF asks for one); their scale is read as µm",
            path, ", ".join(unitless),
        )  # fmt: skip
    level_spacings = tuple(
        tuple(to_micrometres(sc[i], units[i], path=path) for i in spatial) for sc in scales
    )
    channel_names = tuple(
        str(ch.get("label", f"channel_{i}"))
        for i, ch in enumerate((ome.get("omero") or {}).get("channels", []))
    )
    labels = _label_names(group, path) if not is_label else ()
    t_index = names.index("t") if "t" in names else None
    metadata = {"ngff_version": version, "zarr_format": group.metadata.zarr_format, **extra}
    if t_index is not None and units[t_index]:
        metadata["time_unit"] = units[t_index]
        metadata["time_increment"] = scales[0][t_index]
    if is_label:
        metadata["label"] = True
    if isinstance(attrs.get("dls_microscopy"), dict):  # how we made it (a segmentation's settings)
        metadata["dls_microscopy"] = attrs["dls_microscopy"]
    dask_levels = tuple(lv.to_dask() for lv in level_sources)
    vol = Volume(
        data=dask_levels[0],
        axes=axes,
        spacing=level_spacings[0],
        channel_names=channel_names,
        levels=dask_levels,
        level_spacings=level_spacings,
        labels=labels,
        source=path,
        format="ome-zarr",
        metadata=metadata,
        level_sources=level_sources,
    )
    return vol.at_level(level) if level else vol


def _axis_names_units(axes_meta: list[Any], path: Path) -> tuple[list[str], list[str | None]]:
    names: list[str] = []
    units: list[str | None] = []
    for ax in axes_meta:
        if isinstance(ax, str):  # NGFF 0.3 style
            ax = {"name": ax}
        name = str(ax.get("name", "")).lower()
        kind = ax.get("type")
        if kind == "channel" and name not in AXES_ORDER:
            name = "c"
        if kind == "time" and name not in AXES_ORDER:
            name = "t"
        if name not in AXES_ORDER:
            raise MetadataError(
                f"axis {ax.get('name')!r} is not supported (axes must be among t, c, z, y, x)",
                path=path,
            )
        names.append(name)
        units.append(ax.get("unit"))
    if len(set(names)) != len(names):
        raise MetadataError(f"duplicate axes {names}", path=path)
    return names, units


def _scale_of(transforms: list[dict[str, Any]] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for tr in transforms or []:
        if tr.get("type") == "scale" and "scale" in tr:
            scale = [a * float(b) for a, b in zip(scale, tr["scale"], strict=True)]
    return scale


def _label_names(group: zarr.Group, path: Path) -> tuple[str, ...]:
    """The names the image's ``labels`` group lists; none, with a warning, when it is unreadable.

    The image itself is fine: a corrupt labels group costs its label images, not the image.
    """
    try:
        labels_group = group["labels"]
        attrs = dict(labels_group.attrs)
    except (KeyError, FileNotFoundError):
        return ()
    except (ValueError, TypeError, UnicodeDecodeError, zarr.errors.BaseZarrError) as exc:
        # JSONDecodeError is a ValueError
        meta = "labels/zarr.json" if group.metadata.zarr_format == 3 else "labels/.zattrs or labels/.zgroup"
        log.warning(
            "%s: the labels metadata (%s) is unreadable, so no label image is listed (%s: %s); "
            "the image itself is read",
            path, meta, type(exc).__name__, exc,
        )  # fmt: skip
        return ()
    listed = ome_attrs(attrs).get("labels", [])
    return tuple(str(n) for n in listed) if isinstance(listed, list) else ()


def _open_array(group: zarr.Group, name: str, path: Path) -> zarr.Array:
    try:
        arr = group[name]
    except KeyError as exc:
        raise MetadataError(f"the metadata lists array {name!r}, which does not exist", path=path) from exc
    except (ValueError, TypeError) as exc:
        raise MetadataError(f"invalid zarr metadata for array {name!r}: {exc}", path=path) from exc
    if not isinstance(arr, zarr.Array):
        raise MetadataError(f"{name!r} is a group, expected an array", path=path)
    return arr


def describe_plate(path: Path) -> PlateLayout:
    """The plate layout (rows, columns, wells, fields) of the HCS plate at ``path``."""
    return read_plate_layout(open_group(path), path)
