"""TIFF axes to ``"tczyx"``: naming tifffile's axis letters and reordering a level.

Part of :mod:`dls_microscopy.io.tiff`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dask.array as da
import tifffile

from dls_microscopy.errors import MetadataError
from dls_microscopy.io.lazy import SourceLevel
from dls_microscopy.volume import AXES_ORDER

#: the reader's logger (these messages are the reader's)
log = logging.getLogger("dls_microscopy.io.tiff")

#: tifffile axis letters with an equivalent in "tczyx" (RGB samples become channels).
_AXIS_MAP = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


def _map_axes(axes: str, shape: tuple[int, ...], path: Path) -> list[str | None]:
    """Our letter for each tifffile axis; ``None`` for length-1 axes to squeeze."""
    letters = [_AXIS_MAP.get(a) if shape[i] > 1 or a in "YX" else None for i, a in enumerate(axes)]
    unknown = [i for i, a in enumerate(axes) if a not in _AXIS_MAP and shape[i] > 1]
    if len(unknown) == 1 and "z" not in letters:  # a plain page stack: 'Q', 'I' or other
        (i,) = unknown
        if axes[i] not in "QI":
            log.warning(
                "%s: TIFF axis %r (%s) read as z",
                path,
                axes[i],
                tifffile.TIFF.AXES_NAMES.get(axes[i], "unknown"),
            )
        letters[i] = "z"
    elif unknown:
        described = ", ".join(
            f"{axes[i]!r} ({tifffile.TIFF.AXES_NAMES.get(axes[i], 'unknown')}, length {shape[i]})"
            for i in unknown
        )
        raise MetadataError(
            f"TIFF axes {axes!r} (shape {shape}) have no equivalent in 'tczyx': {described}",
            path=path,
        )
    if "y" not in letters or "x" not in letters:
        raise MetadataError(f"TIFF axes {axes!r} lack Y or X", path=path)
    return letters


def _to_our_axes(
    level: SourceLevel, letters: list[str | None], tiff_axes: str
) -> tuple[da.Array, str, SourceLevel | None]:
    """Squeeze, transpose to 'tczyx' order and merge channels with RGB samples.

    Squeezing and reordering are applied to the source, so the level stays one
    dask ``from_array`` whose later slices fuse with the file read.  Channels
    and samples (C and S both longer than 1) are merged with a dask reshape;
    such a level has no source (None) and is indexed with dask afterwards.
    """
    for i in reversed(range(len(letters))):
        if letters[i] is None:
            level = level.take(i, 0)
    kept = [(a, t) for a, t in zip(letters, tiff_axes, strict=True) if a is not None]
    perm = sorted(range(len(kept)), key=lambda i: (AXES_ORDER.index(kept[i][0]), kept[i][1]))
    level = level.transpose(tuple(perm))
    axes = "".join(kept[i][0] for i in perm)
    if axes.count("c") == 2:  # C then S: channel index c * samples + s
        i = axes.index("c")
        shape = level.shape
        if 1 in shape[i : i + 2]:  # one of the two has length 1: drop it at the source
            level = level.take(i if shape[i] == 1 else i + 1, 0)
        else:
            array = level.to_dask()
            array = array.reshape((*shape[:i], shape[i] * shape[i + 1], *shape[i + 2 :]))
            return array, axes[:i] + axes[i + 1 :], None
        axes = axes[:i] + axes[i + 1 :]
    return level.to_dask(), axes, level
