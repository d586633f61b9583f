"""Memory sizes of the pipeline configuration: ``"2GB"``, ``"512MiB"``, ``4e9``.

Part of :mod:`dls_microscopy.pipeline.config`, which re-exports :func:`parse_size`.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS.update({"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40})


def parse_size(text: str | int) -> int:
    """Bytes in ``"2GB"``, ``"512MiB"``, ``"1e9"`` or an integer.

    Raises
    ------
    ValueError
        The text is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").lower().rstrip("b") if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r} (examples: 2GB, 512MiB, 4e9)")
    return int(float(m.group(1)) * _UNITS[unit])


def positive_size(text: str | int) -> int:
    """Bytes of a memory size that must be positive: what a budget option or field takes.

    One rule for the command line (``--memory-budget``), the desktop app and the
    configuration (``compute.memory_budget``).

    Raises
    ------
    InputError
        Not a size, or not positive (``"0"``).
    """
    from dls_microscopy.errors import InputError

    try:
        size = parse_size(text)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if size <= 0:
        raise InputError(f"a memory size must be positive, got {text!r}")
    return size


def _check_size(value: str | int) -> str | int:
    if parse_size(value) <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return value
