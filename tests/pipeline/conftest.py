"""Small synthetic inputs for pipeline runs (written once per session, read-only)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dls_microscopy.sample_data.plate import write_synthetic_plate


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """NGFF 0.5 plate ``pipeline-test``: wells A01, A02 × 2 fields of (16, 40, 40), 2 channels."""
    root = tmp_path_factory.mktemp("plate") / "plate.ome.zarr"
    return write_synthetic_plate(
        root, rows=("A",), columns=("01", "02"), fields=2, shape=(16, 40, 40), name="pipeline-test"
    )


@pytest.fixture
def plate_copy(small_plate, tmp_path) -> Path:
    """A writable copy of :func:`small_plate`."""
    dst = tmp_path / "plate.ome.zarr"
    shutil.copytree(small_plate, dst)
    return dst
