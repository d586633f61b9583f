"""Choice of compute device: ``cuda`` > ``mps`` > ``cpu``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from dls_microscopy.errors import InputError

__all__ = ["device_name", "resolve_device"]

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


#: Device files of the GPU drivers torch can use on Linux: NVIDIA (CUDA), AMD (ROCm's
#: ``/dev/kfd``) and WSL2's GPU bridge.  Without any, ``torch.cuda`` finds no GPU.
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def _surely_cpu_only() -> bool:
    """A Linux machine without any GPU driver's device file: no GPU that torch could use."""
    return sys.platform.startswith("linux") and not any(os.path.exists(f) for f in _GPU_DEVICE_FILES)


def device_name(device: str | None = "auto") -> str:
    """The device ``device`` resolves to, as a string (``"cpu"``, ``"cuda"``, ``"mps"``...).

    As :func:`resolve_device`, but ``"auto"`` on a Linux machine without a GPU driver
    is ``"cpu"`` without importing torch: the import takes seconds and about 0.6 GB of
    memory (a CUDA build), which a segmenter that then runs on numpy (the watershed on
    a CPU) does not need.
    """
    if device in (None, "", "auto") and _surely_cpu_only():
        return "cpu"
    if device == "cpu":
        return "cpu"
    return str(resolve_device(device))
