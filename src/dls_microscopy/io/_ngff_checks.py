"""Checks of OME-NGFF metadata that ``ome-zarr-models`` does not make.

Run on the raw JSON once a model of ``ome-zarr-models`` has accepted it
(:func:`dls_microscopy.io.ngff_metadata.validate_ngff_attrs`); each check cites
the rule of the specification or of its JSON-schema test suites it implements.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Report", "supplementary_checks"]


class Report:
    """What the supplementary checks found: errors, and notes to log."""

    def __init__(self, *, strict: bool):
        self.strict = strict
        self.errors: list[str] = []
        self.notes: list[str] = []

    def error(self, where: str, what: str) -> None:
        self.errors.append(f"{where}: {what}")

    def tolerate(self, where: str, what: str) -> None:  # a warning, an error when strict
        (self.errors if self.strict else self.notes).append(f"{where}: {what}")

    def require(self, section: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
        # the "required" lists of the strict_* schemas (SHOULD-level rules)
        missing = [key for key in keys if key not in section] if self.strict else []
        self.errors += [f"{where}: '{key}' is required (strict)" for key in missing]


def supplementary_checks(ome: Mapping[str, Any], kind: str, version: str, report: Report) -> None:
    is_v04 = version == "0.4"
    if kind in ("image", "label") and "multiscales" in ome:
        _check_omero(ome.get("omero"), report)
        if is_v04:
            _check_transform_lengths(ome["multiscales"], report)
        for i, multiscale in enumerate(ome["multiscales"]):
            keys = ("name", "type", "metadata") + (("version",) if is_v04 else ())
            report.require(multiscale, keys, f"multiscales[{i}]")
    if kind == "label":
        label = ome.get("image-label")
        if isinstance(label, Mapping):
            _check_image_label(label, report)
            report.require(label, ("colors", "version") if is_v04 else ("colors",), "image-label")
        else:  # required by the 0.5 label schema; without it the group is an image
            report.error("image-label", "a label image needs an 'image-label' object")
    if kind in ("plate", "bioformats2raw") and ome.get("plate") is not None:
        _check_plate(ome["plate"], version, report)
        report.require(ome["plate"], ("name", "version") if is_v04 else ("name",), "plate")
    if kind == "well":
        _check_well(ome["well"], report)
        if is_v04:
            report.require(ome["well"], ("version",), "well")


def _is_integer(value: Any) -> bool:
    # JSON Schema "integer": a number without fractional part; not a string, not a bool.
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _check_integer(section: Mapping[str, Any], key: str, where: str, report: Report, *, minimum: int) -> None:
    """Schema: plate/well ids, counts and times are integers with a minimum; the
    models coerce ``"0"`` to 0 and accept negative times."""
    if key in section:
        value = section[key]
        if not _is_integer(value):
            report.error(f"{where}.{key}", f"must be an integer, got {value!r}")
        elif value < minimum:
            report.error(f"{where}.{key}", f"must be >= {minimum}, got {value!r}")


_HEX_COLOR = re.compile(r"[0-9A-Fa-f]{6}")


def _check_omero(omero: Any, report: Report) -> None:
    """Spec (0.5 text, 0.4 schema): each "omero" channel MUST have a "color", a string
    of 6 hexadecimal digits, and a "window" with numbers "min", "max", "start", "end".
    The 0.5 models do not look at "omero"; the 0.4 ones coerce ``"100"`` to 100."""
    if omero is None:
        return
    if not isinstance(omero, Mapping) or not isinstance(omero.get("channels"), list):
        report.error("omero", "must be an object with a 'channels' list")
        return
    for i, channel in enumerate(omero["channels"]):
        where = f"omero.channels[{i}]"
        if not isinstance(channel, Mapping):
            report.error(where, "must be an object")
            continue
        color = channel.get("color")
        if not (isinstance(color, str) and _HEX_COLOR.fullmatch(color)):
            report.error(f"{where}.color", f"must be 6 hex digits (RRGGBB), got {color!r}")
        window = channel.get("window")
        if not isinstance(window, Mapping):
            report.error(f"{where}.window", "must be an object with min, max, start and end")
            continue
        for key in ("min", "max", "start", "end"):
            value = window.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                report.error(f"{where}.window.{key}", f"must be a number, got {value!r}")


def _check_transform_lengths(multiscales: list[Any], report: Report) -> None:
    """0.4 spec: "The length of the scale and translation array MUST be the same as
    the length of axes".  The 0.4 schema does not check it and the 0.4 suite lists a
    document breaking it as valid: tolerated unless strict."""
    for i, multiscale in enumerate(multiscales):
        n_axes = len(multiscale["axes"])
        for j, dataset in enumerate(multiscale["datasets"]):
            for k, transform in enumerate(dataset["coordinateTransformations"]):
                vector = transform.get(transform.get("type"))
                if isinstance(vector, list) and len(vector) != n_axes:
                    report.tolerate(
                        f"multiscales[{i}].datasets[{j}].coordinateTransformations[{k}]",
                        f"{transform['type']} has {len(vector)} values for {n_axes} axes",
                    )


def _check_image_label(label: Mapping[str, Any], report: Report) -> None:
    """Label schema: "colors" and "properties", when present, are non-empty lists (the
    models accept []); a property's "label-value" is an integer (not ``"1"``)."""
    for key in ("colors", "properties"):
        if key in label and not (isinstance(label[key], list) and label[key]):
            report.error(f"image-label.{key}", "must be a non-empty list")
    for i, prop in enumerate(label.get("properties") or ()):
        if not _is_integer(value := prop.get("label-value")):
            report.error(f"image-label.properties[{i}].label-value", f"must be an integer, got {value!r}")


def _check_plate(plate: Mapping[str, Any], version: str, report: Report) -> None:
    for key in ("rows", "columns", "wells"):  # schema: minItems 1 (models accept [])
        if not plate[key]:
            report.error(f"plate.{key}", "must not be empty")
            return
    for i, acquisition in enumerate(plate.get("acquisitions") or ()):
        where = f"plate.acquisitions[{i}]"
        # spec: id "MUST be an unique integer identifier greater than or equal to 0";
        # schema: maximumfieldcount > 0, starttime and endtime integers >= 0
        _check_integer(acquisition, "id", where, report, minimum=0)
        _check_integer(acquisition, "maximumfieldcount", where, report, minimum=1)
        _check_integer(acquisition, "starttime", where, report, minimum=0)
        _check_integer(acquisition, "endtime", where, report, minimum=0)
        report.require(acquisition, ("name", "maximumfieldcount"), where)
    _check_integer(plate, "field_count", "plate", report, minimum=1)
    _check_plate_wells(plate, version, report)


def _check_plate_wells(plate: Mapping[str, Any], version: str, report: Report) -> None:
    """Spec: a well "path MUST consist of a name in the rows list, a file separator
    (/), and a name from the columns list, in that order"; "rowIndex, columnIndex,
    and path MUST all refer to the same row/column pair"; wells are unique (schema).
    The 0.4 schema only checks the path pattern and the 0.4 suites, strict ones too,
    call column/row paths valid: accepted with a warning in 0.4 (0.5 rejects them)."""
    rows = [row["name"] for row in plate["rows"]]
    columns = [column["name"] for column in plate["columns"]]
    seen: set[str] = set()
    for i, well in enumerate(plate["wells"]):
        where, path = f"plate.wells[{i}]", well["path"]
        if path in seen:
            report.error(f"{where}.path", f"well {path!r} is listed twice")
        seen.add(path)
        row_index, column_index = well["rowIndex"], well["columnIndex"]
        if not (_is_integer(row_index) and 0 <= row_index < len(rows)):
            report.error(f"{where}.rowIndex", f"{row_index!r} is not an index into the rows")
        elif not (_is_integer(column_index) and 0 <= column_index < len(columns)):
            report.error(f"{where}.columnIndex", f"{column_index!r} is not an index into the columns")
        else:
            row, column = rows[int(row_index)], columns[int(column_index)]
            if path == f"{row}/{column}":
                continue
            if version == "0.4" and path == f"{column}/{row}":
                report.notes.append(f"{where}.path: {path!r} names the column before the row")
                continue
            report.error(
                f"{where}.path",
                f"{path!r} does not match rowIndex and columnIndex (expected '{row}/{column}')",
            )


def _check_well(well: Mapping[str, Any], report: Report) -> None:
    """Well schema: "images" lists at least one field of view (the models accept []),
    and an image's "acquisition" is an integer (the models coerce ``"0"``)."""
    if not well["images"]:
        report.error("well.images", "must list at least one field of view")
    for i, image in enumerate(well["images"]):
        if "acquisition" in image and not _is_integer(image["acquisition"]):
            report.error(f"well.images[{i}].acquisition", f"must be an integer, got {image['acquisition']!r}")
