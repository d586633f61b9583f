"""Segment widget: a registered segmenter with its parameters → a multiscale labels layer."""

from __future__ import annotations

import html
import logging
import re
from typing import Any

import yaml
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QPushButton, QWidget

from dls_microscopy.errors import InputError
from dls_microscopy.napari._image_layers import spacing_against_file_of
from dls_microscopy.napari._levels import labels_placement, layer_level_spacings, level_choices
from dls_microscopy.napari._tasks import LayerChooser, TaskWidget, labelled, shown_volume
from dls_microscopy.napari._voxel_size import VoxelSizeControl
from dls_microscopy.napari.layers import is_volume_layer, labels_layer_data
from dls_microscopy.pipeline.interactive import (
    memory_budget_bytes,
    segment_volume,
    segmenter_parameters,
    volume_from_layer,
)

__all__ = ["SegmentWidget"]

log = logging.getLogger(__name__)


class SegmentWidget(TaskWidget):
    """Segment the chosen image layer with any installed segmenter (``dls_microscopy.segmenters``)."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Segment")
        from dls_microscopy.segment import segmenter_names

        self.image = LayerChooser(napari_viewer, ("image",))
        self.voxel_size = VoxelSizeControl(napari_viewer, self.image)
        self.level = QComboBox()
        self.level.setToolTip(
            _tooltip(
                "Resolution level of a multiscale image to segment: 0 is full resolution, each "
                "level after it coarser (its shape z×y×x and voxel size in µm). The labels are "
                "of that level; Meshes and Features measure them with the image at the same "
                "level, and the saved pipeline.yaml gives it as input.level."
            )
        )
        self.method = QComboBox()
        self.method.addItems(segmenter_names())
        if "watershed" in segmenter_names():
            self.method.setCurrentText("watershed")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.memory = QLineEdit("2GB")
        self.label_name = QLineEdit("nuclei")
        self.estimate_button = QPushButton("Estimate diameter from the image")
        self.estimate_button.setToolTip(
            _tooltip(
                "Segment a central region of the image with a large diameter, take the median "
                "diameter of the whole objects found, and repeat until the two agree "
                "(dls-microscopy estimate-diameter). Fills in diameter_um."
            )
        )
        self.params_box = QWidget()
        self.params_form = QFormLayout(self.params_box)
        self.param_inputs: dict[str, QWidget] = {}
        self.param_defaults: dict[str, Any] = {}
        for text, widget in (
            ("image", self.image),
            ("voxel size (µm)", self.voxel_size),
            ("resolution level", self.level),
            ("segmenter", self.method),
            ("device", self.device),
            ("memory budget", self.memory),
            ("labels name", self.label_name),
        ):
            self.form.addWidget(labelled(text, widget))
        self.form.addWidget(self.estimate_button)
        self.form.addWidget(self.params_box)
        self.method.currentTextChanged.connect(self._build_params)
        self._build_params(self.method.currentText())
        self.run_button.clicked.connect(self.safely(self.run))
        self.estimate_button.clicked.connect(self.safely(self.estimate))
        self.voxel_size.apply_button.clicked.connect(self.safely(self.set_voxel_size))
        self.voxel_size.text.returnPressed.connect(self.safely(self.set_voxel_size))
        self._levels_of: Any = None  # the layer whose levels are listed: its scale is followed
        self.image.currentTextChanged.connect(self.list_levels)
        self.list_levels()

    # -- parameters ---------------------------------------------------------------
    def _build_params(self, method: str) -> None:
        while self.params_form.rowCount():
            self.params_form.removeRow(0)
        self.param_inputs.clear()
        self.param_defaults.clear()
        self.estimate_button.setVisible(method == "watershed")  # the estimate segments with it
        if not method:
            return
        try:
            params = segmenter_parameters(method)
        except Exception as exc:  # a broken plugin must not break the widget
            self.status.setText(f"segmenter {method!r} cannot be loaded: {exc}")
            return
        for name, info in params.items():
            default = info["default"]
            self.param_defaults[name] = default
            choices = getattr(info["annotation"], "__args__", ())
            if isinstance(default, bool):
                widget: QWidget = QCheckBox()
                widget.setChecked(default)
            elif (
                choices and all(isinstance(c, str) for c in choices) and "Literal" in str(info["annotation"])
            ):
                widget = QComboBox()
                widget.addItems(list(choices))
                widget.setCurrentText(str(default))
            else:
                text = (
                    ""
                    if default is None
                    else yaml.safe_dump(_plain(default), default_flow_style=True).strip()
                )
                text = text.removesuffix("\n...").strip()
                widget = QLineEdit(text)
                widget.setPlaceholderText(info.get("unset", "automatic") if default is None else "")
            widget.setToolTip(_tooltip(info["description"] or name))
            self.params_form.addRow(name, widget)
            self.param_inputs[name] = widget

    def set_param(self, name: str, value: Any) -> None:
        """Set one parameter input (used by tests and scripts)."""
        widget = self.param_inputs[name]
        if isinstance(widget, QCheckBox):
            widget.setChecked(bool(value))
        elif isinstance(widget, QComboBox):
            widget.setCurrentText(str(value))
        else:
            widget.setText("" if value is None else str(value))

    def params(self) -> dict[str, Any]:
        """The parameters that differ from the segmenter's defaults."""
        out: dict[str, Any] = {}
        for name, widget in self.param_inputs.items():
            if isinstance(widget, QCheckBox):
                value: Any = widget.isChecked()
            elif isinstance(widget, QComboBox):
                value = widget.currentText()
            else:
                text = widget.text().strip()
                value = None if text == "" else yaml.safe_load(text)
            if _plain(value) != _plain(self.param_defaults.get(name)):
                out[name] = value
        return out

    def set_voxel_size(self) -> None:
        """Set the voxel size typed on the layers of the chosen image (:class:`VoxelSizeControl`)."""
        changed = self.voxel_size.apply()
        shown = self.voxel_size.text.text()
        if not changed:
            self.status.setText(f"voxel size {shown} µm: unchanged")
            return
        redo = self.state.recorder.steps()  # done with the voxel size before
        note = f"; {', '.join(redo)} done before used the old one: run again" if redo else ""
        self.status.setText(f"voxel size {shown} µm (z, y, x) set on {', '.join(changed)}{note}")

    def list_levels(self, *_: Any) -> None:
        """List the chosen image's resolution levels (one, and the choice disabled, if single-scale).

        The level chosen is kept when the new image has it.
        """
        layer = self.image.layer()
        if layer is not self._levels_of:  # a voxel size set on it changes those of its levels
            if self._levels_of is not None:
                self._levels_of.events.scale.disconnect(self.list_levels)
            if layer is not None:
                layer.events.scale.connect(self.list_levels)
            self._levels_of = layer
        usable = layer is not None and is_volume_layer(layer)
        choices = level_choices(layer) if usable else []
        current = max(self.level.currentIndex(), 0)
        self.level.blockSignals(True)
        self.level.clear()
        self.level.addItems(choices)
        self.level.setCurrentIndex(current if current < len(choices) else 0)
        self.level.blockSignals(False)
        self.level.setEnabled(len(choices) > 1)

    def chosen_level(self) -> int:
        """The resolution level chosen (0: full resolution)."""
        return max(self.level.currentIndex(), 0)

    # -- running ------------------------------------------------------------------
    def _shown(self) -> tuple[Any, Any, dict[str, Any], str, tuple[int, ...]] | None:
        """The chosen layer, its volume (at the level chosen, the time point shown), metadata,
        channel, index."""
        layer = self.image.layer()
        if layer is None:
            self.status.setText("open an image first (File > Open, or File > Open Sample)")
            return None
        meta = dict(layer.metadata)
        channel = meta.get("dls_channel", layer.name)
        levels, index = shown_volume(self.viewer, layer)  # a time series: the time point shown
        volume = volume_from_layer(
            levels,
            scale=layer.scale,
            channel_names=[channel],
            source=meta.get("dls_source"),
            level_spacings=layer_level_spacings(layer),
        )
        level = self.chosen_level()
        if level >= len(volume.levels):  # the list is of another layer's levels (not expected)
            self.list_levels()
            self.status.setText(f"{layer.name!r} has no resolution level {level}: choose another")
            return None
        return layer, volume.at_level(level), meta, channel, tuple(index)

    def estimate(self) -> None:
        """Estimate the nucleus diameter of the image shown (worker thread); fill in ``diameter_um``."""
        shown = self._shown()
        if shown is None:
            return
        _, volume, _, _, _ = shown
        params = {k: v for k, v in self.params().items() if k != "diameter_um"}

        def work(progress: Any) -> Any:
            from dls_microscopy.segment import estimate_diameter

            # progress raises CancelledError at Cancel: the estimate stops between its rounds
            return estimate_diameter(volume, params=params, progress=progress)

        def done(est: Any) -> None:
            self.set_param("diameter_um", est.diameter_um)
            self.status.setText(
                f"estimated diameter {est.diameter_um:g} µm (median of {est.n_objects} objects); "
                "diameter_um is set: Run to segment with it"
            )

        # cancelled during its last round, it still returns: the diameter typed is kept
        self.start(work, done, discard_cancelled=True)

    def run(self) -> None:
        """Segment the chosen image layer in a worker thread."""
        shown = self._shown()
        if shown is None:
            return
        layer, volume, meta, channel, index = shown
        method = self.method.currentText()
        params = self.params()
        device = self.device.currentText()
        budget = self.memory.text().strip() or "2GB"
        try:  # refused here, as the CLI does: "0" segmented, then the pipeline could not be saved
            memory_budget_bytes(budget)
        except InputError as exc:
            self.status.setText(str(exc))
            return
        name = self.label_name.text().strip() or "nuclei"
        if not _LABEL_NAME.fullmatch(name) or ".." in name:
            # the name is a file in the session folder: a path would write wherever it points
            self.status.setText(
                f"labels name {name!r}: use letters, digits, '_', '-' and '.', no folders (e.g. nuclei)"
            )
            return
        if name in self.viewer.layers and type(self.viewer.layers[name]).__name__ != "Labels":
            self.status.setText(f"labels name {name!r} is the name of an image layer: choose another name")
            return
        output = self.state.workdir / f"{name}.ome.zarr"
        level = volume.level
        scale, translate = labels_placement(layer, level)  # over the image, at the level segmented
        # the voxel size against the file's: what a pipeline needs to segment in the same µm,
        # and what the labels record beside the app's, as with --spacing
        against_file = spacing_against_file_of(layer)
        time_point = index[0] if len(index) == 1 else None  # a (T, Z, Y, X) layer: the point shown
        where = f" at time point {index[0]}" if len(index) == 1 else (f" at {index}" if index else "")

        def work(progress: Any) -> Any:
            spacing = against_file()  # opens the file: in the worker thread
            result = segment_volume(
                volume,
                method=method,
                params=params,
                device=device,
                memory_budget=budget,
                output=output,
                label_name=name,
                progress=progress,
                source_time_point=time_point,
                spacing_from_file=spacing.file_spacing,
            )
            return result, spacing.input_spacing

        def done(outcome: Any) -> None:
            result, spacing = outcome
            made_from = {"dls_label": None, "dls_image_layer": layer.name}
            data, kwargs, _ = labels_layer_data(result.labels, name=name, metadata={**meta, **made_from})
            kwargs["scale"], kwargs["translate"] = scale, translate
            kwargs["metadata"]["dls_level"] = level  # Meshes and Features pair them with this level
            kwargs["metadata"]["dls_labels_path"] = str(result.path)
            kwargs["metadata"]["dls_time_index"] = list(index)  # a time series: the point segmented
            rec = self.state.recorder
            if meta.get("dls_source"):
                rec.set_input(
                    meta.get("dls_plate") or meta["dls_source"], series=int(meta.get("dls_series", 0))
                )
            # the layer names its segmentation: Meshes and Features record the one that made
            # the labels they use, not the latest (two label names, two diameters)
            kwargs["metadata"]["dls_segmented"] = rec.record_segment(
                method=method,
                params=params,
                channel=channel,
                device=device,
                memory_budget=budget,
                spacing=spacing,
                level=level,
                labels=name,
            )
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_labels(data, **kwargs)
            self.state.changed("steps")
            note = " (temporary: keep them with File > Save Selected Layers)" if self.state.temporary else ""
            at = f" at resolution level {level}" if level else ""
            self.status.setText(
                f"{result.n_objects} objects{where}{at} in {result.plan.n_blocks} block(s) → "
                f"{result.path}{note}"
            )

        self.start(work, done)


#: A labels name: a file name in the session folder and an NGFF label image name.
_LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _tooltip(description: str) -> str:
    """A parameter's docstring as a tooltip: rich text, so that Qt wraps it at its own width.

    The docstring's line breaks are where its source lines end, not where the tooltip's
    should; reStructuredText literals (````x````) are shown plain.
    """
    text = " ".join(description.replace("``", "").split())
    return f"<p>{html.escape(text)}</p>"
