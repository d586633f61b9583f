"""Volumes → napari layer data, without importing napari (tested headless).

napari readers and sample-data commands return *layer data tuples*
``(data, kwargs, layer_type)``.  This module builds them from our lazy
:class:`~dls_microscopy.volume.Volume`: every resolution level becomes one
level of a multiscale layer (dask arrays, nothing is read), each channel its
own layer with its name and a colormap, ``scale`` in µm, and the NGFF label
images of an OME-Zarr become multiscale labels layers.

The ``metadata`` of each layer records where it came from (``dls_source``,
``dls_channel``, ``dls_series``, ``dls_label``, ``dls_plate``) so that the
widgets can run the file-based pipeline on the same data, and its axes
(``dls_axes``, e.g. ``"tyx"``): a layer's number of dimensions does not say
which they are (a 2D time series and a volume are both 3D to napari).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from dls_microscopy.errors import DlsError
from dls_microscopy.volume import Volume

__all__ = [
    "CHANNEL_COLORMAPS",
    "LayerData",
    "LevelView",
    "handles_path",
    "is_volume_layer",
    "labels_layer_data",
    "layer_axes",
    "layer_scale",
    "not_a_volume",
    "read_path",
    "volume_layer_data",
]

log = logging.getLogger(__name__)

#: ``(data, kwargs, layer_type)`` as napari readers return it.
LayerData = tuple[Any, dict[str, Any], str]

#: Colormaps given to channels in order (one channel alone is shown in gray).
CHANNEL_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")

_SUFFIXES = (".zarr", ".tif", ".tiff", ".h5", ".hdf5", ".hdf", ".he5")


def handles_path(path: str | os.PathLike[str] | Sequence[str]) -> bool:
    """Whether our reader should try ``path`` (by name and, for folders, zarr metadata).

    Lists are accepted only with one element (napari passes stacks as lists).
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return False
        path = path[0]
    from dls_microscopy.io.open import split_dataset_path

    file_path, _ = split_dataset_path(path)
    text = str(file_path).rstrip("/").lower()
    if file_path.is_dir():  # a .zarr without metadata too: our reader says what is missing
        return text.endswith(".zarr") or any(
            (file_path / n).exists() for n in ("zarr.json", ".zgroup", ".zattrs")
        )
    return text.endswith(_SUFFIXES) and file_path.is_file()


def layer_axes(layer: Any) -> str | None:
    """The axes of a layer our reader (or Segment) made, e.g. ``"tzyx"`` or ``"tyx"``; else None."""
    axes = (getattr(layer, "metadata", None) or {}).get("dls_axes")
    return str(axes) if axes else None


def is_volume_layer(layer: Any) -> bool:
    """Whether ``layer`` holds volumes: z, y, x as its last axes.

    Judged by its axes where our reader recorded them (a 2D time series, ``tyx``, is
    3D to napari but no volume), else by its number of dimensions.
    """
    axes = layer_axes(layer)
    return axes.endswith("zyx") if axes is not None else int(layer.ndim) >= 3


def not_a_volume(layer: Any) -> str | None:
    """Why ``layer`` cannot be segmented, meshed or measured (None if it can).

    The wording is that of a 2D layer's refusal (:func:`~dls_microscopy.pipeline.interactive.
    volume_from_layer`), naming the axes, so that a 2D time series is not read as a volume
    with time as depth.
    """
    if getattr(layer, "rgb", False):  # its last axis is colour: read as channels, z went missing
        return (
            f"{layer.name!r} is an RGB layer: its colours are not channels of a stain; split it "
            "(right-click the layer > Split RGB) and choose the channel that shows the nuclei"
        )
    if is_volume_layer(layer):
        return None
    axes = layer_axes(layer) or ""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = " × ".join(str(int(n)) for n in data.shape)
    kind = "a 2D time series" if "t" in axes else "a 2D image"
    known = f"axes {', '.join(axes)}, " if axes else ""  # a layer our reader did not make: unknown
    return (
        f"a 3D layer is needed (Z, Y, X): {layer.name!r} is {kind} ({known}shape {shape}) with no "
        "z axis; open a z-stack"
    )


def layer_scale(volume: Volume, *, with_channel: bool = False) -> tuple[float, ...]:
    """napari ``scale`` of ``volume``: µm for z, y, x; the time increment (or 1) for t.

    The channel axis is left out unless ``with_channel``.
    """
    scale = []
    spatial = dict(zip(volume.spatial_axes, volume.spacing, strict=True))
    for axis in volume.axes:
        if axis == "c":
            if with_channel:
                scale.append(1.0)
        elif axis == "t":
            scale.append(float(volume.metadata.get("time_increment") or 1.0))
        else:
            scale.append(float(spatial[axis]))
    return tuple(scale)


class LevelView:
    """A lazy view of one resolution level, as napari sees it.

    napari slices multiscale data in steps (first the visible region, then
    the plane).  Each step here only composes the index; the pixels are read
    on ``np.asarray`` with *one* dask ``getitem`` on the level, which dask
    fuses into the file read.  Showing a plane thus reads that plane, not the
    large dask chunk around it (two successive dask ``getitem`` calls do not
    fuse).  Channels are selected before, at the reader (``Volume.select``).

    Parameters
    ----------
    base : dask.array.Array
        The level.
    """

    def __init__(self, base: da.Array, *, _key: tuple[Any, ...] | None = None) -> None:
        self.base = base
        if _key is None:
            _key = tuple((0, int(n)) for n in base.shape)
        self._key = _key
        self.shape = tuple(stop - start for k in _key if isinstance(k, tuple) for start, stop in [k])
        self.dtype = base.dtype
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))

    def _normalise(self, key: Any) -> tuple[Any, ...]:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        return key + (slice(None),) * (self.ndim - len(key))

    def __getitem__(self, key: Any) -> Any:
        key = self._normalise(key)
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-dimensional view")
        new: list[Any] = []
        visible = iter(zip(key, self.shape, strict=True))
        for k in self._key:
            if not isinstance(k, tuple):
                new.append(k)
                continue
            sub, n = next(visible)
            start = k[0]
            if isinstance(sub, int | np.integer):
                i = int(sub) + n if sub < 0 else int(sub)
                if not 0 <= i < n:
                    raise IndexError(f"index {sub} out of range for an axis of size {n}")
                new.append(start + i)
            elif isinstance(sub, slice) and sub.step in (None, 1):
                a, b, _ = sub.indices(n)
                new.append((start + a, start + max(a, b)))
            else:  # steps, arrays: read this view, then index it in memory
                return np.asarray(self)[key]
        return LevelView(self.base, _key=tuple(new))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.to_dask(), dtype=dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def to_dask(self) -> da.Array:
        """This view as a lazy dask array (for computations; one ``getitem`` on the level)."""
        key = tuple(slice(*k) if isinstance(k, tuple) else k for k in self._key)
        return self.base[key]


def _axis_labels(volume: Volume) -> tuple[str, ...]:
    return tuple(a for a in volume.axes if a != "c")


def _kept_levels(levels: Sequence[Any]) -> list[int]:
    """Indices of the levels napari takes: each strictly smaller than the one before."""
    kept = [0]
    for i, lv in enumerate(levels[1:], start=1):
        if np.prod(lv.shape) < np.prod(levels[kept[-1]].shape):
            kept.append(i)
    return kept


def _multiscale(levels: Sequence[Any]) -> tuple[list[Any] | Any, bool]:
    """A list of levels for napari (``multiscale=True``), or the one array when there is one."""
    # napari needs strictly shrinking levels; drop any that are not smaller than the previous
    kept = [levels[i] for i in _kept_levels(levels)]
    return (kept, True) if len(kept) > 1 else (kept[0], False)


def _level_spacings(volume: Volume) -> list[list[float]]:
    """The voxel size of each level napari shows (:func:`_kept_levels`), as the file gives it.

    Kept in the layers' metadata (``dls_level_spacings``): the factor between two levels
    is the file's, as a pipeline run at ``input.level`` uses it, not the ratio of their
    shapes (64 planes halved are 32, 65 are 33).
    """
    spacings = volume.level_spacings or (volume.spacing,)
    if len(spacings) != len(volume.levels):
        return [[float(s) for s in volume.spacing]]
    return [[float(s) for s in spacings[i]] for i in _kept_levels(volume.levels)]


def volume_layer_data(
    volume: Volume,
    *,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[LayerData]:
    """One image layer per channel of ``volume``, multiscale over all its levels.

    Parameters
    ----------
    volume : Volume
        Any volume; its ``levels`` (full resolution first) become the levels of
        the layers.  Nothing is computed.
    name : str, optional
        Layer name for a single-channel volume (default: the channel name).
    metadata : dict, optional
        Extra entries for every layer's ``metadata``.

    Returns
    -------
    list of LayerData
        ``(levels, kwargs, "image")`` per channel: ``levels`` a list of dask
        arrays (or one array for a single level) without the channel axis,
        ``kwargs`` with ``name``, ``scale`` (µm), ``colormap``, ``blending``,
        ``multiscale``, ``axis_labels``, ``units`` and ``metadata``.
    """
    scale = layer_scale(volume)
    base_meta = dict(metadata or {})
    base_meta.setdefault("dls_source", str(volume.source) if volume.source else None)
    out: list[LayerData] = []
    n = volume.n_channels
    for i, channel in enumerate(volume.channel_names):
        # the channel is taken at the reader (Volume.select), so its levels read only that channel
        channel_levels = volume.select(c=i).levels if "c" in volume.axes else volume.levels
        levels = [LevelView(lv) for lv in channel_levels]
        data, multiscale = _multiscale(levels)
        kwargs: dict[str, Any] = {
            "name": name if (name and n == 1) else channel,
            "scale": scale,
            "colormap": "gray" if n == 1 else CHANNEL_COLORMAPS[i % len(CHANNEL_COLORMAPS)],
            "blending": "translucent_no_depth" if n == 1 else "additive",
            "multiscale": multiscale,
            "axis_labels": _axis_labels(volume),
            "units": tuple("micrometer" if a in "zyx" else "pixel" for a in _axis_labels(volume)),
            "metadata": {
                **base_meta,
                "dls_axes": "".join(_axis_labels(volume)),  # which axes: see is_volume_layer
                "dls_channel": channel,
                "dls_channel_index": i,
                "dls_level_spacings": _level_spacings(volume),
                # the file's index of each level shown: input.level and the labels' record use it
                "dls_file_levels": _kept_levels(volume.levels),
            },
        }
        out.append((data, kwargs, "image"))
    return out


def labels_layer_data(
    labels: Volume,
    *,
    name: str,
    metadata: dict[str, Any] | None = None,
) -> LayerData:
    """A multiscale labels layer from a label :class:`Volume` (a length-1 channel axis is dropped)."""
    vol = labels.select(c=0) if "c" in labels.axes else labels
    data, multiscale = _multiscale([LevelView(lv) for lv in vol.levels])
    meta = dict(metadata or {})
    meta.setdefault("dls_source", str(vol.source) if vol.source else None)
    meta["dls_level_spacings"] = _level_spacings(vol)  # its own, not those of an image's metadata
    meta["dls_axes"] = "".join(vol.axes)  # its own: labels of one time point of a (T, Z, Y, X) image
    kwargs = {
        "name": name,
        "scale": layer_scale(vol),
        "multiscale": multiscale,
        "axis_labels": tuple(vol.axes),
        "units": tuple("micrometer" if a in "zyx" else "pixel" for a in vol.axes),
        "metadata": meta,
    }
    return (data, kwargs, "labels")


def read_path(
    path: str | os.PathLike[str],
    *,
    series: int = 0,
    well: str | None = None,
    field: int | None = None,
) -> list[LayerData]:
    """All layers of one image file: channels as images, NGFF label images as labels.

    For an HCS plate only one field is opened (the first, or ``well``/``field``);
    the layers' metadata then holds ``dls_plate`` (path) and ``dls_well``,
    ``dls_field`` so that a well chooser can switch fields.

    Raises
    ------
    DlsError
        Whatever :func:`~dls_microscopy.io.open_volume` raises.
    """
    from dls_microscopy.io import detect_format, open_volume, open_zarr, split_dataset_path

    file_path, dataset = split_dataset_path(path)
    if file_path.is_file() and detect_format(file_path) == "hdf5":
        return _hdf5_layers(file_path, dataset)
    vol = open_volume(path, series=series, well=well, field=field)
    meta: dict[str, Any] = {"dls_source": str(path), "dls_series": series}
    if "well" in vol.metadata:
        meta.update(
            dls_plate=str(path),
            dls_well=vol.metadata["well"],
            dls_field=int(vol.metadata.get("field", 0)),
        )
        meta["dls_source"] = str(vol.source)
        meta["dls_series"] = 0
    stem = Path(str(vol.source or path)).name
    if _looks_like_labels(_stem(stem), vol):  # a label TIFF saved beside its image
        return [labels_layer_data(vol, name=_stem(stem), metadata=meta)]
    layers = volume_layer_data(vol, name=_stem(stem), metadata=meta)
    for label in vol.labels:
        try:
            # opened with its channel axis, if any: LevelView drops it in the same read
            lab = open_zarr(Path(str(vol.source)) / "labels" / label)
        except DlsError as exc:  # one broken label image must not hide the image
            log.warning("%s: cannot open label image %r: %s", vol.source, label, exc)
            continue
        layers.append(labels_layer_data(lab, name=f"labels/{label}", metadata={**meta, "dls_label": label}))
    return layers


#: Words that make an integer image of one channel (an HDF5 dataset, a TIFF file) a labels
#: layer: ilastik, plantseg and training-data files store segmentations beside the raw image.
_LABEL_WORDS = ("label", "seg", "mask", "instance")


def _looks_like_labels(name: str, vol: Volume) -> bool:
    """An integer image of one channel whose name says it holds labels (:data:`_LABEL_WORDS`)."""
    return (
        vol.n_channels == 1
        and np.issubdtype(vol.dtype, np.integer)
        and any(w in name.lower() for w in _LABEL_WORDS)
    )


def _hdf5_layers(file_path: Path, dataset: str | None) -> list[LayerData]:
    """Layers of an HDF5 file: the dataset named, or every dataset of 3 dimensions or more.

    A file dialog cannot name a dataset, and files often hold an image and its
    segmentation side by side.  An integer dataset whose name says so
    (:data:`_LABEL_WORDS`) becomes a labels layer, any other an image layer.
    Datasets that cannot be opened as images are skipped with a warning.

    Raises
    ------
    DlsError
        The dataset named cannot be opened, or no dataset can.
    """
    from dls_microscopy.errors import InputError
    from dls_microscopy.io import open_volume
    from dls_microscopy.io.hdf5 import hdf5_datasets

    if dataset is not None:
        chosen = ["/" + dataset.strip("/")]  # open_volume says why, if it cannot be opened
    else:
        every = hdf5_datasets(file_path)
        chosen = [name for name, shape, _ in every if len(shape) >= 3]
        if not chosen:
            listing = ", ".join(f"{n} {'×'.join(map(str, sh))}" for n, sh, _ in every) or "none"
            raise InputError(
                f"no dataset of 3 or more dimensions in the file (datasets: {listing})", path=file_path
            )
    layers: list[LayerData] = []
    for name in chosen:
        spec = f"{file_path}:{name}"
        try:
            vol = open_volume(spec)
        except DlsError as exc:
            if len(chosen) == 1:
                raise
            log.warning("%s: dataset %s skipped: %s", file_path, name, exc)
            continue
        meta = {"dls_source": spec, "dls_series": 0}
        short = name.rsplit("/", 1)[-1]
        if _looks_like_labels(short, vol):
            layers.append(labels_layer_data(vol, name=short, metadata=meta))
        else:
            layers.extend(volume_layer_data(vol, name=short, metadata=meta))
    if not layers:
        raise InputError("none of the file's datasets opens as an image (see the log)", path=file_path)
    return sorted(layers, key=lambda layer: layer[2] == "labels")  # labels drawn over the images


def _stem(name: str) -> str:
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif", ".hdf5", ".h5"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
