"""Export widget: the features table, the shape descriptors and the meshes, to files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from dls_microscopy.napari._tasks import TaskWidget
from dls_microscopy.pipeline.interactive import descriptor_table, export_meshes, export_table

__all__ = ["ExportWidget"]

log = logging.getLogger(__name__)


class ExportWidget(TaskWidget):
    """Save what the Features and Meshes widgets computed (Parquet/CSV tables, GLB/PLY/OBJ/STL meshes)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Save all to folder…")
        self.table_button = QPushButton("Save features table…")
        self.descriptors_button = QPushButton("Save shape descriptors…")
        self.meshes_button = QPushButton("Save meshes…")
        for b in (self.table_button, self.descriptors_button, self.meshes_button):
            self.form.addWidget(b)
        self.table_button.clicked.connect(self.safely(lambda: self._ask("table")))
        self.descriptors_button.clicked.connect(self.safely(lambda: self._ask("descriptors")))
        self.meshes_button.clicked.connect(self.safely(lambda: self._ask("meshes")))
        self.run_button.clicked.connect(self.safely(lambda: self._ask("folder")))
        self.state.listeners.append(self._update)
        self._update("")

    def _update(self, _: str) -> None:
        has_table = self.state.features is not None
        has_meshes = self.state.meshes is not None
        self.table_button.setEnabled(has_table)
        self.descriptors_button.setEnabled(has_meshes and bool(self.state.meshes.descriptors))
        self.meshes_button.setEnabled(has_meshes)
        self.run_button.setEnabled((has_table or has_meshes) and not self.running)
        if not (has_table or has_meshes):
            self.status.setText("nothing to export yet: run Features or Meshes first")
        elif not self.running:
            self.status.setText("")

    def _ask(self, what: str) -> None:
        if what == "folder":
            path = QFileDialog.getExistingDirectory(self, "Save results into folder")
        elif what == "meshes":
            path, _ = QFileDialog.getSaveFileName(
                self, "Save meshes", "meshes.glb", "One GLB file (*.glb);;Folder of PLY files (*_ply)"
            )
        else:
            path, _ = QFileDialog.getSaveFileName(
                self, f"Save {what}", f"{what}.parquet", "Parquet (*.parquet);;CSV (*.csv)"
            )
        if path:
            self.save(what, path)

    def save(self, what: str, path: str | Path) -> None:
        """Save ``what`` (``table``, ``descriptors``, ``meshes``; ``folder``: all) to ``path`` in a worker."""
        table, meshes = self.state.features, self.state.meshes
        target = Path(path)

        def work(progress: Any) -> list[Path]:
            written: list[Path] = []
            if what in ("table", "folder") and table is not None:
                progress("features table", 0, 1)
                written.append(
                    export_table(table, target / "objects.parquet" if what == "folder" else target)
                )
            if what in ("descriptors", "folder") and meshes is not None and meshes.descriptors:
                progress("shape descriptors", 0, 1)
                dest = target / "shape.parquet" if what == "folder" else target
                written.append(export_table(descriptor_table(meshes), dest))
            if what in ("meshes", "folder") and meshes is not None:
                progress("meshes", 0, 1)
                written += export_meshes(meshes, target / "meshes.glb" if what == "folder" else target)
            return written

        def done(written: list[Path]) -> None:
            self.status.setText(
                "saved: " + ", ".join(str(p) for p in written[:3]) + (" …" if len(written) > 3 else "")
            )
            self.written = written

        if what == "folder":
            target.mkdir(parents=True, exist_ok=True)
        self.start(work, done)
