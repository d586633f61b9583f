"""Helpers of the task widgets that need no widget state (split from :mod:`._tasks`).

Where the labels a step works on came from, for the saved pipeline
(:func:`record_labels_used`); the volume a widget works on (:func:`shown_volume`);
a label beside a widget (:func:`labelled`); how a task's failure is logged
(:func:`log_failure`) and napari's window registry of tasks (:func:`window_private`).
"""

from __future__ import annotations

import logging
from typing import Any

from qtpy.QtWidgets import QHBoxLayout, QLabel, QWidget

__all__ = ["labelled", "log_failure", "record_labels_used", "shown_volume", "window_private"]

log = logging.getLogger(__name__)


def record_labels_used(recorder: Any, layer: Any) -> None:
    """Record where the labels a step works on came from, for the saved pipeline.

    Labels of Segment (``dls_segmented``: the recorder's key) make the pipeline's segment
    step that segmentation, whichever was run last.  Labels read from the input file
    (``dls_label``: an NGFF label image of an OME-Zarr store) make the pipeline read them
    too: the input is that file, ``input.labels`` names them.  Any other labels (an HDF5
    dataset, a TIFF file, drawn in napari) no pipeline can make: the Pipeline tab says why.
    """
    meta = layer.metadata
    if meta.get("dls_segmented"):
        recorder.use_segmentation(meta["dls_segmented"], labels=layer.name)
        return
    name, source = meta.get("dls_label"), meta.get("dls_plate") or meta.get("dls_source")
    if name and source:
        recorder.set_input(source, series=int(meta.get("dls_series", 0)))
        recorder.record_existing_labels(name, labels=layer.name)
        return
    recorder.record_unusable_labels(layer.name, _unusable_labels(layer.name, source))


def _unusable_labels(name: str, source: str | None) -> str:
    """Why labels ``name`` (read from ``source``, or made in napari) cannot be part of a pipeline."""
    how = (
        "convert the image with its labels to OME-Zarr (dls-microscopy convert IMAGE OUT.ome.zarr "
        f"--labels {_label_word(name)}={source or 'LABELS'}), open that and use its labels, or "
        "segment the image in the Segment tab"
    )
    if source:
        return (
            f"the labels '{name}' were read from {source}, and a pipeline reads labels only from "
            f"an OME-Zarr input (input.labels names one of its label images): {how}"
        )
    return (
        f"the labels '{name}' were neither made by Segment nor read from the image's OME-Zarr "
        f"store, so no pipeline can make them: save them as a file, {how}"
    )


def _label_word(name: str) -> str:
    """A label image name for ``convert --labels`` from a layer's name (``labels/0`` → ``0``)."""
    return name.rsplit("/", 1)[-1].replace(" ", "_") or "labels"


def labelled(text: str, widget: QWidget) -> QWidget:
    """``text`` and ``widget`` side by side."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    label = QLabel(text)
    label.setMinimumWidth(110)
    row.addWidget(label)
    row.addWidget(widget, 1)
    return box


def shown_volume(viewer: Any, layer: Any) -> tuple[list[Any], tuple[int, ...]]:
    """The layer's resolution levels as ``(Z, Y, X)`` arrays, and the indices taken on its other axes.

    A layer with more than three dimensions (a time series, ``(T, Z, Y, X)``: our reader
    gives each channel its own layer) is cut at the viewer's current position on its
    leading axes, the time point on screen, so that a widget works on the volume the
    user sees rather than reading time points as channels.  Pyramid levels never
    downsample the leading axes, so one index serves every level.

    Returns
    -------
    levels : list of (Z, Y, X) array-likes
        Full resolution first; nothing is read.
    index : tuple of int
        The indices on the leading axes (empty for a 3D layer).

    Raises
    ------
    InputError
        The layer has no z axis (a 2D time series is 3D to napari), by the axes our
        reader recorded (:func:`~dls_microscopy.napari.layers.is_volume_layer`).
    """
    import numpy as np

    from dls_microscopy.errors import InputError
    from dls_microscopy.napari._levels import layer_levels
    from dls_microscopy.napari.layers import not_a_volume

    problem = not_a_volume(layer)  # a 2D time series: time is no depth
    if problem:
        raise InputError(problem)
    levels = layer_levels(layer)
    lead = int(layer.ndim) - 3
    if lead <= 0:
        return levels, ()
    position = layer.world_to_data(viewer.dims.point)
    shape = levels[0].shape
    index = tuple(int(np.clip(round(float(p)), 0, shape[i] - 1)) for i, p in enumerate(position[:lead]))
    return [lv[index] for lv in levels], index


def log_failure(message: str, exc: BaseException) -> None:
    """Log a task's failure: one line for the user's mistakes, the traceback for our bugs.

    In plain napari no logging is configured, and Python's last-resort handler prints a
    warning's traceback to the console: a refusal ("a 3D layer is needed") must not read
    as a crash there.  Our errors (:class:`~dls_microscopy.errors.DlsError`) keep their
    traceback at DEBUG; anything else is a bug, whose traceback is what a report needs.
    """
    from dls_microscopy.errors import DlsError

    if isinstance(exc, DlsError):
        log.warning(message, exc)
        log.debug("traceback", exc_info=exc)
    else:
        log.warning(message, exc, exc_info=exc)


def window_private(viewer: Any, name: str) -> Any:
    """The viewer window's private method ``name``, or None; without napari's FutureWarning.

    napari's viewer proxy warns on every private access ("will be unavailable no earlier
    than 0.10.0"), which printed two warnings per task in plain napari.  Where the
    method is gone, the caller falls back to cancelling at quit.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(getattr(viewer, "window", None), name, None)
