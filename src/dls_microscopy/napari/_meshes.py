"""Meshes & shape widget: labels → surface meshes in µm coloured by a shape descriptor."""

from __future__ import annotations

import logging
from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from dls_microscopy.napari._image_layers import input_spacing_of
from dls_microscopy.napari._levels import made_at_level
from dls_microscopy.napari._tasks import LayerChooser, TaskWidget, labelled, record_labels_used, shown_volume
from dls_microscopy.pipeline.interactive import MeshSet, mesh_labels, session_field, volume_from_layer

__all__ = ["MeshesWidget"]

log = logging.getLogger(__name__)

DEFAULT_COLOUR = "sphericity"


class MeshesWidget(TaskWidget):
    """Mesh every object of a labels layer (block by block) and show one surface layer in µm."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Make meshes")
        self.labels = LayerChooser(napari_viewer, ("labels",))
        self.smooth = QSpinBox()
        self.smooth.setRange(0, 200)
        self.smooth.setValue(20)
        self.decimate = QDoubleSpinBox()
        self.decimate.setRange(0.01, 1.0)
        self.decimate.setSingleStep(0.05)
        self.decimate.setValue(1.0)
        self.descriptors = QCheckBox("compute shape descriptors")
        self.descriptors.setChecked(True)
        self.colour_by = QComboBox()
        self.colour_by.setEnabled(False)
        for text, widget in (
            ("labels", self.labels),
            ("smoothing steps", self.smooth),
            ("keep faces", self.decimate),
        ):
            self.form.addWidget(labelled(text, widget))
        self.form.addWidget(self.descriptors)
        self.form.addWidget(labelled("colour by", self.colour_by))
        self.colour_by.currentTextChanged.connect(self.recolour)
        self.run_button.clicked.connect(self.safely(self.run))
        self.surface: Any = None

    def run(self) -> None:
        """Mesh the chosen labels layer in a worker thread."""
        layer = self.labels.layer()
        if layer is None:
            self.status.setText("no labels layer: segment an image first (Segment widget)")
            return
        volume = volume_from_layer(
            shown_volume(self.viewer, layer)[0],  # a time series: the time point shown
            scale=layer.scale,
            source=layer.metadata.get("dls_labels_path") or layer.metadata.get("dls_source"),
        )
        smooth = self.smooth.value()
        decimate = self.decimate.value()
        decimate = None if decimate >= 1.0 else decimate
        descriptors = self.descriptors.isChecked()
        name = f"{layer.name} meshes"
        meta = dict(layer.metadata)
        index = shown_volume(self.viewer, layer)[1]  # a (T, Z, Y, X) layer: the time point shown
        segmented = meta.get("dls_time_index") or []  # labels of one time point (Segment tab)
        time_point = index[0] if len(index) == 1 else segmented[0] if len(segmented) == 1 else None
        spacing_of = input_spacing_of(layer)  # what a pipeline needs to mesh in the same µm

        def work(progress: Any) -> tuple[MeshSet, Any, Any]:
            meshes = mesh_labels(
                volume, smooth=smooth, decimate=decimate, descriptors=descriptors, progress=progress
            )
            # the field as a run names it, for the exported tables' Metadata_* columns
            field = session_field(
                source=meta.get("dls_source"),
                name=layer.name,
                plate=meta.get("dls_plate"),
                time_point=time_point,
                series=int(meta.get("dls_series") or 0),
            )
            return meshes, field, spacing_of()

        def done(result: tuple[MeshSet, Any, Any]) -> None:
            meshes, field, spacing = result
            if not len(meshes.ids):  # a surface layer of no faces cannot be drawn
                self.status.setText(f"{layer.name}: no objects in the labels, nothing to mesh")
                return
            self.state.meshes = meshes
            self.state.meshes_labels = layer.name
            self.state.meshes_field = field
            columns = meshes.numeric_columns()
            self.colour_by.blockSignals(True)
            self.colour_by.clear()
            self.colour_by.addItems(columns or ["object"])
            self.colour_by.setCurrentText(
                DEFAULT_COLOUR if DEFAULT_COLOUR in columns else self.colour_by.itemText(0)
            )
            self.colour_by.setEnabled(True)
            self.colour_by.blockSignals(False)
            values = self._values(meshes, self.colour_by.currentText())
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.surface = self.viewer.add_surface(
                (meshes.vertices, meshes.faces, values),
                name=name,
                colormap="viridis",
                units=("micrometer",) * 3,
                # over the labels: those of a coarser level lie half a coarse voxel in
                translate=tuple(float(t) for t in layer.translate[-3:]),
                metadata={"dls_meshes_of": layer.name},
            )
            layer.visible = False  # the meshes show these objects now
            self.viewer.dims.ndisplay = 3
            record_labels_used(self.state.recorder, layer)
            self.state.recorder.record_mesh(
                smooth=smooth,
                decimate=decimate,
                descriptors=descriptors,
                spacing=spacing,
                level=made_at_level(layer),  # labels of a coarser level: a run meshes that level
            )
            self.state.changed("meshes")
            self.status.setText(f"{len(meshes.ids)} meshes, {len(meshes.faces)} faces (µm)")

        self.start(work, done)

    @staticmethod
    def _values(meshes: MeshSet, column: str) -> Any:
        import numpy as np

        if column in meshes.descriptors:
            return meshes.vertex_values(column)
        return meshes.ids.astype(np.float64)[meshes.vertex_object]

    def recolour(self, column: str) -> None:
        """Colour the surface layer by descriptor ``column``."""
        meshes = self.state.meshes
        if self.surface is None or meshes is None or not column:
            return
        values = self._values(meshes, column)
        self.surface.vertex_values = values
        if len(values):
            lo, hi = float(values.min()), float(values.max())
            self.surface.contrast_limits = (lo, hi if hi > lo else lo + 1.0)
