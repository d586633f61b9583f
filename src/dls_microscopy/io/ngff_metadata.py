"""Validation of OME-NGFF (OME-Zarr) group attributes, versions 0.4 and 0.5.

The models of ``ome-zarr-models`` do the bulk of the work.  Where they disagree
with the specification and its official JSON-schema test suites, small explicit
checks (:mod:`._ngff_checks`) close the gap, each citing the rule it implements.
Problems are raised as :class:`~dls_microscopy.errors.MetadataError` with a short
message naming the field; warnings of ``ome-zarr-models`` become log records.
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
from dls_microscopy.io._ngff_checks import Report, supplementary_checks

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
    report = Report(strict=strict)
    report.notes += [str(warning.message) for warning in caught]
    supplementary_checks(ome, kind, version, report)
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
