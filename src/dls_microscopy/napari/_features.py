"""Features & embeddings widget: measure objects, a sortable table and a linked scatter plot.

Selecting rows in the table, points in the plot (shift-drag a box, or click
a point) or an object in the viewer (click it) selects the same objects
everywhere: they are highlighted in the labels layer, in the table and in
the plot.

The object table's Qt model lives in :mod:`._feature_table`, the scatter plot in
:mod:`._scatter_plot`; this module is the widget that links them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from qtpy.QtCore import QItemSelection, QItemSelectionModel, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QTableView,
)

from dls_microscopy.napari._channel_choice import channel_choices, channel_name, measurement_problem
from dls_microscopy.napari._feature_table import TableModel
from dls_microscopy.napari._image_layers import input_spacing_of
from dls_microscopy.napari._levels import layer_level_spacings, made_at_level
from dls_microscopy.napari._scatter_plot import _POINT, _SELECTED, ScatterPlot  # noqa: F401 - re-exported
from dls_microscopy.napari._tasks import LayerChooser, TaskWidget, labelled, record_labels_used, shown_volume
from dls_microscopy.pipeline.interactive import (
    PROJECTION_COLUMNS,
    measure_volumes,
    numeric_feature_columns,
    plot_values,
    session_field,
    volume_from_layer,
)

__all__ = ["FeaturesWidget", "ScatterPlot", "TableModel"]

log = logging.getLogger(__name__)

_DIMMED = (0.55, 0.55, 0.55, 0.25)


class FeaturesWidget(TaskWidget):
    """Measure every object of a labels layer on chosen image layers; table + scatter plot, linked."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer, "Measure")
        self.labels = LayerChooser(napari_viewer, ("labels",))
        self.channels = QListWidget()
        self.channels.setMaximumHeight(90)
        self.compartment = QLineEdit("Nuclei")
        self.models = QLineEdit()
        self.models.setPlaceholderText("optional: ';'-separated model.pt files (dls-microscopy embed train)")
        self.form.addWidget(labelled("labels", self.labels))
        self.form.addWidget(labelled("channels", self.channels))
        self.form.addWidget(labelled("compartment", self.compartment))
        self.form.addWidget(labelled("embedding models", self.models))
        self._channels_of: str | None = None  # the labels the channels were listed for
        self.labels.currentTextChanged.connect(self._list_channels)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._list_channels)
        self._list_channels()
        self.table_view = QTableView()
        self.table_view.setSortingEnabled(True)
        self.table_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table_view.setMinimumHeight(180)
        # the informative end of a long name shows: "…AreaShape_Volume" (the whole name as a tooltip)
        self.table_view.horizontalHeader().setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.x_column = QComboBox()
        self.y_column = QComboBox()
        self.plot = ScatterPlot(self._plot_selected)
        layout = self.outer
        layout.insertWidget(layout.count() - 1, self.table_view, 2)
        layout.insertWidget(layout.count() - 1, labelled("x", self.x_column))
        layout.insertWidget(layout.count() - 1, labelled("y", self.y_column))
        layout.insertWidget(layout.count() - 1, self.plot, 2)
        layout.setStretch(layout.count() - 1, 0)  # the table and the plot take the dock's height
        self.x_column.currentTextChanged.connect(self._replot)
        self.y_column.currentTextChanged.connect(self._replot)
        self.run_button.clicked.connect(self.safely(self.run))
        self.table: Any = None
        self.ids = np.zeros(0, np.int64)
        self.selected: set[int] = set()
        self._labels_layer: Any = None
        self._original_colormap: Any = None
        self._syncing = False
        napari_viewer.mouse_drag_callbacks.append(self._viewer_click)
        self.state.listeners.append(self._state_changed)

    def _state_changed(self, what: str) -> None:
        """Show a table that another tab produced (e.g. a pipeline run on the open image)."""
        table = self.state.features
        if what == "features" and table is not None and table is not self.table:
            self.set_table(table, None)
            self.status.setText(
                f"{table.num_rows} objects from the pipeline run (not linked to a labels layer)"
            )

    # -- inputs -------------------------------------------------------------------
    def _list_channels(self, *_: Any) -> None:
        """List the image layers; those of the labels' image and voxel grid checked.

        With several images or plate fields open, the others are listed unchecked
        (:func:`._channel_choice.channel_choices`).  The user's ticks are kept while
        the labels stay the same; other labels get their own choice.
        """
        labels = self.labels.layer()
        name = labels.name if labels is not None else None
        kept: dict[str, Qt.CheckState] = {}
        if name == self._channels_of:
            for i in range(self.channels.count()):
                item = self.channels.item(i)
                kept[item.data(Qt.ItemDataRole.UserRole)] = item.checkState()
        self._channels_of = name
        self.channels.clear()
        images = [layer for layer in self.viewer.layers if type(layer).__name__ == "Image"]
        choices = channel_choices(labels, images)
        several = len({c.where for c in choices}) > 1  # then say which image each layer is of
        for choice in choices:
            shown = f"{choice.name}  ({choice.where})" if several and choice.where else choice.name
            item = QListWidgetItem(shown)
            item.setData(Qt.ItemDataRole.UserRole, choice.name)
            item.setToolTip(choice.note)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            default = Qt.CheckState.Checked if choice.checked else Qt.CheckState.Unchecked
            item.setCheckState(kept.get(choice.name, default))
            self.channels.addItem(item)

    def chosen_channels(self) -> list[str]:
        """Names of the checked image layers."""
        return [
            self.channels.item(i).data(Qt.ItemDataRole.UserRole)
            for i in range(self.channels.count())
            if self.channels.item(i).checkState() == Qt.CheckState.Checked
        ]

    def set_channels(self, names: Iterable[str]) -> None:
        """Check the image layers ``names`` and uncheck the others."""
        chosen = set(names)
        for i in range(self.channels.count()):
            item = self.channels.item(i)
            on = item.data(Qt.ItemDataRole.UserRole) in chosen
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    # -- running ------------------------------------------------------------------
    def run(self) -> None:
        """Measure in a worker thread, then fill the table and the plot."""
        labels = self.labels.layer()
        if labels is None:
            self.status.setText("no labels layer: segment an image first (Segment widget)")
            return
        images = [self.viewer.layers[n] for n in self.chosen_channels() if n in self.viewer.layers]
        if not images:
            self.status.setText("choose at least one image layer (channel) to measure")
            return
        problem = measurement_problem(labels, images)
        if problem:
            self.status.setText(problem)
            return
        import dask.array as da

        names = [channel_name(layer) for layer in images]
        # labels segmented at a coarser level are measured with the images at that level
        level = made_at_level(labels)  # measurement_problem: every image has it, on the labels' grid
        # a time series: the time point shown (of each layer; labels may be one time point's)
        shown = [shown_volume(self.viewer, layer) for layer in images]
        stack = da.stack([_lazy(levels[level]) for levels, _ in shown])
        level_spacing = layer_level_spacings(images[0])[level]
        image = volume_from_layer(stack, scale=level_spacing, channel_names=names)
        lab = volume_from_layer(_lazy(shown_volume(self.viewer, labels)[0][0]), scale=labels.scale)
        segmented = labels.metadata.get("dls_time_index")  # labels of one time point (Segment tab)
        if labels.ndim == 3 and segmented and list(shown[0][1]) != list(segmented):
            where = segmented[0] if len(segmented) == 1 else tuple(segmented)
            self.status.setText(
                f"the labels are of time point {where}, the images shown of another: move the time "
                "slider back to it, or segment this time point"
            )
            return
        meta = dict(images[0].metadata)
        time_point = shown[0][1][0] if len(shown[0][1]) == 1 else None  # a (T, Z, Y, X) layer
        compartment = self.compartment.text().strip() or "Nuclei"
        models = [m.strip() for m in self.models.text().split(";") if m.strip()]
        spacing_of = input_spacing_of(images[0])  # what a pipeline needs to measure in the same µm

        def work(progress: Any) -> Any:
            # named as a pipeline run names the image (a plate's field, a time point of a series)
            field = session_field(
                source=meta.get("dls_source"),
                name=images[0].name,
                plate=meta.get("dls_plate"),
                time_point=time_point,
                series=int(meta.get("dls_series") or 0),
            )
            table = measure_volumes(
                image,
                lab,
                compartment=compartment,
                time_point=time_point,
                embedding_models=models,
                progress=progress,
                image_id=field.image_id,
                plate=field.plate,
                well=field.well,
                site=field.site,
            )
            return table, field, spacing_of()

        def done(result: Any) -> None:
            table, field, spacing = result
            self.set_table(table, labels)
            self.state.features = table
            self.state.features_labels = labels.name
            self.state.features_field = field
            self.state.compartment = compartment
            all_channels = [n for n in (lay.metadata.get("dls_channel") for lay in images) if n]
            record_labels_used(self.state.recorder, labels)
            self.state.recorder.record_features(
                channels=None if len(all_channels) == _n_file_channels(images[0]) else names,
                compartment=compartment,
                spacing=spacing,
                level=level,
            )
            self.state.recorder.record_embeddings(models)
            self.state.changed("features")
            at = f" (resolution level {level})" if level else ""
            self.status.setText(f"{table.num_rows} objects, {table.num_columns} columns{at}")

        self.start(work, done)

    # -- showing ------------------------------------------------------------------
    def set_table(self, table: Any, labels_layer: Any) -> None:
        """Show ``table`` (one row per object of ``labels_layer``, or None) in the table and the plot."""
        self.table = table
        self._restore_colormap()
        self._labels_layer = labels_layer
        self._original_colormap = labels_layer.colormap if labels_layer is not None else None
        self.selected = set()
        self.ids = np.asarray(table.column("Metadata_ObjectID").to_numpy(), np.int64)
        model = TableModel(table)
        proxy = QSortFilterProxyModel(self)
        proxy.setSourceModel(model)
        proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.table_view.setModel(proxy)
        self.table_view.selectionModel().selectionChanged.connect(self._table_selected)
        columns = [*numeric_feature_columns(table), *PROJECTION_COLUMNS]
        for combo in (self.x_column, self.y_column):
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(columns)
            combo.blockSignals(False)
        prefer = [c for c in columns if c.endswith("_Volume")] or columns[:1]
        self.x_column.setCurrentText(prefer[0])
        other = [c for c in columns if "Intensity_Mean" in c] or columns[1:2]
        self.y_column.setCurrentText(other[0] if other else prefer[0])
        self._replot()

    def _replot(self, *_: Any) -> None:
        if self.table is None or not self.x_column.currentText() or not self.y_column.currentText():
            return
        x_name, y_name = self.x_column.currentText(), self.y_column.currentText()
        x, y = plot_values(self.table, x_name), plot_values(self.table, y_name)
        self.plot.set_points(self.ids, x, y, x_title=x_name, y_title=y_name)
        self.plot.set_selected(self.selected)

    # -- selection ----------------------------------------------------------------
    def select_objects(self, ids: Iterable[int], *, source: str = "api") -> None:
        """Select objects by id: highlight them in the viewer, the table and the plot."""
        if self._syncing:
            return
        self._syncing = True
        try:
            self.selected = {int(i) for i in ids if int(i) in set(self.ids.tolist())}
            if source != "plot":
                self.plot.set_selected(self.selected)
            if source != "table":
                self._select_rows(self.selected)
            self._highlight(self.selected)
        finally:
            self._syncing = False

    def _plot_selected(self, ids: set[int]) -> None:
        self.select_objects(ids, source="plot")

    def _table_selected(self, *_: Any) -> None:
        if self._syncing:
            return
        proxy = self.table_view.model()
        rows = {proxy.mapToSource(i).row() for i in self.table_view.selectionModel().selectedRows()}
        self.select_objects({int(self.ids[r]) for r in rows}, source="table")

    def _select_rows(self, ids: set[int]) -> None:
        proxy = self.table_view.model()
        if proxy is None:
            return
        selection = QItemSelection()
        for row in np.flatnonzero(np.isin(self.ids, list(ids))):
            index = proxy.mapFromSource(proxy.sourceModel().index(int(row), 0))
            selection.select(index, index)
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self.table_view.selectionModel().select(selection, flags)
        if ids and not selection.isEmpty():
            self.table_view.scrollTo(selection.indexes()[0])

    def selected_rows(self) -> list[int]:
        """Object ids of the rows selected in the table."""
        proxy = self.table_view.model()
        if proxy is None:
            return []
        rows = sorted({proxy.mapToSource(i).row() for i in self.table_view.selectionModel().selectedRows()})
        return [int(self.ids[r]) for r in rows]

    def _highlight(self, ids: set[int]) -> None:
        layer = self._labels_layer
        if layer is None or layer not in self.viewer.layers:
            return
        if not ids:
            self._restore_colormap()
            return
        from napari.utils.colormaps import DirectLabelColormap

        colours: dict[int | None, Any] = {None: _DIMMED, 0: (0, 0, 0, 0)}
        colours.update({int(i): _SELECTED for i in ids})
        layer.colormap = DirectLabelColormap(color_dict=colours)
        layer.visible = True  # it may be hidden behind its meshes

    def _restore_colormap(self) -> None:
        layer = self._labels_layer
        if layer is not None and self._original_colormap is not None and layer in self.viewer.layers:
            layer.colormap = self._original_colormap

    def _viewer_click(self, viewer: Any, event: Any) -> None:
        layer = self._labels_layer
        if layer is None or self.table is None or layer not in viewer.layers:
            return
        value = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=event.dims_displayed,
            world=True,
        )
        if isinstance(value, tuple):  # multiscale: (level, value)
            value = value[-1]
        if value is None:
            return
        self.pick_object(int(value))

    def pick_object(self, object_id: int) -> None:
        """Select the object clicked in the viewer (0, the background, clears the selection)."""
        self.select_objects(set() if object_id == 0 else {object_id}, source="viewer")


def _lazy(data: Any) -> Any:
    """``data`` as a dask array, without reading it."""
    import dask.array as da

    if isinstance(data, da.Array):
        return data
    if hasattr(data, "to_dask"):
        return data.to_dask()
    return da.from_array(np.asarray(data))


def _n_file_channels(layer: Any) -> int:
    """Channels of the file a layer came from (1 when not from a file)."""
    source = layer.metadata.get("dls_source")
    if not source:
        return 1
    try:
        from dls_microscopy.io import open_volume

        return open_volume(source, series=int(layer.metadata.get("dls_series", 0))).n_channels
    except Exception:  # the file may have moved; then record the channels explicitly
        return -1
