"""Export widget: the session's tables and meshes, to files.

The tables are a pipeline run's for the same steps
(:func:`~dls_microscopy.pipeline.interactive.session_tables`): ``objects`` with the features
and the mesh descriptors as columns, ``images`` its aggregate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from dls_microscopy.napari._tasks import TaskWidget
from dls_microscopy.pipeline.interactive import export_meshes, export_table, mesh_columns, session_tables

__all__ = ["ExportWidget"]

log = logging.getLogger(__name__)


class ExportWidget(TaskWidget):
    """Save what the Features and Meshes widgets computed (Parquet/CSV tables, GLB/PLY/OBJ/STL meshes)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Save all to folder…")
        self.table_button = QPushButton("Save objects table…")
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
        has_descriptors = has_meshes and bool(self.state.meshes.descriptors)
        self.table_button.setEnabled(has_table or has_descriptors)
        self.descriptors_button.setEnabled(has_descriptors)
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
            name = {"table": "objects", "descriptors": "shape"}[what]
            path, _ = QFileDialog.getSaveFileName(
                self, f"Save {name} table", f"{name}.parquet", "Parquet (*.parquet);;CSV (*.csv)"
            )
        if path:
            self.save(what, path)

    def tables(self) -> dict[str, Any]:
        """The session's tables as a pipeline run writes them: ``objects``, ``images`` and maybe ``shape``.

        The meshes' descriptors are columns of ``objects`` when they are of the labels
        measured (or nothing was measured); otherwise they are a table of their own,
        ``shape``, with the same columns as in a run's ``objects``.
        """
        state = self.state
        features, meshes = state.features, state.meshes
        if meshes is not None and not meshes.descriptors:
            meshes = None
        joined = meshes is not None and (features is None or state.meshes_labels == state.features_labels)
        field = state.features_field if features is not None else state.meshes_field
        tables = session_tables(
            features,
            meshes if joined else None,
            # None: a pipeline run's table, whose rows have their own Metadata_*
            metadata=field.metadata() if field is not None else {},
            compartment=state.compartment,
        )
        if meshes is not None and not joined:
            tables["shape"] = mesh_columns(meshes, compartment=state.compartment)
        return tables

    def save(self, what: str, path: str | Path) -> None:
        """Save ``what`` (``table``, ``descriptors``, ``meshes``; ``folder``: all) to ``path`` in a worker."""
        meshes = self.state.meshes
        tables = self.tables() if what in ("table", "descriptors", "folder") else {}
        target = Path(path)

        def work(progress: Any) -> list[Path]:
            written: list[Path] = []
            if what == "folder":
                for name, table in tables.items():
                    progress(f"{name} table", 0, 1)
                    written.append(export_table(table, target / f"{name}.parquet"))
            elif what == "table" and "objects" in tables:
                progress("objects table", 0, 1)
                written.append(export_table(tables["objects"], target))
            elif what == "descriptors" and meshes is not None and meshes.descriptors:
                progress("shape descriptors", 0, 1)
                written.append(export_table(mesh_columns(meshes, compartment=self.state.compartment), target))
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
