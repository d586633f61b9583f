"""The read-only Qt table model of the Features widget's object table."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt

__all__ = ["TableModel"]


class TableModel(QAbstractTableModel):
    """A read-only Qt model over a pyarrow table (values kept as numpy columns)."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        # the object id first, then the features, then the other metadata (often empty)
        rank = {"Metadata_ObjectID": 0}
        self.names = sorted(
            table.column_names, key=lambda c: rank.get(c, 2 if c.startswith("Metadata_") else 1)
        )
        self.columns = [np.asarray(table.column(c).to_numpy(zero_copy_only=False)) for c in self.names]
        self.n_rows = table.num_rows

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else self.n_rows

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt API
        return 0 if parent.isValid() else len(self.names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        value = self.columns[index.column()][index.row()]
        if role == Qt.ItemDataRole.UserRole:
            return value.item() if isinstance(value, np.generic) else value
        if role == Qt.ItemDataRole.DisplayRole:
            if isinstance(value, float | np.floating):
                return f"{value:.4g}"
            return str(value)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        return self.names[section] if orientation == Qt.Orientation.Horizontal else str(section + 1)
