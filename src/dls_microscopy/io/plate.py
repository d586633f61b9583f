"""HCS plates in OME-Zarr: plate → wells → fields (NGFF 0.4 and 0.5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import zarr

from dls_microscopy.errors import InputError, MetadataError
from dls_microscopy.io.ngff_metadata import detect_ngff_version, validate_ngff_attrs

__all__ = ["PlateLayout", "Well", "read_plate_layout", "resolve_field"]


@dataclasses.dataclass(frozen=True)
class Well:
    """One well of a plate.

    Attributes
    ----------
    path : str
        Path of the well group inside the plate, ``"B/3"`` style.
    row, column : str
        Row and column names (``"B"``, ``"3"``).
    fields : tuple of str
        Paths of the field images inside the well group.
    """

    path: str
    row: str
    column: str
    fields: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PlateLayout:
    """Layout of an HCS plate: its name, rows, columns and wells with their fields."""

    path: Path
    name: str | None
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    wells: tuple[Well, ...]
    ngff_version: str | None

    @property
    def n_fields(self) -> int:
        """Total number of fields over all wells."""
        return sum(len(w.fields) for w in self.wells)

    def iter_fields(self):
        """Yield ``(well, field_index, field_path)`` in row-major well order."""
        for well in self.wells:
            for i, f in enumerate(well.fields):
                yield well, i, f

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "name": self.name,
            "rows": list(self.rows),
            "columns": list(self.columns),
            "wells": {w.path: list(w.fields) for w in self.wells},
            "n_fields": self.n_fields,
        }


def read_plate_layout(group: zarr.Group, path: Path) -> PlateLayout:
    """Read and validate the plate and well metadata of the plate group at ``path``."""
    attrs = dict(group.attrs)
    version = detect_ngff_version(attrs)
    validate_ngff_attrs(attrs, kind="plate", version=version, path=path)
    plate = (attrs.get("ome") or attrs)["plate"]
    rows = tuple(r["name"] for r in plate["rows"])
    columns = tuple(c["name"] for c in plate["columns"])
    wells = []
    for w in sorted(plate["wells"], key=lambda w: (w["rowIndex"], w["columnIndex"])):
        wpath = w["path"]
        try:
            wgroup = group[wpath]
        except KeyError as exc:
            raise MetadataError(f"plate lists well {wpath!r}, which does not exist", path=path) from exc
        wattrs = dict(wgroup.attrs)
        validate_ngff_attrs(
            wattrs, kind="well", version=detect_ngff_version(wattrs) or version, path=path / wpath
        )
        images = (wattrs.get("ome") or wattrs)["well"]["images"]
        wells.append(
            Well(
                path=wpath,
                row=rows[w["rowIndex"]],
                column=columns[w["columnIndex"]],
                fields=tuple(str(im["path"]) for im in images),
            )
        )
    return PlateLayout(
        path=path,
        name=plate.get("name"),
        rows=rows,
        columns=columns,
        wells=tuple(wells),
        ngff_version=version,
    )


def _normalise_well(name: str) -> str:
    name = name.strip().upper().replace("/", "")
    row = "".join(ch for ch in name if ch.isalpha())
    col = name[len(row) :].lstrip("0") or "0"
    return f"{row}{col}"


def resolve_field(
    layout: PlateLayout, *, well: str | None, field: int | None, series: int
) -> tuple[str, dict[str, Any]]:
    """Path of one field inside the plate, and its ``Metadata_*``-ready position info.

    ``well`` accepts ``"B/3"``, ``"B3"`` or ``"B03"``; without ``well`` the
    ``series``-th field of the plate (row-major) is chosen.
    """
    if well is not None:
        wanted = _normalise_well(well)
        match = [w for w in layout.wells if _normalise_well(w.row + w.column) == wanted]
        if not match:
            raise InputError(
                f"well {well!r} is not in the plate (wells: {', '.join(w.path for w in layout.wells)})",
                path=layout.path,
            )
        w = match[0]
        idx = field or 0
        if not 0 <= idx < len(w.fields):
            raise InputError(
                f"field {idx} does not exist in well {w.path} ({len(w.fields)} fields)",
                path=layout.path,
            )
    else:
        fields = list(layout.iter_fields())
        if not fields:
            raise InputError("the plate has no fields", path=layout.path)
        if not 0 <= series < len(fields):
            raise InputError(
                f"field number {series} does not exist (the plate has {len(fields)} fields)",
                path=layout.path,
            )
        w, idx, _ = fields[series]
    info = {
        "plate": layout.name or layout.path.name,
        "well": w.path,
        "row": w.row,
        "column": w.column,
        "field": idx,
    }
    return f"{w.path}/{w.fields[idx]}", info
