"""Which pixel values we analyse: supported data types, and NaN/inf in float data.

Every reader and every analysis step applies the same policy; the functions are
re-exported by :mod:`dls_microscopy.volume`, where they lived first.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dls_microscopy.errors import NonFiniteDataWarning, UnsupportedDtypeError

__all__ = ["check_dtype", "replace_nonfinite", "warn_nonfinite"]

#: dtypes we process; everything else raises :class:`UnsupportedDtypeError`.
_SUPPORTED_KINDS = {"u", "i", "f", "b"}


def check_dtype(dtype: np.dtype[Any] | type, *, path: str | Path | None = None) -> np.dtype[Any]:
    """Return ``dtype`` as a numpy dtype, or raise for types we cannot analyse.

    Integers (signed, unsigned), floats and booleans are supported; complex,
    string, object, datetime and structured types are not.

    Raises
    ------
    UnsupportedDtypeError
        For any other dtype.
    """
    dt = np.dtype(dtype)
    if dt.kind not in _SUPPORTED_KINDS or dt.fields is not None:
        raise UnsupportedDtypeError(
            f"unsupported pixel data type {dt} (supported: integer, float and bool)",
            path=path,
        )
    return dt


def replace_nonfinite(block: np.ndarray, *, fill: float | None = None) -> np.ndarray:
    """Replace NaN by ``fill`` and clip +/-inf to the finite range of ``block``.

    This is how every analysis step handles non-finite values in float data:
    NaN becomes ``fill`` (default: the minimum finite value, i.e. background)
    and infinities become the largest/smallest finite value present.

    Parameters
    ----------
    block : ndarray
        Any shape; returned unchanged (not copied) unless it is a float array
        with non-finite values.
    fill : float, optional
        Value for NaN; default the minimum finite value of the block (0 when
        the block has no finite value).

    Returns
    -------
    ndarray
        Same shape and dtype as ``block``.
    """
    if block.dtype.kind != "f":
        return block
    finite = np.isfinite(block)
    if finite.all():
        return block
    out = block.copy()
    if finite.any():
        lo, hi = float(block[finite].min()), float(block[finite].max())
    else:
        lo = hi = 0.0
    out[np.isnan(out)] = lo if fill is None else fill
    out[np.isposinf(out)] = hi
    out[np.isneginf(out)] = lo
    return out


def warn_nonfinite(count: int, *, path: str | Path | None, handling: str) -> None:
    """Emit a :class:`NonFiniteDataWarning` that says how many values and how they are handled."""
    where = f"{path}: " if path is not None else ""
    warnings.warn(
        f"{where}{count} NaN/inf value(s) in float data; {handling}",
        NonFiniteDataWarning,
        stacklevel=3,
    )
