"""The desktop app: napari with the DLS Microscopy widgets docked (``dls-microscopy gui [PATH]``).

:func:`make_viewer` builds the window (also used by the documentation's
screenshot script); :func:`main` starts the Qt event loop.  Qt is reached
through qtpy, so PyQt5 (the ``gui`` extra) and PyQt6 both work.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["TITLE", "WIDGETS", "icon_path", "main", "make_viewer", "open_path", "show_tab"]

log = logging.getLogger(__name__)

TITLE = "DLS Microscopy"

#: Dock widgets of the app, in tab order: (tab title, "module:Class").  Short titles keep
#: the five tabs readable side by side (Qt would also read "&" as a shortcut marker).
WIDGETS = (
    ("Segment", "dls_microscopy.napari._segment:SegmentWidget"),
    ("Meshes", "dls_microscopy.napari._meshes:MeshesWidget"),
    ("Features", "dls_microscopy.napari._features:FeaturesWidget"),
    ("Export", "dls_microscopy.napari._export:ExportWidget"),
    ("Pipeline", "dls_microscopy.napari._pipeline:PipelineWidget"),
)
#: Docked as well when the opened path is an HCS plate.
PLATE_WIDGET = ("Plate", "dls_microscopy.napari._plate:PlateWidget")

#: Width of the dock area, so that the tab titles and forms are readable.
DOCK_WIDTH = 440

WELCOME = (
    "Welcome to DLS Microscopy\n"
    "1. Open an image: File > Open File(s) or Open Folder\n"
    "   (OME-Zarr, OME-TIFF, TIFF, HDF5), or File > Open Sample.\n"
    "2. Work through the tabs on the right:\n"
    "   Segment → Meshes → Features → Export.\n"
    "3. Pipeline tab: save what you did as a pipeline.yaml\n"
    "   that `dls-microscopy run` repeats on many images."
)


def icon_path(kind: str = "png") -> Path:
    """The app icon (``"png"``, 256×256, or ``"svg"``) shipped in the package."""
    return Path(str(importlib.resources.files("dls_microscopy.napari") / "resources" / f"icon.{kind}"))


def _load(target: str) -> Any:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def open_path(viewer: Any, path: str | os.PathLike[str]) -> list[Any]:
    """Open ``path`` with our reader and add its layers to ``viewer`` (returns the layers)."""
    from dls_microscopy.napari.layers import read_path

    layers = []
    for data, kwargs, kind in read_path(path):
        layers.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    viewer.reset_view()
    return layers


def make_viewer(path: str | os.PathLike[str] | None = None, show: bool = True) -> Any:
    """A napari viewer with our title, icon and widgets docked; ``path`` opened when given.

    Parameters
    ----------
    path : path-like, optional
        An image to open with the DLS Microscopy reader.
    show : bool
        Show the window (False for tests and screenshots without a window manager).

    Returns
    -------
    napari.Viewer
        Its dock widgets are reachable as ``viewer.window.dock_widgets[title]``.
    """
    import napari
    from qtpy.QtGui import QIcon
    from qtpy.QtWidgets import QApplication

    from dls_microscopy import __version__

    _load_triton_first()
    viewer = napari.Viewer(title=f"{TITLE} {__version__}", show=show, show_welcome_screen=False)
    icon = QIcon(str(icon_path("png")))
    app = QApplication.instance()
    if app is not None:
        app.setWindowIcon(icon)
        app.setApplicationDisplayName(TITLE)
    qt_window = getattr(viewer.window, "_qt_window", None)
    if qt_window is not None:
        qt_window.setWindowIcon(icon)
    _prefer_our_reader()
    widgets = list(WIDGETS)
    if path is not None and _is_plate(path):
        widgets.append(PLATE_WIDGET)
    docks = []
    for title, target in widgets:
        docks.append(_add_dock(viewer, title, target))

    def plate_opened(event: Any) -> None:  # File > Open of a plate later on: its Plate tab too
        title, target = PLATE_WIDGET
        if event.value.metadata.get("dls_plate") and title not in viewer.window.dock_widgets:
            _add_dock(viewer, title, target)

    viewer.layers.events.inserted.connect(plate_opened)
    if docks:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, docks[0].raise_)  # the Segment tab in front once the window is shown
        docks[0].raise_()
    if path is not None:
        open_path(viewer, path)
    else:
        viewer.text_overlay.text = WELCOME
        viewer.text_overlay.visible = True
        viewer.text_overlay.font_size = 9
        viewer.text_overlay.position = "top_left"
        viewer.layers.events.inserted.connect(lambda _: setattr(viewer.text_overlay, "visible", False))
    return viewer


def _add_dock(viewer: Any, title: str, target: str) -> Any:
    widget = _load(target)(viewer)
    widget.setMinimumWidth(DOCK_WIDTH - 20)
    return viewer.window.add_dock_widget(widget, name=title, area="right", tabify=True)


#: File patterns the app opens with its own reader without asking (napari's preference format:
#: a folder's path ends in "/").  Patterns the user has set already are left alone.
READER_PATTERNS = ("*.zarr/", "*.tif", "*.tiff", "*.h5", "*.hdf5")


def _prefer_our_reader() -> None:
    """Make the DLS Microscopy reader napari's choice for our formats, so File > Open does not ask."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    missing = {p: "dls-microscopy" for p in READER_PATTERNS if p not in current}
    if missing:
        plugins.extension2reader = {**current, **missing}


def show_tab(viewer: Any, title: str) -> Any:
    """Bring the dock tab ``title`` (e.g. ``"Features"``) to the front; returns its widget."""
    from qtpy.QtWidgets import QDockWidget

    widget = viewer.window.dock_widgets[title]
    parent = widget
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    if parent is not None:
        parent.raise_()
    return widget


def _is_plate(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an OME-Zarr HCS plate (reads its metadata only)."""
    try:
        from dls_microscopy.io import open_volume

        return "well" in open_volume(path).metadata
    except Exception:  # unreadable paths fail later with their own message
        return False


def main(path: str | os.PathLike[str] | None = None) -> int:
    """Start the desktop app and block until its window is closed; returns the exit code."""
    import napari

    make_viewer(path, show=True)
    napari.run()
    return 0


def _load_triton_first() -> None:
    """Load triton (a torch dependency) before the viewer creates its OpenGL context.

    triton's LLVM segfaults when it loads into a process where Mesa already loaded
    its own (e.g. ``torch.optim`` imports triton through dynamo).  Loaded first, both
    coexist.  A napari started elsewhere cannot be protected this way; our code paths
    the widgets use avoid importing triton (see ``features.embeddings.training``).
    """
    import importlib.util

    if importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton")
    except Exception as exc:  # best effort: the app works without it
        log.debug("triton not preloaded: %s", exc)
