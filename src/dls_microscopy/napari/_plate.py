"""Plate widget: choose the well and field of an HCS plate to show (one field at a time)."""

from __future__ import annotations

import logging
from typing import Any

from qtpy.QtWidgets import QComboBox

from dls_microscopy.napari._tasks import TaskWidget, labelled
from dls_microscopy.napari.layers import read_path

__all__ = ["PlateWidget"]

log = logging.getLogger(__name__)


class PlateWidget(TaskWidget):
    """Switch the shown field of an OME-Zarr HCS plate opened by our reader."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Show field")
        self.plate = QComboBox()
        self.field = QComboBox()
        self.form.addWidget(labelled("plate", self.plate))
        self.form.addWidget(labelled("well / field", self.field))
        self.plate.currentTextChanged.connect(self._list_fields)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._list_plates)
        self.run_button.clicked.connect(self.safely(self.run))
        self._list_plates()

    def _list_plates(self, *_: Any) -> None:
        plates = sorted(
            {str(lay.metadata["dls_plate"]) for lay in self.viewer.layers if lay.metadata.get("dls_plate")}
        )
        current = self.plate.currentText()
        if plates == [self.plate.itemText(i) for i in range(self.plate.count())]:
            return
        self.plate.clear()
        self.plate.addItems(plates)
        if current in plates:
            self.plate.setCurrentText(current)
        if not plates:
            self.status.setText("no plate open: open an OME-Zarr HCS plate (File > Open Folder)")
        else:
            self.status.setText("")

    def _list_fields(self, plate: str) -> None:
        self.field.clear()
        if not plate:
            return
        from pathlib import Path

        from dls_microscopy.io import describe_plate

        layout = describe_plate(Path(plate))
        for well, index, _ in layout.iter_fields():
            self.field.addItem(f"{well.path} / field {index}", (well.path, index))
        shown = getattr(self, "shown", None)
        if shown is not None:
            at = self.field.findText(f"{shown[0]} / field {shown[1]}")
            if at >= 0:
                self.field.setCurrentIndex(at)

    def run(self) -> None:
        """Replace the layers of the current plate field by those of the chosen one."""
        plate = self.plate.currentText()
        choice = self.field.currentData()
        if not plate or choice is None:
            return
        well, field = choice

        def work(progress: Any) -> Any:
            progress(f"opening {well} field {field}", 0, 1)
            return read_path(plate, well=well, field=field)

        def done(layers: Any) -> None:
            for layer in [lay for lay in self.viewer.layers if lay.metadata.get("dls_plate") == plate]:
                self.viewer.layers.remove(layer)
            for data, kwargs, kind in layers:
                getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            self.shown = (well, field)
            self.status.setText(f"showing {well}, field {field}")

        self.start(work, done)
