"""Conversion of physical units found in metadata (NGFF, OME-XML, ImageJ) to micrometres."""

from __future__ import annotations

from dls_microscopy.errors import MetadataError

__all__ = ["is_length_unit", "to_micrometres"]

# Factors to micrometres for the spatial units of the OME data model and NGFF
# (UDUNITS names), plus the spellings seen in ImageJ/Bio-Formats files.
_FACTORS: dict[str, float] = {
    "angstrom": 1e-4,
    "å": 1e-4,
    "Å": 1e-4,
    "attometer": 1e-12,
    "am": 1e-12,
    "centimeter": 1e4,
    "cm": 1e4,
    "decimeter": 1e5,
    "dm": 1e5,
    "exameter": 1e24,
    "em": 1e24,
    "femtometer": 1e-9,
    "fm": 1e-9,
    "foot": 304800.0,
    "ft": 304800.0,
    "gigameter": 1e15,
    "gm": 1e15,
    "hectometer": 1e8,
    "hm": 1e8,
    "inch": 25400.0,
    "in": 25400.0,
    "kilometer": 1e9,
    "km": 1e9,
    "megameter": 1e12,
    "meter": 1e6,
    "m": 1e6,
    "micrometer": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "mile": 1.609344e9,
    "millimeter": 1e3,
    "mm": 1e3,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "parsec": 3.0857e22,
    "petameter": 1e21,
    "picometer": 1e-6,
    "pm": 1e-6,
    "terameter": 1e18,
    "yard": 914400.0,
    "yd": 914400.0,
    "yoctometer": 1e-18,
    "ym": 1e-18,
    "yottameter": 1e30,
    "zeptometer": 1e-15,
    "zm": 1e-15,
    "zettameter": 1e27,
}
# "pixel" and the missing unit mean "no physical calibration": keep the value.
_UNCALIBRATED = {"", "pixel", "pixels", "px", "reference frame"}


def is_length_unit(unit: str | None) -> bool:
    """Whether ``unit`` names a length: ``None``, empty, "pixel" and "reference frame" do not.

    Any other unit, known or not, counts as one (:func:`to_micrometres` refuses the
    unknown ones).

    Examples
    --------
    >>> is_length_unit("nanometer"), is_length_unit("pixel"), is_length_unit(None)
    (True, False, False)
    """
    return unit is not None and unit.strip().lower() not in _UNCALIBRATED


def to_micrometres(value: float, unit: str | None, *, path: object = None) -> float:
    """Convert a length ``value`` in ``unit`` to micrometres.

    Parameters
    ----------
    value : float
        The length.
    unit : str or None
        A UDUNITS/OME unit name or symbol (case-insensitive for names,
        "micron", "um" and "µm" accepted). ``None``, "pixel" and empty mean
        uncalibrated: the value is returned unchanged.

    Raises
    ------
    MetadataError
        For a unit that is not a length.

    Examples
    --------
    >>> to_micrometres(250.0, "nanometer")
    0.25
    """
    if unit is None:
        return float(value)
    key = unit.strip()
    if key.lower() in _UNCALIBRATED:
        return float(value)
    factor = _FACTORS.get(key, _FACTORS.get(key.lower()))
    if factor is None:
        raise MetadataError(f"unknown length unit {unit!r}", path=path)  # type: ignore[arg-type]
    return float(value) * factor
