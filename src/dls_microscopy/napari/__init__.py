"""The napari face of DLS Microscopy: npe2 plugin (reader, writer, sample data, widgets) and desktop app.

This is the only package that imports napari or Qt (through qtpy); it
computes nothing itself.  Widgets call :mod:`dls_microscopy.pipeline.interactive`
and the core off the GUI thread.  Importing this package does not import
napari; :mod:`dls_microscopy.napari.app` does.
"""

from __future__ import annotations

__all__: list[str] = []
