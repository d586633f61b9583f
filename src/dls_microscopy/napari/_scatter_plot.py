"""The Features widget's scatter plot of two feature columns, linked to the selection.

A vispy canvas in a Qt widget: shift-drag selects the points in a box, a click
selects the nearest point; the listener hears of every selection made here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QVBoxLayout, QWidget

from dls_microscopy.pipeline.interactive import ids_in_box

__all__ = ["ScatterPlot"]

#: Selected objects, in the plot and (by the Features widget) in the labels layer.
_SELECTED = (1.0, 0.85, 0.0, 1.0)
_POINT = (0.3, 0.6, 1.0, 0.8)


class ScatterPlot(QWidget):
    """A vispy scatter plot of two columns; shift-drag selects a box, a click selects a point."""

    def __init__(self, on_select: Any) -> None:
        super().__init__()
        from vispy import scene

        self.on_select = on_select
        self.canvas = scene.SceneCanvas(keys=None, size=(320, 260), bgcolor="#262930", show=False)
        grid = self.canvas.central_widget.add_grid(margin=4)
        # the axis titles name the columns: the choosers above the plot scroll out of sight
        self.y_axis = scene.AxisWidget(
            orientation="left", axis_font_size=7, tick_label_margin=4, axis_label_margin=44
        )
        self.y_axis.width_max = 60
        self.x_axis = scene.AxisWidget(
            orientation="bottom", axis_font_size=7, tick_label_margin=10, axis_label_margin=24
        )
        self.x_axis.height_max = 40
        grid.add_widget(self.y_axis, row=0, col=0)
        grid.add_widget(self.x_axis, row=1, col=1)
        self.view = grid.add_view(row=0, col=1, border_color="#888888")
        self.view.camera = "panzoom"
        self.x_axis.link_view(self.view)
        self.y_axis.link_view(self.view)
        self.markers = scene.visuals.Markers(parent=self.view.scene)
        self.box = scene.visuals.Rectangle(
            center=(0, 0),
            width=1,
            height=1,
            color=(1, 1, 1, 0.15),
            border_color="white",
            parent=self.view.scene,
        )
        self.box.visible = False
        self.ids = np.zeros(0, np.int64)
        self.x = np.zeros(0)
        self.y = np.zeros(0)
        self.selected: set[int] = set()
        self._press: Any = None
        self.canvas.events.mouse_press.connect(self._mouse_press)
        self.canvas.events.mouse_move.connect(self._mouse_move)
        self.canvas.events.mouse_release.connect(self._mouse_release)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas.native)
        self.setMinimumHeight(240)

    def set_points(
        self, ids: np.ndarray, x: np.ndarray, y: np.ndarray, x_title: str = "", y_title: str = ""
    ) -> None:
        """Show points ``(x, y)`` for object ``ids`` (all ``(N,)``), fit the view, title the axes."""
        self.ids, self.x, self.y = np.asarray(ids, np.int64), np.asarray(x, float), np.asarray(y, float)
        self.x_axis.axis.axis_label = x_title
        self.y_axis.axis.axis_label = y_title
        self._draw()
        finite = np.isfinite(self.x) & np.isfinite(self.y)
        if finite.any():
            x0, x1 = float(self.x[finite].min()), float(self.x[finite].max())
            y0, y1 = float(self.y[finite].min()), float(self.y[finite].max())
            pad_x, pad_y = 0.05 * (x1 - x0 or 1.0), 0.05 * (y1 - y0 or 1.0)
            self.view.camera.set_range(x=(x0 - pad_x, x1 + pad_x), y=(y0 - pad_y, y1 + pad_y), margin=0)

    def set_selected(self, ids: Iterable[int]) -> None:
        """Highlight ``ids`` (without telling the listener)."""
        self.selected = {int(i) for i in ids}
        self._draw()

    def _draw(self) -> None:
        n = len(self.ids)
        if n == 0:
            self.markers.set_data(np.zeros((0, 2)))
            return
        pos = np.column_stack([self.x, self.y])
        pos[~np.isfinite(pos)] = np.nan
        colours = np.tile(np.array(_POINT), (n, 1))
        sizes = np.full(n, 6.0)
        if self.selected:
            mask = np.isin(self.ids, list(self.selected))
            colours[mask] = _SELECTED
            sizes[mask] = 9.0
        ok = np.isfinite(pos).all(axis=1)
        self.markers.set_data(pos[ok], face_color=colours[ok], size=sizes[ok], edge_width=0)
        self.canvas.update()

    def select_box(self, box: tuple[float, float, float, float]) -> set[int]:
        """Select the points inside ``box = (x0, x1, y0, y1)`` in data units and tell the listener."""
        chosen = {int(i) for i in ids_in_box(self.ids, self.x, self.y, box)}
        self.set_selected(chosen)
        self.on_select(chosen)
        return chosen

    # -- mouse ---------------------------------------------------------------------
    def _data_pos(self, pos: Any) -> np.ndarray:
        tr = self.canvas.scene.node_transform(self.view.scene)
        return np.asarray(tr.map(pos))[:2]

    def _mouse_press(self, event: Any) -> None:
        if event.button == 1 and "Shift" in [k.name for k in event.modifiers]:
            self._press = self._data_pos(event.pos)
            self.view.camera.interactive = False
        elif event.button == 1:
            self._press = None
            self._click = self._data_pos(event.pos)

    def _mouse_move(self, event: Any) -> None:
        if self._press is None or not event.is_dragging:
            return
        p = self._data_pos(event.pos)
        centre = (self._press + p) / 2
        w, h = abs(p[0] - self._press[0]), abs(p[1] - self._press[1])
        if w > 0 and h > 0:
            self.box.center = tuple(centre)
            self.box.width, self.box.height = w, h
            self.box.visible = True

    def _mouse_release(self, event: Any) -> None:
        if self._press is not None:
            p = self._data_pos(event.pos)
            self.box.visible = False
            self.view.camera.interactive = True
            self.select_box((self._press[0], p[0], self._press[1], p[1]))
            self._press = None
            return
        click = getattr(self, "_click", None)
        if click is None or len(self.ids) == 0:
            return
        self._click = None
        p = self._data_pos(event.pos)
        if np.hypot(*(p - click)) > 1e-9 * (1 + np.hypot(*click)):  # a pan, not a click
            return
        rect = self.view.camera.rect
        d = np.hypot((self.x - p[0]) / (rect.width or 1), (self.y - p[1]) / (rect.height or 1))
        i = int(np.nanargmin(d))
        chosen = {int(self.ids[i])} if d[i] < 0.03 else set()
        self.set_selected(chosen)
        self.on_select(chosen)
