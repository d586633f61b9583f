"""What a manifest records of the environment: software versions and who made an output, when, where."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["created_by", "describe_device", "execution_record", "label_provenance", "software_versions"]

#: Packages whose versions shape the results, recorded in every manifest (``software``).
_PACKAGES = (
    "dls-microscopy",
    "numpy",
    "scipy",
    "dask",
    "zarr",
    "numcodecs",
    "pyarrow",
    "scikit-image",
    "tifffile",
    "imagecodecs",
    "h5py",
    "tensorstore",
    # the compute libraries of segmentation, meshes and embeddings
    "torch",
    "numba",
    "edt",
    "connected-components-3d",
    "fastremap",
    "zmesh",
    "robust-laplacian",
    # configuration, validation and the compute backends
    "pydantic",
    "pyyaml",
    "ome-zarr-models",
    "distributed",
    "dask-jobqueue",
    "threadpoolctl",
)


def software_versions(packages: Iterable[str] = _PACKAGES) -> dict[str, Any]:
    """Python, platform and installed versions of the packages that shape the results."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    found: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    torch = sys.modules.get("torch")  # only where this process used it: importing it takes seconds
    if torch is not None:
        found["torch_build"] = {"cuda": torch.version.cuda, "debug": bool(torch.version.debug)}
    return {**found, "packages": versions}


def created_by() -> dict[str, Any]:
    """When, where and by whom an output was made: the audit trail of a manifest (``created``)."""
    import datetime
    import getpass
    import socket

    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = None
    return {
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "user": user,
    }


def describe_device(device: str) -> dict[str, Any]:
    """A device as it ran, for a manifest: ``{"device": "cuda:0", "name": "NVIDIA H100 ..."}``.

    ``device`` is what a step resolved (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``), never
    ``"auto"``.  The name of a GPU comes from torch, which a step on a GPU has imported;
    a CPU's from ``/proc/cpuinfo`` where there is one.
    """
    found: dict[str, Any] = {"device": device}
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        try:
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index
            found.update(device=f"cuda:{index}", name=torch.cuda.get_device_name(index))
        except (RuntimeError, AssertionError, ValueError):  # no CUDA after all: keep the request
            pass
    elif device == "cpu":
        name = _cpu_name()
        if name:
            found["name"] = name
    return found


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def execution_record(
    devices: Mapping[str, str], *, threads: int | None, memory_budget: int | None
) -> dict[str, Any]:
    """How an output was computed: each step's device as resolved, threads and memory.

    Parameters
    ----------
    devices : mapping
        Step name → the device it ran on (``"cpu"``, ``"cuda:0"``...): the arguments
        record what was asked (``"auto"``), this what was used.
    threads : int or None
        Threads given to the steps (None: each step's own default).
    memory_budget : int or None
        Bytes the steps were given.
    """
    from dls_microscopy.pipeline.cluster import usable_cpus

    return {
        "devices": {step: describe_device(d) for step, d in devices.items()},
        "threads": threads,
        "cpus_usable": usable_cpus(),
        "memory_budget_bytes": memory_budget,
    }


def label_provenance(command: str, model: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What a label image written by ``command`` records beside its segmentation settings.

    The command, the software versions, who made it, when and where, and the sha256 of
    the model file, if any (for :func:`~dls_microscopy.segment.segment_blockwise`'s
    ``provenance``; a pipeline field has its manifest instead).
    """
    found: dict[str, Any] = {"command": command, "software": software_versions(), "created": created_by()}
    if model is not None:
        from dls_microscopy.pipeline._digests import digest_file

        path = Path(os.fspath(model)).expanduser()
        try:
            found["model"] = {"path": str(path.absolute()), "sha256": digest_file(path)}
        except OSError:  # a name the segmenter looks up itself (cellpose's ``cpsam``)
            found["model"] = {"name": os.fspath(model), "sha256": None}
    return found
