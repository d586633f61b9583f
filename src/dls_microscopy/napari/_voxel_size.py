"""The voxel size control: the chosen image layer's scale in µm, editable (the Segment tab)."""

from __future__ import annotations

import logging
from typing import Any

from qtpy.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget

from dls_microscopy.errors import InputError
from dls_microscopy.napari._image_layers import parse_voxel_size, set_voxel_size, voxel_size_text
from dls_microscopy.napari._tasks import LayerChooser
from dls_microscopy.napari.layers import is_volume_layer

__all__ = ["VoxelSizeControl"]

log = logging.getLogger(__name__)

_TIP = (
    "<p>Voxel size of the chosen image in µm, z, y, x (one value: the same on every axis). "
    "A file without one is read as 1 µm. <i>Apply</i> sets it on every layer of the image: its "
    "channels and its labels. Segment, Meshes and Features measure in these µm, and the saved "
    "pipeline.yaml gives it as input.spacing. The file is not changed.</p>"
)


class VoxelSizeControl(QWidget):
    """A line edit showing the chosen image layer's voxel size, and *Apply*.

    It shows the last three values of the layer's ``scale`` and follows the layer:
    another choice, or its scale changed elsewhere (napari's console, a script).
    :meth:`apply` sets the typed voxel size on the layers of the image
    (:func:`._image_layers.set_voxel_size`); the owning widget connects
    :attr:`apply_button` to it, so that errors reach its status line.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers change.
    chooser : LayerChooser
        The image layer chooser the voxel size is of.
    """

    def __init__(self, viewer: Any, chooser: LayerChooser) -> None:
        super().__init__()
        self.viewer = viewer
        self.chooser = chooser
        self.text = QLineEdit()
        self.text.setPlaceholderText("z, y, x")
        self.apply_button = QPushButton("Apply")
        for widget in (self.text, self.apply_button):
            widget.setToolTip(_TIP)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.text, 1)
        row.addWidget(self.apply_button)
        self._layer: Any = None
        chooser.currentTextChanged.connect(self._follow)
        self._follow()

    def _follow(self, *_: Any) -> None:
        """Show the chosen layer's voxel size from now on."""
        if self._layer is not None:
            self._layer.events.scale.disconnect(self.show_scale)
        self._layer = self.chooser.layer()
        if self._layer is not None:
            self._layer.events.scale.connect(self.show_scale)
        self.show_scale()

    def show_scale(self, *_: Any) -> None:
        """Show the chosen layer's voxel size (empty without a 3D image layer)."""
        layer = self._layer
        usable = layer is not None and is_volume_layer(layer)
        self.text.setText(voxel_size_text(layer.scale[-3:]) if usable else "")
        self.setEnabled(usable)

    def apply(self) -> list[str]:
        """Set the voxel size typed on the layers of the chosen image; the names of those changed.

        A value typed as shown is the layer's own (the text shows 6 significant digits), so
        that applying the voxel size shown changes nothing.

        Raises
        ------
        InputError
            No image layer is chosen, or the text is no voxel size.
        """
        layer = self.chooser.layer()
        if layer is None:
            raise InputError("open an image first (File > Open, or File > Open Sample)")
        typed = parse_voxel_size(self.text.text())
        current = [float(s) for s in layer.scale[-3:]]
        spacing = [
            c if voxel_size_text([t]) == voxel_size_text([c]) else t
            for t, c in zip(typed, current, strict=True)
        ]
        changed = set_voxel_size(self.viewer.layers, layer, spacing)
        if changed:
            log.info("voxel size %s µm set on %s", spacing, [lay.name for lay in changed])
            self.viewer.reset_view()
        return [lay.name for lay in changed]
