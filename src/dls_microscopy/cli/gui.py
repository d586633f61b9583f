"""The ``gui`` command: start the napari desktop app (imported only when the command runs)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dls_microscopy.cli._common import app, err


def _missing_gui_packages() -> list[str]:
    """Packages of the ``gui`` extra that are not installed (checked without importing them)."""
    import importlib.util

    missing = [m for m in ("napari", "qtpy", "magicgui") if importlib.util.find_spec(m) is None]
    if not any(importlib.util.find_spec(q) is not None for q in ("PyQt5", "PyQt6", "PySide2", "PySide6")):
        missing.append("PyQt5")
    return missing


@app.command(epilog="Example: dls-microscopy gui image.ome.zarr")
def gui(
    path: Annotated[
        str | None, typer.Argument(help="Image to open: OME-Zarr (image or plate), OME-TIFF, TIFF, HDF5.")
    ] = None,
) -> None:
    """Start the desktop app: napari with the DLS Microscopy widgets docked."""
    import os

    missing = _missing_gui_packages()
    if missing:
        from rich.markup import escape

        err.print(
            "[red]error:[/red] "
            + escape(
                f"the desktop app needs the 'gui' extra (missing: {', '.join(missing)}); "
                "install it with: pip install 'dls-microscopy[gui]'"
            ),
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if path is not None:
        from dls_microscopy.io import detect_format, split_dataset_path

        detect_format(split_dataset_path(path)[0])  # a clear error before any window opens
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    ):
        err.print(
            "[red]error:[/red] no display: the desktop app needs a graphical session "
            "(or run it under xvfb-run)",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    from dls_microscopy.napari.app import main as gui_main

    raise typer.Exit(gui_main(path))
