"""Choice of compute device: ``cuda`` > ``mps`` > ``cpu``."""

from __future__ import annotations

import logging
from typing import Any

from dls_microscopy.errors import InputError

__all__ = ["resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | None = "auto") -> Any:
    """Return a ``torch.device`` for ``device``.

    Parameters
    ----------
    device : str
        ``"auto"`` (first of cuda, mps, cpu that works), or an explicit
        torch device string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Raises
    ------
    InputError
        When an explicitly requested device is not available.
    """
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r} requested but MPS is not available here")
    return dev
