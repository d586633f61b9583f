"""Validation of OME-NGFF (OME-Zarr) group attributes, versions 0.4 and 0.5.

The models of ``ome-zarr-models`` do the bulk of the work.  Where they disagree
with the specification and its official JSON-schema test suites, small explicit
checks below close the gap, each citing the rule it implements.  Problems are
raised as :class:`~dls_microscopy.errors.MetadataError` with a short message
naming the field; warnings of ``ome-zarr-models`` become log records.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any, Literal, get_args

from ome_zarr_models import v04, v05  # their __init__ imports every submodule used
from ome_zarr_models.base import BaseAttrsv2
from ome_zarr_models.v05.base import BaseOMEAttrs
from pydantic import BaseModel, Field, ValidationError, model_validator

from dls_microscopy.errors import MetadataError

__all__ = ["SUPPORTED_NGFF_VERSIONS", "NgffKind", "detect_ngff_version", "validate_ngff_attrs"]

logger = logging.getLogger(__name__)

SUPPORTED_NGFF_VERSIONS = ("0.4", "0.5")
NgffKind = Literal["image", "label", "labels", "plate", "well", "bioformats2raw"]


# -- 0.4 models relaxed where the 0.4 schema and suites accept more; the two library
# -- checks switched off are redone, version-aware, by _check_transform_lengths and
# -- _check_plate_wells.  (Pydantic replaces a validator redefined under its name.)
class _MultiscaleV04(v04.multiscales.Multiscale):
    @model_validator(mode="after")
    def _ensure_axes_dataset_transforms(self) -> _MultiscaleV04:
        return self


class _ImageAttrsV04(v04.image.ImageAttrs):
    multiscales: list[_MultiscaleV04] = Field(..., min_length=1)


class _ImageLabelAttrsV04(v04.image_label.ImageLabelAttrs):
    multiscales: list[_MultiscaleV04]


class _PlateV04(v04.plate.Plate):
    @model_validator(mode="after")
    def _check_well_paths(self) -> _PlateV04:
        return self


class _HCSAttrsV04(v04.hcs.HCSAttrs):
    plate: _PlateV04


class _BioFormats2RawAttrsV04(v04.bioformats2raw.BioFormats2RawAttrs):
    plate: _PlateV04 | None = None


for _model in (_ImageAttrsV04, _ImageLabelAttrsV04):
    _model.model_rebuild(_types_namespace={"Dataset": v04.multiscales.Dataset})


# The spec's label schemas cover the "image-label" key alone (the multiscales of a
# label image are an image's): these models validate a group holding only that key.
class _ImageLabelOnlyV04(BaseAttrsv2):
    image_label: v04.image_label_types.Label = Field(..., alias="image-label")


class _ImageLabelOnlyV05(BaseOMEAttrs):
    image_label: v05.image_label_types.Label = Field(..., alias="image-label")


_MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("0.4", "image"): _ImageAttrsV04,
    ("0.4", "label"): _ImageLabelAttrsV04,
    ("0.4", "labels"): v04.labels.LabelsAttrs,
    ("0.4", "plate"): _HCSAttrsV04,
    ("0.4", "well"): v04.well.WellAttrs,
    ("0.4", "bioformats2raw"): _BioFormats2RawAttrsV04,
    ("0.5", "image"): v05.image.ImageAttrs,
    ("0.5", "label"): v05.image_label.ImageLabelAttrs,
    ("0.5", "labels"): v05.labels.LabelsAttrs,
    ("0.5", "plate"): v05.hcs.HCSAttrs,
    ("0.5", "well"): v05.well.WellAttrs,
    ("0.5", "bioformats2raw"): v05.bioformats2raw.BioFormats2RawAttrs,
}
_LABEL_ONLY_MODELS = {"0.4": _ImageLabelOnlyV04, "0.5": _ImageLabelOnlyV05}


def detect_ngff_version(attrs: Mapping[str, Any]) -> str | None:
    """Return the OME-NGFF version a group's attributes declare.

    Parameters
    ----------
    attrs : Mapping
        The group attributes as stored: ``attributes`` of a ``zarr.json`` (0.5)
        or the content of ``.zattrs`` (0.4 and earlier).

    Returns
    -------
    str or None
        ``ome.version``; for zarr v2 groups the first ``version`` found in
        ``multiscales[0]``, ``plate``, ``well`` or ``image-label``.  None when no
        version is declared (not NGFF, or e.g. a 0.4 well without one).

    Examples
    --------
    >>> detect_ngff_version({"ome": {"version": "0.5", "multiscales": []}})
    '0.5'
    >>> detect_ngff_version({"well": {"images": [{"path": "0"}], "version": "0.4"}})
    '0.4'
    >>> detect_ngff_version({"foo": 1}) is None
    True
    """
    if not isinstance(attrs, Mapping):
        return None
    if "ome" in attrs:
        ome = attrs["ome"]
        version = ome.get("version") if isinstance(ome, Mapping) else None
        return version if isinstance(version, str) else None
    sections = [attrs.get(key) for key in ("plate", "well", "image-label")]
    multiscales = attrs.get("multiscales")
    if isinstance(multiscales, list) and multiscales:
        sections.insert(0, multiscales[0])
    for section in sections:
        if isinstance(section, Mapping) and isinstance(section.get("version"), str):
            return section["version"]
    return None


def validate_ngff_attrs(
    attrs: Mapping[str, Any],
    *,
    kind: NgffKind,
    version: str | None = None,
    strict: bool = False,
    path: str | os.PathLike[str] | None = None,
) -> BaseModel:
    """Validate the OME-NGFF attributes of one Zarr group.

    Parameters
    ----------
    attrs : Mapping
        The group attributes exactly as stored: for 0.5 the mapping holding the
        ``"ome"`` key, for 0.4 the top-level ``.zattrs`` mapping.
    kind : {"image", "label", "labels", "plate", "well", "bioformats2raw"}
        A multiscale image, a label image, the ``labels`` group, an HCS plate, a
        well, or a bioformats2raw collection root.
    version : str, optional
        The version to validate against, by default the declared one (see
        :func:`detect_ngff_version`); it must agree with a declared one.
    strict : bool
        Also enforce the SHOULD-level rules of the spec's ``strict_*`` schemas
        (names, versions, colours...) and reject the deviations of the Notes.
    path : path-like, optional
        The group, named in error and log messages.

    Returns
    -------
    pydantic.BaseModel
        The ``ome-zarr-models`` attributes model (of ``"ome"`` for 0.5), or a
        subclass; for a label group without ``multiscales``, a model of its
        ``image-label`` only (the spec's label schemas cover just that key).

    Raises
    ------
    MetadataError
        The attributes are not valid, or the version is not supported.
    ValueError
        ``kind`` is not one of the kinds above.

    Notes
    -----
    Only logged, unless ``strict``: 0.4 scale/translation lengths differing from
    the number of axes, a 0.5 ``labels`` group without ``ome.version``.  Always
    only logged: 0.4 well paths naming the column before the row.
    """
    if kind not in get_args(NgffKind):
        raise ValueError(f"kind must be one of {get_args(NgffKind)}, got {kind!r}")
    if not isinstance(attrs, Mapping):
        raise MetadataError(f"attributes must be a JSON object, not {attrs!r:.40}", path=path)
    version = _resolve_version(attrs, version, path)
    prefix = f"NGFF {version} {kind} metadata invalid"
    ome = _metadata_namespace(attrs, version, kind, strict, prefix, path)

    model_cls = _MODELS[version, kind]
    if kind == "label" and "multiscales" not in ome:
        model_cls = _LABEL_ONLY_MODELS[version]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = model_cls.model_validate(dict(ome))
        except ValidationError as exc:
            raise MetadataError(f"{prefix}: {_describe(exc)}", path=path) from exc
    report = _Report(strict=strict)
    report.notes += [str(warning.message) for warning in caught]
    _supplementary_checks(ome, kind, version, report)
    for note in report.notes:
        _log_warning(path, f"NGFF {version} {kind} metadata: {note}")
    if report.errors:
        raise MetadataError(f"{prefix}: {_join(report.errors)}", path=path)
    return model


def _resolve_version(attrs: Mapping[str, Any], version: str | None, path: Any) -> str:
    declared = detect_ngff_version(attrs)
    supported = ", ".join(SUPPORTED_NGFF_VERSIONS)
    if version is None:
        if declared is None:
            raise MetadataError(
                f"the attributes declare no OME-NGFF version; pass version= ({supported})",
                path=path,
            )
        version = declared
    elif declared is not None and declared != version:
        raise MetadataError(
            f"the attributes declare OME-NGFF version {declared!r}, not {version!r}", path=path
        )
    if version not in SUPPORTED_NGFF_VERSIONS:
        raise MetadataError(
            f"OME-NGFF version {version!r} is not supported (supported: {supported})", path=path
        )
    return version


def _metadata_namespace(
    attrs: Mapping[str, Any], version: str, kind: str, strict: bool, prefix: str, path: Any
) -> Mapping[str, Any]:
    """The mapping holding the NGFF keys: ``attrs["ome"]`` from 0.5 on, else ``attrs``."""
    if version == "0.4":
        return attrs
    ome = attrs.get("ome")
    if not isinstance(ome, Mapping):
        found = ", ".join(map(repr, attrs)) or "none"
        raise MetadataError(f"{prefix}: no 'ome' object (keys found: {found})", path=path)
    # 0.5: "The OME-Zarr Metadata version MUST be consistent within a hierarchy."
    # No 0.5 schema covers the labels group and omero-zarr writes it without a
    # version: it inherits the image's.
    if kind == "labels" and "version" not in ome and not strict:
        _log_warning(path, f"labels group without ome.version, taken as {version}")
        ome = {**ome, "version": version}
    return ome


def _describe(exc: ValidationError) -> str:
    """Pydantic errors as ``"multiscales[0].axes: axis names must be unique..."``."""
    problems = []
    for error in exc.errors():
        where = ""
        for part in error["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            elif not re.search(r"^[A-Z]|[\[\](),]", part):  # not a union member's tag
                where += f".{part}" if where else part
        message = " ".join(error["msg"].removeprefix("Value error, ").split())
        message = message[:1].lower() + message[1:]
        problems.append(f"{where}: {message}" if where else message)
    return _join(list(dict.fromkeys(problems)))


def _join(problems: list[str]) -> str:
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _log_warning(path: Any, message: str) -> None:
    logger.warning("%s%s", f"{os.fspath(path)}: " if path is not None else "", message)


class _Report:
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


# -- supplementary checks, run on the raw JSON once the model has accepted it -------


def _supplementary_checks(ome: Mapping[str, Any], kind: str, version: str, report: _Report) -> None:
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


def _check_integer(
    section: Mapping[str, Any], key: str, where: str, report: _Report, *, minimum: int
) -> None:
    """Schema: plate/well ids, counts and times are integers with a minimum; the
    models coerce ``"0"`` to 0 and accept negative times."""
    if key in section:
        value = section[key]
        if not _is_integer(value):
            report.error(f"{where}.{key}", f"must be an integer, got {value!r}")
        elif value < minimum:
            report.error(f"{where}.{key}", f"must be >= {minimum}, got {value!r}")


_HEX_COLOR = re.compile(r"[0-9A-Fa-f]{6}")


def _check_omero(omero: Any, report: _Report) -> None:
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


def _check_transform_lengths(multiscales: list[Any], report: _Report) -> None:
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


def _check_image_label(label: Mapping[str, Any], report: _Report) -> None:
    """Label schema: "colors" and "properties", when present, are non-empty lists (the
    models accept []); a property's "label-value" is an integer (not ``"1"``)."""
    for key in ("colors", "properties"):
        if key in label and not (isinstance(label[key], list) and label[key]):
            report.error(f"image-label.{key}", "must be a non-empty list")
    for i, prop in enumerate(label.get("properties") or ()):
        if not _is_integer(value := prop.get("label-value")):
            report.error(
                f"image-label.properties[{i}].label-value", f"must be an integer, got {value!r}"
            )


def _check_plate(plate: Mapping[str, Any], version: str, report: _Report) -> None:
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


def _check_plate_wells(plate: Mapping[str, Any], version: str, report: _Report) -> None:
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
            report.error(
                f"{where}.columnIndex", f"{column_index!r} is not an index into the columns"
            )
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


def _check_well(well: Mapping[str, Any], report: _Report) -> None:
    """Well schema: "images" lists at least one field of view (the models accept []),
    and an image's "acquisition" is an integer (the models coerce ``"0"``)."""
    if not well["images"]:
        report.error("well.images", "must list at least one field of view")
    for i, image in enumerate(well["images"]):
        if "acquisition" in image and not _is_integer(image["acquisition"]):
            report.error(
                f"well.images[{i}].acquisition", f"must be an integer, got {image['acquisition']!r}"
            )
