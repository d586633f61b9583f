"""What a manifest records of the environment: software versions and who made an output, when, where."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["created_by", "software_versions"]

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
