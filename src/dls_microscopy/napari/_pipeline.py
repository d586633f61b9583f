"""Pipeline widget: save the steps done in the GUI as a pipeline.yaml, or run a config on the open data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QLineEdit, QPlainTextEdit, QPushButton

from dls_microscopy.napari._image_layers import input_spacing_of
from dls_microscopy.napari._tasks import TaskWidget, labelled

__all__ = ["PipelineWidget"]

log = logging.getLogger(__name__)


class PipelineWidget(TaskWidget):
    """The GUI session as a reproducible ``pipeline.yaml`` for ``dls-microscopy run``."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Run a pipeline.yaml on the open image…")
        self.output = QLineEdit("results")
        self.output.setToolTip(
            "output.path of the saved pipeline (relative paths: next to the pipeline.yaml)"
        )
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setMinimumHeight(160)
        self.save_button = QPushButton("Save pipeline.yaml…")
        self.form.addWidget(labelled("output folder", self.output))
        self.form.addWidget(self.preview, 1)
        self.form.addWidget(self.save_button)
        # the preview takes the dock's height (it showed about 10 lines above empty space): its
        # layout gets the stretch (the content fills the scroll area, see TaskWidget)
        outer = self.outer
        for i in range(outer.count()):
            outer.setStretch(i, 1 if outer.itemAt(i).layout() is self.form else 0)
        self.save_button.clicked.connect(self.safely(self._ask_save))
        self.run_button.clicked.connect(self.safely(self._ask_run))
        self.output.textChanged.connect(lambda _: self._update("steps"))
        self.state.listeners.append(self._update)
        self._update("steps")

    # -- saving -------------------------------------------------------------------
    def config(self) -> Any:
        """The recorded session as a validated ``PipelineConfig`` (raises ``InputError`` if empty)."""
        return self.state.recorder.to_config(self.output.text().strip() or "results")

    def _update(self, what: str) -> None:
        if what not in ("steps", "features", "meshes"):
            return
        try:
            text = self.config().to_yaml()
            self.save_button.setEnabled(True)
        except Exception as exc:  # nothing recorded yet, or the image is not from a file
            text = f"# {exc}"
            self.save_button.setEnabled(False)
        self.preview.setPlainText(text)

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save pipeline", "pipeline.yaml", "YAML (*.yaml *.yml)")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> Path:
        """Write the recorded pipeline to ``path`` (it runs unchanged with ``dls-microscopy run``)."""
        from dls_microscopy.pipeline.config import dump_config

        written = dump_config(self.config(), path)
        self.status.setText(f"saved {written}; run it with: dls-microscopy run {written}")
        return written

    # -- running ------------------------------------------------------------------
    def _ask_run(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Run pipeline", "", "YAML (*.yaml *.yml)")
        if path:
            self.run_config(path)

    def open_image(self) -> Any:
        """The first image layer read from a file, or None."""
        for layer in self.viewer.layers:
            if type(layer).__name__ == "Image" and layer.metadata.get("dls_source"):
                return layer
        return None

    def open_source(self) -> str | None:
        """The file of the open image (the first image layer read from a file)."""
        layer = self.open_image()
        if layer is None:
            return None
        return str(layer.metadata.get("dls_plate") or layer.metadata["dls_source"])

    def run_config(self, path: str | Path, *, on_open_data: bool = True) -> None:
        """Run the pipeline file ``path`` in a worker thread, on the open image when ``on_open_data``.

        On the open image, a voxel size set in the app (see the Segment tab) is the run's
        ``input.spacing`` unless the file gives one: the run then measures what the app
        shows.  The run's objects table becomes the session's table (``state.features``,
        exportable).  Cancel stops the run at the next field.
        """
        from dls_microscopy.pipeline.config import load_config
        from dls_microscopy.pipeline.interactive import run_config_on

        cfg = load_config(path)
        image = self.open_image() if on_open_data else None
        if on_open_data and image is None:
            self.status.setText("open an image from a file first (File > Open)")
            return
        source = self.open_source() if on_open_data else None
        spacing_of = input_spacing_of(image) if image is not None else None

        def work(progress: Any) -> Any:
            spacing = spacing_of() if spacing_of is not None else None
            return run_config_on(cfg, source, spacing=spacing, progress=progress, token=self.token)

        def done(summary: Any) -> None:
            self.summary = summary
            info = summary.to_dict()
            self.status.setText(
                f"pipeline finished: {info['done']} field(s) done, {info['skipped']} already done, "
                f"{info['failed']} failed → {info['output']}"
            )
            self._load_objects(summary)

        self.start(work, done)

    def _load_objects(self, summary: Any) -> None:
        import pyarrow.parquet as pq

        path = summary.tables.get("objects")
        if path is None or not Path(path).exists():
            return
        if Path(path).suffix == ".csv":
            import pyarrow.csv as pacsv

            self.state.features = pacsv.read_csv(path)
        else:
            self.state.features = pq.read_table(path)
        self.state.features_labels = self.state.features_field = None  # the run's, not a layer's
        self.state.changed("features")
