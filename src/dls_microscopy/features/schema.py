"""Column names and units of the object table, CellProfiler/pycytominer style.

Names are ``{Compartment}_{Category}_{Measurement}[_{Channel}]`` (e.g.
``Nuclei_AreaShape_Volume``, ``Nuclei_Intensity_MeanIntensity_DAPI``,
``Nuclei_RadialDistribution_FracAtD_DAPI_1of4``) so that pycytominer infers
them as features.  Positions (centroids, bounding boxes, intensity-weighted
centroids) are ``Metadata_`` columns: they index objects in the image (and
let geometry crops and joins find them) but are not phenotypes, so profiling
never normalises or selects them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from dls_microscopy.channels import column_token
from dls_microscopy.errors import InputError
from dls_microscopy.features.measure import ObjectMeasurements

__all__ = [
    "AXIS_NAMES",
    "Column",
    "channel_tokens",
    "check_compartment",
    "feature_columns",
    "percentile_name",
    "position_columns",
]

AXIS_NAMES = ("Z", "Y", "X")
_MOMENT_NAMES = ("ZZ", "YY", "XX", "ZY", "ZX", "YX")
_COMPARTMENT = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclasses.dataclass(frozen=True, eq=False)
class Column:
    """One table column: name, values ``(K,)`` and unit (``"1"`` for dimensionless)."""

    name: str
    values: np.ndarray
    unit: str


def check_compartment(name: str) -> str:
    """Validate a compartment name (``"Nuclei"``, ``"Cells"``...)."""
    if not _COMPARTMENT.match(name):
        raise InputError(
            f"compartment {name!r} must start with an upper-case letter and contain only "
            "letters and digits (e.g. 'Nuclei', 'Cells')"
        )
    return name


def channel_tokens(names: Sequence[str]) -> tuple[str, ...]:
    """Channel names as column-name tokens: letters and digits only, distinct.

    Examples
    --------
    >>> channel_tokens(["DAPI", "Lamin B1", "ch-2"])
    ('DAPI', 'LaminB1', 'ch2')
    """
    out = []
    for i, name in enumerate(names):
        token = column_token(name) or f"channel{i}"
        out.append(token)
    if len(set(out)) != len(out):
        raise InputError(f"channel names {tuple(names)} are not distinct as column names {out}")
    return tuple(out)


def percentile_name(q: float) -> str:
    """CellProfiler's names for quartiles, ``Percentile{q}Intensity`` otherwise.

    Examples
    --------
    >>> [percentile_name(q) for q in (25, 50, 75)]
    ['LowerQuartileIntensity', 'MedianIntensity', 'UpperQuartileIntensity']
    >>> [percentile_name(q) for q in (5, 99.5)]
    ['Percentile5Intensity', 'Percentile99p5Intensity']
    """
    named = {25.0: "LowerQuartileIntensity", 50.0: "MedianIntensity", 75.0: "UpperQuartileIntensity"}
    if float(q) in named:
        return named[float(q)]
    return f"Percentile{float(q):g}Intensity".replace(".", "p")


def position_columns(m: ObjectMeasurements) -> list[Column]:
    """``Metadata_`` columns of positions: centroid, bounding box, weighted centroids."""
    cols = [Column(f"Metadata_Centroid_{a}", m.centroid[:, i], "µm") for i, a in enumerate(AXIS_NAMES)]
    for side, arr in (("Minimum", m.bbox_min), ("Maximum", m.bbox_max)):
        cols += [
            Column(f"Metadata_BoundingBox{side}_{a}", arr[:, i].astype(np.int64), "voxel")
            for i, a in enumerate(AXIS_NAMES)
        ]
    for c, ch in enumerate(channel_tokens(m.channel_names)):
        cols += [
            Column(f"Metadata_CenterMassIntensity_{a}_{ch}", m.centroid_weighted[:, c, i], "µm")
            for i, a in enumerate(AXIS_NAMES)
        ]
    return cols


def feature_columns(m: ObjectMeasurements, compartment: str) -> list[Column]:
    """Feature columns of a measurement, in table order."""
    p = check_compartment(compartment)
    shape = f"{p}_AreaShape_"
    cols = [
        Column(shape + "Volume", m.volume, "µm³"),
        Column(shape + "BoundingBoxVolume", m.bbox_volume, "µm³"),
        Column(shape + "Extent", m.extent, "1"),
        Column(shape + "EquivalentDiameter", m.equivalent_diameter, "µm"),
        Column(shape + "MajorAxisLength", m.axis_lengths[:, 0], "µm"),
        Column(shape + "IntermediateAxisLength", m.axis_lengths[:, 1], "µm"),
        Column(shape + "MinorAxisLength", m.axis_lengths[:, 2], "µm"),
    ]
    cols += [Column(f"{shape}InertiaTensorEigenvalue_{i}", m.inertia_eigvals[:, i], "µm²") for i in range(3)]
    cols += [
        Column(f"{shape}CentralMoment_{name}", m.moments_central[:, i], "µm²")
        for i, name in enumerate(_MOMENT_NAMES)
    ]
    chans = channel_tokens(m.channel_names)
    inten = f"{p}_Intensity_"
    per_channel = [
        ("IntegratedIntensity", m.intensity_sum, "a.u."),
        ("MeanIntensity", m.intensity_mean, "a.u."),
        ("StdIntensity", m.intensity_std, "a.u."),
        ("MinIntensity", m.intensity_min, "a.u."),
        ("MaxIntensity", m.intensity_max, "a.u."),
    ]
    per_channel += [
        (percentile_name(q), m.intensity_percentiles[:, :, j], "a.u.") for j, q in enumerate(m.percentiles)
    ]
    per_channel.append(("MassDisplacement", m.mass_displacement, "µm"))
    for name, arr, unit in per_channel:
        cols += [Column(f"{inten}{name}_{ch}", arr[:, c], unit) for c, ch in enumerate(chans)]
    n = m.radial_shells
    radial = f"{p}_RadialDistribution_"
    for name, arr in (("FracAtD", m.radial_frac_at_d), ("MeanFrac", m.radial_mean_frac)):
        for c, ch in enumerate(chans):
            cols += [Column(f"{radial}{name}_{ch}_{i + 1}of{n}", arr[:, c, i], "1") for i in range(n)]
    return cols
