"""Physical calibration, channel names and time step of a TIFF series.

Part of :mod:`dls_microscopy.io.tiff`: reads the OME-XML of an OME-TIFF, the
ImageJ description and resolution tags of an ImageJ hyperstack, or the
resolution tags of a plain TIFF.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from dls_microscopy.io.units import is_length_unit, to_micrometres
from dls_microscopy.spacing import SPACING_RANGE_UM, warn_spacing_fallback

#: the reader's logger (these messages are the reader's)
log = logging.getLogger("dls_microscopy.io.tiff")

_SECONDS = {
    "s": 1.0,
    "sec": 1.0,
    "ms": 1e-3,
    "µs": 1e-6,
    "us": 1e-6,
    "ns": 1e-9,
    "min": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
}

#: the TIFF ResolutionUnit tag's lengths and their µm: 2 inch and 3 centimetre (baseline
#: TIFF), 4 millimetre and 5 micrometre (tifffile's RESUNIT); 1 (none) or no tag is uncalibrated
_RESOLUTION_UNITS = {2: ("inch", 25400.0), 3: ("centimetre", 1e4), 4: ("millimetre", 1e3), 5: ("µm", 1.0)}
#: dots per inch that image writers record when they know no size (screens' 72 and 96 dpi)
_DEFAULT_DPI = {72.0, 96.0}


def _uncalibrated(path: Path, why: str) -> dict[str, Any]:
    warn_spacing_fallback(log, "%s: %s; using a spacing of 1 µm", path, why)
    return {"spacing": {}, "calibrated": False}


def _seconds(value: Any, unit: str | None) -> float | None:
    try:
        return float(value) * _SECONDS[(unit or "s").strip().lower()]
    except (KeyError, ValueError, TypeError):
        return None


def _ome_metadata(tif: tifffile.TiffFile, index: int, yx: tuple[int, int], path: Path) -> dict[str, Any]:
    """Spacing (µm), channel names and time step of series ``index`` from the OME-XML."""
    try:
        root = ET.fromstring(tif.ome_metadata or "")
    except ET.ParseError as exc:
        return _uncalibrated(path, f"malformed OME-XML ({exc})")
    images = root.findall("{*}Image")
    names = [im.get("Name") for im in images]
    if len(images) == len(tif.series):
        image = images[index]
    elif names.count(tif.series[index].name) == 1:
        image = images[names.index(tif.series[index].name)]
    else:
        return _uncalibrated(path, f"cannot match series {index} to an OME Image element")
    pixels = image.find("{*}Pixels")
    if pixels is None or (pixels.get("SizeY"), pixels.get("SizeX")) != tuple(map(str, yx)):
        return _uncalibrated(path, f"no OME Pixels element of size {yx} for series {index}")
    spacing: dict[str, float] = {}
    not_lengths: dict[str, str] = {}  # axis: its unit ("pixel", "reference frame")
    for axis in "ZYX":
        text = pixels.get(f"PhysicalSize{axis}")
        try:
            value = float(text) if text is not None else None
        except ValueError:
            log.warning("%s: invalid PhysicalSize%s %r ignored", path, axis, text)
            continue
        unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if value is not None and not is_length_unit(unit):  # a size in pixels is no calibration
            not_lengths[axis.lower()] = unit
        elif value is not None and np.isfinite(value) and value > 0:
            spacing[axis.lower()] = to_micrometres(value, unit, path=path)
        elif value is not None:
            warn_spacing_fallback(
                log,
                "%s: PhysicalSize%s=%r is not a spacing (positive and finite); using 1 µm for %s",
                path,
                axis,
                text,
                axis.lower(),
            )
    if not_lengths:
        units = ", ".join(
            f"{u!r} ({', '.join(a for a in not_lengths if not_lengths[a] == u)})"
            for u in dict.fromkeys(not_lengths.values())
        )
        why = f"the OME-XML's PhysicalSize unit {units} is not a length"
        if spacing:
            warn_spacing_fallback(log, "%s: %s; using 1 µm for %s", path, why, "".join(not_lengths))
        else:
            _uncalibrated(path, why)
    out: dict[str, Any] = {"spacing": spacing, "calibrated": bool(spacing)}
    if not spacing and not not_lengths:
        _uncalibrated(path, "the OME-XML has no PhysicalSize")
    channels = pixels.findall("{*}Channel")
    out["channel_names"] = tuple(ch.get("Name") or f"channel_{i}" for i, ch in enumerate(channels))
    step = _seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))
    if step is not None:
        out["time_increment_s"] = step
    return out


def _imagej_metadata(tif: tifffile.TiffFile, keyframe: Any, n_channels: int, path: Path) -> dict[str, Any]:
    """Spacing (µm) from the resolution tags and ``spacing``; channel labels; frame interval."""
    ij = tif.imagej_metadata or {}
    out: dict[str, Any] = {"spacing": {}, "calibrated": False}
    labels = ij.get("Labels")
    if isinstance(labels, list) and n_channels > 1 and len(labels) >= n_channels:
        if all(isinstance(s, str) and s for s in labels[:n_channels]):  # ImageJ: C fastest
            out["channel_names"] = tuple(labels[:n_channels])
    step = _seconds(ij.get("finterval"), ij.get("tunit", "s"))
    if step is not None:
        out["time_increment_s"] = step
    unit = ij.get("unit")
    if isinstance(unit, str):  # ImageJ escapes non-ASCII units: "\\u00B5m" is "µm"
        unit = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), unit).strip()
    if not isinstance(unit, str) or not is_length_unit(unit):  # "pixel", "px": no calibration
        return {**out, **_uncalibrated(path, "the ImageJ metadata has no length unit")}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = keyframe.tags.valueof(tag)  # (pixels, per unit length)
        if isinstance(value, tuple) and len(value) == 2 and value[0] > 0 and value[1] > 0:
            out["spacing"][axis] = to_micrometres(value[1] / value[0], unit, path=path)
    if isinstance(ij.get("spacing"), int | float) and np.isfinite(ij["spacing"]) and ij["spacing"] > 0:
        out["spacing"]["z"] = to_micrometres(float(ij["spacing"]), unit, path=path)
    elif "spacing" in ij:
        warn_spacing_fallback(
            log,
            "%s: ImageJ spacing=%r is not a spacing (positive and finite); using 1 µm for z",
            path,
            ij["spacing"],
        )
    out["calibrated"] = bool(out["spacing"])
    return out


def _resolution_metadata(keyframe: Any, path: Path, ignored: str = "") -> dict[str, Any]:
    """Spacing (µm) of y and x from a plain TIFF's XResolution, YResolution and ResolutionUnit.

    These tags hold no z step: a stack's z stays unknown (1 µm, with the caller's
    warning). ``ignored`` starts the message of an uncalibrated file (what else was
    not used).
    """
    unit = keyframe.tags.valueof("ResolutionUnit")
    try:
        name, factor = _RESOLUTION_UNITS[int(unit)]
    except (KeyError, TypeError, ValueError):
        return _uncalibrated(path, ignored + "no physical calibration in the file")
    per_unit: dict[str, float] = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = keyframe.tags.valueof(tag)  # (pixels, per unit length)
        if isinstance(value, tuple) and len(value) == 2 and value[0] > 0 and value[1] > 0:
            per_unit[axis] = value[0] / value[1]
    if not per_unit:
        return _uncalibrated(path, ignored + f"a ResolutionUnit ({name}) without resolution")
    if name == "inch" and set(per_unit.values()) <= _DEFAULT_DPI:
        dpi = ", ".join(f"{v:g}" for v in sorted(set(per_unit.values())))
        return _uncalibrated(
            path, ignored + f"the resolution, {dpi} dpi, is a screen default, not a calibration"
        )
    spacing = {axis: factor / v for axis, v in per_unit.items()}
    lo, hi = SPACING_RANGE_UM
    if not all(lo <= v <= hi for v in spacing.values()):
        return _uncalibrated(
            path,
            ignored
            + f"the resolution tags give pixels of {', '.join(f'{v:g}' for v in spacing.values())} µm, "
            f"outside {lo:g} to {hi:g} µm",
        )
    if ignored:
        log.warning("%s: %s", path, ignored.removesuffix(" and "))
    log.info("%s: y/x spacing from the TIFF resolution tags (per %s)", path, name)
    return {"spacing": spacing, "calibrated": True}
