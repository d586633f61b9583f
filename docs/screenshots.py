"""Take the pictures of the GUI guide from the real desktop app, on real data.

Run under a (virtual) X server; ``make screenshots`` does::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots.py

It opens the app exactly as ``dls-microscopy gui`` does
(:func:`dls_microscopy.napari.app.make_viewer`), loads the real confocal nuclei volume bundled
with the package (``nuclei_1135.h5``, converted to OME-Zarr first, as ``make demo`` does), and
drives the docked widgets — Segment, Meshes & shape, Features & embeddings, Pipeline — by
pressing their buttons and waiting for their background tasks, then saves PNGs of the whole
window into ``docs/images/``. With ``--idr`` (default when ``../shared/data`` has it) it also
opens the IDR OME-Zarr sample to show the reader. Nothing is drawn or faked: every picture is
the app's own window.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("screenshots")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IDR = REPO.parent / "shared" / "data" / "omezarr_idr0062A_6001240" / "6001240_labels.zarr"
WINDOW = (1560, 940)
DOCK_WIDTH = 560


def _app() -> Any:
    from qtpy.QtWidgets import QApplication

    return QApplication.instance()


def settle(seconds: float = 0.3) -> None:
    """Let Qt and vispy process events (layout, drawing) for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _app().processEvents()
        time.sleep(0.01)


def run_task(widget: Any, action: Callable[[], None], timeout: float = 600.0) -> None:
    """Press a widget's action, wait until its background task ends, fail on its error."""
    action()
    settle(0.1)
    deadline = time.monotonic() + timeout
    while widget.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__} still running after {timeout:g} s")
        _app().processEvents()
        time.sleep(0.02)
    settle(0.3)
    if widget.last_error is not None:
        raise RuntimeError(f"{type(widget).__name__} failed: {widget.last_error}") from widget.last_error


def dock_title(widget_class: str) -> str:
    """The dock title of our widget class ``widget_class`` (as listed in ``app.WIDGETS``)."""
    from dls_microscopy.napari.app import WIDGETS

    return next(title for title, target in WIDGETS if target.endswith(f":{widget_class}"))


def show_dock(viewer: Any, widget_class: str) -> Any:
    """Bring our dock widget of class ``widget_class`` to the front and return the widget."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    widget = viewer.window.dock_widgets[dock_title(widget_class)]
    dock = widget
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    if dock is not None:
        dock.raise_()
        window = viewer.window._qt_window
        window.resizeDocks([dock], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    settle(0.3)
    return widget


def middle_z(viewer: Any) -> None:
    """Show the middle plane along the first axis (z)."""
    r = viewer.dims.range[0]
    viewer.dims.set_point(0, r.start + 0.5 * (r.stop - r.start))


def close_notifications(viewer: Any) -> None:
    """Close napari's pop-up notifications (e.g. library deprecation notes) before a picture."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # moved in another napari version: pictures may show a pop-up
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(0.3)


def save(viewer: Any, path: Path) -> Path:
    """Save a picture of the whole window (canvas, layer list, docks) as PNG."""
    from PIL import Image

    settle(0.5)
    close_notifications(viewer)
    image = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, optimize=True)
    log.info("wrote %s (%d×%d)", path, image.shape[1], image.shape[0])
    return path


def sample_zarr(workdir: Path) -> Path:
    """The bundled real nuclei volume as OME-Zarr (what ``make demo`` converts)."""
    from dls_microscopy.io import convert
    from dls_microscopy.sample_data import nuclei_1135_resource

    out = workdir / "nuclei_1135.ome.zarr"
    with importlib.resources.as_file(nuclei_1135_resource()) as h5:
        convert(f"{h5}:/raw", out)
    return out


def take(outdir: Path, *, idr: bool) -> list[Path]:
    """Open the app, run the analysis through its widgets and save the pictures."""
    from dls_microscopy.napari._tasks import state_for
    from dls_microscopy.napari.app import make_viewer, open_path

    written: list[Path] = []
    # a fixed folder, so that the paths shown in the pictures do not change from run to run
    work = Path(tempfile.gettempdir()) / "dls-microscopy-screenshots"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        image_path = sample_zarr(work)

        viewer = make_viewer(None, show=True)
        try:
            state_for(viewer).workdir = work / "session"
            viewer.window._qt_window.resize(*WINDOW)
            settle(1.0)
            show_dock(viewer, "SegmentWidget")
            written.append(save(viewer, outdir / "app_start.png"))

            open_path(viewer, image_path)
            image = viewer.layers[-1]
            image.colormap = "gray"

            seg = show_dock(viewer, "SegmentWidget")
            seg.image.setCurrentText(image.name)
            seg.method.setCurrentText("watershed")
            seg.set_param("diameter_um", 3.2)
            seg.device.setCurrentText("cpu")
            run_task(seg, seg.run_button.click)
            labels = viewer.layers["nuclei"]
            labels.opacity = 0.45
            viewer.dims.ndisplay = 2
            middle_z(viewer)
            viewer.reset_view()
            written.append(save(viewer, outdir / "segment.png"))

            mesh = show_dock(viewer, "MeshesWidget")
            mesh.labels.setCurrentText("nuclei")
            run_task(mesh, mesh.run_button.click)
            if "sphericity" in [mesh.colour_by.itemText(i) for i in range(mesh.colour_by.count())]:
                mesh.colour_by.setCurrentText("sphericity")
            image.visible = False
            labels.visible = False
            viewer.dims.ndisplay = 3
            viewer.reset_view()
            camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it to viewer.scene
            camera.angles = (-25.0, 35.0, 135.0)
            camera.zoom *= 0.65
            viewer.layers.selection.active = viewer.layers["nuclei meshes"]
            settle(0.5)
            written.append(save(viewer, outdir / "meshes.png"))

            feat = show_dock(viewer, "FeaturesWidget")
            feat.labels.setCurrentText("nuclei")
            run_task(feat, feat.run_button.click)
            x, y = np.asarray(feat.plot.x, float), np.asarray(feat.plot.y, float)
            # select the largest objects in the plot: they light up in the table and the viewer
            cut = float(np.nanpercentile(x, 75))
            feat.plot.select_box((cut, float(np.nanmax(x)), float(np.nanmin(y)), float(np.nanmax(y))))
            viewer.layers[f"{labels.name} meshes"].visible = False
            image.visible = True
            labels.visible = True
            labels.opacity = 0.7
            viewer.layers.selection.active = labels
            viewer.dims.ndisplay = 2
            viewer.reset_view()
            written.append(save(viewer, outdir / "features.png"))

            pipe = show_dock(viewer, "PipelineWidget")
            # scroll the recorded pipeline so that its steps are in view
            steps_line = pipe.preview.document().find("steps:").blockNumber()
            pipe.preview.verticalScrollBar().setValue(max(steps_line, 0))
            written.append(save(viewer, outdir / "pipeline.png"))
        finally:
            viewer.close()

        if idr:
            viewer = make_viewer(IDR, show=True)
            try:
                viewer.window._qt_window.resize(*WINDOW)
                show_dock(viewer, "SegmentWidget")
                middle_z(viewer)
                written.append(save(viewer, outdir / "reader_idr.png"))
            finally:
                viewer.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``python docs/screenshots.py [--out DIR] [--idr | --no-idr]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the PNGs")
    parser.add_argument(
        "--idr",
        action=argparse.BooleanOptionalAction,
        default=IDR.is_dir(),
        help=f"also open the IDR sample ({IDR}; default: when it exists)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    # napari settings of our own (not the user's): no pop-up notifications in the pictures
    settings_dir = Path(tempfile.mkdtemp(prefix="dls-screenshots-napari-"))
    os.environ["NAPARI_CONFIG"] = str(settings_dir / "settings.yaml")
    try:
        import napari  # noqa: F401
    except ImportError:
        log.error("the screenshots need the gui extra: pip install 'dls-microscopy[gui]'")
        return 2
    if args.idr and not IDR.is_dir():
        log.error("--idr: %s does not exist", IDR)
        return 2
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"
    try:
        written = take(args.out, idr=args.idr)
    finally:
        shutil.rmtree(settings_dir, ignore_errors=True)
    log.info("%d pictures in %s", len(written), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
